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
