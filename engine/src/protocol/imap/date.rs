//! IMAP dates: `date` for SEARCH (`1-Feb-1994`, RFC 3501 section 9) and
//! `date-time` for APPEND and INTERNALDATE (`"26-Nov-2026 15:43:52 +0000"`).
//! Pure arithmetic over the proleptic Gregorian calendar in [`crate::util`];
//! nothing here reads the clock.

use crate::util::{civil_from_days, days_from_civil};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A calendar date (SEARCH BEFORE/ON/SINCE and the SENT* keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Four-digit year.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=31, valid for the month.
    pub day: u8,
}

/// A `date-time` with its zone, as given by APPEND.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DateTime {
    /// The local date.
    pub date: Date,
    /// 0..=23.
    pub hour: u8,
    /// 0..=59.
    pub minute: u8,
    /// 0..=60 (a leap second is accepted and counted as :59 + 1).
    pub second: u8,
    /// Offset from UTC in minutes, e.g. -420 for `-0700`.
    pub zone_minutes: i16,
}

// `is_multiple_of` is newer than the workspace's minimum Rust (1.80).
#[allow(clippy::manual_is_multiple_of)]
fn month_len(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 4 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')))
}

impl Date {
    /// Build a date, checking the day against the month.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > month_len(year, month) {
            return None;
        }
        Some(Date { year, month, day })
    }

    /// Parse `date-text` (`d-Mon-yyyy` or `dd-Mon-yyyy`, month
    /// case-insensitive). A leading space (the `date-day-fixed` form) is
    /// accepted. The quoted form is handled by the command parser.
    pub fn parse(text: &[u8]) -> Option<Date> {
        let text = text.strip_prefix(b" ").unwrap_or(text);
        let mut it = text.split(|&b| b == b'-');
        let day = it.next()?;
        let mon = it.next()?;
        let year = it.next()?;
        if it.next().is_some() || day.len() > 2 || year.len() != 4 || mon.len() != 3 {
            return None;
        }
        let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u8 + 1;
        Date::new(digits(year)? as u16, month, digits(day)? as u8)
    }

    /// Days since 1970-01-01.
    pub fn days_since_epoch(&self) -> i64 {
        days_from_civil(
            i64::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )
    }

    /// The date of day `days` since 1970-01-01, if its year has four digits.
    pub fn from_days(days: i64) -> Option<Date> {
        let (y, m, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return None;
        }
        Some(Date {
            year: y as u16,
            month: m as u8,
            day: d as u8,
        })
    }
}

impl DateTime {
    /// Parse the inside of a quoted `date-time`:
    /// `date-day-fixed "-" date-month "-" date-year SP time SP zone`, e.g.
    /// `17-Jul-1996 02:44:25 -0700` or ` 7-Jul-1996 02:44:25 -0700`.
    /// A one-digit day without the padding space is accepted too.
    pub fn parse(text: &[u8]) -> Option<DateTime> {
        let text = text.strip_prefix(b" ").unwrap_or(text);
        let mut parts = text.split(|&b| b == b' ');
        let date = Date::parse(parts.next()?)?;
        let time = parts.next()?;
        let zone = parts.next()?;
        if parts.next().is_some() || time.len() != 8 || zone.len() != 5 {
            return None;
        }
        if time[2] != b':' || time[5] != b':' {
            return None;
        }
        let hour = digits(&time[0..2])? as u8;
        let minute = digits(&time[3..5])? as u8;
        let second = digits(&time[6..8])? as u8;
        if hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let sign: i16 = match zone[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let zh = digits(&zone[1..3])? as i16;
        let zm = digits(&zone[3..5])? as i16;
        if zm > 59 {
            return None;
        }
        Some(DateTime {
            date,
            hour,
            minute,
            second,
            zone_minutes: sign * (zh * 60 + zm),
        })
    }

    /// Seconds since the Unix epoch (UTC).
    pub fn unix_secs(&self) -> i64 {
        self.date.days_since_epoch() * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.zone_minutes) * 60
    }
}

/// Write `"dd-Mon-yyyy hh:mm:ss +zzzz"` (with the quotes) for `unix_secs`
/// shown in zone `zone_minutes`. The day is space-padded (RFC 3501
/// `date-day-fixed`): `" 1-Feb-1994 ..."`.
pub fn write_date_time(out: &mut Vec<u8>, unix_secs: i64, zone_minutes: i16) {
    let local = unix_secs + i64::from(zone_minutes) * 60;
    let days = local.div_euclid(86_400);
    let secs = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let sign = if zone_minutes < 0 { '-' } else { '+' };
    let z = i32::from(zone_minutes).abs();
    let s = format!(
        "\"{:>2}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}\"",
        d,
        std::str::from_utf8(MONTHS[(m - 1) as usize]).unwrap_or("Jan"),
        y.clamp(0, 9999),
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60,
        sign,
        z / 60,
        z % 60
    );
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_dates() {
        assert_eq!(
            Date::parse(b"1-Feb-1994"),
            Some(Date {
                year: 1994,
                month: 2,
                day: 1
            })
        );
        assert_eq!(Date::parse(b"01-feb-1994"), Date::parse(b"1-FEB-1994"));
        assert_eq!(Date::parse(b"29-Feb-2024").map(|d| d.day), Some(29));
        for bad in [
            &b"29-Feb-2023"[..],
            b"32-Jan-2000",
            b"1-Foo-2000",
            b"1-Jan-94",
            b"",
            b"1-Jan-2000-",
        ] {
            assert!(Date::parse(bad).is_none());
        }
        let d = Date::parse(b"1-Jan-1970").unwrap();
        assert_eq!(d.days_since_epoch(), 0);
        assert_eq!(
            Date::from_days(d.days_since_epoch() + 31),
            Date::parse(b"1-Feb-1970")
        );
    }

    #[test]
    fn date_times() {
        // RFC 3501 section 6.3.11 example.
        let dt = DateTime::parse(b" 7-Feb-1994 21:52:25 -0800").unwrap();
        assert_eq!(dt.zone_minutes, -480);
        assert_eq!(dt.unix_secs(), 760_686_745);
        let mut out = Vec::new();
        write_date_time(&mut out, dt.unix_secs(), dt.zone_minutes);
        assert_eq!(out, b"\" 7-Feb-1994 21:52:25 -0800\"");
        out.clear();
        write_date_time(&mut out, 1_795_707_832, 0);
        assert_eq!(out, b"\"26-Nov-2026 15:43:52 +0000\"");
        assert!(DateTime::parse(b"7-Feb-1994 24:00:00 +0000").is_none());
        assert!(DateTime::parse(b"7-Feb-1994 21:52:25 0800").is_none());
        assert!(DateTime::parse(b"7-Feb-1994 21:52:25").is_none());
    }
}
