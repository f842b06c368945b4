//! Rampart's hunting schema: Microsoft Defender's advanced-hunting tables, column for column.
//!
//! The tables are generated at build time from `schema/tables.tsv` (the column reference kept in
//! the repository). For every table there is:
//!
//! - a typed row struct (e.g. [`DeviceProcessEvents`]) with one `Option` field per column, named
//!   in snake case (`InitiatingProcessSHA1` → `initiating_process_sha1`);
//! - an Arrow batch builder (e.g. [`DeviceProcessEventsBuilder`]) that appends rows column-wise;
//! - its Arrow schema, from [`Table::arrow_schema`].
//!
//! [`Row`] and [`BatchBuilder`] cover all tables, so a source can emit rows of any table and a
//! sink can batch them per table.
//!
//! Kusto types map to Arrow as: `string` → Utf8, `long` → Int64, `int` → Int32, `bool` →
//! Boolean, `real` → Float64, `datetime` → Timestamp(µs, "UTC"), `dynamic` → Utf8 holding JSON
//! text, tagged with Arrow's canonical `arrow.json` extension type so readers know to parse it.
//!
//! ```
//! use rampart_schema::{DeviceProcessEvents, Row, Table};
//! let row = DeviceProcessEvents { file_name: Some("cmd.exe".into()), ..Default::default() };
//! let mut builder = Table::DeviceProcessEvents.batch_builder();
//! builder.append(&Row::from(row)).unwrap();
//! let batch = builder.finish();
//! assert_eq!(batch.num_rows(), 1);
//! assert_eq!(batch.schema().field(4).name(), "FileName");
//! ```

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};

pub mod attack;

pub use arrow_array;
pub use arrow_schema;

include!(concat!(env!("OUT_DIR"), "/tables.rs"));

/// A Kusto scalar type, as the hunting schema declares a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KustoType {
    String,
    Long,
    Int,
    Bool,
    Real,
    DateTime,
    Dynamic,
}

impl KustoType {
    /// The Kusto name of the type (`string`, `long`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            KustoType::String => "string",
            KustoType::Long => "long",
            KustoType::Int => "int",
            KustoType::Bool => "bool",
            KustoType::Real => "real",
            KustoType::DateTime => "datetime",
            KustoType::Dynamic => "dynamic",
        }
    }

    /// The Arrow type a column of this type is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            KustoType::String | KustoType::Dynamic => DataType::Utf8,
            KustoType::Long => DataType::Int64,
            KustoType::Int => DataType::Int32,
            KustoType::Bool => DataType::Boolean,
            KustoType::Real => DataType::Float64,
            KustoType::DateTime => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// A column of a hunting table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: KustoType,
}

/// Metadata key naming the Kusto type on every Arrow field (`dynamic` and `string` share Utf8).
pub const KUSTO_TYPE_KEY: &str = "kusto.type";
const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";

impl Column {
    /// The column as an Arrow field (every column is nullable, as in Kusto).
    pub fn arrow_field(&self) -> Field {
        let mut meta = HashMap::from([(KUSTO_TYPE_KEY.to_string(), self.kind.name().to_string())]);
        if self.kind == KustoType::Dynamic {
            meta.insert(EXTENSION_NAME_KEY.to_string(), "arrow.json".to_string());
        }
        Field::new(self.name, self.kind.arrow_type(), true).with_metadata(meta)
    }
}

impl Table {
    /// Looks a table up by its KQL name (case-sensitive, as in Kusto).
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Looks a column up by name.
    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.name == name)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Table {
    /// The table's Arrow schema; built once per table and shared.
    pub fn arrow_schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        let schemas = SCHEMAS.get_or_init(|| {
            Table::ALL
                .iter()
                .map(|t| {
                    let fields: Vec<Field> = t.columns().iter().map(Column::arrow_field).collect();
                    Arc::new(Schema::new(fields))
                })
                .collect()
        });
        let index = Table::ALL
            .iter()
            .position(|t| *t == self)
            .unwrap_or_default();
        schemas[index].clone()
    }
}

/// Reading one cell of a batch back into a row field ([`Row::from_batch`]): `None` when the
/// column is not of the expected Arrow type, `Some(None)` for a null cell.
mod cell {
    use arrow_array::types::{
        ArrowPrimitiveType, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
    };
    use arrow_array::{Array, BooleanArray, PrimitiveArray, RecordBatch, StringArray};
    use chrono::{DateTime, Utc};

    fn primitive<T: ArrowPrimitiveType>(
        batch: &RecordBatch,
        column: usize,
        row: usize,
    ) -> Option<Option<T::Native>> {
        let array = batch
            .column(column)
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()?;
        Some(array.is_valid(row).then(|| array.value(row)))
    }

    fn text(batch: &RecordBatch, column: usize, row: usize) -> Option<Option<&str>> {
        let array = batch
            .column(column)
            .as_any()
            .downcast_ref::<StringArray>()?;
        Some(array.is_valid(row).then(|| array.value(row)))
    }

    pub fn string(batch: &RecordBatch, column: usize, row: usize) -> Option<Option<String>> {
        Some(text(batch, column, row)?.map(str::to_string))
    }

    /// Dynamic cells hold JSON text; text that is not JSON stays a string.
    pub fn dynamic(
        batch: &RecordBatch,
        column: usize,
        row: usize,
    ) -> Option<Option<serde_json::Value>> {
        Some(text(batch, column, row)?.map(|t| {
            serde_json::from_str(t).unwrap_or_else(|_| serde_json::Value::String(t.to_string()))
        }))
    }

    pub fn long(batch: &RecordBatch, column: usize, row: usize) -> Option<Option<i64>> {
        primitive::<Int64Type>(batch, column, row)
    }

    pub fn int(batch: &RecordBatch, column: usize, row: usize) -> Option<Option<i32>> {
        primitive::<Int32Type>(batch, column, row)
    }

    pub fn real(batch: &RecordBatch, column: usize, row: usize) -> Option<Option<f64>> {
        primitive::<Float64Type>(batch, column, row)
    }

    pub fn bool(batch: &RecordBatch, column: usize, row: usize) -> Option<Option<bool>> {
        let array = batch
            .column(column)
            .as_any()
            .downcast_ref::<BooleanArray>()?;
        Some(array.is_valid(row).then(|| array.value(row)))
    }

    pub fn datetime(
        batch: &RecordBatch,
        column: usize,
        row: usize,
    ) -> Option<Option<DateTime<Utc>>> {
        Some(
            primitive::<TimestampMicrosecondType>(batch, column, row)?
                .and_then(DateTime::from_timestamp_micros),
        )
    }
}

/// A row offered to the batch builder of another table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongTable {
    pub expected: Table,
    pub found: Table,
}

impl std::fmt::Display for WrongTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {} row cannot go into a {} batch",
            self.found, self.expected
        )
    }
}

impl std::error::Error for WrongTable {}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;

    /// The generated tables match the repository's copy of the column reference line by line.
    #[test]
    fn tables_match_the_tsv() {
        let tsv = include_str!("../../../schema/tables.tsv");
        let rows: Vec<Vec<&str>> = tsv
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .collect();
        let generated: Vec<(String, String, String)> = Table::ALL
            .iter()
            .flat_map(|t| {
                t.columns().iter().map(move |c| {
                    (
                        t.name().to_string(),
                        c.name.to_string(),
                        c.kind.name().to_string(),
                    )
                })
            })
            .collect();
        assert_eq!(rows.len(), generated.len());
        assert_eq!(Table::ALL.len(), 29);
        for (row, (table, column, kind)) in rows.iter().zip(&generated) {
            assert_eq!(row[0], table);
            assert_eq!(row[1], column);
            let normal = match row[2] {
                "boolean" => "bool",
                other => other,
            };
            assert_eq!(normal, kind, "{table}.{column}");
        }
    }

    #[test]
    fn kusto_types_map_to_arrow() {
        let s = Table::DeviceProcessEvents.arrow_schema();
        let ts = s.field_with_name("Timestamp").unwrap();
        assert_eq!(
            ts.data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(
            s.field_with_name("ProcessId").unwrap().data_type(),
            &DataType::Int64
        );
        let s = Table::IdentityLogonEvents.arrow_schema();
        let af = s.field_with_name("AdditionalFields").unwrap();
        assert_eq!(af.data_type(), &DataType::Utf8);
        assert_eq!(
            af.metadata().get(EXTENSION_NAME_KEY).map(String::as_str),
            Some("arrow.json")
        );
        assert_eq!(
            af.metadata().get(KUSTO_TYPE_KEY).map(String::as_str),
            Some("dynamic")
        );
        let s = Table::DeviceInfo.arrow_schema();
        assert!(
            s.fields()
                .iter()
                .any(|f| f.data_type() == &DataType::Boolean)
        );
        let s = Table::DeviceTvmSoftwareVulnerabilities.arrow_schema();
        assert!(s.fields().iter().all(|f| f.is_nullable()));
    }

    #[test]
    fn builders_round_trip_values() {
        let when = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        let mut b = Table::IdentityLogonEvents.batch_builder();
        let row = IdentityLogonEvents {
            timestamp: Some(when),
            action_type: Some("LogonSuccess".into()),
            additional_fields: Some(serde_json::json!({"TicketOptions": "0x40810010"})),
            ..Default::default()
        };
        b.append(&row.into()).unwrap();
        b.append(&IdentityLogonEvents::default().into()).unwrap();
        assert_eq!(b.len(), 2);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(batch.num_rows(), 2);
        let ts = batch
            .column_by_name("Timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), when.timestamp_micros());
        assert!(ts.is_null(1));
        let af = batch
            .column_by_name("AdditionalFields")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(af.value(0), r#"{"TicketOptions":"0x40810010"}"#);
        let at = batch
            .column_by_name("ActionType")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(at.value(0), "LogonSuccess");
        assert!(at.is_null(1));
    }

    /// What a builder appended reads back as the same row, every column type included.
    #[test]
    fn rows_read_back_from_batches() {
        let when = DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456Z")
            .unwrap()
            .to_utc();
        let network = DeviceNetworkEvents {
            timestamp: Some(when),
            remote_ip: Some("203.0.113.7".into()),
            remote_port: Some(4444),
            initiating_process_id: Some(42),
            is_initiating_process_remote_session: Some(true),
            ..Default::default()
        };
        let logon = IdentityLogonEvents {
            additional_fields: Some(serde_json::json!({"Tty": "pts/0"})),
            ..Default::default()
        };
        let assessment = DeviceTvmSecureConfigurationAssessment {
            configuration_impact: Some(9.5),
            ..Default::default()
        };
        for row in [Row::from(network), logon.into(), assessment.into()] {
            let mut b = row.table().batch_builder();
            b.append(&DeviceEvents::default().into()).unwrap_err();
            b.append(&row).unwrap();
            let batch = b.finish();
            assert_eq!(Row::from_batch(row.table(), &batch, 0), Some(row.clone()));
            assert_eq!(
                Row::from_batch(row.table(), &batch, 1),
                None,
                "past the end"
            );
            assert_eq!(Row::from_batch(Table::DeviceInfo, &batch, 0), None);
        }
    }

    /// `batch_of` builds the batch a builder fed the same rows builds; a row of another table
    /// makes it fail.
    #[test]
    fn batches_of_rows_are_the_builders() {
        let rows: Vec<Row> = (0..5)
            .map(|i| {
                DeviceNetworkEvents {
                    remote_ip: (i % 2 == 0).then(|| format!("203.0.113.{i}")),
                    remote_port: Some(4444 + i),
                    initiating_process_command_line: Some("x".repeat(100 * i as usize)),
                    additional_fields: (i == 3).then(|| r#"{"Tty":"pts/0"}"#.to_string()),
                    ..Default::default()
                }
                .into()
            })
            .collect();
        let dynamic: Vec<Row> = (0..40)
            .map(|i| {
                IdentityLogonEvents {
                    additional_fields: Some(serde_json::json!({ "Text": "y".repeat(i) })),
                    ..Default::default()
                }
                .into()
            })
            .collect();
        for rows in [&rows, &dynamic] {
            let table = rows[0].table();
            let mut b = table.batch_builder();
            for r in rows {
                b.append(r).unwrap();
            }
            let refs: Vec<&Row> = rows.iter().collect();
            assert_eq!(table.batch_of(&refs).unwrap(), b.finish());
        }
        let refs: Vec<&Row> = rows.iter().collect();
        assert_eq!(
            Table::DeviceNetworkEvents.batch_of(&[]).unwrap().num_rows(),
            0
        );
        let other = Row::from(DeviceEvents::default());
        assert_eq!(
            Table::DeviceNetworkEvents
                .batch_of(&[refs[0], &other])
                .unwrap_err(),
            WrongTable {
                expected: Table::DeviceNetworkEvents,
                found: Table::DeviceEvents
            }
        );
    }

    #[test]
    fn a_row_of_another_table_is_refused() {
        let mut b = Table::DeviceEvents.batch_builder();
        let err = b.append(&DeviceFileEvents::default().into()).unwrap_err();
        assert_eq!(
            err,
            WrongTable {
                expected: Table::DeviceEvents,
                found: Table::DeviceFileEvents
            }
        );
        assert!(b.is_empty());
    }

    #[test]
    fn lookups_by_name() {
        assert_eq!(
            Table::from_name("DeviceLogonEvents"),
            Some(Table::DeviceLogonEvents)
        );
        assert_eq!(Table::from_name("devicelogonevents"), None);
        assert_eq!(
            Table::AlertEvidence.column("ResourceID").map(|c| c.kind),
            Some(KustoType::String)
        );
        assert_eq!(Table::DeviceEvents.column("Nope"), None);
    }
}
