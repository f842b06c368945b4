//! What goes into the store: batches checked against their table's schema, with Kusto's
//! string semantics, and their encoding as log records.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use rampart_schema::{KustoType, Table};

use crate::files::{day_of_micros, timestamps};
use crate::{Sources, StoreError, validate_tenant};

/// A batch as the store keeps it in memory.
#[derive(Debug, Clone)]
pub(crate) struct MemBatch {
    pub(crate) batch: RecordBatch,
    /// Where rows without a Timestamp go.
    pub(crate) ingest_day: i32,
    pub(crate) min_ts: Option<i64>,
    pub(crate) max_ts: Option<i64>,
    pub(crate) bytes: usize,
    /// When its oldest row came into memory (for a partition a flush holds, see
    /// [`crate::StoreConfig::max_hold`]).
    pub(crate) since: Instant,
}

impl MemBatch {
    pub(crate) fn new(batch: RecordBatch, table: Table, ingest_us: i64) -> MemBatch {
        let ts = timestamps(&batch, table);
        MemBatch {
            ingest_day: day_of_micros(ingest_us).unwrap_or_default(),
            min_ts: ts.and_then(datafusion::arrow::compute::min),
            max_ts: ts.and_then(datafusion::arrow::compute::max),
            bytes: batch.get_array_memory_size(),
            batch,
            since: Instant::now(),
        }
    }
}

/// Checks that `batch` has the columns of `table` (names and types, in order) and returns it
/// with the table's own schema, null strings made empty: in Kusto a string is never null, so
/// `where X == ""` and `isempty(X)` must find missing values. `dynamic` columns keep nulls.
pub(crate) fn conform(table: Table, batch: RecordBatch) -> Result<RecordBatch, StoreError> {
    let schema = table.arrow_schema();
    let found = batch.schema();
    let mismatch = |detail: String| StoreError::SchemaMismatch { table, detail };
    if found.fields().len() != schema.fields().len() {
        return Err(mismatch(format!(
            "the table has {} columns, the batch {}",
            schema.fields().len(),
            found.fields().len()
        )));
    }
    for (i, (want, got)) in schema.fields().iter().zip(found.fields()).enumerate() {
        if want.name() != got.name() || want.data_type() != got.data_type() {
            return Err(mismatch(format!(
                "column {i} is {} ({}) in the table, {} ({}) in the batch",
                want.name(),
                want.data_type(),
                got.name(),
                got.data_type()
            )));
        }
    }
    let mut columns = batch
        .columns()
        .iter()
        .zip(table.columns())
        .map(|(column, c)| match c.kind {
            KustoType::String => empty_for_null(column),
            _ => Ok(column.clone()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    drop(batch);
    // Builders leave spare capacity (a 200-row batch can hold 300 KB): give it back, so that
    // the memory limit counts rows rather than slack. Buffers the caller still shares are
    // left as they are.
    for column in &mut columns {
        column.shrink_to_fit();
    }
    RecordBatch::try_new(schema, columns).map_err(|e| mismatch(e.to_string()))
}

fn empty_for_null(column: &ArrayRef) -> Result<ArrayRef, StoreError> {
    let Some(nulls) = column.nulls().filter(|n| n.null_count() > 0) else {
        return Ok(column.clone());
    };
    let Some(strings) = column.as_string_opt::<i32>() else {
        return Ok(column.clone());
    };
    // Builders leave null slots zero-length: dropping the validity bitmap makes them "".
    let nulls_are_empty = strings
        .offsets()
        .windows(2)
        .zip(nulls.iter())
        .all(|(w, valid)| valid || w[0] == w[1]);
    let filled = if nulls_are_empty {
        // Not `try_new`, which checks every value is UTF-8 again (0.4 % of the server's
        // instructions per forwarded event).
        // SAFETY: the offsets and values of a valid string array, unchanged; only the
        // validity bitmap goes, and a string array's values need none.
        unsafe {
            StringArray::new_unchecked(strings.offsets().clone(), strings.values().clone(), None)
        }
    } else {
        strings.iter().map(|v| Some(v.unwrap_or(""))).collect()
    };
    Ok(Arc::new(filled))
}

/// Set in the byte of the tenant's length (tenants are at most 64 bytes): the Arrow IPC
/// stream after the table's name is one LZ4 block, its uncompressed size first. One block per
/// record, not one LZ4 frame per column buffer (a frame each with its own buffers and hash
/// table, most of the log's CPU for the small batches of a server request). Records written
/// before kept their buffers framed inside the stream, which the IPC reader still reads.
const PACKED: u8 = 0x80;

/// Set in the byte of the tenant's length: the record is a source's input (see
/// [`crate::Sources`]), its kind's name after the tenant instead of a table's, then the input.
const SOURCE: u8 = 0x40;

/// Where a held partition's record has the ingestion time of others (no clock says i64::MIN;
/// logs written before held records existed have none).
const HELD: i64 = i64::MIN;

/// A log record: ingestion time (µs), tenant, table, then the batch as an Arrow IPC stream.
///
/// `held`: the record of rows a flush holds in memory (see
/// [`crate::StoreConfig::max_held_bytes`]), logged again in the segment after the ones it
/// covers, is `HELD` and `held` (the last record of the segments the flush deletes, which
/// hold the rows too) followed by the above. It counts only once a manifest covering `held`
/// is committed; before that, the rows are read from the records it copies.
pub(crate) fn encode(
    tenant: &str,
    table: Table,
    ingest_us: i64,
    batch: &RecordBatch,
    compress: bool,
    held: Option<u64>,
) -> Result<Vec<u8>, StoreError> {
    let stream = |out: &mut Vec<u8>| -> Result<(), StoreError> {
        let mut writer = StreamWriter::try_new(out, &batch.schema())?;
        writer.write(batch)?;
        writer.finish()?;
        Ok(())
    };
    // A packed record's block is appended whole: the header alone is written first.
    let mut out = Vec::with_capacity(if compress {
        128
    } else {
        batch.get_array_memory_size() / 2 + 1024
    });
    if let Some(covers) = held {
        out.extend_from_slice(&HELD.to_le_bytes());
        out.extend_from_slice(&covers.to_le_bytes());
    }
    let name = table.name();
    out.extend_from_slice(&ingest_us.to_le_bytes());
    // Both are at most 64 bytes: tenants are validated, table names are ours.
    out.push(tenant.len() as u8 | if compress { PACKED } else { 0 });
    out.extend_from_slice(tenant.as_bytes());
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    if compress {
        let mut ipc = Vec::with_capacity(batch.get_array_memory_size() + 1024);
        stream(&mut ipc)?;
        out.extend_from_slice(&lz4_flex::block::compress_prepend_size(&ipc));
    } else {
        stream(&mut out)?;
    }
    Ok(out)
}

/// A log record of a source's input: ingestion time (µs), tenant, the source's kind, the input
/// as it came. `kind` is valid ([`crate::source::valid_kind`]).
pub(crate) fn encode_source(tenant: &str, kind: &str, ingest_us: i64, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + tenant.len() + kind.len() + input.len());
    out.extend_from_slice(&ingest_us.to_le_bytes());
    out.push(tenant.len() as u8 | SOURCE);
    out.extend_from_slice(tenant.as_bytes());
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(input);
    out
}

/// The IPC stream of a [`PACKED`] record. Records are decoded only once the log's CRC has
/// matched: lz4_flex is built as arrow-ipc builds it, without its checked decoding.
fn unpack(block: &[u8]) -> Result<Vec<u8>, String> {
    let (size, body) = lz4_flex::block::uncompressed_size(block).map_err(|e| e.to_string())?;
    // LZ4 expands at most ~255 times: a larger size is not this record's.
    if size > body.len().saturating_mul(255).saturating_add(16) {
        return Err(format!(
            "a block of {} bytes cannot hold {size}",
            body.len()
        ));
    }
    lz4_flex::block::decompress(body, size).map_err(|e| e.to_string())
}

/// A log record read back.
pub(crate) struct Decoded {
    pub(crate) tenant: String,
    pub(crate) ingest_us: i64,
    pub(crate) batches: Vec<(Table, RecordBatch)>,
    /// A held partition's record: the last record it copies rows from.
    pub(crate) covers: Option<u64>,
}

impl Decoded {
    /// Whether the record's rows belong in memory when the manifest covers the log up to
    /// `covered`: a held partition's copy counts only once what it copies is covered.
    pub(crate) fn counts(&self, covered: u64) -> bool {
        self.covers.is_none_or(|c| c <= covered)
    }
}

/// Why a record that passed its checksum gives no rows.
#[derive(Debug)]
pub(crate) enum Undecodable {
    /// It does not decode (skipped and reported).
    Damaged(String),
    /// It holds the input of a source there is no decoder for: the store must not be read
    /// without it.
    UnknownSource(String),
}

impl From<String> for Undecodable {
    fn from(why: String) -> Undecodable {
        Undecodable::Damaged(why)
    }
}

pub(crate) fn decode(payload: &[u8], sources: &Sources) -> Result<Decoded, Undecodable> {
    let short = || "record too short".to_string();
    let (first, _) = read_u64(payload).ok_or_else(short)?;
    let (covers, payload) = if first as i64 == HELD {
        let (_, rest) = read_u64(payload).ok_or_else(short)?;
        let (covers, rest) = read_u64(rest).ok_or_else(short)?;
        (Some(covers), rest)
    } else {
        (None, payload)
    };
    let (ingest, rest) = read_u64(payload).ok_or_else(short)?;
    let ingest_us = ingest as i64;
    let (&tenant_len, rest) = rest.split_first().ok_or_else(short)?;
    let (tenant, rest) = take_str(rest, tenant_len & !(PACKED | SOURCE)).ok_or_else(short)?;
    // A table's name, or a source's kind.
    let (name, rest) = take_name(rest).ok_or_else(short)?;
    validate_tenant(tenant).map_err(|e| e.to_string())?;
    if tenant_len & SOURCE != 0 {
        let decoder = sources
            .get(name)
            .ok_or_else(|| Undecodable::UnknownSource(name.to_string()))?;
        let batches = decoder
            .decode(rest)?
            .into_iter()
            .map(|(table, b)| Ok((table, conform(table, b).map_err(|e| e.to_string())?)))
            .collect::<Result<Vec<_>, String>>()?;
        return Ok(Decoded {
            tenant: tenant.to_string(),
            ingest_us,
            batches,
            covers,
        });
    }
    let table = Table::from_name(name).ok_or_else(|| format!("unknown table '{name}'"))?;
    let unpacked;
    let stream = if tenant_len & PACKED != 0 {
        unpacked = unpack(rest)?;
        &unpacked[..]
    } else {
        rest
    };
    let reader = StreamReader::try_new(Cursor::new(stream), None).map_err(|e| e.to_string())?;
    let batches = reader
        .map(|b| {
            let b = b.map_err(|e| e.to_string())?;
            Ok((table, conform(table, b).map_err(|e| e.to_string())?))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Decoded {
        tenant: tenant.to_string(),
        ingest_us,
        batches,
        covers,
    })
}

fn read_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    Some((u64::from_le_bytes(head.try_into().ok()?), rest))
}

fn take_name(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    take_str(rest, len)
}

fn take_str(bytes: &[u8], len: u8) -> Option<(&str, &[u8])> {
    let (name, rest) = bytes.split_at_checked(usize::from(len))?;
    Some((std::str::from_utf8(name).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_schema::{DeviceProcessEvents, Row};

    fn none() -> Sources {
        Sources::default()
    }

    /// Input: one file name per line, each a process row.
    struct Names;

    impl crate::SourceDecoder for Names {
        fn decode(&self, input: &[u8]) -> Result<Vec<(Table, RecordBatch)>, String> {
            let text = std::str::from_utf8(input).map_err(|e| e.to_string())?;
            let mut b = Table::DeviceProcessEvents.batch_builder();
            for name in text.lines() {
                let row = DeviceProcessEvents {
                    file_name: Some(name.into()),
                    ..Default::default()
                };
                b.append(&Row::from(row)).map_err(|e| e.to_string())?;
            }
            Ok(vec![(Table::DeviceProcessEvents, b.finish())])
        }
    }

    #[test]
    fn a_source_record_holds_the_input_and_needs_its_decoder() {
        let bytes = encode_source("acme", "names", 42, b"cmd.exe\nwhoami.exe");
        assert!(bytes.ends_with(b"cmd.exe\nwhoami.exe"));
        let sources = Sources::default().with("names", Names);
        let d = decode(&bytes, &sources).unwrap();
        assert_eq!(
            (d.tenant.as_str(), d.ingest_us, d.covers),
            ("acme", 42, None)
        );
        let [(table, batch)] = &d.batches[..] else {
            panic!("{} batches", d.batches.len())
        };
        assert_eq!(*table, Table::DeviceProcessEvents);
        let names = batch.column_by_name("FileName").unwrap().as_string::<i32>();
        assert_eq!(
            names.iter().flatten().collect::<Vec<_>>(),
            ["cmd.exe", "whoami.exe"]
        );
        // Strings the decoder left null are conformed, as appended batches are.
        let commands = batch.column_by_name("ProcessCommandLine").unwrap();
        assert_eq!(commands.null_count(), 0);
        assert!(matches!(
            decode(&bytes, &none()),
            Err(Undecodable::UnknownSource(kind)) if kind == "names"
        ));
        let bad = encode_source("acme", "names", 42, b"\xff");
        assert!(matches!(
            decode(&bad, &sources),
            Err(Undecodable::Damaged(_))
        ));
    }

    fn batch() -> RecordBatch {
        let mut b = Table::DeviceProcessEvents.batch_builder();
        let row = DeviceProcessEvents {
            file_name: Some("cmd.exe".into()),
            report_id: Some(7),
            ..Default::default()
        };
        b.append(&Row::from(row)).unwrap();
        b.append(&Row::from(DeviceProcessEvents::default()))
            .unwrap();
        b.finish()
    }

    #[test]
    fn null_strings_become_empty_but_other_nulls_stay() {
        let b = conform(Table::DeviceProcessEvents, batch()).unwrap();
        let names = b.column_by_name("FileName").unwrap().as_string::<i32>();
        assert_eq!(names.null_count(), 0);
        assert_eq!(names.value(1), "");
        assert_eq!(names.value(0), "cmd.exe");
        assert_eq!(b.column_by_name("ReportId").unwrap().null_count(), 1);
        let mut kb = Table::DeviceTvmSoftwareVulnerabilitiesKB.batch_builder();
        kb.append(&Row::from(
            rampart_schema::DeviceTvmSoftwareVulnerabilitiesKB::default(),
        ))
        .unwrap();
        let kb = conform(Table::DeviceTvmSoftwareVulnerabilitiesKB, kb.finish()).unwrap();
        let dynamic = kb.column_by_name("AffectedSoftware").unwrap();
        assert_eq!(dynamic.null_count(), 1, "dynamic columns keep nulls");
        assert_eq!(kb.column_by_name("CveId").unwrap().null_count(), 0);
        // Null slots that hold bytes are rebuilt, not reinterpreted.
        let odd = StringArray::try_new(
            datafusion::arrow::buffer::OffsetBuffer::new(vec![0, 3, 6].into()),
            b"abcdef".to_vec().into(),
            Some(vec![true, false].into()),
        )
        .unwrap();
        let filled = empty_for_null(&(Arc::new(odd) as ArrayRef)).unwrap();
        let filled = filled.as_string::<i32>();
        assert_eq!((filled.value(0), filled.value(1)), ("abc", ""));
    }

    #[test]
    fn records_round_trip() {
        let b = conform(Table::DeviceProcessEvents, batch()).unwrap();
        for compress in [false, true] {
            let bytes = encode("acme", Table::DeviceProcessEvents, 42, &b, compress, None).unwrap();
            let d = decode(&bytes, &none()).unwrap();
            assert_eq!((d.tenant.as_str(), d.ingest_us), ("acme", 42));
            assert_eq!(d.batches, vec![(Table::DeviceProcessEvents, b.clone())]);
            assert!(d.counts(0), "an appended batch always counts");
            assert!(decode(&bytes[..20], &none()).is_err());
            let held = encode(
                "acme",
                Table::DeviceProcessEvents,
                42,
                &b,
                compress,
                Some(9),
            )
            .unwrap();
            let d = decode(&held, &none()).unwrap();
            assert_eq!((d.covers, d.ingest_us, d.batches.len()), (Some(9), 42, 1));
            assert!(!d.counts(8) && d.counts(9) && d.counts(10));
            assert!(decode(&held[..12], &none()).is_err());
        }
    }

    /// A record as builds before packed records wrote it: each buffer an LZ4 frame inside the
    /// stream (a log written by them is read after an upgrade).
    #[test]
    fn records_with_framed_buffers_still_read() {
        use datafusion::arrow::ipc::CompressionType;
        use datafusion::arrow::ipc::writer::IpcWriteOptions;
        let b = conform(Table::DeviceProcessEvents, batch()).unwrap();
        let mut old = 42i64.to_le_bytes().to_vec();
        old.extend_from_slice(b"\x04acme");
        old.push(Table::DeviceProcessEvents.name().len() as u8);
        old.extend_from_slice(Table::DeviceProcessEvents.name().as_bytes());
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        let mut writer =
            StreamWriter::try_new_with_options(&mut old, &b.schema(), options).unwrap();
        writer.write(&b).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let d = decode(&old, &none()).unwrap();
        assert_eq!((d.tenant.as_str(), d.ingest_us), ("acme", 42));
        assert_eq!(d.batches, vec![(Table::DeviceProcessEvents, b.clone())]);
        // A packed record is smaller than its stream, and a size its block cannot hold is
        // refused rather than allocated.
        let packed = encode("acme", Table::DeviceProcessEvents, 42, &b, true, None).unwrap();
        let plain = encode("acme", Table::DeviceProcessEvents, 42, &b, false, None).unwrap();
        assert!(
            packed.len() < plain.len(),
            "{} >= {}",
            packed.len(),
            plain.len()
        );
        let at = 8 + 1 + 4 + 1 + Table::DeviceProcessEvents.name().len();
        let mut bogus = packed[..at].to_vec();
        bogus.extend_from_slice(&u32::MAX.to_le_bytes());
        bogus.extend_from_slice(&packed[at + 4..]);
        let err = decode(&bogus, &none()).err().unwrap();
        assert!(
            matches!(&err, Undecodable::Damaged(why) if why.contains("cannot hold")),
            "{err:?}"
        );
    }

    #[test]
    fn a_batch_of_another_table_is_refused() {
        let err = conform(Table::DeviceFileEvents, batch()).unwrap_err();
        assert!(err.to_string().contains("DeviceFileEvents"), "{err}");
    }
}
