//! The shared machinery every module uses: a dynamic SQL builder that numbers `$n` placeholders,
//! typed column readers, keyset pagination, time conversion and the string-enum macro.

use std::fmt::Write as _;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::any::{Any, AnyArguments, AnyRow};
use sqlx::{Arguments as _, AssertSqlSafe, Encode, Row as _, Type};

use crate::{Backend, Error, Result, StateDb};

/// Every timestamp in the API: UTC, stored as unix microseconds.
pub type Time = DateTime<Utc>;

/// Default page size when the caller gives none.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// Largest page a caller can ask for.
pub const MAX_PAGE_LIMIT: u32 = 1000;

pub(crate) fn micros(t: Time) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> Result<Time> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| Error::Corrupt(format!("timestamp {v}")))
}

/// `t` at the precision the database keeps (microseconds), so that what a method returns equals
/// what a later read returns.
pub(crate) fn exact(t: Time) -> Time {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The current time at the precision the database keeps.
pub(crate) fn now() -> Time {
    exact(Utc::now())
}

/// Declares a closed set of strings stored as TEXT and serialised as the same snake_case text.
macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and serialised text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}
pub(crate) use str_enum;

/// A SQL statement under construction, one text for both backends: its bind placeholders are
/// written when it is run ([`Sql::query`]), in each backend's own form. PostgreSQL numbers them
/// (`$1, $2, …`); SQLite gets anonymous `?`, bound by position, since it looks a named or numbered
/// one (`$1`, `?1`) up in a list, once when preparing and once per bind: the square of the
/// count, ~2 M string comparisons per run of a statement with a few hundred of them.
pub(crate) struct Sql {
    /// The text without placeholders.
    text: String,
    /// Where in `text` each placeholder goes, in binding order.
    places: Vec<usize>,
    args: AnyArguments,
    error: Option<sqlx::error::BoxDynError>,
}

impl Sql {
    pub(crate) fn new(text: &str) -> Self {
        Sql {
            text: text.to_owned(),
            places: Vec::new(),
            args: AnyArguments::default(),
            error: None,
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder and binds `value` to it.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'static, Any> + Type<Any>,
    {
        self.places.push(self.text.len());
        if let Err(e) = self.args.add(value) {
            self.error.get_or_insert(e);
        }
        self
    }

    /// Appends `(v1, v2, …)` with one placeholder per value, [padded](padded). Callers never
    /// pass an empty list (an empty `IN ()` is not valid SQL); they skip the condition instead.
    pub(crate) fn bind_list(&mut self, values: &[String]) -> &mut Self {
        self.push("(");
        for (i, v) in padded(values).enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(v.clone());
        }
        self.push(")")
    }

    /// Appends the rows of a `VALUES` list, each `(key, n1, n2, …)`: a text key and numbers,
    /// each a placeholder; [padded](padded). Only for statements that a repeated row leaves
    /// unchanged, such as an `UPDATE … FROM (VALUES …)` keyed on the first column (both
    /// engines update a target row once, from one of its identical matches).
    pub(crate) fn values_rows<const N: usize>(&mut self, rows: &[(&str, [i64; N])]) -> &mut Self {
        for (i, (key, numbers)) in padded(rows).enumerate() {
            self.push(if i == 0 { "(" } else { ", (" })
                .bind(key.to_string());
            for n in numbers {
                self.push(", ").bind(*n);
            }
            self.push(")");
        }
        self
    }

    /// `AND col = value`, when a filter value is given.
    pub(crate) fn and_eq<T>(&mut self, col: &str, value: Option<T>) -> &mut Self
    where
        T: Encode<'static, Any> + Type<Any>,
    {
        if let Some(v) = value {
            self.push(" AND ").push(col).push(" = ").bind(v);
        }
        self
    }

    /// `AND col >= from AND col < to`, for whichever bounds are given (half-open range).
    pub(crate) fn and_range(
        &mut self,
        col: &str,
        from: Option<Time>,
        to: Option<Time>,
    ) -> &mut Self {
        if let Some(from) = from {
            self.push(" AND ").push(col).push(" >= ").bind(micros(from));
        }
        if let Some(to) = to {
            self.push(" AND ").push(col).push(" < ").bind(micros(to));
        }
        self
    }

    /// `AND col IN (…)`, skipped when the list is empty.
    pub(crate) fn and_in(&mut self, col: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            self.push(" AND ").push(col).push(" IN ").bind_list(values);
        }
        self
    }

    /// `AND col` contains `needle` as a plain substring. LIKE would need wildcard escaping and is
    /// case-insensitive on SQLite but not on PostgreSQL, so this is the one per-backend branch.
    pub(crate) fn and_contains(
        &mut self,
        backend: Backend,
        col: &str,
        needle: Option<String>,
    ) -> &mut Self {
        if let Some(needle) = needle {
            let func = match backend {
                Backend::Sqlite => "instr",
                Backend::Postgres => "strpos",
            };
            self.push(" AND ")
                .push(func)
                .push("(")
                .push(col)
                .push(", ")
                .bind(needle)
                .push(") > 0");
        }
        self
    }

    /// `AND tags_col` (a JSON array of validated tags) contains `tag`. Tags cannot hold `"` or
    /// `\`, so the JSON text of the tag is matched exactly, quotes included.
    pub(crate) fn and_tag(&mut self, backend: Backend, col: &str, tag: Option<&str>) -> &mut Self {
        self.and_contains(backend, col, tag.map(|t| format!("\"{t}\"")))
    }

    /// Restricts rows whose device column points to a device outside `scope`.
    pub(crate) fn and_device_scope(
        &mut self,
        tenant: &str,
        device_col: &str,
        scope: &Scope,
    ) -> &mut Self {
        if !scope.is_all() {
            self.push(" AND ")
                .push(device_col)
                .push(" IN (SELECT id FROM devices WHERE tenant_id = ")
                .bind(tenant.to_owned())
                .push(" AND group_id IN ")
                .bind_list(&scope.0)
                .push(")");
        }
        self
    }

    /// The finished statement. Binding our value types (integers, strings) cannot fail, but a
    /// failure would surface here rather than as a panic.
    pub(crate) fn query(
        self,
        backend: Backend,
    ) -> Result<sqlx::query::Query<'static, Any, AnyArguments>> {
        if let Some(e) = self.error {
            return Err(Error::Internal(format!("binding a parameter: {e}")));
        }
        Ok(sqlx::query_with(
            AssertSqlSafe(self.text(backend)),
            self.args,
        ))
    }

    /// The statement's text with `backend`'s placeholders.
    fn text(&self, backend: Backend) -> String {
        let mut out = String::with_capacity(self.text.len() + 4 * self.places.len());
        let mut from = 0;
        for (i, &at) in self.places.iter().enumerate() {
            out.push_str(&self.text[from..at]);
            match backend {
                Backend::Sqlite => out.push('?'),
                // Writing to a String cannot fail.
                Backend::Postgres => {
                    let _ = write!(out, "${}", i + 1);
                }
            }
            from = at;
        }
        out.push_str(&self.text[from..]);
        out
    }
}

/// `items`, then its last item repeated up to the next power of two: lists of any length then
/// share a few statement texts, which each pooled connection prepares once and keeps in its
/// statement cache. A text per length was prepared anew at almost every batch's alert and device
/// lookups: ~1.7 M instructions each on SQLite for a few hundred placeholders, 2.7 % of the
/// server's work under load. (Hibernate pads `IN` lists the same way.)
fn padded<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let pad = items.len().next_power_of_two() - items.len();
    items
        .iter()
        .chain(items.last().into_iter().cycle().take(pad))
}

/// The device groups a user may see; empty means every group (and devices in no group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(pub Vec<String>);

impl Scope {
    /// No restriction.
    pub fn all() -> Self {
        Scope(Vec::new())
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object in `group` (None: no group) is visible. A restricted scope never sees
    /// ungrouped objects: unassigned devices are only visible to unrestricted users.
    pub fn allows(&self, group: Option<&str>) -> bool {
        self.is_all() || group.is_some_and(|g| self.0.iter().any(|s| s == g))
    }
}

/// Typed access to a row's columns, mapping decode failures to [`Error`].
pub(crate) struct Cols<'r>(pub(crate) &'r AnyRow);

impl Cols<'_> {
    pub(crate) fn str(&self, col: &str) -> Result<String> {
        Ok(self.0.try_get(col)?)
    }
    pub(crate) fn opt_str(&self, col: &str) -> Result<Option<String>> {
        Ok(self.0.try_get(col)?)
    }
    pub(crate) fn i64(&self, col: &str) -> Result<i64> {
        Ok(self.0.try_get(col)?)
    }
    pub(crate) fn opt_i64(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.0.try_get(col)?)
    }
    pub(crate) fn bool(&self, col: &str) -> Result<bool> {
        Ok(self.i64(col)? != 0)
    }
    pub(crate) fn time(&self, col: &str) -> Result<Time> {
        from_micros(self.i64(col)?)
    }
    pub(crate) fn opt_time(&self, col: &str) -> Result<Option<Time>> {
        self.opt_i64(col)?.map(from_micros).transpose()
    }
    pub(crate) fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
        parse_json(col, &self.str(col)?)
    }
    pub(crate) fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>> {
        self.opt_str(col)?.map(|s| parse_json(col, &s)).transpose()
    }
    pub(crate) fn parse<T: FromStr<Err = String>>(&self, col: &str) -> Result<T> {
        self.str(col)?
            .parse()
            .map_err(|e| Error::Corrupt(format!("{col}: {e}")))
    }
    pub(crate) fn opt_parse<T: FromStr<Err = String>>(&self, col: &str) -> Result<Option<T>> {
        self.opt_str(col)?
            .map(|s| s.parse().map_err(|e| Error::Corrupt(format!("{col}: {e}"))))
            .transpose()
    }
}

fn parse_json<T: DeserializeOwned>(col: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("{col}: {e}")))
}

/// JSON text for a TEXT column. Serialising our own types and `serde_json::Value` cannot fail.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// A type read from a row of its table.
pub(crate) trait FromRow: Sized {
    /// The column list for `SELECT`; it includes every column `from_row` reads.
    const COLUMNS: &'static str;
    fn from_row(row: &Cols<'_>) -> Result<Self>;
}

/// What a caller asks of a list: page size and where to continue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Items per page: default 100, at most 1000 (larger values are capped).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        PageRequest {
            limit: Some(limit),
            cursor: None,
        }
    }

    pub fn after(limit: u32, cursor: Option<String>) -> Self {
        PageRequest {
            limit: Some(limit),
            cursor,
        }
    }

    fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(DEFAULT_PAGE_LIMIT)
            .clamp(1, MAX_PAGE_LIMIT)
    }
}

/// One page of a list; `next` is the cursor for the following page, absent on the last page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// The sort of a list: a column (integer time or text) plus `id` as the tie-breaker, which makes
/// the order total and so keyset pagination stable under concurrent inserts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Order {
    /// Newest first on an integer (time) column.
    NewestFirst(&'static str),
    /// Ascending on a text column (names).
    Alphabetical(&'static str),
}

impl Order {
    fn column(self) -> &'static str {
        match self {
            Order::NewestFirst(c) | Order::Alphabetical(c) => c,
        }
    }
}

/// The decoded position of a cursor: the sort column's value and the id of the last row seen.
enum CursorKey {
    Int(i64),
    Text(String),
}

fn encode_cursor(order: Order, row: &Cols<'_>) -> Result<String> {
    let key = match order {
        Order::NewestFirst(c) => row.i64(c)?.to_string(),
        Order::Alphabetical(c) => row.str(c)?,
    };
    let id = row.str("id")?;
    Ok(URL_SAFE_NO_PAD.encode(format!("{id}\n{key}")))
}

fn decode_cursor(order: Order, cursor: &str) -> Result<(String, CursorKey)> {
    let bad = || Error::invalid("cursor", "not a cursor returned by this list");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (id, key) = text.split_once('\n').ok_or_else(bad)?;
    let key = match order {
        Order::NewestFirst(_) => CursorKey::Int(key.parse().map_err(|_| bad())?),
        Order::Alphabetical(_) => CursorKey::Text(key.to_owned()),
    };
    Ok((id.to_owned(), key))
}

impl StateDb {
    /// Runs `sql` (a `SELECT … WHERE …` with the caller's filters) as one page in `order`.
    pub(crate) async fn fetch_page<T: FromRow>(
        &self,
        mut sql: Sql,
        order: Order,
        page: &PageRequest,
    ) -> Result<Page<T>> {
        let col = order.column();
        let (cmp, dir) = match order {
            Order::NewestFirst(_) => ("<", "DESC"),
            Order::Alphabetical(_) => (">", "ASC"),
        };
        if let Some(cursor) = &page.cursor {
            let (id, key) = decode_cursor(order, cursor)?;
            let bind_key = |sql: &mut Sql| match &key {
                CursorKey::Int(v) => {
                    sql.bind(*v);
                }
                CursorKey::Text(v) => {
                    sql.bind(v.clone());
                }
            };
            sql.push(" AND (").push(col).push(" ").push(cmp).push(" ");
            bind_key(&mut sql);
            sql.push(" OR (").push(col).push(" = ");
            bind_key(&mut sql);
            sql.push(" AND id ").push(cmp).push(" ").bind(id).push("))");
        }
        let limit = page.effective_limit() as usize;
        sql.push(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT "))
            .bind(limit as i64 + 1);
        let rows = sql.query(self.backend)?.fetch_all(&self.pool).await?;
        let next = if rows.len() > limit {
            Some(encode_cursor(order, &Cols(&rows[limit - 1]))?)
        } else {
            None
        };
        let items = rows
            .iter()
            .take(limit)
            .map(|r| T::from_row(&Cols(r)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next })
    }

    /// Runs `sql` and maps every row (for small, bounded result sets).
    pub(crate) async fn fetch_all<T: FromRow>(&self, sql: Sql) -> Result<Vec<T>> {
        let rows = sql.query(self.backend)?.fetch_all(&self.pool).await?;
        rows.iter().map(|r| T::from_row(&Cols(r))).collect()
    }

    /// Runs `sql` and maps the first row, or `NotFound(what)`.
    pub(crate) async fn fetch_one<T: FromRow>(&self, sql: Sql, what: &'static str) -> Result<T> {
        self.fetch_optional(sql).await?.ok_or(Error::NotFound(what))
    }

    /// Like [`StateDb::fetch_one`], with absence as `None`.
    pub(crate) async fn fetch_optional<T: FromRow>(&self, sql: Sql) -> Result<Option<T>> {
        sql.query(self.backend)?
            .fetch_optional(&self.pool)
            .await?
            .map(|row| T::from_row(&Cols(&row)))
            .transpose()
    }

    /// Deletes one row of this tenant by id, or `NotFound(what)`.
    pub(crate) async fn delete_by_id(
        &self,
        table: &str,
        tenant: &str,
        id: &str,
        what: &'static str,
    ) -> Result<()> {
        self.execute_on_id(Sql::new(&format!("DELETE FROM {table}")), tenant, id, what)
            .await
    }

    /// Runs an `UPDATE … SET …`/`DELETE FROM …` statement restricted to one row of this tenant;
    /// `NotFound(what)` when no row matched.
    pub(crate) async fn execute_on_id(
        &self,
        mut sql: Sql,
        tenant: &str,
        id: &str,
        what: &'static str,
    ) -> Result<()> {
        sql.push(" WHERE tenant_id = ")
            .bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned());
        if sql
            .query(self.backend)?
            .execute(&self.pool)
            .await?
            .rows_affected()
            == 0
        {
            return Err(Error::NotFound(what));
        }
        Ok(())
    }

    /// `SELECT <T's columns> FROM table WHERE tenant_id = $1`, ready for more conditions.
    pub(crate) fn select<T: FromRow>(table: &str, tenant: &str) -> Sql {
        let mut sql = Sql::new(&format!(
            "SELECT {} FROM {table} WHERE tenant_id = ",
            T::COLUMNS
        ));
        sql.bind(tenant.to_owned());
        sql
    }

    /// Fails with `NotFound(what)` unless `id` is a row of `table` in this tenant. Used before
    /// storing a reference, because a foreign key alone would accept another tenant's row.
    pub(crate) async fn ensure_exists(
        &self,
        table: &str,
        tenant: &str,
        id: &str,
        what: &'static str,
    ) -> Result<()> {
        let mut sql = Sql::new(&format!("SELECT id FROM {table} WHERE tenant_id = "));
        sql.bind(tenant.to_owned())
            .push(" AND id = ")
            .bind(id.to_owned());
        match sql.query(self.backend)?.fetch_optional(&self.pool).await? {
            Some(_) => Ok(()),
            None => Err(Error::NotFound(what)),
        }
    }

    /// Fails unless every id in `groups` is a device group of this tenant.
    pub(crate) async fn ensure_groups(
        &self,
        tenant: &str,
        field: &'static str,
        groups: &[String],
    ) -> Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut sql = Sql::new("SELECT id FROM device_groups WHERE tenant_id = ");
        sql.bind(tenant.to_owned()).and_in("id", groups);
        let found: Vec<String> = sql
            .query(self.backend)?
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        match groups.iter().find(|g| !found.contains(g)) {
            Some(missing) => Err(Error::invalid(
                field,
                format!("unknown device group {missing:?}"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One statement, each backend's placeholders, in binding order; lists padded with their
    /// last value to a power of two.
    #[test]
    fn placeholders_are_written_per_backend_and_lists_padded() {
        let mut sql = Sql::new("SELECT id FROM alerts WHERE tenant_id = ");
        sql.bind("t".to_string())
            .and_in("id", &["a".into(), "b".into(), "c".into()])
            .push(" AND n = ")
            .bind(7_i64);
        assert_eq!(
            sql.text(Backend::Postgres),
            "SELECT id FROM alerts WHERE tenant_id = $1 AND id IN ($2, $3, $4, $5) AND n = $6"
        );
        assert_eq!(
            sql.text(Backend::Sqlite),
            "SELECT id FROM alerts WHERE tenant_id = ? AND id IN (?, ?, ?, ?) AND n = ?"
        );
        assert_eq!(padded(&[1, 2, 3]).collect::<Vec<_>>(), [&1, &2, &3, &3]);
        assert_eq!(padded(&[1, 2, 3, 4]).count(), 4);
        assert_eq!(padded(&[1]).count(), 1);
        assert_eq!(padded::<u8>(&[]).count(), 0);

        let mut values = Sql::new("VALUES ");
        values.values_rows(&[("k1", [1, 2]), ("k2", [3, 4]), ("k3", [5, 6])]);
        assert_eq!(
            values.text(Backend::Postgres),
            "VALUES ($1, $2, $3), ($4, $5, $6), ($7, $8, $9), ($10, $11, $12)"
        );
    }
}
