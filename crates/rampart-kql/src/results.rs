//! Query results as Kusto shows them: JSON values and display text per cell.
//!
//! Datetimes print as ISO 8601 UTC (`2024-05-01T10:00:00.123Z`), timespans as Kusto writes
//! them (`[-][d.]hh:mm:ss[.fffffff]`), dynamic values as compact JSON, nulls as empty cells.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
    DurationSecondType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

use crate::engine::QueryResult;

impl QueryResult {
    /// Column names, in order.
    pub fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    /// Kusto type names of the columns (`string`, `long`, `datetime`, `dynamic`, ...).
    pub fn column_types(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| crate::planner::ops::kusto_type_name(f.data_type(), f.metadata()))
            .collect()
    }

    /// Every row as a JSON object, columns in order.
    pub fn json_rows(&self) -> Vec<serde_json::Map<String, Value>> {
        let names = self.column_names();
        let mut rows = Vec::with_capacity(self.rows());
        for batch in &self.batches {
            for r in 0..batch.num_rows() {
                let mut obj = serde_json::Map::new();
                for (name, col) in names.iter().zip(batch.columns()) {
                    obj.insert(name.clone(), json_value(col, r));
                }
                rows.push(obj);
            }
        }
        rows
    }

    /// Every row as display text per cell.
    pub fn text_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::with_capacity(self.rows());
        for batch in &self.batches {
            for r in 0..batch.num_rows() {
                rows.push(batch.columns().iter().map(|c| cell_text(c, r)).collect());
            }
        }
        rows
    }
}

/// A cell as display text (empty for null).
pub fn cell_text(array: &ArrayRef, row: usize) -> String {
    match json_value(array, row) {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A cell as a JSON value.
pub fn json_value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_string()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => {
            let micros = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => array
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(row)
                }
                TimeUnit::Nanosecond => {
                    array.as_primitive::<TimestampNanosecondType>().value(row) / 1000
                }
            };
            match chrono::DateTime::from_timestamp_micros(micros) {
                Some(t) => Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
                None => Value::Null,
            }
        }
        DataType::Duration(unit) => {
            let nanos: i128 = match unit {
                TimeUnit::Second => {
                    i128::from(array.as_primitive::<DurationSecondType>().value(row))
                        * 1_000_000_000
                }
                TimeUnit::Millisecond => {
                    i128::from(array.as_primitive::<DurationMillisecondType>().value(row))
                        * 1_000_000
                }
                TimeUnit::Microsecond => {
                    i128::from(array.as_primitive::<DurationMicrosecondType>().value(row)) * 1000
                }
                TimeUnit::Nanosecond => {
                    i128::from(array.as_primitive::<DurationNanosecondType>().value(row))
                }
            };
            Value::String(timespan_text(nanos))
        }
        _ => {
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(array.as_ref(), &options) {
                Ok(f) => Value::String(f.value(row).to_string()),
                Err(_) => Value::Null,
            }
        }
    }
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Kusto's timespan text: `[-][d.]hh:mm:ss[.fffffff]` (100 ns ticks).
pub fn timespan_text(nanos: i128) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let ticks = n / 100;
    let secs = ticks / 10_000_000;
    let frac = ticks % 10_000_000;
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let mut out = String::from(sign);
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if frac > 0 {
        out.push_str(&format!(".{frac:07}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::timespan_text;

    #[test]
    fn timespans_print_as_kusto_does() {
        assert_eq!(timespan_text(0), "00:00:00");
        assert_eq!(timespan_text(90 * 1_000_000_000), "00:01:30");
        assert_eq!(
            timespan_text(86_400 * 1_000_000_000 + 1_000_000_000),
            "1.00:00:01"
        );
        assert_eq!(timespan_text(-1_500_000_000), "-00:00:01.5000000");
    }
}
