//! A Windows record as the Sigma evaluator sees it: its flat fields, with the taxonomy's
//! aliases laid over them.

use std::borrow::Cow;

use rampart_sources::WinEvent;
use rsigma_eval::event::{Event, EventValue};
use serde_json::Value;

/// A record plus the alias fields its categories add (empty for most records).
pub struct SigmaEvent<'a> {
    pub event: &'a WinEvent,
    pub aliases: Vec<(&'static str, Value)>,
}

impl<'a> SigmaEvent<'a> {
    pub fn new(event: &'a WinEvent) -> Self {
        SigmaEvent {
            event,
            aliases: crate::taxonomy::aliases(event),
        }
    }

    /// Every value as text (strings as they are, numbers and booleans rendered as string
    /// matchers see them), for the literal index.
    pub fn visit_text(&self, visit: &mut dyn FnMut(&str)) {
        for v in self.values() {
            visit_text(v, visit);
        }
    }

    fn values(&self) -> impl Iterator<Item = &Value> {
        self.aliases
            .iter()
            .map(|(_, v)| v)
            .chain(self.event.fields.values())
    }
}

impl Event for SigmaEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        if let Some((_, v)) = self.aliases.iter().find(|(k, _)| *k == path) {
            return Some(EventValue::from(v));
        }
        self.event.fields.get(path).map(EventValue::from)
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.values().any(|v| any_string(v, pred))
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        let mut out = Vec::new();
        self.visit_string_values(&mut |s| out.push(Cow::Owned(s.to_string())));
        out
    }

    fn visit_string_values(&self, visit: &mut dyn FnMut(&str)) {
        for v in self.values() {
            visit_strings(v, visit);
        }
    }

    fn to_json(&self) -> Value {
        let mut map = self.event.fields.clone();
        for (k, v) in &self.aliases {
            map.insert((*k).to_string(), v.clone());
        }
        Value::Object(map)
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        let aliases = self.aliases.iter().map(|(k, _)| Cow::Borrowed(*k));
        Some(
            aliases
                .chain(self.event.fields.keys().map(|k| Cow::Borrowed(k.as_str())))
                .collect(),
        )
    }

    fn visit_top_level_keys(&self, visit: &mut dyn FnMut(&str)) -> bool {
        for (k, _) in &self.aliases {
            visit(k);
        }
        for k in self.event.fields.keys() {
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

fn visit_text(v: &Value, visit: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => visit(s),
        Value::Number(n) => visit(&n.to_string()),
        Value::Bool(b) => visit(if *b { "true" } else { "false" }),
        Value::Array(a) => a.iter().for_each(|x| visit_text(x, visit)),
        Value::Object(o) => o.values().for_each(|x| visit_text(x, visit)),
        Value::Null => {}
    }
}
