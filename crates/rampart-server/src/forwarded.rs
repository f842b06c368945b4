//! Forwarded Windows events as the store logs them: a request's body as it came (compressed,
//! JSON lines), not the rows made of it (see [`rampart_store::Sources`]). The body is a
//! fraction of the rows' size, and logging it costs a copy where encoding the rows cost a
//! tenth of the server's instructions. Replaying the log makes the rows again the way the
//! pipeline made them: each line that reads as a record, mapped to its table's row.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use datafusion::arrow::record_batch::RecordBatch;
use rampart_schema::{BatchBuilder, Table};
use rampart_sources::WinEvent;
use rampart_sources::jsonl;
use rampart_sources::windows::map_event;
use rampart_store::{SourceDecoder, Sources};

use crate::pipeline::DEFAULT_BATCH_ROWS;
use crate::problem::Problem;

/// The kind of the store's log records of forwarded events.
pub const KIND: &str = "winevent-jsonl";

/// Most bytes a logged body expands to when it is replayed: more than any limit it was
/// accepted under ([`crate::config::Limits::max_events_bytes`] is at most this).
pub const MAX_REPLAYED_BYTES: u64 = 1 << 30;

/// The sources the server's store logs by input: what every program that opens its data
/// directory gives the store ([`rampart_store::StoreConfig::sources`]).
pub fn sources() -> Sources {
    Sources::default().with(KIND, Forwarded)
}

/// The log record's input of a body in `encoding`.
pub fn input(encoding: Encoding, raw: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(1 + raw.len());
    input.push(encoding.byte());
    input.extend_from_slice(raw);
    input
}

/// The decoder of [`KIND`].
struct Forwarded;

impl SourceDecoder for Forwarded {
    fn decode(&self, input: &[u8]) -> Result<Vec<(Table, RecordBatch)>, String> {
        let (&byte, raw) = input.split_first().ok_or("no encoding")?;
        let encoding = Encoding::of_byte(byte).ok_or_else(|| format!("encoding {byte}"))?;
        let text = encoding
            .decode(raw, MAX_REPLAYED_BYTES)
            .map_err(|p| p.detail.unwrap_or(p.title))?;
        let source: Arc<Path> = Arc::from(Path::new("replayed"));
        let mut builders: BTreeMap<Table, BatchBuilder> = BTreeMap::new();
        let mut batches = Vec::new();
        for (_, line) in jsonl::lines(&text) {
            // A line that is not a record was set aside when the body came, as it is here.
            let Ok(event) = WinEvent::from_forwarded_slice(source.clone(), line) else {
                continue;
            };
            let row = map_event(&event);
            let table = row.table();
            let builder = builders
                .entry(table)
                .or_insert_with(|| table.batch_builder());
            builder.append(&row).map_err(|e| e.to_string())?;
            if builder.len() >= DEFAULT_BATCH_ROWS {
                batches.push((table, builder.finish()));
            }
        }
        batches.extend(
            builders
                .into_iter()
                .filter(|(_, b)| !b.is_empty())
                .map(|(table, mut b)| (table, b.finish())),
        );
        Ok(batches)
    }
}

/// How a body of events is compressed (`Content-Encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The request's encoding; 415 for one the server does not read (or a list of several).
    pub fn of(headers: &HeaderMap) -> Result<Encoding, Problem> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(Encoding::Identity);
        };
        let value = value.to_str().unwrap_or_default().trim();
        if value.eq_ignore_ascii_case("gzip") || value.eq_ignore_ascii_case("x-gzip") {
            Ok(Encoding::Gzip)
        } else if value.eq_ignore_ascii_case("zstd") {
            Ok(Encoding::Zstd)
        } else if value.eq_ignore_ascii_case("identity") || value.is_empty() {
            Ok(Encoding::Identity)
        } else {
            Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding '{value}' is not read: use gzip, zstd or none"),
            ))
        }
    }

    /// The body as sent, decompressed; 413 as soon as it expands past `limit` bytes (only
    /// `limit + 1` bytes are ever produced), 400 when it is not valid for its encoding.
    pub fn decode(self, raw: &[u8], limit: u64) -> Result<Cow<'_, [u8]>, Problem> {
        let (name, reader): (&str, Box<dyn Read + '_>) = match self {
            Encoding::Identity if raw.len() as u64 > limit => {
                return Err(too_large(format!(
                    "events are limited to {limit} bytes decompressed"
                )));
            }
            Encoding::Identity => return Ok(Cow::Borrowed(raw)),
            Encoding::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(raw))),
            Encoding::Zstd => (
                "zstd",
                Box::new(
                    zstd::stream::read::Decoder::with_buffer(raw)
                        .map_err(|e| Problem::bad_request(format!("not valid zstd: {e}")))?,
                ),
            ),
        };
        // Sized from the size the body declares (zstd's frame header, gzip's trailer), within
        // the limit and 64 times the body (a header that lies reserves no more): growing the
        // buffer by doubling copied the text over and over.
        let declared = match self {
            Encoding::Zstd => zstd::zstd_safe::get_frame_content_size(raw).ok().flatten(),
            Encoding::Gzip => raw
                .last_chunk::<4>()
                .map(|size| u64::from(u32::from_le_bytes(*size))),
            Encoding::Identity => None,
        };
        let bound = limit
            .saturating_add(1)
            .min((raw.len() as u64).saturating_mul(64));
        // A zstd body that declares its size (a single frame, as `zstd::bulk` and the
        // benchmark's load generator write it) is decompressed
        // in one call into a buffer of that size: streaming decompressed it into the
        // decoder's window and copied it out, into a buffer zeroed first. A body larger than
        // it declares (more frames, or a lying header) fails here and is streamed below.
        if let (Encoding::Zstd, Some(size)) = (self, declared.filter(|d| *d < bound))
            && let Ok(text) = zstd::bulk::decompress(raw, size as usize)
        {
            return Ok(Cow::Owned(text));
        }
        let mut text = Vec::with_capacity(declared.unwrap_or(0).min(bound) as usize);
        reader
            .take(limit.saturating_add(1))
            .read_to_end(&mut text)
            .map_err(|e| Problem::bad_request(format!("the body is not valid {name}: {e}")))?;
        if text.len() as u64 > limit {
            return Err(too_large(format!(
                "events are limited to {limit} bytes decompressed"
            )));
        }
        Ok(Cow::Owned(text))
    }

    fn byte(self) -> u8 {
        match self {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Zstd => 2,
        }
    }

    fn of_byte(byte: u8) -> Option<Encoding> {
        [Encoding::Identity, Encoding::Gzip, Encoding::Zstd]
            .into_iter()
            .find(|e| e.byte() == byte)
    }
}

fn too_large(detail: String) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, detail)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use datafusion::arrow::array::AsArray;

    use super::*;

    fn record(id: u64, command: &str) -> String {
        serde_json::json!({"Event": {
            "System": {
                "Provider_attributes": {"Name": "Microsoft-Windows-Security-Auditing"},
                "EventID": 4688, "EventRecordID": id, "Channel": "Security",
                "Computer": "ws1.corp.local",
                "TimeCreated_attributes": {"SystemTime": "2026-12-01T10:00:00Z"}},
            "EventData": {"NewProcessName": "C:\\Windows\\System32\\cmd.exe",
                          "CommandLine": command, "SubjectUserName": "alice"}}})
        .to_string()
    }

    fn encoded(encoding: Encoding, text: &[u8]) -> Vec<u8> {
        match encoding {
            Encoding::Identity => text.to_vec(),
            Encoding::Zstd => zstd::encode_all(text, 3).unwrap(),
            Encoding::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                gz.write_all(text).unwrap();
                gz.finish().unwrap()
            }
        }
    }

    /// Replaying a logged body gives the rows the pipeline maps its records to; lines that
    /// are not records give none, as when the body came.
    #[test]
    fn a_logged_body_is_read_again_into_the_same_rows() {
        let lines = [
            record(1, "cmd /c whoami"),
            "{not json".into(),
            record(2, "cmd /c ver"),
        ];
        let text = lines.join("\n");
        let source: Arc<Path> = Arc::from(Path::new("x"));
        let expected: Vec<_> = [&lines[0], &lines[2]]
            .iter()
            .map(|l| {
                map_event(&WinEvent::from_forwarded_slice(source.clone(), l.as_bytes()).unwrap())
            })
            .collect();
        let table = expected[0].table();
        let mut builder = table.batch_builder();
        for row in &expected {
            builder.append(row).unwrap();
        }
        let want = builder.finish();
        assert!(want.num_rows() == 2 && table == Table::DeviceProcessEvents);
        let commands = |b: &RecordBatch| -> Vec<String> {
            let c = b
                .column_by_name("ProcessCommandLine")
                .unwrap()
                .as_string::<i32>();
            c.iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect()
        };
        for encoding in [Encoding::Identity, Encoding::Gzip, Encoding::Zstd] {
            let got = Forwarded
                .decode(&input(encoding, &encoded(encoding, text.as_bytes())))
                .unwrap();
            assert_eq!(got.len(), 1, "{encoding:?}");
            assert_eq!(got[0].0, table);
            assert_eq!(got[0].1, want, "{encoding:?}");
            assert_eq!(commands(&got[0].1), ["cmd /c whoami", "cmd /c ver"]);
        }
        assert!(Forwarded.decode(&[]).is_err());
        assert!(
            Forwarded
                .decode(&[9, b'{'])
                .unwrap_err()
                .contains("encoding 9")
        );
        let mut cut = input(Encoding::Zstd, &encoded(Encoding::Zstd, text.as_bytes()));
        cut.truncate(cut.len() / 2);
        assert!(Forwarded.decode(&cut).is_err());
    }

    /// A zstd body that declares its size is read in one call; one larger than it declares
    /// (two frames) or past the limit is read as a stream, with the same answers.
    #[test]
    fn zstd_bodies_declared_or_not_read_the_same_within_the_limit() {
        let text = "line one\nline two\n".repeat(50);
        let declared = zstd::bulk::compress(text.as_bytes(), 3).unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&declared).unwrap(),
            Some(text.len() as u64)
        );
        let streamed = encoded(Encoding::Zstd, text.as_bytes());
        let mut two_frames = declared.clone();
        two_frames.extend_from_slice(&declared);
        let limit = 10_000;
        for (body, want) in [
            (&declared, text.clone()),
            (&streamed, text.clone()),
            (&two_frames, text.repeat(2)),
        ] {
            let got = Encoding::Zstd.decode(body, limit).unwrap();
            assert_eq!(got.as_ref(), want.as_bytes());
        }
        let over = Encoding::Zstd
            .decode(&declared, text.len() as u64 - 1)
            .unwrap_err();
        assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
        let over = Encoding::Zstd
            .decode(&two_frames, text.len() as u64 + 1)
            .unwrap_err();
        assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
