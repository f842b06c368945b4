//! Micro benchmark of the agent's durable queue: push + flush + peek + ack.
//!
//! `cargo run -p rampart-agent --example queue_bench [--release] -- [records] [record_bytes] [dir]`
//! (defaults: 1,000,000 records of 500 bytes, in a temporary directory).
//!
//! Two runs with the default limits (1 GiB, 8 MiB segments):
//! - steady: a flush every 4,000 pushes (200 ms at 20,000 records/s), after each the sender
//!   drains the queue in batches (peek of 1,000 records / 1 MiB, then ack);
//! - backlog: every record pushed first (an outage), then drained the same way.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rampart_agent::queue::{Queue, QueueError, QueueLimits};

#[derive(Default)]
struct Times {
    push: Duration,
    flush: Duration,
    peek: Duration,
    ack: Duration,
    flushes: u64,
    acks: u64,
}

fn drain(q: &mut Queue, t: &mut Times) -> Result<u64, QueueError> {
    let mut n = 0;
    loop {
        let s = Instant::now();
        let batch = q.peek(1_000, 1 << 20)?;
        t.peek += s.elapsed();
        let Some(last) = batch.last() else {
            return Ok(n);
        };
        n += batch.len() as u64;
        let s = Instant::now();
        q.ack(last.seq)?;
        t.ack += s.elapsed();
        t.acks += 1;
    }
}

fn report(name: &str, records: u64, total: Duration, t: &Times) {
    let per = |d: Duration| d.as_secs_f64() * 1e6 / records as f64;
    println!(
        "{name:8} {records} records in {:.2} s: {:.0} records/s  (per record: push {:.2} µs, flush {:.2} µs, peek {:.2} µs, ack {:.2} µs; {} flushes, {} acks)",
        total.as_secs_f64(),
        records as f64 / total.as_secs_f64(),
        per(t.push),
        per(t.flush),
        per(t.peek),
        per(t.ack),
        t.flushes,
        t.acks,
    );
}

fn run(dir: &std::path::Path, records: u64, size: usize, steady: bool) -> Result<(), QueueError> {
    let mut q = Queue::open(dir, QueueLimits::default())?;
    let record = vec![b'x'; size];
    let mut t = Times::default();
    let mut delivered = 0;
    let start = Instant::now();
    let step = if steady { 4_000 } else { records };
    let mut pushed = 0;
    while pushed < records {
        let m = step.min(records - pushed);
        let s = Instant::now();
        for _ in 0..m {
            q.push(&record, 1)?;
        }
        t.push += s.elapsed();
        pushed += m;
        let s = Instant::now();
        q.flush()?;
        t.flush += s.elapsed();
        t.flushes += 1;
        delivered += drain(&mut q, &mut t)?;
    }
    let total = start.elapsed();
    assert_eq!(delivered, records, "every record delivered");
    assert_eq!(q.stats().dropped_records, 0);
    report(
        if steady { "steady" } else { "backlog" },
        records,
        total,
        &t,
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(500);
    let tmp = tempfile::tempdir()?;
    let base = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    println!(
        "queue_bench: {records} records of {size} bytes under {}",
        base.display()
    );
    run(&base.join("steady"), records, size, true)?;
    run(&base.join("backlog"), records, size, false)?;
    Ok(())
}
