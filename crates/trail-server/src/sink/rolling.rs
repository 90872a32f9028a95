//! A log4j2 `RollingFile` for the file sink: appends whole lines to `<dir>/audit.log` and rolls it
//! daily and by size the way the integration runtime's appender does (PRODUCT.md §9), so the tools
//! that read the runtime's logs read Trail's.
//!
//! Synchronous std IO on purpose: it runs on the sink's own thread, never on the async runtime.
//!
//! **Names.** At midnight in [`RollingConfig::time_zone`] the active file becomes
//! `audit-MM-dd-yyyy.log`, named for the day its content belongs to (`audit-MM-dd-yyyy-N.log`, the next
//! free `N`, if that name is taken). When the next write would take it past `max_size`, it becomes
//! `audit-MM-dd-yyyy-N.log` with `N` = 1, 2, … one more than the day's highest. A compressed roll
//! appends `.gz` or `.zst`. At most `max_files` rolled files are kept; the oldest go first, by day
//! and, within a day, by `N`, with the midnight roll (no `N`) last.
//!
//! **Crash safety.** A roll is: fsync the active file; rename it to its rolled name (the commit
//! point); create a new `audit.log`; then, when compressing, write `<rolled>.gz.tmp`, fsync it, rename
//! it to `<rolled>.gz` and remove the uncompressed file; last, prune. A crash leaves one of:
//! - no `audit.log` (after the rename): [`RollingFile::open`] creates it;
//! - a rolled file not yet compressed, with or without a partial `….tmp`: `open` removes the temp
//!   file and compresses the rolled file again;
//! - a rolled file and its complete compressed copy (the rename happened, the removal did not): `open`
//!   removes the uncompressed one;
//! - more than `max_files` rolled files: the next roll prunes them.
//!
//! No step ever overwrites or truncates a rolled file, so a crash can delay a roll's compression or
//! pruning but never lose a line that reached `audit.log` and was fsynced.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// log4j2's `SizeBasedTriggeringPolicy` size in the runtime's configuration: 10 MB.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// log4j2's `DefaultRolloverStrategy` `max` in the runtime's configuration.
pub const DEFAULT_MAX_FILES: usize = 20;

/// Where the writer learns the time; tests drive it by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// How rolled files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compress {
    /// What a roll compressed this way appends to the file name.
    pub fn extension(self) -> &'static str {
        match self {
            Compress::None => "",
            Compress::Gzip => ".gz",
            Compress::Zstd => ".zst",
        }
    }
}

/// Where and how to roll.
#[derive(Debug, Clone)]
pub struct RollingConfig {
    pub dir: PathBuf,
    /// The file name without `.log`: `audit` writes `audit.log` and rolls to `audit-MM-dd-yyyy….log`.
    pub base: String,
    /// Roll before a write that would take the active file past this many bytes.
    pub max_size: u64,
    /// Rolled files kept; older ones are deleted.
    pub max_files: usize,
    pub compress: Compress,
    /// The zone whose midnight starts a new file, and in which line times are written.
    pub time_zone: TimeZone,
}

impl RollingConfig {
    /// The runtime's defaults: `audit`, 10 MiB, 20 files, uncompressed, the system's time zone.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            base: "audit".into(),
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
            compress: Compress::None,
            time_zone: TimeZone::system(),
        }
    }

    fn active_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.base))
    }
}

/// The open `audit.log` and what the next roll needs to know about it.
pub struct RollingFile {
    cfg: RollingConfig,
    clock: Arc<dyn Clock>,
    file: File,
    /// Bytes in the active file.
    size: u64,
    /// The day (in the configured zone) the active file's content belongs to.
    period: Date,
    /// The first instant of the next day: a write at or after it rolls first.
    period_end: Timestamp,
    /// A roll renamed the active file but could not create the next one: the handle points at the
    /// rolled file and must not be written.
    needs_reopen: bool,
}

impl fmt::Debug for RollingFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollingFile")
            .field("cfg", &self.cfg)
            .field("size", &self.size)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// Which policy triggered a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Midnight,
    Size,
}

impl RollingFile {
    /// Opens (or creates) `<dir>/audit.log`, creating `dir` if needed, and first tidies what a crash
    /// may have left (see the module docs). The active file's day is read from its first line's
    /// `[yyyy-MM-dd` (else its modification time), so a restart on a later day rolls it at the next write.
    pub fn open(cfg: RollingConfig, clock: Arc<dyn Clock>) -> io::Result<Self> {
        fs::create_dir_all(&cfg.dir)?;
        recover(&cfg);
        let now = clock.now();
        let (file, size, period) = open_active(&cfg, now)?;
        let period_end = end_of_day(period, &cfg.time_zone);
        Ok(Self { cfg, clock, file, size, period, period_end, needs_reopen: false })
    }

    /// Appends whole lines, rolling first when the day has changed since the active file's day or
    /// when they would take a non-empty file past `max_size`. On error nothing of `bytes` is in the
    /// file (a partial write is cut off again when the file system lets us).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.needs_reopen {
            self.reopen()?;
        }
        let now = self.clock.now();
        if now >= self.period_end {
            if self.size > 0 {
                self.roll(Trigger::Midnight)?;
            }
            self.period = now.to_zoned(self.cfg.time_zone.clone()).date();
            self.period_end = end_of_day(self.period, &self.cfg.time_zone);
        }
        if self.size > 0 && self.size.saturating_add(bytes.len() as u64) > self.cfg.max_size {
            self.roll(Trigger::Size)?;
        }
        if let Err(e) = self.file.write_all(bytes) {
            // Best effort: the next write should start on a line of its own.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Makes everything appended so far durable (fsync).
    pub fn flush_sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Closes the active file and opens `audit.log` by path again, creating it when it was moved
    /// away (SIGHUP after an external logrotate). Its day is read as in [`RollingFile::open`].
    pub fn reopen(&mut self) -> io::Result<()> {
        let (file, size, period) = open_active(&self.cfg, self.clock.now())?;
        self.file = file;
        self.size = size;
        self.period = period;
        self.period_end = end_of_day(period, &self.cfg.time_zone);
        self.needs_reopen = false;
        Ok(())
    }

    /// Reopens `audit.log` by path when the path no longer names the open file: it was moved away
    /// (logrotate without SIGHUP) or replaced, or its directory is gone. Fails, having written
    /// nothing, when the path cannot be opened, so lines never go to a file that is not `audit.log`.
    pub fn follow_path(&mut self) -> io::Result<()> {
        let open = self.open_id()?;
        match path_id(&self.cfg.active_path()) {
            Ok(id) if (id.0, id.1) == (open.0, open.1) => Ok(()),
            Ok(_) => self.reopen(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.reopen(),
            Err(e) => Err(e),
        }
    }

    /// (device, inode, length) of the open file, whatever its name is now.
    pub fn open_id(&self) -> io::Result<(u64, u64, u64)> {
        meta_id(&self.file.metadata()?)
    }

    /// Cuts off, through the open file (wherever it has been moved), what was written after a saved
    /// `(device, inode)` and length: down to `len` when it is that file, to nothing when it is a
    /// newer one (a roll or reopen happened since the save).
    pub fn cut_to(&mut self, saved: (u64, u64), len: u64) -> io::Result<()> {
        let (dev, ino, now) = self.open_id()?;
        let keep = if (dev, ino) == saved { len.min(now) } else { 0 };
        if keep < now {
            tracing::info!(file = %self.cfg.active_path().display(), from = now, to = keep, "cutting off audit.log lines written after the last saved position");
            self.file.set_len(keep)?;
            self.file.sync_all()?;
        }
        self.size = keep;
        Ok(())
    }

    /// The configured zone's offset from UTC at `t`, for writing line times.
    pub fn utc_offset_seconds(&self, t: Timestamp) -> i32 {
        self.cfg.time_zone.to_offset(t).seconds()
    }

    /// The path of the active file.
    pub fn active_path(&self) -> PathBuf {
        self.cfg.active_path()
    }

    fn roll(&mut self, trigger: Trigger) -> io::Result<()> {
        self.file.sync_data()?;
        let rolled = self.cfg.dir.join(free_name(&self.cfg, self.period, trigger)?);
        match fs::rename(self.cfg.active_path(), &rolled) {
            Ok(()) => {}
            // Moved away by someone else (logrotate without a SIGHUP): it is theirs now; start anew.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return self.reopen(),
            Err(e) => return Err(e),
        }
        self.needs_reopen = true;
        sync_dir(&self.cfg.dir)?;
        self.reopen()?;

        // The roll is committed; compressing and pruning are tidying that `open` redoes after a crash,
        // so their failures leave a larger directory, not a lost line.
        if self.cfg.compress != Compress::None
            && let Err(e) = compress_file(&rolled, self.cfg.compress)
        {
            tracing::warn!(file = %rolled.display(), error = %e, "rolled audit log left uncompressed");
        }
        if let Err(e) = prune(&self.cfg) {
            tracing::warn!(dir = %self.cfg.dir.display(), error = %e, "old audit logs not pruned");
        }
        Ok(())
    }
}

/// (device, inode, length) of the file at `path`.
pub fn path_id(path: &Path) -> io::Result<(u64, u64, u64)> {
    meta_id(&fs::metadata(path)?)
}

#[cfg(unix)]
fn meta_id(m: &fs::Metadata) -> io::Result<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Ok((m.dev(), m.ino(), m.len()))
}

#[cfg(not(unix))]
fn meta_id(m: &fs::Metadata) -> io::Result<(u64, u64, u64)> {
    Ok((0, 0, m.len()))
}

/// Opens the active file for appending, with its size and the day its content belongs to.
fn open_active(cfg: &RollingConfig, now: Timestamp) -> io::Result<(File, u64, Date)> {
    let path = cfg.active_path();
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    sync_dir(&cfg.dir)?;
    let meta = file.metadata()?;
    let today = now.to_zoned(cfg.time_zone.clone()).date();
    let period = if meta.len() == 0 {
        today
    } else {
        first_line_day(&path)
            .or_else(|| {
                let mtime = Timestamp::try_from(meta.modified().ok()?).ok()?;
                Some(mtime.to_zoned(cfg.time_zone.clone()).date())
            })
            .unwrap_or(today)
    };
    Ok((file, meta.len(), period))
}

/// The `yyyy-MM-dd` of a line starting `[yyyy-MM-dd`.
fn first_line_day(path: &Path) -> Option<Date> {
    let mut head = [0u8; 11];
    File::open(path).ok()?.read_exact(&mut head).ok()?;
    let digits = |r: std::ops::Range<usize>| -> Option<i32> {
        let b = &head[r];
        b.iter().all(u8::is_ascii_digit).then(|| b.iter().fold(0, |n, d| n * 10 + i32::from(d - b'0')))
    };
    if head[0] != b'[' || head[5] != b'-' || head[8] != b'-' {
        return None;
    }
    let year = i16::try_from(digits(1..5)?).ok()?;
    let month = i8::try_from(digits(6..8)?).ok()?;
    let day = i8::try_from(digits(9..11)?).ok()?;
    Date::new(year, month, day).ok()
}

/// The first instant of the day after `day` in `tz`.
fn end_of_day(day: Date, tz: &TimeZone) -> Timestamp {
    day.tomorrow().and_then(|d| d.to_zoned(tz.clone())).map_or(Timestamp::MAX, |z| z.timestamp())
}

/// A rolled file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rolled {
    name: String,
    day: Date,
    /// `N` of `…-N.log`; `None` for a midnight roll's plain name.
    index: Option<u32>,
    compress: Compress,
}

impl Rolled {
    /// Roll order within the directory: by day, then `N`, the midnight roll of a day last.
    fn order(&self) -> (Date, u32) {
        (self.day, self.index.unwrap_or(u32::MAX))
    }
}

fn rolled_name(base: &str, day: Date, index: Option<u32>) -> String {
    let n = index.map(|n| format!("-{n}")).unwrap_or_default();
    format!("{base}-{:02}-{:02}-{:04}{n}.log", day.month(), day.day(), day.year())
}

/// `<base>-MM-dd-yyyy[-N].log[.gz|.zst]`.
fn parse_rolled(base: &str, name: &str) -> Option<Rolled> {
    let rest = name.strip_prefix(base)?.strip_prefix('-')?;
    let (stem, compress) = [Compress::None, Compress::Gzip, Compress::Zstd]
        .into_iter()
        .find_map(|c| Some((rest.strip_suffix(&format!(".log{}", c.extension()))?, c)))?;
    let number = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let date = stem.get(..10)?;
    let index = match stem.get(10..)? {
        "" => None,
        n => Some(number(n.strip_prefix('-')?)?),
    };
    let (month, day, year) = (date.get(..2)?, date.get(3..5)?, date.get(6..)?);
    if date.as_bytes()[2] != b'-' || date.as_bytes()[5] != b'-' {
        return None;
    }
    let day = Date::new(
        i16::try_from(number(year)?).ok()?,
        i8::try_from(number(month)?).ok()?,
        i8::try_from(number(day)?).ok()?,
    )
    .ok()?;
    Some(Rolled { name: name.to_string(), day, index, compress })
}

fn list_rolled(cfg: &RollingConfig) -> io::Result<Vec<Rolled>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(&cfg.dir)? {
        let entry = entry?;
        if let Some(r) = entry.file_name().to_str().and_then(|n| parse_rolled(&cfg.base, n)) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The uncompressed name a roll of `day` takes: the plain name for the first midnight roll of the
/// day, else one more than the day's highest `N`, counting compressed files too.
fn free_name(cfg: &RollingConfig, day: Date, trigger: Trigger) -> io::Result<String> {
    let of_day: Vec<Rolled> = list_rolled(cfg)?.into_iter().filter(|r| r.day == day).collect();
    if trigger == Trigger::Midnight && !of_day.iter().any(|r| r.index.is_none()) {
        return Ok(rolled_name(&cfg.base, day, None));
    }
    let next = of_day.iter().filter_map(|r| r.index).max().map_or(1, |n| n.saturating_add(1));
    Ok(rolled_name(&cfg.base, day, Some(next)))
}

/// Deletes the oldest rolled files beyond `max_files` (a file and its compressed copy count once).
fn prune(cfg: &RollingConfig) -> io::Result<()> {
    let rolled = list_rolled(cfg)?;
    let mut rolls: Vec<(Date, u32)> = rolled.iter().map(Rolled::order).collect();
    rolls.sort_unstable();
    rolls.dedup();
    let Some(excess) = rolls.len().checked_sub(cfg.max_files).filter(|&n| n > 0) else {
        return Ok(());
    };
    let doomed = &rolls[..excess];
    for r in rolled.iter().filter(|r| doomed.contains(&r.order())) {
        match fs::remove_file(cfg.dir.join(&r.name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(&cfg.dir)
}

/// Finishes what a crash interrupted: removes compression temp files, removes a rolled file whose
/// compressed copy is complete, compresses the others when compression is on, and prunes. Failures
/// are logged, not returned: the sink must start even in a directory it cannot tidy.
fn recover(cfg: &RollingConfig) {
    let tidy = || -> io::Result<()> {
        for entry in fs::read_dir(&cfg.dir)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(target) = name.strip_suffix(".tmp")
                && parse_rolled(&cfg.base, target).is_some_and(|r| r.compress != Compress::None)
            {
                fs::remove_file(cfg.dir.join(name))?;
            }
        }
        let rolled = list_rolled(cfg)?;
        for r in rolled.iter().filter(|r| r.compress == Compress::None) {
            let compressed = rolled.iter().any(|c| c.compress != Compress::None && c.order() == r.order());
            let path = cfg.dir.join(&r.name);
            if compressed {
                fs::remove_file(&path)?;
            } else if cfg.compress != Compress::None {
                compress_file(&path, cfg.compress)?;
            }
        }
        prune(cfg)
    };
    if let Err(e) = tidy() {
        tracing::warn!(dir = %cfg.dir.display(), error = %e, "could not tidy the audit log directory");
    }
}

/// Compresses a rolled file next to itself (`x.log` → `x.log.gz`) through a temp file, then removes it.
fn compress_file(path: &Path, how: Compress) -> io::Result<()> {
    if how == Compress::None {
        return Ok(());
    }
    let with_suffix = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let target = with_suffix(how.extension());
    let tmp = with_suffix(&format!("{}.tmp", how.extension()));

    let written = (|| -> io::Result<()> {
        let mut input = BufReader::new(File::open(path)?);
        let output = BufWriter::new(File::create(&tmp)?);
        let output = if how == Compress::Gzip {
            let mut gz = flate2::write::GzEncoder::new(output, flate2::Compression::default());
            io::copy(&mut input, &mut gz)?;
            gz.finish()?
        } else {
            // ruzstd panics on IO errors; these adapters end the stream instead and report them after.
            let mut input = Latch::new(input);
            let mut output = Latch::new(output);
            ruzstd::encoding::compress(&mut input, &mut output, ruzstd::encoding::CompressionLevel::Fastest);
            input.result()?;
            output.result()?;
            output.inner
        };
        output.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::rename(&tmp, &target)?;
    sync_dir(dir)?;
    fs::remove_file(path)?;
    sync_dir(dir)
}

/// A reader or writer that never fails: its first error ends the stream and is kept for
/// [`Latch::result`]. For encoders that cannot report IO errors themselves.
struct Latch<T> {
    inner: T,
    error: Option<io::Error>,
}

impl<T> Latch<T> {
    fn new(inner: T) -> Self {
        Self { inner, error: None }
    }

    fn result(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }
}

impl<R: Read> Read for Latch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    return Ok(0);
                }
                Ok(n) => return Ok(n),
            }
        }
    }
}

impl<W: Write> Write for Latch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.error = Some(e);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use jiff::tz::Offset;

    use super::*;

    #[derive(Debug)]
    struct ManualClock(Mutex<Timestamp>);

    impl ManualClock {
        fn at(t: &str) -> Arc<Self> {
            Arc::new(Self(Mutex::new(t.parse().unwrap())))
        }

        fn set(&self, t: &str) {
            *self.0.lock().unwrap() = t.parse().unwrap();
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            *self.0.lock().unwrap()
        }
    }

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap_or_else(|_| {
            eprintln!("no tz database: using a fixed +01:00 for Europe/Berlin");
            TimeZone::fixed(Offset::constant(1))
        })
    }

    fn config(dir: &Path) -> RollingConfig {
        RollingConfig { time_zone: berlin(), ..RollingConfig::new(dir) }
    }

    /// A line as the sink writes it, stamped with the clock's time in the file's zone.
    fn line(f: &RollingFile, clock: &ManualClock, text: &str) -> String {
        let z = clock.now().to_zoned(f.cfg.time_zone.clone());
        format!(
            "[{:04}-{:02}-{:02} {:02}:{:02}:{:02},{:03}]  INFO {{AUDIT_LOG}} - {{\"m\":\"{text}\"}}\n",
            z.year(),
            z.month(),
            z.day(),
            z.hour(),
            z.minute(),
            z.second(),
            z.millisecond()
        )
    }

    fn write(f: &mut RollingFile, clock: &ManualClock, text: &str) -> String {
        let l = line(f, clock, text);
        f.append(l.as_bytes()).unwrap();
        l
    }

    /// The directory's files and their contents, sorted by name.
    fn files(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let bytes = fs::read(e.path()).unwrap();
                (e.file_name().into_string().unwrap(), String::from_utf8_lossy(&bytes).into_owned())
            })
            .collect();
        out.sort();
        out
    }

    fn names(dir: &Path) -> Vec<String> {
        files(dir).into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn rolls_at_midnight_in_the_configured_zone() {
        let dir = tempfile::tempdir().unwrap();
        // 23:30 in Berlin on 28 March 2026 (CET, +01:00).
        let clock = ManualClock::at("2026-03-28T22:30:00Z");
        let mut f = RollingFile::open(config(dir.path()), clock.clone()).unwrap();
        assert_eq!(f.utc_offset_seconds(clock.now()), 3600);
        let a = write(&mut f, &clock, "a");
        assert!(a.starts_with("[2026-03-28 23:30:00,000]"), "{a}");
        // Still the 28th in UTC, already the 29th in Berlin: a new day.
        clock.set("2026-03-28T23:30:00Z");
        let b = write(&mut f, &clock, "b");
        assert!(b.starts_with("[2026-03-29 00:30:00,000]"), "{b}");
        // Summer time begins at 01:00 UTC that night; no second roll on the same day.
        clock.set("2026-03-29T09:00:00Z");
        let c = write(&mut f, &clock, "c");
        if f.utc_offset_seconds(clock.now()) != 3600 {
            assert_eq!(f.utc_offset_seconds(clock.now()), 7200);
            assert!(c.starts_with("[2026-03-29 11:00:00,000]"), "{c}");
        }
        f.flush_sync().unwrap();
        assert_eq!(
            files(dir.path()),
            [("audit-03-28-2026.log".to_string(), a), ("audit.log".to_string(), b + &c)]
        );
    }

    #[test]
    fn an_empty_file_is_not_rolled_when_the_day_changes() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-03-27T10:00:00Z");
        let mut f = RollingFile::open(config(dir.path()), clock.clone()).unwrap();
        clock.set("2026-03-29T10:00:00Z");
        let a = write(&mut f, &clock, "a");
        clock.set("2026-03-30T10:00:00Z");
        let b = write(&mut f, &clock, "b");
        assert_eq!(
            files(dir.path()),
            [("audit-03-29-2026.log".to_string(), a), ("audit.log".to_string(), b)]
        );
    }

    #[test]
    fn rolls_by_size_and_at_midnight_on_the_same_day() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut cfg = config(dir.path());
        cfg.max_size = 150; // each line is 56 bytes: two fit, a third rolls
        let mut f = RollingFile::open(cfg, clock.clone()).unwrap();
        let mut lines = Vec::new();
        for (i, text) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            clock.set(&format!("2026-07-01T08:00:0{i}Z"));
            lines.push(write(&mut f, &clock, text));
        }
        assert_eq!(lines[0].len(), 56);
        clock.set("2026-07-01T23:30:00Z"); // past midnight in Berlin, summer time or not
        let f1 = write(&mut f, &clock, "f");
        assert_eq!(
            files(dir.path()),
            [
                ("audit-07-01-2026-1.log".to_string(), lines[0].clone() + &lines[1]),
                ("audit-07-01-2026-2.log".to_string(), lines[2].clone() + &lines[3]),
                ("audit-07-01-2026.log".to_string(), lines[4].clone()),
                ("audit.log".to_string(), f1),
            ]
        );
    }

    #[test]
    fn a_line_larger_than_max_size_goes_into_a_file_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut cfg = config(dir.path());
        cfg.max_size = 10;
        let mut f = RollingFile::open(cfg, clock.clone()).unwrap();
        let a = write(&mut f, &clock, "a");
        let b = write(&mut f, &clock, "b");
        assert_eq!(
            files(dir.path()),
            [("audit-07-01-2026-1.log".to_string(), a), ("audit.log".to_string(), b)]
        );
    }

    #[test]
    fn keeps_at_most_max_files_deleting_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut cfg = config(dir.path());
        cfg.max_size = 120; // two lines per file
        cfg.max_files = 3;
        let mut f = RollingFile::open(cfg, clock.clone()).unwrap();
        // 1 July: a size roll (-1), then the midnight roll (plain name), which is the day's last.
        for text in ["a", "b", "c"] {
            write(&mut f, &clock, text);
        }
        clock.set("2026-07-02T08:00:00Z");
        for text in ["d", "e", "f", "g"] {
            write(&mut f, &clock, text);
        }
        assert_eq!(
            names(dir.path()),
            ["audit-07-01-2026-1.log", "audit-07-01-2026.log", "audit-07-02-2026-1.log", "audit.log"]
        );
        // A fourth roll deletes the oldest, the size roll of 1 July; a fifth its midnight roll.
        write(&mut f, &clock, "h");
        assert_eq!(
            names(dir.path()),
            ["audit-07-01-2026.log", "audit-07-02-2026-1.log", "audit-07-02-2026-2.log", "audit.log"]
        );
        write(&mut f, &clock, "i");
        write(&mut f, &clock, "j");
        assert_eq!(
            names(dir.path()),
            ["audit-07-02-2026-1.log", "audit-07-02-2026-2.log", "audit-07-02-2026-3.log", "audit.log"]
        );
    }

    fn roll_compressed(how: Compress) -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut cfg = config(dir.path());
        cfg.compress = how;
        let mut f = RollingFile::open(cfg, clock.clone()).unwrap();
        let mut original = String::new();
        for i in 0..2000 {
            original += &write(&mut f, &clock, &format!("event {i} \u{00e9}"));
        }
        clock.set("2026-07-02T08:00:00Z");
        let next = write(&mut f, &clock, "next day");
        (dir, original, next)
    }

    #[test]
    fn gzip_rolls_decompress_to_the_original_bytes() {
        let (dir, original, next) = roll_compressed(Compress::Gzip);
        assert_eq!(names(dir.path()), ["audit-07-01-2026.log.gz", "audit.log"]);
        let gz = fs::read(dir.path().join("audit-07-01-2026.log.gz")).unwrap();
        assert!(gz.len() < original.len() / 4);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, original);
        assert_eq!(fs::read_to_string(dir.path().join("audit.log")).unwrap(), next);
    }

    #[test]
    fn zstd_rolls_decompress_to_the_original_bytes() {
        let (dir, original, _) = roll_compressed(Compress::Zstd);
        assert_eq!(names(dir.path()), ["audit-07-01-2026.log.zst", "audit.log"]);
        let zst = fs::read(dir.path().join("audit-07-01-2026.log.zst")).unwrap();
        assert!(zst.len() < original.len() / 4);
        let mut back = String::new();
        ruzstd::decoding::StreamingDecoder::new(&zst[..]).unwrap().read_to_string(&mut back).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn reopen_follows_an_external_rename() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut f = RollingFile::open(config(dir.path()), clock.clone()).unwrap();
        let a = write(&mut f, &clock, "a");
        fs::rename(dir.path().join("audit.log"), dir.path().join("audit.log.1")).unwrap();
        // Until the reopen, lines follow the open file, as with log4j2.
        let b = write(&mut f, &clock, "b");
        f.reopen().unwrap();
        let c = write(&mut f, &clock, "c");
        assert_eq!(files(dir.path()), [("audit.log".to_string(), c), ("audit.log.1".to_string(), a + &b)]);
        // A reopen without a rename continues the same file and day.
        f.reopen().unwrap();
        write(&mut f, &clock, "d");
        assert_eq!(names(dir.path()), ["audit.log", "audit.log.1"]);
    }

    #[test]
    fn follow_path_writes_to_audit_log_or_nowhere() {
        let root = tempfile::tempdir().unwrap();
        let (dir, parked) = (root.path().join("logs"), root.path().join("parked"));
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut f = RollingFile::open(config(&dir), clock.clone()).unwrap();
        let a = write(&mut f, &clock, "a");
        // Moved away without a SIGHUP: the next lines go to a new audit.log, not after `a`.
        fs::rename(dir.join("audit.log"), dir.join("audit.log.1")).unwrap();
        f.follow_path().unwrap();
        let b = write(&mut f, &clock, "b");
        assert_eq!(files(&dir), [("audit.log".to_string(), b.clone()), ("audit.log.1".to_string(), a)]);
        // The directory gone: an error, and nothing written anywhere.
        fs::rename(&dir, &parked).unwrap();
        assert!(f.follow_path().is_err());
        assert_eq!(fs::read_to_string(parked.join("audit.log")).unwrap(), b);
        // Back again: the same file, continued.
        fs::rename(&parked, &dir).unwrap();
        f.follow_path().unwrap();
        let c = write(&mut f, &clock, "c");
        assert_eq!(fs::read_to_string(dir.join("audit.log")).unwrap(), b + &c);
        // Replaced by another file of the same name: that one is written.
        fs::remove_file(dir.join("audit.log")).unwrap();
        fs::write(dir.join("audit.log"), "").unwrap();
        f.follow_path().unwrap();
        let d = write(&mut f, &clock, "d");
        assert_eq!(fs::read_to_string(dir.join("audit.log")).unwrap(), d);
    }

    #[test]
    fn cut_to_reaches_a_file_moved_away() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut f = RollingFile::open(config(&dir), clock.clone()).unwrap();
        let a = write(&mut f, &clock, "a");
        let (dev, ino, len) = f.open_id().unwrap();
        assert_eq!(len, a.len() as u64);
        write(&mut f, &clock, "b");
        fs::rename(&dir, root.path().join("parked")).unwrap();
        f.cut_to((dev, ino), len).unwrap();
        assert_eq!(fs::read_to_string(root.path().join("parked/audit.log")).unwrap(), a);
        // Appends continue after the cut, at the cut.
        let c = write(&mut f, &clock, "c");
        assert_eq!(fs::read_to_string(root.path().join("parked/audit.log")).unwrap(), a.clone() + &c);
        // A file other than the saved one holds only unsaved lines: all of them go.
        f.cut_to((dev, ino.wrapping_add(1)), len).unwrap();
        assert_eq!(fs::read_to_string(root.path().join("parked/audit.log")).unwrap(), "");
    }

    #[test]
    fn a_roll_after_an_external_rename_without_reopen_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let cfg = RollingConfig { max_size: 60, ..config(dir.path()) };
        let mut f = RollingFile::open(cfg, clock.clone()).unwrap();
        let a = write(&mut f, &clock, "a");
        fs::rename(dir.path().join("audit.log"), dir.path().join("audit.log.1")).unwrap();
        let b = write(&mut f, &clock, "b");
        assert_eq!(files(dir.path()), [("audit.log".to_string(), b), ("audit.log.1".to_string(), a)]);
    }

    #[test]
    fn a_restart_on_a_later_day_rolls_the_old_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let mut f = RollingFile::open(config(dir.path()), clock.clone()).unwrap();
        let a = write(&mut f, &clock, "a");
        drop(f);
        clock.set("2026-07-03T08:00:00Z");
        let mut f = RollingFile::open(config(dir.path()), clock.clone()).unwrap();
        let b = write(&mut f, &clock, "b");
        assert_eq!(
            files(dir.path()),
            [("audit-07-01-2026.log".to_string(), a), ("audit.log".to_string(), b)]
        );
    }

    #[test]
    fn without_a_timestamp_the_files_day_is_its_modification_day() {
        let dir = tempfile::tempdir().unwrap();
        let active = dir.path().join("audit.log");
        fs::write(&active, "{\"json\":true}\n").unwrap();
        let mtime: Timestamp = "2026-06-30T23:30:00Z".parse().unwrap(); // 1 July in Berlin
        File::options().write(true).open(&active).unwrap().set_modified(mtime.into()).unwrap();
        let clock = ManualClock::at("2026-07-03T08:00:00Z");
        let mut f = RollingFile::open(config(dir.path()), clock.clone()).unwrap();
        write(&mut f, &clock, "b");
        assert_eq!(names(dir.path()), ["audit-07-01-2026.log", "audit.log"]);
    }

    #[test]
    fn open_finishes_what_a_crash_left() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A roll renamed but never compressed, with a partial temp file of its compression.
        fs::write(d.join("audit-06-29-2026.log"), "first\n").unwrap();
        fs::write(d.join("audit-06-29-2026.log.gz.tmp"), "partial").unwrap();
        // A roll compressed but whose uncompressed file was not yet removed.
        fs::write(d.join("audit-06-30-2026-1.log"), "second\n").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"second\n").unwrap();
        fs::write(d.join("audit-06-30-2026-1.log.gz"), gz.finish().unwrap()).unwrap();
        // Someone else's file is left alone.
        fs::write(d.join("audit-notes.txt.tmp"), "mine").unwrap();

        let clock = ManualClock::at("2026-07-01T08:00:00Z");
        let cfg = RollingConfig { compress: Compress::Gzip, ..config(d) };
        let mut f = RollingFile::open(cfg, clock.clone()).unwrap();
        assert_eq!(
            names(d),
            ["audit-06-29-2026.log.gz", "audit-06-30-2026-1.log.gz", "audit-notes.txt.tmp", "audit.log"]
        );
        let mut back = String::new();
        let gz = fs::read(d.join("audit-06-29-2026.log.gz")).unwrap();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, "first\n");
        write(&mut f, &clock, "a");
    }

    #[test]
    fn rolled_names_parse_back() {
        let day = Date::new(2026, 7, 1).unwrap();
        for (index, how) in [(None, Compress::None), (Some(1), Compress::Gzip), (Some(12), Compress::Zstd)] {
            let name = format!("{}{}", rolled_name("audit", day, index), how.extension());
            assert_eq!(
                parse_rolled("audit", &name),
                Some(Rolled { name: name.clone(), day, index, compress: how })
            );
        }
        for other in [
            "audit.log",
            "audit.log.1",
            "audit-07-01-2026.log.tmp",
            "audit-07-01-2026-.log",
            "audit-07-01-2026-+1.log",
            "audit-13-01-2026.log",
            "audit-07-01-2026x.log",
            "other-07-01-2026.log",
        ] {
            assert_eq!(parse_rolled("audit", other), None, "{other}");
        }
    }
}
