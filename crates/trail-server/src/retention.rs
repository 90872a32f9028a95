//! The retention job (PRODUCT.md §8): moves each org's months that lie wholly before its hot window into
//! archive parts, removes them from the hot store, and deletes parts older than hot + archive days
//! unless the org is under legal hold.
//!
//! Crash safety comes from the order of steps, each idempotent: (1) write every part of the month,
//! data before manifest, and read each back against its signed manifest; (2) remove parts a previous,
//! interrupted attempt left for the same events; (3) prune the month from the hot store, which the
//! store refuses unless it still holds exactly the events archived. An interruption before (3) leaves
//! the events hot and the rerun rewrites the same parts; after (3) they are archived exactly once.
//! Deletion removes a part's data before its manifest, and a rerun finishes what is left.
//!
//! The hot store keeps whole months: an event leaves it with the first pass after its month has wholly
//! passed out of the hot window, so removal is a partition drop. Queries see exactly `hot_days`.

use std::sync::Arc;

use serde::Serialize;
use trail_merkle::Signer;
use trail_model::time::{MICROS_PER_DAY, Micros, month_start, next_month, now};
use trail_store::{MonthSummary, OrgSettings, Store, StoreError};

use crate::archive::{self, Archive, ArchiveError, PART_EVENTS};
use crate::settings::RetentionSettings;

/// The range Audit Logs opens with unless an org chooses another.
pub const DEFAULT_RANGE: &str = "24h";

/// An org's effective retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub hot_days: u32,
    pub archive_days: u32,
    pub legal_hold: bool,
    /// Whether reads of the log are recorded in it (on unless the org turned it off).
    pub read_audit: bool,
    /// The range the console's Audit Logs page opens with (`24h` unless the org chose another).
    pub default_range: &'static str,
}

impl Policy {
    pub fn of(defaults: &RetentionSettings, org: Option<&OrgSettings>) -> Self {
        match org {
            Some(s) => Self {
                hot_days: s.hot_days,
                archive_days: s.archive_days,
                legal_hold: s.legal_hold,
                read_audit: s.read_audit,
                default_range: s
                    .default_range
                    .as_deref()
                    .and_then(crate::routes::bodies::RangeName::parse)
                    .map_or(DEFAULT_RANGE, |r| r.as_str()),
            },
            None => Self {
                hot_days: defaults.hot_days,
                archive_days: defaults.archive_days,
                legal_hold: false,
                read_audit: true,
                default_range: DEFAULT_RANGE,
            },
        }
    }

    /// The oldest queryable instant.
    pub fn hot_start(&self, now: Micros) -> Micros {
        now - i64::from(self.hot_days) * MICROS_PER_DAY
    }

    /// Archive parts of months ending at or before this instant are deleted.
    pub fn delete_before(&self, now: Micros) -> Micros {
        now - (i64::from(self.hot_days) + i64::from(self.archive_days)) * MICROS_PER_DAY
    }
}

/// The points between a pass's steps, where tests interrupt it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// One part's data and manifest are stored and checked.
    PartWritten,
    /// Every part of a month is stored; leftovers of an earlier attempt not yet removed.
    MonthWritten,
    /// Leftovers removed; the hot copy not yet pruned.
    LeftoversRemoved,
    /// The month is pruned from the hot store.
    Pruned,
    /// One expired part's data is deleted, its manifest not yet.
    DataDeleted,
}

/// Interrupts a pass at a step by returning an error (tests); `None` runs through.
pub type Hook = Arc<dyn Fn(Step) -> Result<(), String> + Send + Sync>;

/// What can stop a pass. Everything done before it stays consistent (see the module doc).
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("interrupted: {0}")]
    Interrupted(String),
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// `org/YYYY-MM` of every month moved to the archive.
    pub archived_months: Vec<String>,
    pub archived_events: u64,
    pub parts_written: u64,
    /// Expired parts deleted, and the events they held.
    pub deleted_parts: u64,
    pub deleted_events: u64,
    /// Orgs whose expired parts were kept because of a legal hold.
    pub held: Vec<String>,
}

/// Everything a pass needs.
#[derive(Clone)]
pub struct Retention {
    pub store: Arc<dyn Store>,
    pub archive: Archive,
    pub signer: Arc<Signer>,
    pub server_name: String,
    pub defaults: RetentionSettings,
    /// Events per archive part ([`PART_EVENTS`]; tests use small parts).
    pub part_events: usize,
    pub hook: Option<Hook>,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention").field("archive", &self.archive.location()).finish_non_exhaustive()
    }
}

impl Retention {
    pub fn new(
        store: Arc<dyn Store>,
        archive: Archive,
        signer: Arc<Signer>,
        server_name: &str,
        defaults: RetentionSettings,
    ) -> Self {
        Self {
            store,
            archive,
            signer,
            server_name: server_name.to_string(),
            defaults,
            part_events: PART_EVENTS,
            hook: None,
        }
    }

    fn at(&self, step: Step) -> Result<(), RetentionError> {
        match &self.hook {
            Some(h) => h(step).map_err(RetentionError::Interrupted),
            None => Ok(()),
        }
    }

    /// One pass over every org as of `now`.
    pub async fn run_pass(&self, now: Micros) -> Result<Report, RetentionError> {
        // Every part names a signed checkpoint covering its events: sign whatever is unsigned first.
        crate::integrity::checkpoint_once(self.store.as_ref(), &self.signer, &self.server_name).await?;
        let mut report = Report::default();
        for org in self.store.orgs().await? {
            let policy = Policy::of(&self.defaults, self.store.org_settings(&org.slug).await?.as_ref());
            let hot_start = policy.hot_start(now);
            for month in self.store.event_months(&org.slug).await? {
                if month_start(next_month(month)) > hot_start {
                    break;
                }
                let n = self.archive_month(&org.slug, month, now, &mut report).await?;
                report.archived_events += n;
                report.archived_months.push(format!("{}/{:04}-{:02}", org.slug, month / 100, month % 100));
            }
            self.expire(&org.slug, policy, now, &mut report).await?;
        }
        Ok(report)
    }

    /// Archives one month of one org and prunes it; returns the number of events.
    async fn archive_month(
        &self,
        org: &str,
        month: u32,
        now: Micros,
        report: &mut Report,
    ) -> Result<u64, RetentionError> {
        let checkpoint = self.store.latest_checkpoint(org).await?.ok_or_else(|| {
            StoreError::Internal(format!("organization {org} has events but no checkpoint"))
        })?;
        let verifier = self.signer.verifier();
        let mut written: Vec<String> = Vec::new();
        let mut seqs: Vec<u64> = Vec::new();
        let mut after = None;
        loop {
            let records = self.store.month_events(org, month, after, self.part_events.max(1)).await?;
            let Some(last) = records.last() else { break };
            if last.seq >= checkpoint.size {
                return Err(StoreError::Internal(format!(
                    "organization {org}: seq {} is not covered by the latest checkpoint yet",
                    last.seq
                ))
                .into());
            }
            after = Some(last.seq);
            let (entry, data) =
                archive::build_part(org, month, &records, &checkpoint.note, &self.signer, now)?;
            self.archive.put(&entry, data).await?;
            // Read back what the archive holds before anything relies on it.
            let stored = self.archive.data(&entry).await?;
            let events = archive::check_part(&entry, &stored, Some(&verifier))?;
            if events.len() != records.len() || events.iter().zip(&records).any(|(a, b)| a.bytes != b.bytes) {
                return Err(ArchiveError::Invalid(format!(
                    "{}: read back differs from what was written",
                    entry.manifest_path
                ))
                .into());
            }
            seqs.extend(records.iter().map(|r| r.seq));
            written.push(entry.manifest_path);
            report.parts_written += 1;
            self.at(Step::PartWritten)?;
        }
        let Some(&last_seq) = seqs.last() else { return Ok(0) };
        self.at(Step::MonthWritten)?;
        // Parts an interrupted attempt wrote for these same (still hot) events, under other names.
        let period = format!("{:04}-{:02}", month / 100, month % 100);
        for entry in self.archive.list(Some(org)).await? {
            if entry.manifest.period == period
                && !written.contains(&entry.manifest_path)
                && seqs.binary_search(&entry.manifest.first_seq).is_ok()
            {
                tracing::info!(part = %entry.manifest_path, "removing a part left by an interrupted pass");
                self.archive.delete(&entry).await?;
            }
        }
        self.at(Step::LeftoversRemoved)?;
        self.store.prune_month(org, month, MonthSummary { count: seqs.len() as u64, last_seq }).await?;
        tracing::info!(org = %org, month, events = seqs.len(), "archived a month and removed it from the hot store");
        self.at(Step::Pruned)?;
        Ok(seqs.len() as u64)
    }

    /// Deletes the org's parts past its archive retention, unless it is under legal hold.
    async fn expire(
        &self,
        org: &str,
        policy: Policy,
        now: Micros,
        report: &mut Report,
    ) -> Result<(), RetentionError> {
        let cutoff = policy.delete_before(now);
        let expired: Vec<_> = self
            .archive
            .list(Some(org))
            .await?
            .into_iter()
            .filter(|e| {
                e.manifest.org == org
                    && e.manifest.month().is_some_and(|m| month_start(next_month(m)) <= cutoff)
            })
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        if policy.legal_hold {
            report.held.push(org.to_string());
            return Ok(());
        }
        for entry in expired {
            self.archive.delete_data(&entry).await?;
            self.at(Step::DataDeleted)?;
            self.archive.delete(&entry).await?;
            report.deleted_parts += 1;
            report.deleted_events += entry.manifest.row_count;
            tracing::info!(part = %entry.manifest_path, "deleted an archive part past its retention");
        }
        Ok(())
    }
}

/// Runs a pass every `retention.interval_secs` until the task is dropped.
pub async fn run_job(retention: Retention, interval_secs: u64, metrics: Arc<crate::metrics::Metrics>) {
    if interval_secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = retention.run_pass(now()).await;
        metrics.retention_ran(result.is_ok(), now());
        match result {
            Ok(r) if r.archived_events > 0 || r.deleted_parts > 0 => tracing::info!(
                archived_events = r.archived_events,
                parts_written = r.parts_written,
                deleted_parts = r.deleted_parts,
                "retention pass done"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention pass failed; it will be retried"),
        }
    }
}
