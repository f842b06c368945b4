//! Indicators of compromise (threat intelligence) with an action, a scope and an expiry.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::db::{
    Cols, FromRow, Order, Page, PageRequest, Scope, Sql, Time, exact, micros, now, str_enum,
    to_json,
};
use crate::validate::{body, group_ids, limits, line};
use crate::{Error, Result, Severity, StateDb, ids};

str_enum! {
    IndicatorKind {
        Sha1 = "sha1",
        Sha256 = "sha256",
        Md5 = "md5",
        Ip = "ip",
        Domain = "domain",
        Url = "url",
        /// A certificate thumbprint (SHA-1, as Windows shows it, or SHA-256).
        Cert = "cert",
    }
}

str_enum! {
    IndicatorAction {
        Alert = "alert",
        Block = "block",
        Allow = "allow",
    }
}

const URL_MAX_CHARS: usize = 2048;

impl IndicatorKind {
    /// Validates `value` for this kind and returns its canonical form (hashes and host names
    /// lowercased, IP addresses in standard notation, certificate thumbprints without
    /// separators), so equal indicators compare equal and the unique key holds. The detection
    /// pipeline normalises observed values the same way before matching.
    pub fn normalize(self, value: &str) -> Result<String> {
        let v = value.trim();
        match self {
            IndicatorKind::Md5 => hex_digest(v, &[32], "an MD5 (32 hex digits)"),
            IndicatorKind::Sha1 => hex_digest(v, &[40], "a SHA-1 (40 hex digits)"),
            IndicatorKind::Sha256 => hex_digest(v, &[64], "a SHA-256 (64 hex digits)"),
            IndicatorKind::Cert => hex_digest(
                &v.replace([':', ' '], ""),
                &[40, 64],
                "a certificate thumbprint (SHA-1 or SHA-256 in hex)",
            ),
            IndicatorKind::Ip => v
                .parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| Error::invalid("value", "expected an IPv4 or IPv6 address")),
            IndicatorKind::Domain => domain(v).ok_or_else(|| {
                Error::invalid("value", "expected a domain name such as example.com")
            }),
            IndicatorKind::Url => {
                url(v).ok_or_else(|| Error::invalid("value", "expected an http:// or https:// URL"))
            }
        }
    }
}

fn hex_digest(v: &str, lens: &[usize], expected: &str) -> Result<String> {
    if lens.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(Error::invalid("value", format!("expected {expected}")))
    }
}

/// Lowercased ASCII domain name of at least two labels; internationalised names must be given in
/// punycode (`xn--…`), the form they have on the wire.
fn domain(v: &str) -> Option<String> {
    let d = v.strip_suffix('.').unwrap_or(v).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = d.len() <= 253
        && d.split('.').count() >= 2
        && d.split('.').all(label_ok)
        && d.parse::<IpAddr>().is_err()
        // A top-level label is never all digits; this rejects malformed IPv4 like 1.2.3.
        && !d.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(d)
}

/// `http(s)://host[:port][/path?query#fragment]` with scheme and host lowercased (they are
/// case-insensitive; the path is not). No user-info: `user@host` URLs are a phishing trick, and
/// an indicator should name the host.
fn url(v: &str) -> Option<String> {
    if v.len() > URL_MAX_CHARS || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (scheme, rest) = v.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return None;
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        // IPv6 literal: [addr] or [addr]:port
        let (addr, after) = bracketed.split_once(']')?;
        addr.parse::<std::net::Ipv6Addr>().ok()?;
        port_ok(after.strip_prefix(':'), after.is_empty())?;
        authority.to_ascii_lowercase()
    } else {
        let (name, port) = match authority.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (authority, None),
        };
        port_ok(port, port.is_none())?;
        let host = match name.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => domain(name)?,
        };
        match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    };
    Some(format!("{scheme}://{host}{tail}"))
}

fn port_ok(port: Option<&str>, absent: bool) -> Option<()> {
    match port {
        Some(p) if p.parse::<u16>().is_ok_and(|n| n > 0) => Some(()),
        None if absent => Some(()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indicator {
    pub id: String,
    pub tenant_id: String,
    pub kind: IndicatorKind,
    /// Canonical form, see [`IndicatorKind::normalize`].
    pub value: String,
    pub action: IndicatorAction,
    pub severity: Severity,
    pub title: String,
    pub description: String,
    /// Device groups it applies to; empty = all.
    pub scope_groups: Scope,
    pub expires_at: Option<Time>,
    pub created_by: String,
    pub created_at: Time,
    pub updated_at: Time,
}

impl FromRow for Indicator {
    const COLUMNS: &'static str = "id, tenant_id, kind, value, action, severity, title, description, scope_groups, \
        expires_at, created_by, created_at, updated_at";
    fn from_row(r: &Cols<'_>) -> Result<Self> {
        Ok(Indicator {
            id: r.str("id")?,
            tenant_id: r.str("tenant_id")?,
            kind: r.parse("kind")?,
            value: r.str("value")?,
            action: r.parse("action")?,
            severity: r.parse("severity")?,
            title: r.str("title")?,
            description: r.str("description")?,
            scope_groups: Scope(r.json("scope_groups")?),
            expires_at: r.opt_time("expires_at")?,
            created_by: r.str("created_by")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIndicator {
    pub kind: IndicatorKind,
    pub value: String,
    pub action: IndicatorAction,
    pub severity: Severity,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub scope_groups: Vec<String>,
    pub expires_at: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicatorFilter {
    pub kind: Option<IndicatorKind>,
    pub action: Option<IndicatorAction>,
    /// Exact value (normalised for `kind` when a kind is given).
    pub value: Option<String>,
    /// Only indicators not expired at this time.
    pub active_at: Option<Time>,
}

/// `AND (expires_at IS NULL OR expires_at > at)`.
fn and_active(sql: &mut Sql, at: Time) {
    sql.push(" AND (expires_at IS NULL OR expires_at > ")
        .bind(micros(at))
        .push(")");
}

impl StateDb {
    /// Adds an indicator; the same (kind, normalised value) twice is a `Conflict`.
    pub async fn create_indicator(
        &self,
        tenant: &str,
        new: &NewIndicator,
        created_by: &str,
    ) -> Result<Indicator> {
        let groups = group_ids("scope_groups", &new.scope_groups)?;
        self.ensure_groups(tenant, "scope_groups", &groups).await?;
        let at = now();
        let ind = Indicator {
            id: ids::new_id("ioc")?,
            tenant_id: tenant.to_owned(),
            kind: new.kind,
            value: new.kind.normalize(&new.value)?,
            action: new.action,
            severity: new.severity,
            title: line("title", &new.title, limits::TITLE_MAX_CHARS, true)?,
            description: body(
                "description",
                &new.description,
                limits::DESCRIPTION_MAX_CHARS,
                false,
            )?,
            scope_groups: Scope(groups),
            expires_at: new.expires_at.map(exact),
            created_by: line("created_by", created_by, limits::SHORT_MAX_CHARS, true)?,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO indicators (id, tenant_id, kind, value, action, severity, title, description, scope_groups, \
             expires_at, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(ind.id.clone())
        .bind(ind.tenant_id.clone())
        .bind(ind.kind.as_str())
        .bind(ind.value.clone())
        .bind(ind.action.as_str())
        .bind(ind.severity.as_str())
        .bind(ind.title.clone())
        .bind(ind.description.clone())
        .bind(to_json(&ind.scope_groups))
        .bind(ind.expires_at.map(micros))
        .bind(ind.created_by.clone())
        .bind(micros(at))
        .execute(&self.pool)
        .await
        .map_err(Error::from)
        .map_err(Error::unique("indicator with this kind and value"))?;
        Ok(ind)
    }

    pub async fn get_indicator(&self, tenant: &str, id: &str) -> Result<Indicator> {
        let mut sql = Self::select::<Indicator>("indicators", tenant);
        sql.and_eq("id", Some(id.to_owned()));
        self.fetch_one(sql, "indicator").await
    }

    /// Indicators, newest first.
    pub async fn list_indicators(
        &self,
        tenant: &str,
        filter: &IndicatorFilter,
        page: &PageRequest,
    ) -> Result<Page<Indicator>> {
        let value = match (filter.kind, &filter.value) {
            (Some(kind), Some(v)) => Some(kind.normalize(v)?),
            (None, v) => v.as_ref().map(|v| v.trim().to_owned()),
            (Some(_), None) => None,
        };
        let mut sql = Self::select::<Indicator>("indicators", tenant);
        sql.and_eq("kind", filter.kind.map(IndicatorKind::as_str))
            .and_eq("action", filter.action.map(IndicatorAction::as_str))
            .and_eq("value", value);
        if let Some(at) = filter.active_at {
            and_active(&mut sql, at);
        }
        self.fetch_page(sql, Order::NewestFirst("created_at"), page)
            .await
    }

    pub async fn delete_indicator(&self, tenant: &str, id: &str) -> Result<()> {
        self.delete_by_id("indicators", tenant, id, "indicator")
            .await
    }

    /// Every indicator in force at `at`, for the detection pipeline to load into its matchers.
    pub async fn active_indicators(&self, tenant: &str, at: Time) -> Result<Vec<Indicator>> {
        let mut sql = Self::select::<Indicator>("indicators", tenant);
        and_active(&mut sql, at);
        sql.push(" ORDER BY kind, value");
        self.fetch_all(sql).await
    }
}
