//! Calendar dates carried in YYMMDD AIs.

use std::fmt;

/// A calendar date (proleptic Gregorian); displays as `YYYY-MM-DD`.
///
/// Field order makes the derived `Ord` chronological, so expiry dates compare directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    /// Full year; parsed dates are always 2000–2099.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–31 (a `00` day in the barcode is already resolved to the month's last day).
    pub day: u8,
}

impl Date {
    /// The date, if `month` and `day` exist in `year`.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        (day >= 1 && day <= days_in_month(year, month)).then_some(Date { year, month, day })
    }

    /// Decodes GS1 `YYMMDD` with `YY` → 2000+YY and `DD = 00` → last day of the month.
    pub(crate) fn from_yymmdd(s: &str) -> Option<Date> {
        let &[y1, y2, m1, m2, d1, d2] = s.as_bytes() else {
            return None;
        };
        let year = 2000 + u16::from(two_digits(y1, y2)?);
        let month = two_digits(m1, m2)?;
        let day = two_digits(d1, d2)?;
        if day == 0 { Date::new(year, month, days_in_month(year, month)) } else { Date::new(year, month, day) }
    }

    /// `YYMMDD`; the century is dropped, which is lossless for years 2000–2099 only.
    pub(crate) fn to_yymmdd(self) -> String {
        format!("{:02}{:02}{:02}", self.year % 100, self.month, self.day)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn two_digits(tens: u8, ones: u8) -> Option<u8> {
    if tens.is_ascii_digit() && ones.is_ascii_digit() { Some((tens - b'0') * 10 + (ones - b'0')) } else { None }
}

fn is_leap(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days in `month` of `year`; 0 for a month that does not exist, so every day check fails.
fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}
