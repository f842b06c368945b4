//! Telemetry on its way to the server. Rows are gathered into blocks, each one zstd frame of
//! `{"table":T,"rows":[...]},...` (a table's rows share a batch): a block is one
//! record of the queue, holding one sequence number per row. A request body,
//! `{"batches":[BLOCK,BLOCK,...]}`, is made of the blocks as they are: zstd frames one after
//! another decompress to their contents one after another, so the body is the frames of
//! `{"batches":[`, the blocks with the frames of `,` between them, and `]}`'s frame. Rows are
//! compressed once, and the queue and the sender handle compressed bytes only, where they
//! handled one JSON row per record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::mapping::{Row, numbered};

/// The magic number a zstd frame starts with (RFC 8878), little endian.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Uncompressed bytes a block is sealed at (fewer if the queue's records must be smaller).
const BLOCK_BYTES: usize = 256 << 10;
/// Rows a block is sealed at.
const BLOCK_ROWS: u32 = 4096;

/// A zstd context at level 1: a little less compression than level 3 for a fraction of its CPU.
/// Matches of 7 bytes at least (level 1 takes 6): on the agent's blocks under load, 4 % faster
/// and 5 % smaller (python-zstandard over captured blocks).
fn compressor() -> Result<zstd::bulk::Compressor<'static>> {
    let mut z = zstd::bulk::Compressor::new(1).context("zstd")?;
    z.set_parameter(zstd::zstd_safe::CParameter::MinMatch(7))
        .context("zstd")?;
    // The sender reads a block's uncompressed size from its frame header.
    z.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))
        .context("zstd")?;
    Ok(z)
}

/// What the server's telemetry endpoint takes besides rows with every column (its heartbeat
/// policy's `telemetry`; an older server's says less): a block is written one way throughout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    /// Rows may refer to an `initiating` entry of their batch (`"$i": N`) instead of carrying
    /// the InitiatingProcess* columns.
    pub refer: bool,
    /// A batch may give its first row's `ReportId` (`"first": N`) instead of each row its own.
    pub first: bool,
    /// A row may leave out a `FileName` that is the last component of its `FolderPath`.
    pub file_name_from_path: bool,
}

impl Format {
    /// From the heartbeat policy's `telemetry` object.
    pub fn of_policy(telemetry: &serde_json::Value) -> Format {
        let yes = |key: &str| telemetry[key].as_bool() == Some(true);
        Format {
            refer: yes("initiating"),
            first: yes("first"),
            file_name_from_path: yes("file_name_from_path"),
        }
    }
}

/// `{"table":T,"rows":[r1,r3]},{"table":U,"rows":[r2],"initiating":[{...}]}` text: one batch
/// per table, in the order the tables first came to this builder, each holding its rows in the
/// order they came. A row may refer to an entry of its batch's `initiating` list instead of
/// carrying the InitiatingProcess* columns it shares with other rows. Rows are grouped by
/// table, not only when consecutive: under load a process's file events come between the
/// execs of its children, and every change of table used to start a batch that repeated the
/// ~700 bytes of `initiating` entries of the process (a quarter of a block's text).
#[derive(Default)]
struct Batches {
    /// The batches of every table seen (a table without rows in the open text is left out of
    /// it, its buffers kept for the next).
    tables: Vec<TableBatch>,
    /// The table the last row went to.
    last: usize,
    /// Bytes of the text once finished, about.
    len: usize,
    /// The finished text.
    text: Vec<u8>,
}

/// One table's rows of the open text, and the `initiating` entries they refer to.
#[derive(Default)]
struct TableBatch {
    table: Vec<u8>,
    /// The rows, comma-separated.
    rows: Vec<u8>,
    /// Where each row starts in `rows`.
    starts: Vec<usize>,
    /// The `initiating` entries, and where each is in the list (by address: a fast hash,
    /// looked up for every row).
    shared: Vec<Arc<str>>,
    shared_at: foldhash::HashMap<usize, usize>,
}

/// Bytes of a batch besides its rows and entries:
/// `{"table":"","first":18446744073709551615,"rows":[],"initiating":[]}` and a comma, and a
/// table name.
const BATCH_OVERHEAD: usize = 96;
/// Bytes a row's `"ReportId":N,` takes at most.
const REPORT_ID_BYTES: usize = 32;
/// Tables whose emptied buffers are kept for the next text (the agent writes fewer).
const KEEP_TABLES: usize = 16;

impl Batches {
    /// The batch of `table`, ready for a row to be appended to its `rows`.
    fn next_row(&mut self, table: &[u8]) -> &mut TableBatch {
        if self.tables.get(self.last).is_none_or(|t| t.table != table) {
            self.last = match self.tables.iter().position(|t| t.table == table) {
                Some(at) => at,
                None => {
                    self.tables.push(TableBatch {
                        table: table.to_vec(),
                        ..TableBatch::default()
                    });
                    self.tables.len() - 1
                }
            };
        }
        let batch = &mut self.tables[self.last];
        if batch.rows.is_empty() {
            self.len += BATCH_OVERHEAD + table.len();
        } else {
            batch.rows.push(b',');
            self.len += 1;
        }
        batch.starts.push(batch.rows.len());
        self.len += REPORT_ID_BYTES;
        batch
    }

    /// Adds a row `write` writes.
    fn push(&mut self, table: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let batch = self.next_row(table);
        let before = batch.rows.len();
        write(&mut batch.rows);
        self.len += batch.rows.len() - before;
    }

    /// Adds `row`, referring to its shared InitiatingProcess* columns if `refer`.
    fn push_row(&mut self, row: &Row, refer: bool) {
        let batch = self.next_row(row.table.as_bytes());
        let before = batch.rows.len();
        let mut added = 0;
        match row.initiating.as_ref().filter(|_| refer) {
            Some(pairs) => {
                let key = Arc::as_ptr(pairs).cast::<u8>() as usize;
                let at = *batch.shared_at.entry(key).or_insert_with(|| {
                    batch.shared.push(Arc::clone(pairs));
                    // `{pairs}` and a comma.
                    added = pairs.len() + 2;
                    batch.shared.len() - 1
                });
                row.write_referring(&mut batch.rows, at);
            }
            None => row.write_object(&mut batch.rows),
        }
        self.len += batch.rows.len() - before + added;
    }

    /// The text of every batch with rows; [`Batches::clear`] before the next push. With
    /// `first`, rows of tables that have the column get `ReportId`s from it on, in the order
    /// of the text: the server takes a request's rows to be numbered in their order (it skips
    /// a prefix already stored, and a store that failed part-way kept a prefix), so the
    /// numbers are given here, once rows are grouped by table, not as rows come. With
    /// `batch_first`, a batch gives its first number for the server to number its rows from
    /// (`"first": N`), and its rows are copied as they are.
    fn finish(&mut self, mut first: Option<u64>, batch_first: bool) -> &[u8] {
        self.text.clear();
        for batch in self.tables.iter().filter(|t| !t.rows.is_empty()) {
            if !self.text.is_empty() {
                self.text.push(b',');
            }
            self.text.extend_from_slice(b"{\"table\":\"");
            self.text.extend_from_slice(&batch.table);
            self.text.push(b'"');
            let numbered = first.as_mut().filter(|_| numbered(&batch.table));
            match numbered {
                Some(seq) if batch_first => {
                    self.text.extend_from_slice(b",\"first\":");
                    self.text
                        .extend_from_slice(itoa::Buffer::new().format(*seq).as_bytes());
                    *seq += batch.starts.len() as u64;
                    self.text.extend_from_slice(b",\"rows\":[");
                    self.text.extend_from_slice(&batch.rows);
                }
                Some(seq) => {
                    self.text.extend_from_slice(b",\"rows\":[");
                    let mut number = itoa::Buffer::new();
                    for (k, &start) in batch.starts.iter().enumerate() {
                        let end = batch.starts.get(k + 1).map_or(batch.rows.len(), |&e| e - 1);
                        // `{...}`: the number goes first; `{}` takes it alone.
                        let row = &batch.rows[start..end];
                        if k > 0 {
                            self.text.push(b',');
                        }
                        self.text.extend_from_slice(b"{\"ReportId\":");
                        self.text.extend_from_slice(number.format(*seq).as_bytes());
                        *seq += 1;
                        if row.len() > 2 {
                            self.text.push(b',');
                        }
                        self.text
                            .extend_from_slice(row.get(1..).unwrap_or_default());
                    }
                }
                None => {
                    if let Some(seq) = first.as_mut() {
                        *seq += batch.starts.len() as u64;
                    }
                    self.text.extend_from_slice(b",\"rows\":[");
                    self.text.extend_from_slice(&batch.rows);
                }
            }
            self.text.push(b']');
            if !batch.shared.is_empty() {
                self.text.extend_from_slice(b",\"initiating\":[");
                for (k, pairs) in batch.shared.iter().enumerate() {
                    if k > 0 {
                        self.text.push(b',');
                    }
                    self.text.push(b'{');
                    self.text
                        .extend_from_slice(pairs.trim_end_matches(',').as_bytes());
                    self.text.push(b'}');
                }
                self.text.push(b']');
            }
            self.text.push(b'}');
        }
        &self.text
    }

    fn clear(&mut self) {
        self.tables.truncate(KEEP_TABLES);
        for batch in &mut self.tables {
            batch.rows.clear();
            batch.starts.clear();
            batch.shared.clear();
            batch.shared_at.clear();
        }
        self.len = 0;
    }

    /// Bytes of the text once finished, about (at least).
    fn len(&self) -> usize {
        self.len
    }
}

/// Rows gathered into the next block. The rows' `ReportId`s are the sequence numbers the block
/// will get in the queue, so nothing else may push to the queue while a block is open.
pub struct BlockBuilder {
    batches: Batches,
    /// How the open block is written (what the server said it takes when the block opened).
    pub format: Format,
    rows: u32,
    first_seq: u64,
    /// When the first row of the open block came.
    opened: Instant,
    /// Uncompressed bytes a block is sealed at.
    limit: usize,
    zstd: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

impl BlockBuilder {
    /// Blocks whose frames fit in `max_record` bytes (the queue's largest record).
    pub fn new(max_record: usize) -> Result<BlockBuilder> {
        // zstd's worst case adds 1/256 and a frame header to what it is given.
        let limit = BLOCK_BYTES.min(max_record.saturating_sub(max_record / 256 + 128));
        Ok(BlockBuilder {
            batches: Batches::default(),
            format: Format::default(),
            rows: 0,
            first_seq: 0,
            opened: Instant::now(),
            limit,
            zstd: compressor()?,
            out: Vec::new(),
        })
    }

    /// Rows in the open block.
    pub fn rows(&self) -> u32 {
        self.rows
    }

    /// Whether `row` fits in the open block (always, in an empty one): if not, seal it first.
    pub fn fits(&self, row: &Row) -> bool {
        // The row, its number and, at most, a new batch for it (with its first number).
        let adds = row.text_len() + REPORT_ID_BYTES + BATCH_OVERHEAD + row.table.len();
        self.rows == 0 || (self.rows < BLOCK_ROWS && self.batches.len() + adds <= self.limit)
    }

    /// How long the open block's first row has waited (zero when it is empty).
    pub fn age(&self) -> Duration {
        if self.rows == 0 {
            Duration::ZERO
        } else {
            self.opened.elapsed()
        }
    }

    /// Adds `row` to the block; an empty block takes its first sequence number from
    /// `next_seq()` (the queue's next). Rows are numbered (`ReportId`) from it as the block is
    /// sealed, in the order they are written in (grouped by table).
    pub fn add(&mut self, row: Row, next_seq: impl FnOnce() -> u64) {
        if self.rows == 0 {
            self.first_seq = next_seq();
            self.opened = Instant::now();
        }
        self.batches.push_row(&row, self.format.refer);
        self.rows += 1;
    }

    /// The open block as one zstd frame, its first sequence number and its row count, and a new
    /// empty block; `None` if it holds no row.
    pub fn seal(&mut self) -> Option<Result<(&[u8], u64, u32)>> {
        if self.rows == 0 {
            return None;
        }
        let rows = std::mem::take(&mut self.rows);
        let text = self.batches.finish(Some(self.first_seq), self.format.first);
        self.out.clear();
        self.out
            .reserve(zstd::zstd_safe::compress_bound(text.len()));
        let compressed = self.zstd.compress_to_buffer(text, &mut self.out);
        self.batches.clear();
        Some(
            compressed
                .context("zstd")
                .map(|_| (&self.out[..], self.first_seq, rows)),
        )
    }
}

/// A telemetry request's body, made of queue records: blocks as they are; a record of an
/// earlier agent (one row, `TABLE NUL JSON`) compressed into a block of its own.
pub struct RequestBody {
    body: Vec<u8>,
    /// Uncompressed bytes of the records pushed.
    plain: usize,
    records: usize,
    open: Vec<u8>,
    comma: Vec<u8>,
    close: Vec<u8>,
    legacy: Batches,
    legacy_frame: Vec<u8>,
    zstd: zstd::bulk::Compressor<'static>,
}

impl RequestBody {
    pub fn new() -> Result<RequestBody> {
        let mut zstd = compressor()?;
        let mut frame = |text: &[u8]| zstd.compress(text).context("zstd");
        Ok(RequestBody {
            body: Vec::new(),
            plain: 0,
            records: 0,
            open: frame(b"{\"batches\":[")?,
            comma: frame(b",")?,
            close: frame(b"]}")?,
            legacy: Batches::default(),
            legacy_frame: Vec::new(),
            zstd,
        })
    }

    /// Starts a new body, keeping the buffer.
    pub fn clear(&mut self) {
        self.body.clear();
        self.body.extend_from_slice(&self.open);
        self.plain = 0;
        self.records = 0;
    }

    /// Whether `record` fits in a body of at most `max_plain` uncompressed bytes (the first
    /// always does).
    pub fn fits(&self, record: &[u8], max_plain: usize) -> bool {
        self.records == 0 || self.plain.saturating_add(plain_size(record)) <= max_plain
    }

    /// Adds a queue record; false when it is neither a block nor a row and was skipped (the
    /// caller counts its rows as lost).
    pub fn push(&mut self, record: &[u8]) -> Result<bool> {
        let size = plain_size(record);
        let frame = if record.starts_with(&ZSTD_MAGIC) {
            record
        } else {
            let Some(nul) = record.iter().position(|&b| b == 0) else {
                return Ok(false);
            };
            self.legacy.clear();
            self.legacy.push(&record[..nul], |out| {
                out.extend_from_slice(&record[nul + 1..])
            });
            self.legacy_frame = self
                .zstd
                .compress(self.legacy.finish(None, false))
                .context("zstd")?;
            &self.legacy_frame
        };
        if self.records > 0 {
            self.body.extend_from_slice(&self.comma);
        }
        self.body.extend_from_slice(frame);
        self.plain = self.plain.saturating_add(size);
        self.records += 1;
        Ok(true)
    }

    /// Closes the body (once per [`RequestBody::clear`]) and returns it.
    pub fn finish(&mut self) -> &[u8] {
        self.body.extend_from_slice(&self.close);
        &self.body
    }
}

/// The uncompressed size of a queue record: a block's from its frame header, a row's its own.
fn plain_size(record: &[u8]) -> usize {
    if record.starts_with(&ZSTD_MAGIC) {
        let size = zstd::zstd_safe::get_frame_content_size(record)
            .ok()
            .flatten();
        usize::try_from(size.unwrap_or(u64::MAX)).unwrap_or(usize::MAX)
    } else {
        record.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn row(table: &'static str, x: i64) -> Row {
        let fields = json!({ "x": x });
        Row::from_map(table, fields.as_object().unwrap_or(&Default::default()))
    }

    fn decompress(frames: &[u8]) -> Value {
        let text = zstd::stream::decode_all(frames).expect("zstd frames");
        serde_json::from_slice(&text).expect("JSON")
    }

    /// A block's batches (its text is a list of them without the brackets).
    fn batches_of(frame: &[u8]) -> Value {
        let mut text = b"[".to_vec();
        text.extend(zstd::stream::decode_all(frame).expect("zstd frame"));
        text.push(b']');
        serde_json::from_slice(&text).expect("JSON")
    }

    #[test]
    fn a_block_groups_rows_by_table_and_numbers_them() {
        let mut block = BlockBuilder::new(1 << 20).unwrap();
        assert!(block.seal().is_none(), "an empty block is not sealed");
        for (table, x) in [("A", 1), ("A", 2), ("B", 3), ("A", 4)] {
            block.add(row(table, x), || 70 + x as u64);
        }
        assert_eq!(block.rows(), 4);
        let (frame, first, rows) = block.seal().unwrap().unwrap();
        assert_eq!(
            (first, rows),
            (71, 4),
            "numbered from the queue's next at the first row"
        );
        let v = batches_of(frame);
        assert_eq!(
            v,
            json!([
                {"table": "A", "rows": [
                    {"x": 1, "ReportId": 71}, {"x": 2, "ReportId": 72}, {"x": 4, "ReportId": 73},
                ]},
                {"table": "B", "rows": [{"x": 3, "ReportId": 74}]},
            ]),
            "numbered in the order written: the server takes a request's rows in order"
        );
        // The software inventory has no ReportId but its rows count; an empty row takes the
        // number alone.
        block.add(row("DeviceTvmSoftwareInventory", 1), || 10);
        block.add(Row::from_map("C", &Default::default()), || 0);
        block.add(row("DeviceTvmSoftwareInventory", 2), || 0);
        block.add(row("D", 3), || 0);
        let (frame, first, rows) = block.seal().unwrap().unwrap();
        assert_eq!((first, rows), (10, 4));
        assert_eq!(
            batches_of(frame),
            json!([
                {"table": "DeviceTvmSoftwareInventory", "rows": [{"x": 1}, {"x": 2}]},
                {"table": "C", "rows": [{"ReportId": 12}]},
                {"table": "D", "rows": [{"x": 3, "ReportId": 13}]},
            ])
        );
        assert_eq!(block.rows(), 0);
        // The next block starts afresh: no batch of a table without rows.
        block.add(row("C", 5), || 75);
        let (frame, first, rows) = block.seal().unwrap().unwrap();
        assert_eq!((first, rows), (75, 1));
        let text = zstd::stream::decode_all(frame).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&text).unwrap(),
            json!({"table": "C", "rows": [{"x": 5, "ReportId": 75}]})
        );
    }

    #[test]
    fn rows_refer_to_the_initiating_columns_they_share_once_per_table() {
        let p: Arc<str> =
            Arc::from("\"InitiatingProcessId\":42,\"InitiatingProcessFileName\":\"w\",");
        let q: Arc<str> = Arc::from("\"InitiatingProcessId\":7,");
        let rows = || {
            [
                ("A", 1, Some(&p)),
                ("A", 2, Some(&p)),
                ("A", 3, Some(&q)),
                ("B", 4, Some(&p)),
                ("A", 5, None),
            ]
            .map(|(table, x, shared)| {
                let mut r = row(table, x);
                r.initiating = shared.map(Arc::clone);
                r
            })
        };
        let mut block = BlockBuilder::new(1 << 20).unwrap();
        block.format.refer = true;
        for r in rows() {
            block.add(r, || 1);
        }
        let (frame, _, _) = block.seal().unwrap().unwrap();
        let v = batches_of(frame);
        let (pv, qv) = (
            json!({"InitiatingProcessId": 42, "InitiatingProcessFileName": "w"}),
            json!({"InitiatingProcessId": 7}),
        );
        assert_eq!(
            v,
            json!([
                {"table": "A", "rows": [
                    {"x": 1, "ReportId": 1, "$i": 0},
                    {"x": 2, "ReportId": 2, "$i": 0},
                    {"x": 3, "ReportId": 3, "$i": 1},
                    {"x": 5, "ReportId": 4},
                ], "initiating": [pv, qv]},
                {"table": "B", "rows": [{"x": 4, "ReportId": 5, "$i": 0}], "initiating": [pv]},
            ])
        );
        // Without references (a server that does not take them), rows carry every column.
        block.format.refer = false;
        for r in rows() {
            block.add(r, || 1);
        }
        let (frame, _, _) = block.seal().unwrap().unwrap();
        let text = String::from_utf8(zstd::stream::decode_all(frame).unwrap()).unwrap();
        assert!(
            !text.contains("\"$i\"") && !text.contains("initiating"),
            "{text}"
        );
        let v: Value = serde_json::from_str(&format!("[{text}]")).unwrap();
        assert_eq!(
            v[0]["rows"][0],
            json!({"InitiatingProcessId": 42, "InitiatingProcessFileName": "w", "x": 1, "ReportId": 1})
        );
    }

    #[test]
    fn a_batch_may_give_its_first_number_for_the_server_to_number_its_rows() {
        let mut block = BlockBuilder::new(1 << 20).unwrap();
        block.format.first = true;
        let tvm = "DeviceTvmSoftwareInventory";
        for (table, x) in [("A", 1), (tvm, 2), ("B", 3), ("A", 4)] {
            block.add(row(table, x), || 10);
        }
        let (frame, first, rows) = block.seal().unwrap().unwrap();
        assert_eq!((first, rows), (10, 4));
        let v = batches_of(frame);
        // In the order of the text: A's two rows are 10 and 11, the inventory's row (which has
        // no ReportId) takes 12, B's row 13.
        assert_eq!(
            v,
            json!([
                {"table": "A", "first": 10, "rows": [{"x": 1}, {"x": 4}]},
                {"table": tvm, "rows": [{"x": 2}]},
                {"table": "B", "first": 13, "rows": [{"x": 3}]},
            ])
        );
    }

    #[test]
    fn a_block_is_full_before_it_outgrows_a_queue_record() {
        let max_record = 4096;
        let mut block = BlockBuilder::new(max_record).unwrap();
        let mut n = 0;
        while block.fits(&row("DeviceFileEvents", n)) {
            block.add(row("DeviceFileEvents", n), || 1);
            n += 1;
        }
        assert!(n > 10, "{n} rows");
        let (frame, _, _) = block.seal().unwrap().unwrap();
        assert!(frame.len() <= max_record);
        // So with rows that refer to shared columns, whose list comes at the batch's end; the
        // text is incompressible here, so that only the bound keeps the frame small enough.
        block.format.refer = true;
        let noise = |k: i64| -> Arc<str> {
            // xorshift: letters zstd cannot predict.
            let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ k as u64;
            let text: String = (0..300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            Arc::from(format!("\"InitiatingProcessCommandLine\":\"{text}\","))
        };
        let shared_row = |k: i64| {
            let mut r = row("DeviceFileEvents", k);
            r.initiating = Some(noise(k));
            r
        };
        let mut k = 0;
        while block.fits(&shared_row(k)) {
            block.add(shared_row(k), || 1);
            k += 1;
        }
        assert!(k > 2, "{k} rows");
        let (frame, _, _) = block.seal().unwrap().unwrap();
        assert!(frame.len() <= max_record, "{} bytes", frame.len());
        // The text itself, numbers included, stays within the bound `fits` keeps.
        let text = zstd::stream::decode_all(frame).unwrap().len();
        assert!(
            text <= max_record - max_record / 256 - 128,
            "{text} bytes of text"
        );
    }

    #[test]
    fn a_request_is_its_blocks_as_they_are() {
        let mut block = BlockBuilder::new(1 << 20).unwrap();
        let mut records = Vec::new();
        for (table, xs) in [("A", [1, 2]), ("B", [3, 4])] {
            for x in xs {
                block.add(row(table, x), || x as u64);
            }
            records.push(block.seal().unwrap().unwrap().0.to_vec());
        }
        // A row queued by an earlier agent, and a record that is neither.
        records.push(b"C\0{\"x\":5}".to_vec());
        records.push(b"neither".to_vec());
        let mut body = RequestBody::new().unwrap();
        for _ in 0..2 {
            body.clear();
            for r in &records {
                assert!(body.fits(r, usize::MAX));
                assert_eq!(body.push(r).unwrap(), r != b"neither");
            }
            assert_eq!(
                decompress(body.finish()),
                json!({"batches": [
                    {"table": "A", "rows": [{"x": 1, "ReportId": 1}, {"x": 2, "ReportId": 2}]},
                    {"table": "B", "rows": [{"x": 3, "ReportId": 3}, {"x": 4, "ReportId": 4}]},
                    {"table": "C", "rows": [{"x": 5}]},
                ]})
            );
        }
        body.clear();
        assert_eq!(decompress(body.finish()), json!({"batches": []}));
        // The size limit counts uncompressed bytes; the first record always fits.
        body.clear();
        let plain = zstd::stream::decode_all(&records[0][..]).unwrap().len();
        assert!(body.fits(&records[0], 1));
        assert!(body.push(&records[0]).unwrap());
        assert!(!body.fits(&records[0], 2 * plain - 1));
        assert!(body.fits(&records[0], 2 * plain));
    }
}
