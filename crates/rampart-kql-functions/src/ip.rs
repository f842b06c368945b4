//! Kusto's IPv4/IPv6 functions. Addresses may carry a `/prefix`; comparisons use the shortest
//! prefix among the arguments. Text that is not an address gives null.

use std::net::{Ipv4Addr, Ipv6Addr};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::Result;

use crate::json::dyn_value;
use crate::udf::{Call, Prims, Strs, bools, prims, strings};

/// An IPv4 address with its prefix length (32 when none is written).
pub fn parse_v4(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, p.trim().parse::<u32>().ok().filter(|p| *p <= 32)?),
        None => (s, 32),
    };
    let ip: Ipv4Addr = addr.trim().parse().ok()?;
    Some((u32::from(ip), prefix))
}

fn mask4(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0)
}

/// `parse_ipv4`: the address (masked by its prefix) as a long.
pub fn k_parse_ipv4(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        let (ip, p) = parse_v4(s.get(i)?)?;
        Some(i64::from(ip & mask4(p)))
    }))
}

/// `ipv4_netmask_suffix`.
pub fn k_ipv4_netmask_suffix(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        parse_v4(s.get(i)?).map(|(_, p)| i64::from(p))
    }))
}

/// `ipv4_is_private`: in 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (a range must lie
/// wholly inside one).
pub fn k_ipv4_is_private(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    const PRIVATE: [(u32, u32); 3] = [(0x0A00_0000, 8), (0xAC10_0000, 12), (0xC0A8_0000, 16)];
    Ok(bools(c.rows, |i| {
        let (ip, p) = parse_v4(s.get(i)?)?;
        Some(
            PRIVATE
                .iter()
                .any(|&(net, len)| p >= len && ip & mask4(len) == net),
        )
    }))
}

fn in_range(ip: (u32, u32), range: (u32, u32)) -> bool {
    let m = mask4(range.1.min(ip.1));
    ip.0 & m == range.0 & m
}

/// `ipv4_is_in_range(ip, range)`.
pub fn k_ipv4_is_in_range(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let r = Strs::new(c.arg(1)?)?;
    Ok(bools(c.rows, |i| {
        Some(in_range(parse_v4(s.get(i)?)?, parse_v4(r.get(i)?)?))
    }))
}

/// `ipv4_is_in_any_range(ip, range, ...)`: ranges may also come as dynamic arrays.
pub fn k_ipv4_is_in_any_range(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let ranges = c
        .args
        .iter()
        .skip(1)
        .map(Strs::new)
        .collect::<Result<Vec<_>>>()?;
    Ok(bools(c.rows, |i| {
        let ip = parse_v4(s.get(i)?)?;
        let mut any = false;
        for r in &ranges {
            let Some(text) = r.get(i) else { continue };
            let hit = match dyn_value(text) {
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|v| v.as_str().and_then(parse_v4))
                    .any(|range| in_range(ip, range)),
                _ => parse_v4(text).is_some_and(|range| in_range(ip, range)),
            };
            any |= hit;
        }
        Some(any)
    }))
}

fn compare4(i: usize, a: &Strs, b: &Strs, prefix: &Prims<Int64Type>) -> Option<std::cmp::Ordering> {
    let (x, px) = parse_v4(a.get(i)?)?;
    let (y, py) = parse_v4(b.get(i)?)?;
    let p = match prefix.get(i) {
        Some(p) => u32::try_from(p.clamp(0, 32)).ok()?,
        None => 32,
    };
    let m = mask4(p.min(px).min(py));
    Some((x & m).cmp(&(y & m)))
}

fn ordering_value(o: std::cmp::Ordering) -> i64 {
    match o {
        std::cmp::Ordering::Less => -1,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => 1,
    }
}

/// `ipv4_compare(a, b[, prefix])`: -1, 0 or 1.
pub fn k_ipv4_compare(c: &Call) -> Result<ArrayRef> {
    let a = Strs::new(c.arg(0)?)?;
    let b = Strs::new(c.arg(1)?)?;
    let p = Prims::<Int64Type>::new(c.arg(2)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        compare4(i, &a, &b, &p).map(ordering_value)
    }))
}

/// `ipv4_is_match(a, b[, prefix])`.
pub fn k_ipv4_is_match(c: &Call) -> Result<ArrayRef> {
    let a = Strs::new(c.arg(0)?)?;
    let b = Strs::new(c.arg(1)?)?;
    let p = Prims::<Int64Type>::new(c.arg(2)?)?;
    Ok(bools(c.rows, |i| {
        compare4(i, &a, &b, &p).map(|o| o.is_eq())
    }))
}

/// `format_ipv4(ip[, prefix])`: `ip` is text or a long (the planner passes text).
pub fn k_format_ipv4(c: &Call) -> Result<ArrayRef> {
    format4(c, false)
}

/// `format_ipv4_mask(ip[, prefix])`: the masked address with its prefix.
pub fn k_format_ipv4_mask(c: &Call) -> Result<ArrayRef> {
    format4(c, true)
}

fn format4(c: &Call, with_mask: bool) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let p = Prims::<Int64Type>::new(c.arg(1)?)?;
    Ok(strings(c.rows, |i| {
        let text = s.get(i)?;
        let (ip, own) = match text.trim().parse::<u32>() {
            Ok(v) => (v, 32),
            Err(_) => parse_v4(text)?,
        };
        let prefix = match p.get(i) {
            Some(v) => u32::try_from(v).ok().filter(|v| *v <= 32)?.min(own),
            None => own,
        };
        let addr = Ipv4Addr::from(ip & mask4(prefix));
        Some(if with_mask {
            format!("{addr}/{prefix}")
        } else {
            addr.to_string()
        })
    }))
}

/// An IPv6 address (IPv4 mapped into `::ffff:0:0/96`) with its prefix length.
fn parse_v6(s: &str) -> Option<(u128, u32)> {
    let s = s.trim();
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p.trim().parse::<u32>().ok()?)),
        None => (s, None),
    };
    if let Ok(v4) = addr.parse::<Ipv4Addr>() {
        let p = prefix.map_or(Some(128), |p| (p <= 32).then_some(p + 96))?;
        return Some((u128::from(v4.to_ipv6_mapped()), p));
    }
    let v6: Ipv6Addr = addr.parse().ok()?;
    let p = prefix.map_or(Some(128), |p| (p <= 128).then_some(p))?;
    Some((u128::from(v6), p))
}

fn mask6(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0)
}

fn compare6(i: usize, a: &Strs, b: &Strs, prefix: &Prims<Int64Type>) -> Option<std::cmp::Ordering> {
    let (x, px) = parse_v6(a.get(i)?)?;
    let (y, py) = parse_v6(b.get(i)?)?;
    let p = match prefix.get(i) {
        Some(p) => u32::try_from(p.clamp(0, 128)).ok()?,
        None => 128,
    };
    let m = mask6(p.min(px).min(py));
    Some((x & m).cmp(&(y & m)))
}

/// `ipv6_compare(a, b[, prefix])`.
pub fn k_ipv6_compare(c: &Call) -> Result<ArrayRef> {
    let a = Strs::new(c.arg(0)?)?;
    let b = Strs::new(c.arg(1)?)?;
    let p = Prims::<Int64Type>::new(c.arg(2)?)?;
    Ok(prims::<Int64Type>(c.rows, |i| {
        compare6(i, &a, &b, &p).map(ordering_value)
    }))
}

/// `ipv6_is_match(a, b[, prefix])`.
pub fn k_ipv6_is_match(c: &Call) -> Result<ArrayRef> {
    let a = Strs::new(c.arg(0)?)?;
    let b = Strs::new(c.arg(1)?)?;
    let p = Prims::<Int64Type>::new(c.arg(2)?)?;
    Ok(bools(c.rows, |i| {
        compare6(i, &a, &b, &p).map(|o| o.is_eq())
    }))
}

/// `has_ipv4(text, ip)`: the address appears in the text delimited by non-address characters.
pub fn k_has_ipv4(c: &Call) -> Result<ArrayRef> {
    let s = Strs::new(c.arg(0)?)?;
    let ip = Strs::new(c.arg(1)?)?;
    Ok(bools(c.rows, |i| {
        let needle = ip.get(i)?.trim();
        parse_v4(needle)?;
        let text = s.text(i);
        let b = text.as_bytes();
        let delim = |c: Option<&u8>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'.'));
        Some(text.match_indices(needle).any(|(at, m)| {
            delim(at.checked_sub(1).and_then(|j| b.get(j))) && delim(b.get(at + m.len()))
        }))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_parsing_and_ranges() {
        assert_eq!(parse_v4("127.0.0.1"), Some((0x7F00_0001, 32)));
        assert_eq!(parse_v4("10.1.2.3/8"), Some((0x0A01_0203, 8)));
        assert_eq!(parse_v4("10.1.2.3/33"), None);
        assert_eq!(parse_v4("300.1.1.1"), None);
        assert!(in_range((0x0A01_0203, 32), (0x0A00_0000, 8)));
        assert!(!in_range((0x0B01_0203, 32), (0x0A00_0000, 8)));
        assert_eq!(mask4(0), 0);
        assert_eq!(mask4(24), 0xFFFF_FF00);
        assert_eq!(parse_v6("::ffff:1.2.3.4"), parse_v6("1.2.3.4"));
        assert_eq!(mask6(0), 0);
    }
}
