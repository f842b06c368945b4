//! Behaviour of the durable queue on real files: round trips across reopen, acknowledgements,
//! crash recovery (torn and corrupt records, SIGKILL), the disk bound and its drop counters.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rampart_agent::queue::{
    CURSOR_FILE_BYTES, Entry, MAX_RECORD_COUNT, Queue, QueueError, QueueLimits,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

const HDR: u64 = SEGMENT_HEADER_BYTES;
const REC: u64 = RECORD_HEADER_BYTES;

/// A payload derived from its sequence number: 100 to 1099 bytes, except for the first five
/// (41 to 45 bytes), which the crash tests cut and damage at every byte.
fn payload(seq: u64) -> Vec<u8> {
    let len = if seq <= 5 {
        40 + seq as usize
    } else {
        100 + (seq.wrapping_mul(7919) % 1000) as usize
    };
    let mut v = format!("record {seq}:").into_bytes();
    let fill = b'a' + (seq % 26) as u8;
    v.resize(len, fill);
    v
}

fn frame_len(seq: u64) -> u64 {
    REC + payload(seq).len() as u64
}

/// Opens the queue at `dir`, waiting out a lock held only by a fork of this process: while
/// another test spawns a child (fork, then exec), the child holds a copy of every descriptor
/// of the test binary — a dropped queue's lock among them — until its exec closes it.
fn open_queue(dir: impl AsRef<Path>, limits: QueueLimits) -> Queue {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Queue::open(dir.as_ref(), limits) {
            Err(QueueError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            opened => return opened.unwrap(),
        }
    }
}

fn small() -> QueueLimits {
    QueueLimits {
        max_bytes: 1 << 20,
        segment_bytes: 8 << 10,
    }
}

/// A bound of eight segments, reached after a few hundred records.
fn tight() -> QueueLimits {
    QueueLimits {
        max_bytes: 64 << 10,
        segment_bytes: 8 << 10,
    }
}

fn push_checked(q: &mut Queue) -> u64 {
    let expected = q.stats().next_seq;
    let seq = q.push(&payload(expected), 1).expect("push");
    assert_eq!(seq, expected);
    seq
}

/// Every unacknowledged record, read with small batches, without acknowledging.
fn peek_all(q: &mut Queue) -> Vec<Entry> {
    let all = q.peek(usize::MAX, usize::MAX).expect("peek");
    for e in &all {
        assert_eq!(e.data, payload(e.seq), "payload of seq {}", e.seq);
    }
    all
}

/// Delivers (peek + ack) everything, in batches; returns the sequence numbers in order.
fn deliver_all(q: &mut Queue, batch: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        let got = q.peek(batch, 64 << 10).expect("peek");
        let Some(last) = got.last() else { break };
        let last = last.seq;
        for e in &got {
            assert_eq!(e.data, payload(e.seq), "payload of seq {}", e.seq);
            seqs.push(e.seq);
        }
        q.ack(last).expect("ack");
    }
    seqs
}

fn seg_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

fn first_seq_of(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name")
}

fn seg_bytes(dir: &Path) -> u64 {
    seg_files(dir)
        .iter()
        .map(|p| fs::metadata(p).expect("metadata").len())
        .sum()
}

fn all_file_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[test]
fn stats_in_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let mut q = open_queue(tmp.path(), small());
    assert_eq!(q.stats().next_seq, 1);
    assert_eq!(q.stats().bytes, 32);
    for k in 1..=3 {
        assert_eq!(q.push(&[b'x'; 100], 1).unwrap(), k);
    }
    let s = q.stats();
    assert_eq!((s.records, s.bytes, s.next_seq), (3, 32 + 3 * 124, 4));
    assert_eq!((s.dropped_records, s.dropped_bytes), (0, 0));
    q.flush().unwrap();
    assert_eq!(seg_bytes(tmp.path()), 32 + 3 * 124);
    q.ack(1).unwrap();
    assert_eq!(q.stats().records, 2);
    assert_eq!(small().max_record_bytes(), 8192 - 56);
}

#[test]
fn round_trip_in_order_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    {
        let mut q = open_queue(&dir, small());
        for k in 1..=100 {
            assert_eq!(push_checked(&mut q), k);
        }
        q.flush().unwrap();
        // Peek does not remove: the same batch twice.
        let a = q.peek(10, usize::MAX).unwrap();
        let b = q.peek(10, usize::MAX).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        // Pushed after the flush and not flushed: dropping the queue flushes.
        for k in 101..=105 {
            assert_eq!(push_checked(&mut q), k);
        }
    }
    assert!(seg_files(&dir).len() > 3, "several segments");
    let mut q = open_queue(&dir, small());
    assert_eq!(q.recovery(), &Default::default());
    let s = q.stats();
    assert_eq!((s.records, s.next_seq, s.dropped_records), (105, 106, 0));
    assert_eq!(s.bytes, seg_bytes(&dir));
    let all = peek_all(&mut q);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=105).collect::<Vec<_>>()
    );
    assert_eq!(push_checked(&mut q), 106);
}

#[test]
fn peek_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut q = open_queue(tmp.path(), small());
    for _ in 0..20 {
        push_checked(&mut q);
    }
    assert!(q.peek(0, usize::MAX).unwrap().is_empty());
    assert_eq!(q.peek(7, usize::MAX).unwrap().len(), 7);
    // By bytes: as many whole records as fit, and always at least one.
    let budget = payload(1).len() + payload(2).len() + payload(3).len();
    let got = q.peek(100, budget).unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let got = q.peek(100, budget - 1).unwrap();
    assert_eq!(got.len(), 2);
    let got = q.peek(100, 1).unwrap();
    assert_eq!(got.len(), 1);
    // Acknowledging part of a batch.
    q.ack(2).unwrap();
    assert_eq!(q.peek(1, usize::MAX).unwrap()[0].seq, 3);
    q.ack(1).unwrap(); // already acknowledged: no-op
    assert_eq!(q.peek(1, usize::MAX).unwrap()[0].seq, 3);
    assert_eq!(q.stats().records, 18);
}

#[test]
fn ack_deletes_segments_and_acked_records_never_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut q = open_queue(dir, small());
    for _ in 0..200 {
        push_checked(&mut q);
    }
    q.flush().unwrap();
    let before = seg_files(dir).len();
    assert!(before > 10, "{before} segments");
    // Acknowledge through a batch boundary that is not a segment boundary.
    let got = q.peek(150, usize::MAX).unwrap();
    assert_eq!(got.last().unwrap().seq, 150);
    q.ack(150).unwrap();
    let files = seg_files(dir);
    assert!(files.len() < before);
    // The oldest remaining segment holds 151; every deleted one held only records <= 150.
    let firsts: Vec<u64> = files.iter().map(|p| first_seq_of(p)).collect();
    assert!(firsts[0] <= 151 && (firsts.len() == 1 || firsts[1] > 151));
    assert_eq!(q.stats().bytes, seg_bytes(dir));
    assert_eq!(q.stats().records, 50);
    drop(q);

    // Reopen: the unacknowledged records come back, each exactly once.
    let mut q = open_queue(dir, small());
    assert_eq!(q.stats().records, 50);
    assert_eq!(deliver_all(&mut q, 7), (151..=200).collect::<Vec<_>>());
    assert_eq!(seg_files(dir).len(), 1, "only the tail is left");
    drop(q);
    let mut q = open_queue(dir, small());
    assert!(q.peek(100, usize::MAX).unwrap().is_empty());
    assert_eq!(q.stats().records, 0);
    assert_eq!(push_checked(&mut q), 201);
    assert_eq!(deliver_all(&mut q, 10), vec![201]);
}

#[test]
fn unflushed_acked_then_reopened() {
    // Acknowledging records still in the write buffer (never peeked) works, and they stay
    // acknowledged.
    let tmp = tempfile::tempdir().unwrap();
    let mut q = open_queue(tmp.path(), small());
    for _ in 0..30 {
        push_checked(&mut q);
    }
    q.ack(25).unwrap();
    assert_eq!(q.peek(100, usize::MAX).unwrap()[0].seq, 26);
    drop(q);
    let mut q = open_queue(tmp.path(), small());
    assert_eq!(deliver_all(&mut q, 100), (26..=30).collect::<Vec<_>>());
}

#[test]
fn ack_beyond_the_end_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut q = open_queue(tmp.path(), small());
    push_checked(&mut q);
    let e = q.ack(2).unwrap_err();
    assert!(
        matches!(
            e,
            QueueError::AckBeyondEnd {
                seq: 2,
                next_seq: 2
            }
        ),
        "{e}"
    );
    q.ack(1).unwrap();
    q.ack(0).unwrap();
}

#[test]
fn oversized_record_is_refused_and_the_queue_stays_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = small();
    let mut q = open_queue(tmp.path(), limits);
    push_checked(&mut q);
    let max = limits.max_record_bytes();
    let e = q.push(&vec![0u8; max + 1], 1).unwrap_err();
    assert!(matches!(e, QueueError::RecordTooLarge { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains(&(max + 1).to_string()) && msg.contains(&max.to_string()),
        "{msg}"
    );
    let e = q.push(&vec![0u8; 8192], 1).unwrap_err();
    assert!(matches!(e, QueueError::RecordTooLarge { .. }));
    // The largest accepted record fills a segment on its own.
    let big = vec![7u8; max];
    assert_eq!(q.push(&big, 1).unwrap(), 2);
    push_checked(&mut q);
    q.flush().unwrap();
    let got = q.peek(10, usize::MAX).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].data, big);
    assert_eq!(got[2].data, payload(3));
    for f in seg_files(tmp.path()) {
        assert!(fs::metadata(&f).unwrap().len() <= limits.segment_bytes);
    }
}

#[test]
fn invalid_limits_and_second_owner_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = QueueLimits {
        max_bytes: 10_000,
        segment_bytes: 8192,
    };
    assert!(matches!(
        Queue::open(tmp.path(), bad),
        Err(QueueError::InvalidLimits(_))
    ));
    let bad = QueueLimits {
        max_bytes: 1 << 20,
        segment_bytes: 100,
    };
    assert!(matches!(
        Queue::open(tmp.path(), bad),
        Err(QueueError::InvalidLimits(_))
    ));
    let q = open_queue(tmp.path(), small());
    let e = Queue::open(tmp.path(), small()).unwrap_err();
    assert!(matches!(e, QueueError::Locked { .. }), "{e}");
    drop(q);
    open_queue(tmp.path(), small());
}

/// Writes records 1..=5 into one segment, flushed; returns (segment path, offset of record 5).
fn five_records(dir: &Path) -> (PathBuf, u64) {
    let mut q = open_queue(dir, small());
    for _ in 0..5 {
        push_checked(&mut q);
    }
    drop(q);
    let files = seg_files(dir);
    assert_eq!(files.len(), 1);
    let last = HDR + (1..=4).map(frame_len).sum::<u64>();
    assert_eq!(fs::metadata(&files[0]).unwrap().len(), last + frame_len(5));
    (files[0].clone(), last)
}

#[test]
fn torn_tail_at_every_offset_of_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (seg, last) = five_records(&orig);
    let name = seg.file_name().unwrap().to_owned();
    for cut in 0..frame_len(5) {
        let dir = tmp.path().join(format!("cut{cut}"));
        copy_dir(&orig, &dir);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&name))
            .unwrap();
        f.set_len(last + cut).unwrap();
        drop(f);

        let mut q = open_queue(&dir, small());
        let torn = u64::from(cut > 0);
        let r = q.recovery().clone();
        assert_eq!(r.dropped_records, torn, "cut {cut}");
        assert_eq!(r.dropped_bytes, cut, "cut {cut}");
        assert_eq!(r.truncated.is_some(), cut > 0, "cut {cut}");
        assert_eq!(q.stats().dropped_records, torn);
        assert_eq!(q.stats().dropped_bytes, cut);
        assert_eq!(
            peek_all(&mut q).iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "cut {cut}"
        );
        // The torn record's sequence number is not reused.
        let next = push_checked(&mut q);
        assert_eq!(next, if cut > 0 { 6 } else { 5 }, "cut {cut}");
        drop(q);

        // Counted once: reopening finds nothing more.
        let mut q = open_queue(&dir, small());
        assert_eq!(q.recovery().dropped_records, 0, "cut {cut}");
        assert_eq!(q.stats().dropped_records, torn, "cut {cut}");
        let seqs: Vec<u64> = deliver_all(&mut q, 3);
        assert_eq!(seqs, vec![1, 2, 3, 4, next], "cut {cut}");
        assert_eq!(q.stats().dropped_records, torn, "cut {cut}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn flipped_byte_anywhere_in_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (seg, last) = five_records(&orig);
    let name = seg.file_name().unwrap().to_owned();
    let bytes = fs::read(&seg).unwrap();
    for k in 0..frame_len(5) {
        let dir = tmp.path().join(format!("flip{k}"));
        copy_dir(&orig, &dir);
        let mut b = bytes.clone();
        b[(last + k) as usize] ^= 0x20;
        fs::write(dir.join(&name), &b).unwrap();

        let mut q = open_queue(&dir, small());
        assert_eq!(q.recovery().dropped_records, 1, "flip {k}");
        assert_eq!(
            q.recovery().truncated,
            Some((dir.join(&name), last)),
            "flip {k}"
        );
        assert_eq!(q.stats().dropped_records, 1);
        assert_eq!(q.stats().dropped_bytes, frame_len(5));
        assert_eq!(
            peek_all(&mut q).iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4],
            "flip {k}"
        );
        assert_eq!(push_checked(&mut q), 6, "flip {k}");
        drop(q);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn flipped_byte_in_a_middle_record_cuts_the_rest_and_skips_their_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("orig");
    let (seg, _) = five_records(&orig);
    let name = seg.file_name().unwrap().to_owned();
    let bytes = fs::read(&seg).unwrap();
    let third = HDR + frame_len(1) + frame_len(2);
    // Anywhere in record 3: CRC, length, sequence number, payload.
    for k in 0..frame_len(3) {
        let dir = tmp.path().join(format!("mid{k}"));
        copy_dir(&orig, &dir);
        let mut b = bytes.clone();
        b[(third + k) as usize] ^= 0x01;
        fs::write(dir.join(&name), &b).unwrap();
        let mut q = open_queue(&dir, small());
        assert_eq!(q.recovery().dropped_records, 3, "flip {k}");
        assert_eq!(q.stats().dropped_records, 3, "flip {k}");
        assert_eq!(
            peek_all(&mut q).iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 2],
            "flip {k}"
        );
        assert_eq!(push_checked(&mut q), 6, "flip {k}");
        drop(q);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn damaged_segment_headers() {
    // Tail header: its records are cut off and counted, their sequence numbers skipped.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tail");
    let (seg, _) = five_records(&dir);
    let mut b = fs::read(&seg).unwrap();
    b[3] ^= 0x10;
    fs::write(&seg, &b).unwrap();
    let mut q = open_queue(&dir, small());
    assert_eq!(q.recovery().dropped_records, 5);
    assert_eq!(q.stats().dropped_records, 5);
    assert!(q.peek(10, usize::MAX).unwrap().is_empty());
    assert_eq!(push_checked(&mut q), 6);
    drop(q);
    let mut q = open_queue(&dir, small());
    assert_eq!(q.stats().dropped_records, 5);
    assert_eq!(deliver_all(&mut q, 10), vec![6]);

    // Header of an older segment: all its records are counted at once, the rest delivered.
    let dir = tmp.path().join("older");
    let mut q = open_queue(&dir, small());
    for _ in 0..100 {
        push_checked(&mut q);
    }
    drop(q);
    let files = seg_files(&dir);
    let second_first = first_seq_of(&files[1]);
    let mut b = fs::read(&files[0]).unwrap();
    b[12] ^= 0x01;
    fs::write(&files[0], &b).unwrap();
    let mut q = open_queue(&dir, small());
    assert_eq!(q.stats().dropped_records, second_first - 1);
    assert_eq!(q.stats().records, 100 - (second_first - 1));
    let delivered = deliver_all(&mut q, 30);
    assert_eq!(delivered, (second_first..=100).collect::<Vec<_>>());
    drop(q);
    let q = open_queue(&dir, small());
    assert_eq!(q.stats().dropped_records, second_first - 1);
}

#[test]
fn corrupt_record_in_an_older_segment_is_skipped_and_counted_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut q = open_queue(dir, small());
    for _ in 0..100 {
        push_checked(&mut q);
    }
    drop(q);
    let files = seg_files(dir);
    assert!(files.len() > 3);
    let second_first = first_seq_of(&files[1]);
    let third = HDR + frame_len(1) + frame_len(2);
    let mut b = fs::read(&files[0]).unwrap();
    b[(third + 20) as usize] ^= 0xff;
    fs::write(&files[0], &b).unwrap();

    let mut q = open_queue(dir, small());
    let first = q.peek(100, usize::MAX).unwrap();
    // The batch stops nowhere near the damage: records 1 and 2, then the next segment on.
    assert_eq!(first[0].seq, 1);
    assert_eq!(first[1].seq, 2);
    assert_eq!(first[2].seq, second_first);
    let lost = second_first - 3;
    let delivered = deliver_all(&mut q, 9);
    let expected: Vec<u64> = [1, 2].into_iter().chain(second_first..=100).collect();
    assert_eq!(delivered, expected);
    let s = q.stats();
    assert_eq!(s.dropped_records, lost);
    assert_eq!(s.dropped_records + delivered.len() as u64, 100);
    assert_eq!(
        s.dropped_bytes,
        (3..second_first).map(frame_len).sum::<u64>()
    );
    drop(q);
    let q = open_queue(dir, small());
    assert_eq!(q.stats().dropped_records, lost, "counted once");
    assert_eq!(q.stats().next_seq, 101);
}

#[test]
fn lost_or_corrupt_cursor_redelivers_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut q = open_queue(dir, small());
    for _ in 0..10 {
        push_checked(&mut q);
    }
    q.peek(4, usize::MAX).unwrap();
    q.ack(4).unwrap();
    drop(q);
    // The newest of the two slots damaged: the previous state (nothing acknowledged) is used.
    let mut c = fs::read(dir.join("cursor")).unwrap();
    let intact = c.clone();
    c[512 + 20] ^= 1;
    fs::write(dir.join("cursor"), &c).unwrap();
    let mut q = open_queue(dir, small());
    assert!(!q.recovery().cursor_reset);
    assert_eq!(peek_all(&mut q).len(), 10);
    drop(q);
    // Both damaged.
    let mut c = intact;
    c[10] ^= 1;
    c[512 + 10] ^= 1;
    fs::write(dir.join("cursor"), &c).unwrap();
    let mut q = open_queue(dir, small());
    assert!(q.recovery().cursor_reset);
    assert_eq!(
        peek_all(&mut q).len(),
        10,
        "redelivered from the oldest segment"
    );
    q.ack(6).unwrap();
    drop(q);
    // Missing.
    fs::remove_file(dir.join("cursor")).unwrap();
    let mut q = open_queue(dir, small());
    assert!(q.recovery().cursor_reset);
    assert_eq!(peek_all(&mut q).len(), 10);
    assert_eq!(push_checked(&mut q), 11);
}

#[test]
fn bound_drops_the_oldest_and_counts_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limits = tight();
    let mut q = open_queue(dir, limits);
    let mut delivered: Vec<u64> = Vec::new();
    let mut last_seq = 0;
    let pushed = 5000u64;
    for k in 1..=pushed {
        let seq = push_checked(&mut q);
        assert_eq!(
            seq,
            last_seq + 1,
            "sequence numbers keep increasing after drops"
        );
        last_seq = seq;
        let s = q.stats();
        assert!(
            s.bytes <= limits.max_bytes,
            "{} bytes after push {k}",
            s.bytes
        );
        if k % 97 == 0 {
            q.flush().unwrap();
            assert_eq!(seg_bytes(dir), s.bytes);
            // The whole directory: segments plus the cursor (and the empty lock).
            assert!(all_file_bytes(dir) <= limits.max_bytes + CURSOR_FILE_BYTES);
        }
        if k % 1000 == 0 {
            // Deliver a little: a batch, acknowledged.
            let got = q.peek(20, usize::MAX).unwrap();
            for e in &got {
                assert_eq!(e.data, payload(e.seq));
                delivered.push(e.seq);
            }
            q.ack(got.last().unwrap().seq).unwrap();
        }
        if k % 1500 == 0 {
            let before = q.stats();
            drop(q);
            q = open_queue(dir, limits);
            let after = q.stats();
            assert_eq!(before, after, "counters survive reopen");
        }
    }
    let s = q.stats();
    assert!(s.dropped_records > 4000, "{s:?}");
    delivered.extend(deliver_all(&mut q, 50));
    assert!(delivered.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(*delivered.last().unwrap(), pushed);
    let s = q.stats();
    assert_eq!(s.dropped_records + delivered.len() as u64, pushed);
    // Dropped bytes: exactly the framed sizes of the records never delivered.
    let got: BTreeSet<u64> = delivered.iter().copied().collect();
    let lost_bytes: u64 = (1..=pushed)
        .filter(|s| !got.contains(s))
        .map(frame_len)
        .sum();
    assert_eq!(s.dropped_bytes, lost_bytes);
    drop(q);
    let mut q = open_queue(dir, limits);
    assert_eq!(q.stats().dropped_records, s.dropped_records);
    assert_eq!(q.stats().dropped_bytes, s.dropped_bytes);
    assert_eq!(push_checked(&mut q), pushed + 1);
}

#[test]
fn shrunk_limits_are_enforced_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut q = open_queue(dir, small());
    for _ in 0..400 {
        push_checked(&mut q);
    }
    drop(q);
    assert!(seg_bytes(dir) > 64 << 10);
    let limits = QueueLimits {
        max_bytes: 64 << 10,
        segment_bytes: 4 << 10,
    };
    let mut q = open_queue(dir, limits);
    assert!(seg_bytes(dir) <= limits.max_bytes);
    let dropped = q.stats().dropped_records;
    assert!(dropped > 0);
    let delivered = deliver_all(&mut q, 100);
    assert_eq!(delivered.len() as u64 + dropped, 400);
    assert_eq!(*delivered.last().unwrap(), 400);
}

const CHILD_DIR_ENV: &str = "RAMPART_QUEUE_TEST_CHILD_DIR";

fn kill_limits() -> QueueLimits {
    QueueLimits {
        max_bytes: 256 << 20,
        segment_bytes: 64 << 10,
    }
}

/// Not a test on its own: the body of the child process of
/// `sigkill_while_pushing_keeps_every_flushed_record_once` (does nothing without the variable).
#[test]
fn sigkill_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let mut q = Queue::open(Path::new(&dir), kill_limits()).expect("child open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "start {}", q.stats().next_seq).unwrap();
    out.flush().unwrap();
    // Flushes after 1 to 200 pushes (about 60 KB on average), so that the kill lands while
    // pushing, writing out the buffer, rolling segments or flushing.
    let mut until_flush = 1;
    loop {
        let seq = push_checked(&mut q);
        until_flush -= 1;
        if until_flush == 0 {
            until_flush = 1 + seq.wrapping_mul(2_654_435_761) % 200;
            q.flush().expect("child flush");
            writeln!(out, "flushed {seq}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn sigkill_while_pushing_keeps_every_flushed_record_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    let exe = std::env::current_exe().unwrap();
    // Sequence numbers that must be present at the next open.
    let mut must: BTreeSet<u64> = BTreeSet::new();
    let mut acked = 0u64;
    for (round, kill_after) in [1usize, 4, 25, 2, 60, 9, 30, 1, 7, 3]
        .into_iter()
        .enumerate()
    {
        let mut child = Command::new(&exe)
            .args([
                "sigkill_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut start = None;
        let mut flushed = None;
        let mut seen = 0;
        let mut line = String::new();
        let parse = |line: &str, start: &mut Option<u64>, flushed: &mut Option<u64>| -> bool {
            let Some(line) = line.strip_suffix('\n') else {
                return false; // cut by the kill
            };
            // libtest may have printed "test sigkill_child ... " in front of the first line.
            if let Some(at) = line.find("start ") {
                *start = Some(line[at + 6..].parse().unwrap());
            } else if let Some(n) = line.strip_prefix("flushed ") {
                *flushed = Some(n.parse::<u64>().unwrap());
                return true;
            }
            false
        };
        while seen < kill_after {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                panic!("round {round}: the child exited early");
            }
            if parse(&line, &mut start, &mut flushed) {
                seen += 1;
            }
        }
        // Let the child run on for a varying moment (0 to 5 ms), so that the kill lands at
        // different points of its push / write-out / roll / flush cycle. Nothing depends on it.
        std::thread::sleep(std::time::Duration::from_micros(
            (round as u64 * 1_237) % 5_000,
        ));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            parse(&line, &mut start, &mut flushed);
        }
        let (start, flushed) = (start.unwrap(), flushed.unwrap());
        must.extend(start..=flushed);

        let mut q = open_queue(&dir, kill_limits());
        let all = peek_all(&mut q);
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "round {round}: order, no duplicates"
        );
        assert!(
            seqs.iter().all(|&s| s > acked),
            "round {round}: acknowledged came back"
        );
        let present: BTreeSet<u64> = seqs.iter().copied().collect();
        let missing: Vec<u64> = must.difference(&present).copied().collect();
        assert!(
            missing.is_empty(),
            "round {round}: flushed records missing: {missing:?}"
        );
        assert!(q.stats().next_seq > *seqs.last().unwrap());
        // Acknowledge about half; the rest must survive the next round.
        acked = seqs[seqs.len() / 2];
        q.ack(acked).unwrap();
        must = present.into_iter().filter(|&s| s > acked).collect();
        drop(q);
    }
}

/// A small deterministic generator for the randomized test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_operations_keep_every_record_accounted_for() {
    let limits = QueueLimits {
        max_bytes: 48 << 10,
        segment_bytes: 4 << 10,
    };
    for seed in [1u64, 0x9e37_79b9] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut rng = XorShift(seed);
        let mut q = open_queue(dir, limits);
        let mut pushed = 0u64;
        let mut delivered = 0u64;
        let mut last_delivered = 0u64;
        for step in 0..1500 {
            match rng.below(100) {
                0..=59 => {
                    for _ in 0..=rng.below(20) {
                        let seq = push_checked(&mut q);
                        assert_eq!(seq, pushed + 1, "seed {seed} step {step}");
                        pushed += 1;
                    }
                }
                60..=69 => q.flush().unwrap(),
                70..=74 => {
                    // Peek without acknowledging: the batch must come back.
                    let a = q.peek(1 + rng.below(50) as usize, 4096).unwrap();
                    let b = q.peek(a.len().max(1), usize::MAX).unwrap();
                    assert_eq!(a, b, "seed {seed} step {step}");
                }
                75..=96 => {
                    let got = q.peek(1 + rng.below(80) as usize, 8192).unwrap();
                    if let Some(first) = got.first() {
                        assert!(first.seq > last_delivered, "seed {seed} step {step}");
                        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
                        // Acknowledge all or part of the batch.
                        let n = 1 + rng.below(got.len() as u64) as usize;
                        for e in &got[..n] {
                            assert_eq!(e.data, payload(e.seq), "seed {seed} step {step}");
                        }
                        q.ack(got[n - 1].seq).unwrap();
                        delivered += n as u64;
                        last_delivered = got[n - 1].seq;
                    }
                }
                _ => {
                    drop(q);
                    q = open_queue(dir, limits);
                    assert_eq!(q.recovery(), &Default::default(), "seed {seed} step {step}");
                }
            }
            let s = q.stats();
            assert!(s.bytes <= limits.max_bytes, "seed {seed} step {step}");
            assert_eq!(
                s.dropped_records + delivered + s.records,
                pushed,
                "seed {seed} step {step}: {s:?}"
            );
            assert_eq!(s.next_seq, pushed + 1);
        }
        let s = q.stats();
        assert!(s.dropped_records > 0 && delivered > 0, "{s:?}");
    }
}

#[test]
fn a_record_holds_a_run_of_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut q = open_queue(dir, small());
    for count in [0, MAX_RECORD_COUNT + 1] {
        let e = q.push(b"x", count).unwrap_err();
        assert!(
            matches!(e, QueueError::InvalidCount(c) if c == count),
            "{e}"
        );
    }
    assert_eq!(q.push(b"three", 3).unwrap(), 1);
    assert_eq!(q.push(b"one", 1).unwrap(), 4);
    assert_eq!(q.push(b"five", 5).unwrap(), 5);
    let s = q.stats();
    assert_eq!((s.records, s.next_seq), (9, 10));
    let entry = |seq, count, data: &[u8]| Entry {
        seq,
        count,
        data: data.to_vec(),
    };
    // Limits count numbers; a first record larger than the limit still comes.
    assert_eq!(q.peek(2, usize::MAX).unwrap(), [entry(1, 3, b"three")]);
    assert_eq!(
        q.peek(4, usize::MAX).unwrap(),
        [entry(1, 3, b"three"), entry(4, 1, b"one")]
    );
    assert_eq!(q.peek(8, usize::MAX).unwrap().len(), 2);
    assert_eq!(q.peek(9, usize::MAX).unwrap().len(), 3);
    // A number inside a record acknowledges all of it.
    q.ack(2).unwrap();
    assert_eq!(q.stats().records, 6);
    assert_eq!(q.peek(9, usize::MAX).unwrap()[0], entry(4, 1, b"one"));
    drop(q);
    let mut q = open_queue(dir, small());
    assert_eq!(q.stats().records, 6);
    assert_eq!(
        q.peek(9, usize::MAX).unwrap(),
        [entry(4, 1, b"one"), entry(5, 5, b"five")]
    );
    q.ack(9).unwrap();
    assert_eq!(q.stats().records, 0);
    assert_eq!(q.push(b"next", 2).unwrap(), 10);
}

#[test]
fn drops_are_counted_in_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limits = tight();
    let mut q = open_queue(dir, limits);
    let (records, per_record) = (2000u64, 7u32);
    for k in 0..records {
        let seq = q.push(&payload(k), per_record).unwrap();
        assert_eq!(seq, 1 + k * u64::from(per_record));
    }
    let mut delivered = 0u64;
    loop {
        let got = q.peek(100, 64 << 10).unwrap();
        let Some(last) = got.last() else { break };
        for e in &got {
            assert_eq!(e.count, per_record);
            assert_eq!(e.data, payload((e.seq - 1) / u64::from(per_record)));
            delivered += u64::from(e.count);
        }
        q.ack(last.seq + u64::from(last.count) - 1).unwrap();
    }
    let s = q.stats();
    assert!(s.dropped_records > 0 && s.dropped_records.is_multiple_of(u64::from(per_record)));
    assert_eq!(
        s.dropped_records + delivered,
        records * u64::from(per_record)
    );
}

/// A segment of the first format (`RMPQSEG1`, records without a count) holding `seqs`.
fn write_v1_segment(dir: &Path, seqs: std::ops::RangeInclusive<u64>) {
    let first = *seqs.start();
    let mut b = b"RMPQSEG1".to_vec();
    b.extend_from_slice(&first.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    for seq in seqs {
        let data = payload(seq);
        let mut r = (data.len() as u32).to_le_bytes().to_vec();
        r.extend_from_slice(&seq.to_le_bytes());
        r.extend_from_slice(&data);
        b.extend_from_slice(&crc32fast::hash(&r).to_le_bytes());
        b.extend_from_slice(&r);
    }
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(format!("{first:020}.seg")), b).unwrap();
}

#[test]
fn segments_of_the_first_format_are_delivered_after_an_upgrade() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    write_v1_segment(&dir, 1..=3);
    let mut q = open_queue(&dir, small());
    assert_eq!(q.stats().records, 3);
    // New records go to a segment of their own, after the old ones.
    assert_eq!(q.push(&payload(4), 4).unwrap(), 4);
    q.flush().unwrap();
    assert_eq!(seg_files(&dir).len(), 2);
    let got = q.peek(100, usize::MAX).unwrap();
    let seqs: Vec<(u64, u32)> = got.iter().map(|e| (e.seq, e.count)).collect();
    assert_eq!(seqs, [(1, 1), (2, 1), (3, 1), (4, 4)]);
    assert!(got.iter().all(|e| e.data == payload(e.seq)));
    q.ack(3).unwrap();
    drop(q);
    let mut q = open_queue(&dir, small());
    assert_eq!(
        seg_files(&dir).len(),
        1,
        "the old segment is gone once delivered"
    );
    assert_eq!(q.peek(100, usize::MAX).unwrap()[0].seq, 4);
    assert_eq!(q.stats().dropped_records, 0);
}

#[test]
fn a_torn_tail_of_the_first_format_is_cut_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("q");
    write_v1_segment(&dir, 1..=3);
    let path = seg_files(&dir).remove(0);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut q = open_queue(&dir, small());
    let s = q.stats();
    assert_eq!((s.records, s.dropped_records), (2, 1));
    assert_eq!(
        q.push(b"new", 1).unwrap(),
        4,
        "the torn record's number is not reused"
    );
    let seqs: Vec<u64> = q
        .peek(100, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 4]);
}
