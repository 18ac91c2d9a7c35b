//! Korea's calendar: birth dates and ages are civil dates in Korea Standard Time (UTC+9).
//!
//! PortOne's older records carry `birth` as the Unix time of 00:00 *in Korea* on the birth
//! date. Reading it in UTC (or the server's local zone) moves everyone born on 1 January into
//! the previous year — exactly the mistake an adult check cannot afford.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::Offset;

/// Korea Standard Time, UTC+9 (no daylight saving since 1988).
pub const KST: Offset = Offset::constant(9);

/// The calendar date in Korea at the instant `at`.
pub fn date_in_korea(at: Timestamp) -> Date {
    KST.to_datetime(at).date()
}

/// Today's date in Korea.
pub fn today_in_korea() -> Date {
    date_in_korea(Timestamp::now())
}

/// Converts PortOne's `birth` (Unix seconds of 00:00 KST on the birth date; negative before
/// 1970) to the birth date. `None` when the number is out of any plausible range.
pub fn birth_date_from_unix(seconds: i64) -> Option<Date> {
    Timestamp::from_second(seconds).ok().map(date_in_korea)
}

/// The earliest birth date taken from PortOne: 1900-01-01. An earlier one (e.g. `birth:
/// -99999999999`, the year −1199) is a broken record, not a person: it is unknown, so an age
/// rule refuses rather than admits.
pub const EARLIEST_BIRTH_DATE: Date = jiff::civil::date(1900, 1, 1);

/// How far in the future a verification's completion time may lie and still be taken, to
/// allow for the difference between PortOne's clock and this server's: 5 minutes. Later is
/// unknown, so `fresh_within` refuses.
pub const COMPLETION_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(300);

/// `birth` if it is a plausible birth date — from [`EARLIEST_BIRTH_DATE`] to today in Korea —
/// else `None`, with a WARN naming `field` (never the value).
pub(crate) fn plausible_birth_date(field: &str, birth: Date) -> Option<Date> {
    if (EARLIEST_BIRTH_DATE..=today_in_korea()).contains(&birth) {
        Some(birth)
    } else {
        tracing::warn!(
            field = %field,
            "PortOne sent a birth date outside 1900-01-01..=today; treating it as unknown"
        );
        None
    }
}

/// `at` if it is not later than now plus [`COMPLETION_CLOCK_SKEW`], else `None`, with a WARN
/// naming `field`.
pub(crate) fn plausible_completion(field: &str, at: Timestamp) -> Option<Timestamp> {
    let latest = Timestamp::now()
        .checked_add(COMPLETION_CLOCK_SKEW)
        .unwrap_or(Timestamp::MAX);
    if at <= latest {
        Some(at)
    } else {
        tracing::warn!(
            field = %field,
            "PortOne sent a completion time in the future; treating it as unknown"
        );
        None
    }
}

/// Full years between `birth` and `on`, by Korean civil law (민법 제158조, 제160조): a year is
/// complete at the end of the day before the anniversary, and someone born on 29 February
/// turns a year older on 1 March in common years. Negative when `on` precedes `birth`.
pub fn full_years(birth: Date, on: Date) -> i32 {
    let mut years = i32::from(on.year()) - i32::from(birth.year());
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn birth_is_midnight_in_korea() {
        // The and PortOne's own examples.
        assert_eq!(birth_date_from_unix(946_652_400), Some(date(2000, 1, 1)));
        assert_eq!(birth_date_from_unix(325_695_600), Some(date(1980, 4, 28)));
        // Before 1970: 1969-12-31 00:00 KST = -32400 - 86400.
        assert_eq!(
            birth_date_from_unix(-32_400 - 86_400),
            Some(date(1969, 12, 31))
        );
        assert_eq!(birth_date_from_unix(-32_400), Some(date(1970, 1, 1)));
        assert_eq!(birth_date_from_unix(i64::MAX), None);
    }

    #[test]
    fn implausible_dates_are_unknown() {
        assert_eq!(plausible_birth_date("b", date(1899, 12, 31)), None);
        assert_eq!(
            plausible_birth_date("b", date(1900, 1, 1)),
            Some(date(1900, 1, 1))
        );
        let tomorrow = today_in_korea().tomorrow().unwrap();
        assert_eq!(plausible_birth_date("b", tomorrow), None);
        assert_eq!(
            plausible_birth_date("b", today_in_korea()),
            Some(today_in_korea())
        );
        // `birth: -99999999999` is a date, but not a birth date.
        let ancient = birth_date_from_unix(-99_999_999_999).unwrap();
        assert!(ancient.year() < 0);
        assert_eq!(plausible_birth_date("birth", ancient), None);
        let now = Timestamp::now();
        assert_eq!(plausible_completion("c", now), Some(now));
        let skewed = now + jiff::SignedDuration::from_secs(60);
        assert_eq!(plausible_completion("c", skewed), Some(skewed));
        let later = now + jiff::SignedDuration::from_secs(3600);
        assert_eq!(plausible_completion("c", later), None);
    }

    #[test]
    fn leap_day_birthdays_turn_on_first_of_march() {
        let birth = date(2004, 2, 29);
        assert_eq!(full_years(birth, date(2023, 2, 28)), 18);
        assert_eq!(full_years(birth, date(2023, 3, 1)), 19);
        assert_eq!(full_years(birth, date(2024, 2, 28)), 19);
        assert_eq!(full_years(birth, date(2024, 2, 29)), 20);
    }

    #[test]
    fn birthday_itself_completes_the_year() {
        let birth = date(2007, 11, 25);
        assert_eq!(full_years(birth, date(2026, 11, 24)), 18);
        assert_eq!(full_years(birth, date(2026, 11, 25)), 19);
    }
}
