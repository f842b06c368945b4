//! Records as the Sigma evaluator sees them. A [`Record`] (a Windows event, or a row of agent
//! telemetry) gives a [`SigmaEvent`]: its fields under Sigma's names, with the values the
//! taxonomy adds for its categories laid over them; and says where it came from ([`Origin`]).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rampart_sources::WinEvent;
use rampart_sources::winevent::Fields as RecordFields;
use rsigma_eval::event::{Event, EventValue};
use serde_json::{Map, Value};

/// What detections on a record say about it.
pub struct Origin<'a> {
    pub timestamp: DateTime<Utc>,
    pub computer: &'a str,
    /// The event-log channel, or the hunting table of a telemetry row.
    pub channel: &'a str,
    /// The event id (0 for a telemetry row).
    pub event_id: u32,
    pub record_id: u64,
    pub source: &'a Arc<Path>,
}

/// Something Sigma rules are evaluated on and correlations are fed with.
pub trait Record {
    /// The record's fields under Sigma's names.
    fn view(&self) -> SigmaEvent<'_>;

    fn origin(&self) -> Origin<'_>;
}

impl Record for WinEvent {
    fn view(&self) -> SigmaEvent<'_> {
        SigmaEvent::new(self)
    }

    fn origin(&self) -> Origin<'_> {
        Origin {
            timestamp: self.timestamp,
            computer: &self.computer,
            channel: &self.channel,
            event_id: self.event_id,
            record_id: self.record_id,
            source: &self.source,
        }
    }
}

/// A record's fields, and the fields its categories add (aliases of a Windows record, values a
/// telemetry row computes), which are looked up first.
pub struct SigmaEvent<'a> {
    extra: Vec<(&'static str, Value)>,
    fields: Fields<'a>,
}

enum Fields<'a> {
    /// A Windows record's flat fields, already under Sigma's names.
    Flat(&'a RecordFields),
    /// A telemetry row's columns, read under the Sigma name of each `(sigma, column)` pair.
    Mapped(
        &'a Map<String, Value>,
        &'static [(&'static str, &'static str)],
    ),
}

impl<'a> SigmaEvent<'a> {
    pub fn new(event: &'a WinEvent) -> Self {
        SigmaEvent {
            extra: crate::taxonomy::aliases(event),
            fields: Fields::Flat(&event.fields),
        }
    }

    /// `columns` under the Sigma names of `names` (`(sigma, column)`), plus `extra`.
    pub(crate) fn mapped(
        columns: &'a Map<String, Value>,
        names: &'static [(&'static str, &'static str)],
        extra: Vec<(&'static str, Value)>,
    ) -> Self {
        SigmaEvent {
            extra,
            fields: Fields::Mapped(columns, names),
        }
    }

    /// Every value as text (strings as they are, numbers and booleans rendered as string
    /// matchers see them), for the literal index.
    pub fn visit_text(&self, visit: &mut dyn FnMut(&str)) {
        for (_, v) in self.entries() {
            visit_text(v, &mut |text, _| visit(text));
        }
    }

    /// The names a rule can read, with their values.
    fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        let (flat, mapped) = match &self.fields {
            Fields::Flat(map) => (Some(map.iter().map(|(k, v)| (k.as_str(), v))), None),
            Fields::Mapped(map, names) => (
                None,
                Some(
                    names
                        .iter()
                        .filter_map(|(name, column)| Some((*name, map.get(*column)?))),
                ),
            ),
        };
        self.extra
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(flat.into_iter().flatten())
            .chain(mapped.into_iter().flatten())
    }

    /// The value of field `name` as text (strings as they are, numbers and booleans rendered),
    /// with whether it is text in the record (not a rendered number or boolean).
    pub fn visit_field_text(&self, name: &str, visit: &mut dyn FnMut(&str, bool)) {
        if let Some(v) = self.value(name) {
            visit_text(v, visit);
        }
    }

    /// The numbers field `name` holds as Sigma's numeric matchers read them: a JSON number,
    /// text that parses as one, each element of a list.
    pub fn visit_field_numbers(&self, name: &str, visit: &mut dyn FnMut(f64)) {
        if let Some(v) = self.value(name) {
            visit_numbers(v, visit);
        }
    }

    /// The value a rule reading `name` sees: an added field first, then the record's own.
    fn value(&self, name: &str) -> Option<&Value> {
        if let Some((_, v)) = self.extra.iter().find(|(k, _)| *k == name) {
            return Some(v);
        }
        match &self.fields {
            Fields::Flat(map) => map.get(name),
            Fields::Mapped(map, names) => names
                .iter()
                .find(|(sigma, _)| *sigma == name)
                .and_then(|(_, column)| map.get(*column)),
        }
    }
}

impl Event for SigmaEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.value(path).map(EventValue::from)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.entries().any(|(_, v)| any_string(v, pred))
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.visit_string_values(&mut |s| out.push(Cow::Owned(s.to_string())));
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        for (_, v) in self.entries() {
            visit_strings(v, visit);
        }
    }

    fn to_json(&self) -> Value {
        let mut map = Map::new();
        // Later entries would be shadowed by earlier ones in `get_field`: keep the first.
        for (k, v) in self.entries() {
            map.entry(k).or_insert_with(|| v.clone());
        }
        Value::Object(map)
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        Some(self.entries().map(|(k, _)| Cow::Borrowed(k)).collect())
    }

    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        for (k, _) in self.entries() {
            visit(k);
        }
        true
    }
}

fn any_string(v: &Value, pred: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => pred(s),
        Value::Array(a) => a.iter().any(|x| any_string(x, pred)),
        Value::Object(o) => o.values().any(|x| any_string(x, pred)),
        _ => false,
    }
}

fn visit_strings(v: &Value, visit: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => visit(s),
        Value::Array(a) => a.iter().for_each(|x| visit_strings(x, visit)),
        Value::Object(o) => o.values().for_each(|x| visit_strings(x, visit)),
        _ => {}
    }
}

fn visit_numbers(v: &Value, visit: &mut dyn FnMut(f64)) {
    match v {
        Value::Number(n) => visit(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => {
            if let Ok(n) = s.parse::<f64>() {
                visit(n)
            }
        }
        Value::Array(a) => a.iter().for_each(|x| visit_numbers(x, visit)),
        _ => {}
    }
}

/// `v`'s text, and whether it is text (true) or a rendered number or boolean.
fn visit_text(v: &Value, visit: &mut dyn FnMut(&str, bool)) {
    match v {
        Value::String(s) => visit(s, true),
        // Integers (ids, levels, ports: ~17 a record in the server benchmark) without
        // `Display`'s machinery and its allocation; fractions are rare.
        Value::Number(n) if let Some(u) = n.as_u64() => visit(itoa::Buffer::new().format(u), false),
        Value::Number(n) if let Some(i) = n.as_i64() => visit(itoa::Buffer::new().format(i), false),
        Value::Number(n) => visit(&n.to_string(), false),
        Value::Bool(b) => visit(if *b { "true" } else { "false" }, false),
        Value::Array(a) => a.iter().for_each(|x| visit_text(x, visit)),
        Value::Object(o) => o.values().for_each(|x| visit_text(x, visit)),
        Value::Null => {}
    }
}
