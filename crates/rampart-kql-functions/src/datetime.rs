//! Kusto's datetime and timespan functions, on microseconds since the epoch (UTC).
//!
//! Calendar parts follow Kusto: weeks start on Sunday, `week_of_year` is ISO 8601,
//! `datetime_diff` counts the period boundaries crossed between its arguments, and `bin` of a
//! datetime floors relative to the Unix epoch.

use chrono::{Datelike, Months, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{
    DurationMicrosecondType, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use datafusion::common::Result;

use crate::types::{US_PER_DAY, US_PER_HOUR, US_PER_MIN, US_PER_SEC, naive};
use crate::udf::{Call, Prims, Strs, prims, strings, timestamps};

type Times<'a> = Prims<'a, TimestampMicrosecondType>;
type Spans<'a> = Prims<'a, DurationMicrosecondType>;
type Longs<'a> = Prims<'a, Int64Type>;
type Reals<'a> = Prims<'a, Float64Type>;

fn micros(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp_micros()
}

fn add_months(t: NaiveDateTime, n: i64) -> Option<NaiveDateTime> {
    let m = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
    if n >= 0 {
        t.checked_add_months(m)
    } else {
        t.checked_sub_months(m)
    }
}

fn date_start(y: i32, m: u32, d: u32) -> Option<i64> {
    NaiveDate::from_ymd_opt(y, m, d)?
        .and_hms_opt(0, 0, 0)
        .map(micros)
}

/// A calendar period for `startof*` / `endof*`.
#[derive(Clone, Copy)]
enum Period {
    Day,
    Week,
    Month,
    Year,
}

/// The start of the period holding `us`, moved by `offset` periods.
fn start_of(p: Period, us: i64, offset: i64) -> Option<i64> {
    match p {
        Period::Day => Some(
            us.div_euclid(US_PER_DAY)
                .checked_add(offset)?
                .checked_mul(US_PER_DAY)?,
        ),
        Period::Week => {
            let t = naive(us)?;
            let since_sunday = i64::from(t.weekday().num_days_from_sunday());
            let day = us.div_euclid(US_PER_DAY) - since_sunday;
            day.checked_add(offset.checked_mul(7)?)?
                .checked_mul(US_PER_DAY)
        }
        Period::Month => {
            let t = naive(us)?;
            add_months(
                NaiveDate::from_ymd_opt(t.year(), t.month(), 1)?.and_hms_opt(0, 0, 0)?,
                offset,
            )
            .map(micros)
        }
        Period::Year => {
            let t = naive(us)?;
            let y = i32::try_from(i64::from(t.year()).checked_add(offset)?).ok()?;
            date_start(y, 1, 1)
        }
    }
}

fn period_kernel(c: &Call, p: Period, end: bool) -> Result<ArrayRef> {
    let t = Times::new(c.arg(0)?)?;
    let off = Longs::new(c.arg(1)?)?;
    Ok(timestamps(c.rows, |i| {
        let o = off.get(i).unwrap_or(0);
        if end {
            // The last microsecond of the period (Kusto: its last tick).
            start_of(p, t.get(i)?, o.checked_add(1)?).map(|s| s - 1)
        } else {
            start_of(p, t.get(i)?, o)
        }
    }))
}

pub fn k_startofday(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Day, false)
}
pub fn k_startofweek(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Week, false)
}
pub fn k_startofmonth(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Month, false)
}
pub fn k_startofyear(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Year, false)
}
pub fn k_endofday(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Day, true)
}
pub fn k_endofweek(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Week, true)
}
pub fn k_endofmonth(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Month, true)
}
pub fn k_endofyear(c: &Call) -> Result<ArrayRef> {
    period_kernel(c, Period::Year, true)
}

/// A named datetime part (`datetime_part`, `datetime_add`, `datetime_diff`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    Year,
    Quarter,
    Month,
    Week,
    Day,
    DayOfYear,
    Hour,
    Minute,
    Second,
    Millisecond,
    Microsecond,
    Nanosecond,
}

impl Part {
    pub fn parse(s: &str) -> Option<Part> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "year" => Part::Year,
            "quarter" => Part::Quarter,
            "month" => Part::Month,
            "week" | "week_of_year" | "weekofyear" => Part::Week,
            "day" => Part::Day,
            "dayofyear" => Part::DayOfYear,
            "hour" => Part::Hour,
            "minute" => Part::Minute,
            "second" => Part::Second,
            "millisecond" => Part::Millisecond,
            "microsecond" => Part::Microsecond,
            "nanosecond" => Part::Nanosecond,
            _ => return None,
        })
    }

    /// The length of a fixed-length part, in microseconds.
    fn fixed_us(self) -> Option<i64> {
        Some(match self {
            Part::Week => 7 * US_PER_DAY,
            Part::Day | Part::DayOfYear => US_PER_DAY,
            Part::Hour => US_PER_HOUR,
            Part::Minute => US_PER_MIN,
            Part::Second => US_PER_SEC,
            Part::Millisecond => 1_000,
            Part::Microsecond => 1,
            _ => return None,
        })
    }
}

/// The value of `part` in the datetime `us`.
fn part_of(part: Part, us: i64) -> Option<i64> {
    let t = naive(us)?;
    let frac = us.rem_euclid(US_PER_SEC);
    Some(match part {
        Part::Year => i64::from(t.year()),
        Part::Quarter => i64::from((t.month() - 1) / 3 + 1),
        Part::Month => i64::from(t.month()),
        Part::Week => i64::from(t.iso_week().week()),
        Part::Day => i64::from(t.day()),
        Part::DayOfYear => i64::from(t.ordinal()),
        Part::Hour => i64::from(t.hour()),
        Part::Minute => i64::from(t.minute()),
        Part::Second => i64::from(t.second()),
        Part::Millisecond => frac / 1_000,
        Part::Microsecond => frac,
        Part::Nanosecond => frac * 1_000,
    })
}

fn part_kernel(c: &Call, part: Part) -> Result<ArrayRef> {
    let t = Times::new(c.arg(0)?)?;
    Ok(prims::<Int32Type>(c.rows, |i| {
        part_of(part, t.get(i)?).and_then(|v| i32::try_from(v).ok())
    }))
}

pub fn k_getyear(c: &Call) -> Result<ArrayRef> {
    part_kernel(c, Part::Year)
}
pub fn k_getmonth(c: &Call) -> Result<ArrayRef> {
    part_kernel(c, Part::Month)
}
pub fn k_dayofmonth(c: &Call) -> Result<ArrayRef> {
    part_kernel(c, Part::Day)
}
pub fn k_dayofyear(c: &Call) -> Result<ArrayRef> {
    part_kernel(c, Part::DayOfYear)
}
pub fn k_hourofday(c: &Call) -> Result<ArrayRef> {
    part_kernel(c, Part::Hour)
}
pub fn k_week_of_year(c: &Call) -> Result<ArrayRef> {
    part_kernel(c, Part::Week)
}

/// `datetime_part(part, datetime)`.
pub fn k_datetime_part(c: &Call) -> Result<ArrayRef> {
    let p = Strs::new(c.arg(0)?)?;
    let t = Times::new(c.arg(1)?)?;
    Ok(prims::<Int32Type>(c.rows, |i| {
        part_of(Part::parse(p.get(i)?)?, t.get(i)?).and_then(|v| i32::try_from(v).ok())
    }))
}

/// `dayofweek(datetime)`: the days since the preceding Sunday, as a timespan.
pub fn k_dayofweek(c: &Call) -> Result<ArrayRef> {
    let t = Times::new(c.arg(0)?)?;
    Ok(prims::<DurationMicrosecondType>(c.rows, |i| {
        let d = naive(t.get(i)?)?.weekday().num_days_from_sunday();
        Some(i64::from(d) * US_PER_DAY)
    }))
}

/// `datetime_add(part, amount, datetime)`: months and years move on the calendar (clamping
/// the day to the month's end), other parts by their fixed length.
pub fn k_datetime_add(c: &Call) -> Result<ArrayRef> {
    let p = Strs::new(c.arg(0)?)?;
    let n = Longs::new(c.arg(1)?)?;
    let t = Times::new(c.arg(2)?)?;
    Ok(timestamps(c.rows, |i| {
        let part = Part::parse(p.get(i)?)?;
        let n = n.get(i)?;
        let us = t.get(i)?;
        match part {
            Part::Year => add_months(naive(us)?, n.checked_mul(12)?).map(micros),
            Part::Quarter => add_months(naive(us)?, n.checked_mul(3)?).map(micros),
            Part::Month => add_months(naive(us)?, n).map(micros),
            Part::Nanosecond => us.checked_add(n / 1_000),
            other => us.checked_add(n.checked_mul(other.fixed_us()?)?),
        }
    }))
}

/// `datetime_diff(part, dt1, dt2)`: the number of `part` boundaries from `dt2` to `dt1`.
pub fn k_datetime_diff(c: &Call) -> Result<ArrayRef> {
    let p = Strs::new(c.arg(0)?)?;
    let a = Times::new(c.arg(1)?)?;
    let b = Times::new(c.arg(2)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        let part = Part::parse(p.get(i)?)?;
        let (x, y) = (a.get(i)?, b.get(i)?);
        let (tx, ty) = (naive(x)?, naive(y)?);
        let months = |t: NaiveDateTime| i64::from(t.year()) * 12 + i64::from(t.month0());
        match part {
            Part::Year => Some(i64::from(tx.year()) - i64::from(ty.year())),
            Part::Quarter => Some(months(tx).div_euclid(3) - months(ty).div_euclid(3)),
            Part::Month => Some(months(tx) - months(ty)),
            Part::Week => Some(
                (start_of(Period::Week, x, 0)? - start_of(Period::Week, y, 0)?) / (7 * US_PER_DAY),
            ),
            Part::Nanosecond => x.checked_sub(y)?.checked_mul(1_000),
            other => {
                let unit = other.fixed_us()?;
                Some(x.div_euclid(unit) - y.div_euclid(unit))
            }
        }
    }))
}

/// `make_datetime(year, month, day[, hour, minute[, second]])`; seconds may have a fraction.
pub fn k_make_datetime(c: &Call) -> Result<ArrayRef> {
    let parts: Vec<Longs> = (0..5)
        .map(|k| c.arg(k).and_then(Longs::new))
        .collect::<Result<_>>()?;
    let sec = Reals::new(c.arg(5)?)?;
    Ok(timestamps(c.rows, |i| {
        let get = |k: usize, default: i64| {
            parts.get(k).map_or(Some(default), |p| match p {
                Prims::One(None) => Some(default),
                p => p.get(i),
            })
        };
        let y = i32::try_from(get(0, 1)?).ok()?;
        let m = u32::try_from(get(1, 1)?).ok()?;
        let d = u32::try_from(get(2, 1)?).ok()?;
        let h = get(3, 0)?;
        let mi = get(4, 0)?;
        let s = match sec {
            Prims::One(None) => 0.0,
            ref s => s.get(i)?,
        };
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0.0..60.0).contains(&s) {
            return None;
        }
        let base = date_start(y, m, d)?;
        Some(base + h * US_PER_HOUR + mi * US_PER_MIN + (s * 1e6).round() as i64)
    }))
}

/// `make_timespan(days, hours, minutes, seconds)` (missing leading parts are zero).
pub fn k_make_timespan(c: &Call) -> Result<ArrayRef> {
    let d = Longs::new(c.arg(0)?)?;
    let h = Longs::new(c.arg(1)?)?;
    let m = Longs::new(c.arg(2)?)?;
    let s = Reals::new(c.arg(3)?)?;
    Ok(prims::<DurationMicrosecondType>(c.rows, |i| {
        let us = d
            .get(i)?
            .checked_mul(US_PER_DAY)?
            .checked_add(h.get(i)?.checked_mul(US_PER_HOUR)?)?
            .checked_add(m.get(i)?.checked_mul(US_PER_MIN)?)?;
        let s = (s.get(i)? * 1e6).round();
        (s.is_finite() && s.abs() < 9e18)
            .then(|| us.checked_add(s as i64))
            .flatten()
    }))
}

/// `unixtime_*_todatetime`: argument 0 is the number, argument 1 the unit in microseconds.
pub fn k_unixtime(c: &Call) -> Result<ArrayRef> {
    let v = Reals::new(c.arg(0)?)?;
    let unit = Reals::new(c.arg(1)?)?;
    Ok(timestamps(c.rows, |i| {
        let us = (v.get(i)? * unit.get(i)?).floor();
        (us.is_finite() && us.abs() < 9.2e18).then_some(us as i64)
    }))
}

/// `bin` / `bin_at` on integers (and on datetimes and timespans as microseconds):
/// `at + floor((v - at) / size) * size`; a size that is not positive gives null.
pub fn k_bin_long(c: &Call) -> Result<ArrayRef> {
    let v = Longs::new(c.arg(0)?)?;
    let size = Longs::new(c.arg(1)?)?;
    let at = Longs::new(c.arg(2)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        let r = size.get(i).filter(|r| *r > 0)?;
        let a = at.get(i).unwrap_or(0);
        let d = v.get(i)?.checked_sub(a)?;
        d.div_euclid(r).checked_mul(r)?.checked_add(a)
    }))
}

/// `bin` / `bin_at` on reals.
pub fn k_bin_real(c: &Call) -> Result<ArrayRef> {
    let v = Reals::new(c.arg(0)?)?;
    let size = Reals::new(c.arg(1)?)?;
    let at = Reals::new(c.arg(2)?)?;
    Ok(prims::<Float64Type>(c.rows, |i| {
        let r = size.get(i).filter(|r| *r > 0.0)?;
        let a = at.get(i).unwrap_or(0.0);
        Some(((v.get(i)? - a) / r).floor() * r + a)
    }))
}

const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Runs of one format letter (`yyyy`, `MM`, ...) and the literal text between them.
fn format_tokens(fmt: &str) -> Vec<(char, usize)> {
    let mut out: Vec<(char, usize)> = Vec::new();
    for ch in fmt.chars() {
        match out.last_mut() {
            Some((c, n)) if *c == ch && ch.is_ascii_alphabetic() => *n += 1,
            _ => out.push((ch, 1)),
        }
    }
    out
}

/// Writes `n` fraction digits of the 7-digit tick fraction; `trim` drops trailing zeros (and
/// the separator before an empty fraction), as `F` does.
fn push_fraction(out: &mut String, ticks: i64, n: usize, trim: bool) {
    let digits = format!("{ticks:07}");
    let mut part = digits.get(..n.min(7)).unwrap_or("").to_string();
    if trim {
        while part.ends_with('0') {
            part.pop();
        }
        if part.is_empty() && out.ends_with('.') {
            out.pop();
        }
    }
    out.push_str(&part);
}

/// Kusto's `format_datetime` specifiers: d, dd, ddd, dddd, f…, F…, h, hh, H, HH, m, mm, M,
/// MM, MMM, MMMM, s, ss, y, yy, yyyy, tt; anything else is copied.
pub fn format_datetime_with(us: i64, fmt: &[(char, usize)]) -> Option<String> {
    let t = naive(us)?;
    let ticks = us.rem_euclid(US_PER_SEC) * 10;
    let mut out = String::new();
    for &(ch, n) in fmt {
        let pad = |v: i64, w: usize| format!("{v:0w$}");
        match (ch, n) {
            ('d', 1 | 2) => out.push_str(&pad(i64::from(t.day()), n)),
            ('d', 3) => out.push_str(
                DAY_NAMES
                    .get(t.weekday().num_days_from_sunday() as usize)?
                    .get(..3)?,
            ),
            ('d', _) => out.push_str(DAY_NAMES.get(t.weekday().num_days_from_sunday() as usize)?),
            ('f', _) => push_fraction(&mut out, ticks, n, false),
            ('F', _) => push_fraction(&mut out, ticks, n, true),
            ('h', _) => {
                let h = match t.hour() % 12 {
                    0 => 12,
                    h => h,
                };
                out.push_str(&pad(i64::from(h), n.min(2)));
            }
            ('H', _) => out.push_str(&pad(i64::from(t.hour()), n.min(2))),
            ('m', _) => out.push_str(&pad(i64::from(t.minute()), n.min(2))),
            ('M', 1 | 2) => out.push_str(&pad(i64::from(t.month()), n)),
            ('M', 3) => out.push_str(MONTH_NAMES.get(t.month0() as usize)?.get(..3)?),
            ('M', _) => out.push_str(MONTH_NAMES.get(t.month0() as usize)?),
            ('s', _) => out.push_str(&pad(i64::from(t.second()), n.min(2))),
            ('y', 1) => out.push_str(&(i64::from(t.year()) % 100).to_string()),
            ('y', 2) => out.push_str(&pad(i64::from(t.year()) % 100, 2)),
            ('y', _) => out.push_str(&pad(i64::from(t.year()), n)),
            ('t', _) => out.push_str(if t.hour() < 12 { "AM" } else { "PM" }.get(..n.min(2))?),
            (c, n) => out.extend(std::iter::repeat_n(c, n)),
        }
    }
    Some(out)
}

/// `format_timespan(timespan, format)`: d…, h/hh, H/HH, m/mm, s/ss, f…, F….
pub fn format_timespan_with(us: i64, fmt: &[(char, usize)]) -> String {
    let a = us.unsigned_abs();
    let day = US_PER_DAY.unsigned_abs();
    let days = a / day;
    let rest = a % day;
    let h = rest / US_PER_HOUR.unsigned_abs();
    let m = rest % US_PER_HOUR.unsigned_abs() / US_PER_MIN.unsigned_abs();
    let s = rest % US_PER_MIN.unsigned_abs() / US_PER_SEC.unsigned_abs();
    let ticks = i64::try_from(rest % US_PER_SEC.unsigned_abs() * 10).unwrap_or(0);
    let mut out = String::new();
    if us < 0 {
        out.push('-');
    }
    for &(ch, n) in fmt {
        match ch {
            'd' => out.push_str(&format!("{days:0n$}")),
            'h' | 'H' => out.push_str(&format!("{h:0w$}", w = n.min(2))),
            'm' => out.push_str(&format!("{m:0w$}", w = n.min(2))),
            's' => out.push_str(&format!("{s:0w$}", w = n.min(2))),
            'f' => push_fraction(&mut out, ticks, n, false),
            'F' => push_fraction(&mut out, ticks, n, true),
            c => out.extend(std::iter::repeat_n(c, n)),
        }
    }
    out
}

pub fn k_format_datetime(c: &Call) -> Result<ArrayRef> {
    let t = Times::new(c.arg(0)?)?;
    let f = Strs::new(c.arg(1)?)?;
    let mut cache: Option<(String, Vec<(char, usize)>)> = None;
    Ok(strings(c.rows, |i| {
        let fmt = f.get(i)?;
        if cache.as_ref().is_none_or(|(k, _)| k != fmt) {
            cache = Some((fmt.to_string(), format_tokens(fmt)));
        }
        format_datetime_with(t.get(i)?, &cache.as_ref()?.1)
    }))
}

pub fn k_format_timespan(c: &Call) -> Result<ArrayRef> {
    let t = Spans::new(c.arg(0)?)?;
    let f = Strs::new(c.arg(1)?)?;
    let mut cache: Option<(String, Vec<(char, usize)>)> = None;
    Ok(strings(c.rows, |i| {
        let fmt = f.get(i)?;
        if cache.as_ref().is_none_or(|(k, _)| k != fmt) {
            cache = Some((fmt.to_string(), format_tokens(fmt)));
        }
        Some(format_timespan_with(t.get(i)?, &cache.as_ref()?.1))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::parse_datetime;

    fn us(s: &str) -> i64 {
        parse_datetime(s).unwrap_or(i64::MIN)
    }

    #[test]
    fn periods_start_and_end() {
        // 2017-10-29 is a Sunday.
        let t = us("2017-11-01 13:14:15");
        assert_eq!(start_of(Period::Week, t, 0), Some(us("2017-10-29")));
        assert_eq!(start_of(Period::Month, t, 0), Some(us("2017-11-01")));
        assert_eq!(start_of(Period::Month, t, -11), Some(us("2016-12-01")));
        assert_eq!(start_of(Period::Year, t, 1), Some(us("2018-01-01")));
        assert_eq!(start_of(Period::Day, t, -1), Some(us("2017-10-31")));
        assert_eq!(
            start_of(Period::Day, us("1969-12-31 23:00"), 0),
            Some(us("1969-12-31"))
        );
    }

    #[test]
    fn parts_and_formats() {
        let t = us("2015-12-14 09:05:03.1234567");
        assert_eq!(part_of(Part::Quarter, t), Some(4));
        assert_eq!(part_of(Part::Week, t), Some(51));
        assert_eq!(part_of(Part::DayOfYear, t), Some(348));
        assert_eq!(part_of(Part::Millisecond, t), Some(123));
        let f = |s: &str| format_datetime_with(t, &format_tokens(s)).unwrap_or_default();
        assert_eq!(f("yyyy-MM-dd HH:mm:ss.fff"), "2015-12-14 09:05:03.123");
        assert_eq!(f("yy-M-d h:m:s tt"), "15-12-14 9:5:3 AM");
        assert_eq!(f("dddd, MMM d"), "Monday, Dec 14");
        assert_eq!(f("ss.FFFFFFF"), "03.123456");
        let whole = us("2015-12-14 09:05:03");
        assert_eq!(
            format_datetime_with(whole, &format_tokens("HH:mm:ss.FFF")).unwrap_or_default(),
            "09:05:03"
        );
        let span = 2 * US_PER_DAY + 3 * US_PER_HOUR + 4 * US_PER_MIN + 5 * US_PER_SEC + 600_000;
        assert_eq!(
            format_timespan_with(span, &format_tokens("d.hh:mm:ss.ff")),
            "2.03:04:05.60"
        );
        assert_eq!(
            format_timespan_with(-span, &format_tokens("hh:mm")),
            "-03:04"
        );
    }
}
