//! Timestamps: Trail keeps every time as microseconds since the Unix epoch, UTC.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MICROS_PER_SECOND: Micros = 1_000_000;
pub const MICROS_PER_DAY: Micros = 86_400 * MICROS_PER_SECOND;

/// Parses an RFC 3339 timestamp (any offset) into UTC microseconds; sub-microsecond digits are truncated.
pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let micros = t.unix_timestamp_nanos() / 1_000;
    Micros::try_from(micros).ok()
}

/// Formats UTC microseconds as RFC 3339 with `Z`: milliseconds when that is exact, microseconds otherwise.
pub fn format_rfc3339(micros: Micros) -> String {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let sub = micros.rem_euclid(MICROS_PER_SECOND);
    let Ok(t) = OffsetDateTime::from_unix_timestamp(secs) else {
        return format!("invalid-time({micros})");
    };
    let frac = if sub % 1000 == 0 { format!("{:03}", sub / 1000) } else { format!("{sub:06}") };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{frac}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The UTC month (`year * 100 + month`, e.g. `202611`) a timestamp falls in; stores partition by it.
pub fn month_of(micros: Micros) -> u32 {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => (t.year().clamp(0, 9999) as u32) * 100 + u32::from(u8::from(t.month())),
        // Beyond the calendar's range: the first or the last month it has, on the instant's side (a
        // window ending at `i64::MAX` must not end before it starts).
        Err(_) if secs < 0 => 1,
        Err(_) => 999_912,
    }
}

/// The first microsecond of a month given as `year * 100 + month`.
pub fn month_start(month: u32) -> Micros {
    let year = (month / 100) as i32;
    let Ok(m) = time::Month::try_from((month % 100) as u8) else {
        return 0;
    };
    match time::Date::from_calendar_date(year, m, 1) {
        Ok(d) => d.midnight().assume_utc().unix_timestamp() * MICROS_PER_SECOND,
        Err(_) => 0,
    }
}

/// The month after `month` (`202612` → `202701`).
pub fn next_month(month: u32) -> u32 {
    if month % 100 >= 12 { (month / 100 + 1) * 100 + 1 } else { month + 1 }
}

/// The current time, for callers at the edge (the server, the CLI); the model itself never reads a clock.
pub fn now() -> Micros {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as Micros
}

#[cfg(test)]
mod tests {

    #[test]
    fn instants_beyond_the_calendar_fall_in_its_first_or_last_month() {
        assert_eq!(month_of(i64::MAX), 999_912);
        assert_eq!(month_of(i64::MIN), 1);
        assert!(month_of(i64::MIN) < month_of(0) && month_of(0) < month_of(i64::MAX));
    }

    use super::*;

    #[test]
    fn round_trips_milliseconds_and_microseconds() {
        let t = parse_rfc3339("2021-09-07T12:42:59.249Z").unwrap();
        assert_eq!(format_rfc3339(t), "2021-09-07T12:42:59.249Z");
        let t = parse_rfc3339("2021-09-07T14:42:59.249123+02:00").unwrap();
        assert_eq!(format_rfc3339(t), "2021-09-07T12:42:59.249123Z");
        assert_eq!(parse_rfc3339("2021-09-07 12:42:59"), None);
    }

    #[test]
    fn months() {
        let t = parse_rfc3339("2026-12-31T23:59:59.999Z").unwrap();
        assert_eq!(month_of(t), 202612);
        assert_eq!(next_month(202612), 202701);
        assert_eq!(month_start(202701), parse_rfc3339("2027-01-01T00:00:00Z").unwrap());
        assert_eq!(month_of(month_start(202701) - 1), 202612);
    }
}
