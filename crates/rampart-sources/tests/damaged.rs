//! Reading damaged `.evtx` files: truncated, bit-flipped, not EVTX at all.
//!
//! Every damaged file is made at test time, in a temporary folder, from a good multi-chunk
//! sample of the shared EVTX-ATTACK-SAMPLES dataset (never copied into the repository). What
//! must hold whatever the damage: no panic; the records of the chunks that were not touched
//! all come through; every record read maps to a hunting-schema row; and every problem is a
//! [`ReadError`] that names the file and an offset inside the damaged part.

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use rampart_sources::WinEvent;
use rampart_sources::evtx::{self, Damage, FileSummary, ReadError};
use rampart_sources::windows::map_event;

/// A Sysmon log of four used chunks (38, 42, 39 and 3 records) in a 1.1 MB file.
const SAMPLE: &str = "AutomatedTestingTools/panache_sysmon_vs_EDRTestingScript.evtx";
const FILE_HEADER: usize = 4096;
const CHUNK: usize = 65536;
const CHUNK_HEADER: usize = 512;
const RECORD_HEADER: usize = 24;

// ---------------------------------------------------------------------------------------------
// The good sample and what it holds
// ---------------------------------------------------------------------------------------------

/// One chunk of the good sample, from its header.
struct ChunkInfo {
    /// Byte range of the chunk in the file.
    range: Range<u64>,
    /// Record ids the header says the chunk holds.
    ids: BTreeSet<u64>,
    /// End of the records (the header's free space offset), from the chunk's start.
    used: usize,
}

struct Good {
    path: PathBuf,
    bytes: Vec<u8>,
    chunks: Vec<ChunkInfo>,
    /// What reading the intact file gives.
    records: u64,
    ids: BTreeSet<u64>,
}

impl Good {
    /// The ids of every chunk but `skip`.
    fn ids_outside(&self, skip: usize) -> BTreeSet<u64> {
        self.chunks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .flat_map(|(_, c)| c.ids.iter().copied())
            .collect()
    }

    /// File offsets of the records of chunk `index`, walking their size fields.
    fn record_offsets(&self, index: usize) -> Vec<usize> {
        let start = self.chunks[index].range.start as usize;
        let end = start + self.chunks[index].used;
        let mut offsets = Vec::new();
        let mut at = start + CHUNK_HEADER;
        while at + RECORD_HEADER <= end && self.bytes[at..at + 4] == *b"**\0\0" {
            offsets.push(at);
            at += u32_at(&self.bytes, at + 4) as usize;
        }
        offsets
    }
}

impl Good {
    /// A copy of the file with every byte in `range` inverted.
    fn inverted(&self, range: Range<usize>) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        for b in &mut bytes[range] {
            *b ^= 0xFF;
        }
        bytes
    }
}

/// Damage in chunk `chunk` was noticed, located there, and cost records of that chunk only.
fn assert_confined_to_chunk(read: &Read, good: &Good, chunk: usize, path: &Path) {
    let summary = &read.summary;
    assert!(!summary.errors.is_empty(), "the damage went unnoticed");
    assert_located(&summary.errors, path, good.chunks[chunk].range.clone());
    assert!(
        read.ids.is_superset(&good.ids_outside(chunk)),
        "other chunks lost records"
    );
    assert!(summary.records < good.records);
    assert!(summary.records + summary.lost <= good.records);
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The good sample, read once; `None` (test skipped) when the dataset is not there.
fn good() -> Option<&'static Good> {
    static GOOD: OnceLock<Option<Good>> = OnceLock::new();
    GOOD.get_or_init(|| {
        let path = rampart_testdata::dataset("datasets/evtx-attack-samples")?.join(SAMPLE);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut chunks = Vec::new();
        let mut at = FILE_HEADER;
        while at + CHUNK <= bytes.len() && bytes[at..at + 8] == *b"ElfChnk\0" {
            chunks.push(ChunkInfo {
                range: at as u64..(at + CHUNK) as u64,
                ids: (u64_at(&bytes, at + 24)..=u64_at(&bytes, at + 32)).collect(),
                used: u32_at(&bytes, at + 48) as usize,
            });
            at += CHUNK;
        }
        assert!(
            chunks.len() >= 3,
            "{SAMPLE} should have at least 3 used chunks"
        );
        let read = read(&path);
        assert!(read.summary.errors.is_empty(), "{:#?}", read.summary.errors);
        Some(Good {
            path,
            bytes,
            chunks,
            records: read.summary.records,
            ids: read.ids,
        })
    })
    .as_ref()
}

// ---------------------------------------------------------------------------------------------
// Reading, with every event mapped
// ---------------------------------------------------------------------------------------------

/// What reading one file gave.
struct Read {
    summary: FileSummary,
    /// Record ids handed on.
    ids: BTreeSet<u64>,
    /// Ids handed on twice.
    duplicates: Vec<u64>,
}

fn read(path: &Path) -> Read {
    let seen = Mutex::new((BTreeSet::new(), Vec::new()));
    let summary = evtx::read_file(path, |event: WinEvent| {
        assert_eq!(&*event.source, path, "event names another file");
        // Every record read maps to a row, whatever the damage; mapping must not panic.
        let _row = map_event(&event);
        let mut seen = seen.lock().unwrap();
        if !seen.0.insert(event.record_id) {
            seen.1.push(event.record_id);
        }
    });
    let (ids, duplicates) = seen.into_inner().unwrap();
    assert_eq!(
        summary.records,
        ids.len() as u64 + duplicates.len() as u64,
        "records counted != records handed on"
    );
    Read {
        summary,
        ids,
        duplicates,
    }
}

/// Every error names `path` and an offset in `within`.
fn assert_located(errors: &[ReadError], path: &Path, within: Range<u64>) {
    for e in errors {
        assert_eq!(e.path, path, "{e}");
        let offset = e.offset.unwrap_or_else(|| panic!("no offset: {e}"));
        assert!(within.contains(&offset), "offset outside {within:?}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary files
// ---------------------------------------------------------------------------------------------

/// A fresh folder under the system's temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("rampart-damaged-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: deterministic bytes and positions without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn good_sample_reads_whole() {
    let Some(good) = good() else { return };
    let all: BTreeSet<u64> = good.chunks.iter().flat_map(|c| c.ids.clone()).collect();
    assert_eq!(
        good.ids, all,
        "records read != records the chunk headers list"
    );
    assert_eq!(good.records, all.len() as u64);
}

#[test]
fn truncated_inside_second_chunk() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("trunc");
    for cut in [FILE_HEADER + CHUNK + CHUNK / 2, FILE_HEADER + CHUNK + 100] {
        let path = dir.write(&format!("cut-{cut}.evtx"), &good.bytes[..cut]);
        let read = read(&path);
        assert!(read.duplicates.is_empty(), "{:?}", read.duplicates);
        assert!(read.summary.records > 0 && read.summary.records < good.records);
        // The first chunk is intact and whole.
        assert_eq!(read.ids, good.chunks[0].ids, "cut at {cut}");
        assert_located(&read.summary.errors, &path, 0..cut as u64);
    }
}

/// The records lost to a truncation must be reported, not only missing.
#[test]
fn truncated_chunk_is_reported() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("trunc-report");
    for cut in [
        FILE_HEADER + CHUNK + CHUNK / 2,
        FILE_HEADER + CHUNK + 100,
        FILE_HEADER + 100,
    ] {
        let path = dir.write(&format!("cut-{cut}.evtx"), &good.bytes[..cut]);
        let read = read(&path);
        let errors = &read.summary.errors;
        assert_located(errors, &path, 0..cut as u64);
        let chunk = (cut - FILE_HEADER) / CHUNK;
        let expected = (FILE_HEADER + chunk * CHUNK) as u64;
        assert!(
            errors
                .iter()
                .any(|e| e.damage == Damage::Chunk && e.offset == Some(expected)),
            "cut at {cut}: no Chunk error at {expected:#x} for the cut chunk: {errors:#?}"
        );
    }
}

#[test]
fn truncated_inside_file_header() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("trunc-header");
    for cut in [0, 7, 2000, FILE_HEADER - 1] {
        let path = dir.write(&format!("cut-{cut}.evtx"), &good.bytes[..cut]);
        let read = read(&path);
        assert_eq!(read.summary.records, 0);
        let errors = &read.summary.errors;
        assert_eq!(errors.len(), 1, "cut at {cut}: {errors:#?}");
        assert_eq!(errors[0].damage, Damage::File, "{}", errors[0]);
        assert_eq!(errors[0].path, path);
        assert_eq!(errors[0].offset, Some(0), "{}", errors[0]);
    }
}

#[test]
fn flipped_bytes_in_a_record_body() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("flip-record");
    let records = good.record_offsets(1);
    assert!(records.len() > 3);
    // The third record of the second chunk: its BinXML starts right after the record header.
    let at = records[2] + RECORD_HEADER;
    let path = dir.write("flip-record.evtx", &good.inverted(at..at + 8));
    let read = read(&path);
    assert!(
        read.summary
            .errors
            .iter()
            .all(|e| e.damage == Damage::Record)
    );
    assert_confined_to_chunk(&read, good, 1, &path);
}

/// `ReadError::offset` is documented as the offset of the damaged part: for a record, the
/// record's own offset.
#[test]
fn damaged_record_is_reported_at_its_offset() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("flip-record-offset");
    let record = good.record_offsets(1)[2];
    let at = record + RECORD_HEADER;
    let path = dir.write("flip-record.evtx", &good.inverted(at..at + 8));
    let errors = read(&path).summary.errors;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].offset, Some(record as u64), "{}", errors[0]);
}

#[test]
fn flipped_bytes_in_chunk_templates() {
    // The first record of a chunk defines the templates and strings the others use: damage
    // there loses much of the chunk, but nothing outside it.
    let Some(good) = good() else { return };
    let dir = TempDir::new("flip-templates");
    let at = good.record_offsets(1)[0] + RECORD_HEADER + 76;
    let path = dir.write("flip-templates.evtx", &good.inverted(at..at + 64));
    assert_confined_to_chunk(&read(&path), good, 1, &path);
}

#[test]
fn corrupt_chunk_magic() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("chunk-magic");
    for index in [0, 1] {
        let chunk = &good.chunks[index];
        let at = chunk.range.start as usize;
        let mut bytes = good.bytes.clone();
        bytes[at..at + 8].copy_from_slice(b"ElfXXXX\0");
        let path = dir.write(&format!("magic-{index}.evtx"), &bytes);
        let read = read(&path);
        let errors = &read.summary.errors;
        assert_eq!(errors.len(), 1, "chunk {index}: {errors:#?}");
        assert_eq!(errors[0].damage, Damage::Chunk, "{}", errors[0]);
        assert_eq!(errors[0].path, path);
        assert_eq!(errors[0].offset, Some(chunk.range.start), "{}", errors[0]);
        assert_eq!(read.ids, good.ids_outside(index), "chunk {index}");
        assert_eq!(
            read.summary.records,
            good.records - chunk.ids.len() as u64,
            "chunk {index}"
        );
    }
}

/// Damage to a record's header size field makes the next record's start land inside the
/// record: the parser reports a damaged record there, then finds the next one. No record is
/// lost, yet one is counted as damaged.
#[test]
fn flipped_record_size_counts_no_phantom_record() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("flip-size");
    let at = good.record_offsets(1)[2] + 4;
    let mut bytes = good.bytes.clone();
    bytes[at] ^= 0x10;
    let path = dir.write("flip-size.evtx", &bytes);
    let read = read(&path);
    let summary = &read.summary;
    assert_located(&summary.errors, &path, good.chunks[1].range.clone());
    assert!(
        summary.records + summary.lost <= good.records,
        "{} read + {} damaged > {} records: {:#?}",
        summary.records,
        summary.lost,
        good.records,
        summary.errors
    );
}

#[test]
fn random_flips_stay_in_their_chunk() {
    // A small deterministic fuzz: a few bytes flipped in the used part of one chunk at a time.
    let Some(good) = good() else { return };
    let dir = TempDir::new("flip-random");
    let path = dir.0.join("flip.evtx");
    let mut rng = Rng(0x5EED_F00D_DA7A_0001);
    for case in 0..200 {
        let index = rng.below(good.chunks.len());
        let chunk = &good.chunks[index];
        let start = chunk.range.start as usize;
        let mut bytes = good.bytes.clone();
        let mut flipped = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let at = start + rng.below(chunk.used);
            bytes[at] ^= 1 + rng.below(255) as u8;
            flipped.push(at);
        }
        std::fs::write(&path, &bytes).unwrap();
        let read = read(&path);
        let others = good.ids_outside(index);
        let what = format!("case {case}: chunk {index}, bytes {flipped:x?}");
        assert!(
            read.ids.is_superset(&others),
            "{what}: other chunks lost records"
        );
        assert_located(&read.summary.errors, &path, chunk.range.clone());
    }
}

#[test]
fn not_evtx_is_a_file_error_and_the_others_are_read() {
    let Some(good) = good() else { return };
    let dir = TempDir::new("not-evtx");
    let mut rng = Rng(0x0BAD_F11E);
    let noise: Vec<u8> = (0..200_000).map(|_| rng.next() as u8).collect();
    let bad = dir.write("renamed.evtx", &noise);
    let text = dir.write("notes.EVTX", b"not an event log\n");

    for path in [&bad, &text] {
        let read = read(path);
        assert_eq!(read.summary.records, 0);
        let errors = &read.summary.errors;
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(errors[0].damage, Damage::File, "{}", errors[0]);
        assert_eq!(&errors[0].path, path);
        assert_eq!(errors[0].offset, Some(0));
    }

    let events = AtomicUsize::new(0);
    let told = Mutex::new(Vec::new());
    let files = vec![good.path.clone(), bad.clone()];
    let results = evtx::read_files(
        &files,
        |event| {
            let _row = map_event(&event);
            events.fetch_add(1, Ordering::Relaxed);
        },
        |path, summary| {
            told.lock()
                .unwrap()
                .push((path.to_path_buf(), summary.clone()))
        },
    );
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, good.path);
    assert_eq!(results[0].1.records, good.records);
    assert!(results[0].1.errors.is_empty(), "{:#?}", results[0].1.errors);
    assert_eq!(results[1].0, bad);
    assert_eq!(results[1].1.records, 0);
    assert_eq!(results[1].1.errors.len(), 1);
    assert_eq!(results[1].1.errors[0].damage, Damage::File);
    assert_eq!(events.load(Ordering::Relaxed) as u64, good.records);
    let mut told = told.into_inner().unwrap();
    told.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = results.clone();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        told, expected,
        "on_file is told each file once, with its summary"
    );
}

#[test]
fn collect_files_walks_folders() {
    // Needs no data: collect_files only looks at names.
    let dir = TempDir::new("collect");
    let root = &dir.0;
    for name in [
        "top.evtx",
        "a/Upper.EVTX",
        "a/b/c/deep.evtx",
        "a/b/mixed.EvTx",
        "z/last.evtx",
    ] {
        dir.write(name, b"x");
    }
    for name in ["a/readme.txt", "a/b/old.evtx.bak", "a/b/evtx", "z/x.evtx2"] {
        dir.write(name, b"x");
    }
    std::fs::create_dir_all(root.join("empty/folder.evtx")).unwrap();
    let missing = root.join("no-such-folder");
    let single = root.join("a/readme.txt");

    let (files, errors) = evtx::collect_files(&[
        root.join("z"),
        missing.clone(),
        root.clone(),
        single.clone(),
        root.join("top.evtx"),
    ]);
    let mut expected: Vec<PathBuf> = [
        "top.evtx",
        "a/Upper.EVTX",
        "a/b/c/deep.evtx",
        "a/b/mixed.EvTx",
        "z/last.evtx",
    ]
    .iter()
    .map(|n| root.join(n))
    .collect();
    // A file named on its own is taken whatever its name.
    expected.push(single);
    expected.sort();
    assert_eq!(files, expected, "found, sorted, once each");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, missing);
    assert_eq!(errors[0].damage, Damage::File);
    assert_eq!(errors[0].offset, None);
}
