//! `rampart-agent loadgen`: known amounts of activity — execs, file operations, TCP
//! connections — at steady rates, each marked so it can be counted in hunting afterwards.
//! Operators run it to check a deployment records everything; the no-loss test and the
//! overhead benchmark run it against a known agent.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct Load {
    pub execs_per_sec: u32,
    /// Each file is created (one write-close) and deleted: two operations.
    pub file_ops_per_sec: u32,
    pub connections_per_sec: u32,
    pub duration: Duration,
    /// Goes into exec arguments and the file directory, so the rows can be found.
    pub marker: String,
    /// Where the files go (a directory named after the marker is made inside).
    pub dir: PathBuf,
}

/// What was done, to compare with what hunting shows.
#[derive(Debug, Default, Serialize)]
pub struct Generated {
    pub marker: String,
    pub execs: u64,
    pub files_created: u64,
    pub files_deleted: u64,
    pub connections: u64,
    /// Where the files were: `DeviceFileEvents | where FolderPath startswith DIR`.
    pub file_dir: String,
    /// The listener connected to: `DeviceNetworkEvents | where RemotePort == PORT`.
    pub port: u16,
    pub seconds: f64,
}

/// Runs the load; each kind on its own thread, paced per 10 ms tick.
pub fn run(load: &Load) -> Result<Generated> {
    let dir = load.dir.join(&load.marker);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let done = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            listener.set_nonblocking(true).ok();
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        })
    };
    let start = Instant::now();
    let execs = {
        let (marker, d) = (load.marker.clone(), load.duration);
        let rate = load.execs_per_sec;
        std::thread::spawn(move || {
            paced(rate, d, |_| {
                Command::new("/bin/true")
                    .arg(&marker)
                    .stdin(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
        })
    };
    let files = {
        let (dir, d) = (dir.clone(), load.duration);
        let rate = load.file_ops_per_sec / 2;
        std::thread::spawn(move || paced(rate, d, |i| file_op(&dir, i)))
    };
    let connections = {
        let d = load.duration;
        let rate = load.connections_per_sec;
        std::thread::spawn(move || {
            paced(rate, d, |_| {
                TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
                    .is_ok()
            })
        })
    };
    let join = |h: std::thread::JoinHandle<u64>| h.join().unwrap_or(0);
    let execs = join(execs);
    let files = join(files);
    let connections = join(connections);
    done.store(true, Ordering::Relaxed);
    let _ = acceptor.join();
    Ok(Generated {
        marker: load.marker.clone(),
        execs,
        files_created: files,
        files_deleted: files,
        connections,
        file_dir: format!("{}/", dir.display()),
        port,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One file created, written, closed and deleted.
fn file_op(dir: &Path, i: u64) -> bool {
    let path = dir.join(format!("f{i}"));
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(b"rampart"));
    written.is_ok() && std::fs::remove_file(&path).is_ok()
}

/// Calls `op` `rate` times a second for `duration`, spread over 10 ms ticks; counts successes.
fn paced(rate: u32, duration: Duration, mut op: impl FnMut(u64) -> bool) -> u64 {
    if rate == 0 {
        return 0;
    }
    let start = Instant::now();
    let mut done = 0u64;
    let mut i = 0u64;
    while start.elapsed() < duration {
        let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1;
        while i < due {
            if op(i) {
                done += 1;
            }
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let g = run(&Load {
            execs_per_sec: 20,
            file_ops_per_sec: 40,
            connections_per_sec: 10,
            duration: Duration::from_millis(500),
            marker: "m".into(),
            dir: dir.path().into(),
        })
        .unwrap();
        assert!(g.execs >= 5 && g.execs <= 15, "{g:?}");
        assert!(
            g.files_created >= 5 && g.files_created == g.files_deleted,
            "{g:?}"
        );
        assert!(g.connections >= 3, "{g:?}");
        // Every file was deleted again.
        assert_eq!(std::fs::read_dir(dir.path().join("m")).unwrap().count(), 0);
    }
}
