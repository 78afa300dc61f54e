//! Reading dates the way catalogs and model metadata write them. Pure.

use aws_sdk_dynamodb::types::AttributeValue;
use lifecycle::events::parse_time;
use time::macros::format_description;
use time::{Date, OffsetDateTime, Time};

/// A training cutoff: an RFC 3339 time, or a date, which covers that whole day (an item created
/// on the snapshot date is in the snapshot).
pub fn parse_cutoff(raw: &str) -> Result<OffsetDateTime, String> {
    let raw = raw.trim();
    if let Ok(t) = parse_time(raw) {
        return Ok(t);
    }
    let date = parse_date(raw)
        .ok_or_else(|| format!("{raw:?} is neither a date (YYYY-MM-DD) nor an RFC 3339 time"))?;
    // The last instant of that day, without arithmetic that could pass the last representable
    // date (9999-12-31).
    Ok(date.with_time(Time::MAX).assume_utc())
}

fn parse_date(raw: &str) -> Option<Date> {
    Date::parse(raw, format_description!("[year]-[month]-[day]")).ok()
}

/// When an item was created: an ISO date or time (string), or epoch seconds or milliseconds
/// (number). `None` when the value cannot be read as a time.
pub fn parse_created(value: &AttributeValue) -> Option<OffsetDateTime> {
    match value {
        AttributeValue::S(s) => {
            let s = s.trim();
            parse_time(s)
                .ok()
                .or_else(|| parse_date(s).map(|d| d.with_time(Time::MIDNIGHT).assume_utc()))
        }
        AttributeValue::N(n) => {
            let v: f64 = n.parse().ok()?;
            // Below 10^11 is seconds (until the year 5138); above, milliseconds.
            let ms = if v.abs() < 1e11 { v * 1000.0 } else { v };
            // `as` saturates (NaN is 0); the product may not fit: no time, not a panic.
            let nanos = (ms as i128).checked_mul(1_000_000)?;
            OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
        }
        _ => None,
    }
}

/// The snapshot date of an export: the day the scan ran (UTC), `YYYY-MM-DD`.
pub fn snapshot_date(now: OffsetDateTime) -> String {
    let d = now.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn a_date_cutoff_covers_its_whole_day() {
        let c = parse_cutoff("2025-09-01").unwrap();
        assert!(parse_created(&s("2025-09-01T23:59:00Z")).unwrap() <= c);
        assert!(parse_created(&s("2025-09-02")).unwrap() > c);
        assert_eq!(
            parse_cutoff("2025-09-01T12:00:00.000+0000")
                .unwrap()
                .unix_timestamp(),
            1756728000
        );
        assert!(parse_cutoff("September").is_err());
    }

    #[test]
    fn created_times_come_in_several_shapes() {
        let t = parse_created(&s("2026-03-01T06:00:00Z")).unwrap();
        assert_eq!(
            parse_created(&AttributeValue::N("1772344800".into())),
            Some(t)
        );
        assert_eq!(
            parse_created(&AttributeValue::N("1772344800000".into())),
            Some(t)
        );
        assert_eq!(parse_created(&s("yesterday")), None);
        assert_eq!(parse_created(&AttributeValue::Bool(true)), None);
    }

    #[test]
    fn dates_at_the_edges_are_read_or_refused_never_a_panic() {
        assert!(parse_cutoff("9999-12-31").is_ok());
        assert!(parse_cutoff("0000-01-01").is_ok());
        assert!(parse_cutoff("10000-01-01").is_err());
        assert!(
            parse_cutoff("２０２５-０９-０１").is_err(),
            "full-width digits"
        );
        assert!(parse_cutoff("2025-09-01T12:00:00.000+0900").is_ok());
        assert!(parse_cutoff("日付+0900").is_err());
        for n in [
            "1e300",
            "-1e300",
            "NaN",
            "inf",
            "253402300800",
            "-62167219201",
            "1e19",
        ] {
            let _ = parse_created(&AttributeValue::N(n.into()));
        }
        assert_eq!(parse_created(&AttributeValue::N("1e300".into())), None);
        assert_eq!(
            parse_created(&s("9999-12-31T23:59:59Z")).map(|t| t.year()),
            Some(9999)
        );
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics(raw in "\\PC{0,40}") {
            let _ = parse_cutoff(&raw);
            let _ = parse_created(&s(&raw));
            let _ = parse_created(&AttributeValue::N(raw.clone()));
        }

        #[test]
        fn no_number_panics(v in proptest::num::f64::ANY, i in proptest::num::i128::ANY) {
            let _ = parse_created(&AttributeValue::N(v.to_string()));
            let _ = parse_created(&AttributeValue::N(i.to_string()));
        }

        #[test]
        fn every_written_date_is_read_or_refused(y in -99_999i32..=99_999, m in 0u8..=13, d in 0u8..=32) {
            for raw in [format!("{y:04}-{m:02}-{d:02}"), format!("{y:04}-{m:02}-{d:02}T23:59:59Z")] {
                if let Ok(t) = parse_cutoff(&raw) {
                    proptest::prop_assert_eq!(t.year(), y);
                }
            }
        }
    }

    #[test]
    fn the_snapshot_date_is_the_utc_day() {
        let t = parse_created(&s("2026-03-01T23:30:00-02:00")).unwrap();
        assert_eq!(snapshot_date(t), "2026-03-02");
    }
}
