//! A forwarded record's JSON text read straight into its flat fields, for
//! [`WinEvent::from_forwarded_slice`](super::WinEvent::from_forwarded_slice).
//!
//! The fields are those of reading the text into a `Value` and flattening it, for the records
//! forwarders send: an `Event` object with `System` first, and no key of `Event` or `System`
//! given twice (a repeat there can change what is kept: a later `null` drops an earlier value).
//! Anything else, malformed text included, ends the read with `None`: the caller then reads
//! the text through a `Value`, which decides. The per-entry rules are the parent's, shared with
//! the flattening of a `Value`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::{Fields, insert_attribute, insert_data, insert_part, insert_system};

/// The flat fields of a record's JSON text, or `None` when a parsed `Value` must decide.
pub(super) fn fields(text: &str) -> Option<Fields> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(Root).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// Ends the read: the record is for the parsed `Value` to decide.
fn unusual<E: de::Error>() -> E {
    E::custom("a record of another shape")
}

/// A visitor of an object, as the seed of a value that must be one.
struct Object<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Object<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_map(self.0)
    }
}

/// A visitor of any value, as the seed of a value of any type.
struct Any<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Any<V> {
    type Value = V::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_any(self.0)
    }
}

/// An object key, borrowed from the text unless it holds an escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// The record: its one `Event` object; other keys are skipped.
struct Root;

impl<'de> Visitor<'de> for Root {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = None;
        while let Some(Key(key)) = map.next_key()? {
            if key != "Event" {
                map.next_value::<IgnoredAny>()?;
            } else if fields.is_none() {
                fields = Some(map.next_value_seed(Object(Event))?);
            } else {
                return Err(unusual());
            }
        }
        fields.ok_or_else(unusual)
    }
}

/// The `Event` object: `System` first, then each other part once.
struct Event;

impl<'de> Visitor<'de> for Event {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the Event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        // A record has ~25 fields: grown from fewer, the map was rehashed at each doubling.
        let mut fields = Fields::with_capacity_and_hasher(32, Default::default());
        match map.next_key::<Key>()? {
            Some(Key(key)) if key == "System" => {
                map.next_value_seed(Object(System(&mut fields)))?
            }
            _ => return Err(unusual()),
        }
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            if key == "System" || seen.contains(&key) {
                return Err(unusual());
            }
            if key == "EventData" {
                map.next_value_seed(Any(Data(&mut fields)))?;
            } else {
                insert_part(&mut fields, key.clone(), map.next_value()?);
            }
            seen.push(key);
        }
        Ok(fields)
    }
}

/// The `System` object, its plain elements and attribute objects.
struct System<'a>(&'a mut Fields);

impl<'de> Visitor<'de> for System<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the System object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // ~15 keys: a scan of them costs less than hashing them.
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(16);
        while let Some(Key(key)) = map.next_key()? {
            if seen.contains(&key) {
                return Err(unusual());
            }
            match key.strip_suffix("_attributes") {
                Some(element) => map.next_value_seed(Object(Attributes {
                    element,
                    out: &mut *self.0,
                }))?,
                None => insert_system(self.0, key.clone(), map.next_value()?),
            }
            seen.push(key);
        }
        Ok(())
    }
}

/// An attribute object of the System block (`TimeCreated_attributes`).
struct Attributes<'a> {
    element: &'a str,
    out: &'a mut Fields,
}

impl<'de> Visitor<'de> for Attributes<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(attr)) = map.next_key()? {
            insert_attribute(self.out, self.element, &attr, map.next_value()?);
        }
        Ok(())
    }
}

/// `EventData`: an object's items, or a provider's bare text.
struct Data<'a>(&'a mut Fields);

impl<'de> Visitor<'de> for Data<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("EventData")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            // Dropped whatever they hold: not built only to be dropped.
            if key.ends_with("_attributes") {
                map.next_value::<IgnoredAny>()?;
            } else {
                insert_data(self.0, key.into_owned(), map.next_value()?);
            }
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.visit_string(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        insert_part(self.0, Cow::Borrowed("EventData"), Value::String(v));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}
