//! File events from fanotify (the sensor without eBPF) on the real kernel: a process's creates,
//! writes, renames, chmods and deletes under a watched directory come back with their paths and
//! the process's pid; what happens outside the watched paths, and this process's own file
//! operations, do not. Needs root; without it (or without fanotify) the test prints why and
//! passes, unless RAMPART_REQUIRE_DATA=1 (CI), where it fails.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rampart_agent::fanotify::FileWatch;
use rampart_agent::mapping::FileFilter;
use rampart_agent::sensor::{FILE_CREATED, SensorEvent};

/// The started watch, or None (after saying why) where fanotify cannot run and no data is
/// required.
fn start(filter: FileFilter) -> Option<FileWatch> {
    let required = std::env::var("RAMPART_REQUIRE_DATA").is_ok_and(|v| v == "1");
    // SAFETY: geteuid has no preconditions.
    let outcome = if unsafe { libc::geteuid() } != 0 {
        Err("not running as root".to_string())
    } else {
        FileWatch::start(filter).map_err(|e| e.to_string())
    };
    match outcome {
        Ok(watch) => Some(watch),
        Err(reason) if required => {
            panic!("RAMPART_REQUIRE_DATA=1 but fanotify cannot start: {reason}")
        }
        Err(reason) => {
            eprintln!("skipping the live fanotify test: {reason}");
            None
        }
    }
}

/// Each step waits a moment, so the event is read while its file (for a chmod, the mode) and
/// the process (for its details) are still there.
const SCRIPT: &str = r#"
sub pause { select(undef, undef, undef, 0.3) }
open(my $f, ">", "a.txt") or die "create: $!"; print $f "data"; close($f) or die; pause();
open($f, ">>", "a.txt") or die "append: $!"; print $f "more"; close($f) or die; pause();
rename("a.txt", "b.txt") or die "rename: $!"; pause();
chmod(0640, "b.txt") or die "chmod: $!"; pause();
unlink("b.txt") or die "unlink: $!"; pause();
mkdir("sub") or die "mkdir: $!"; pause();
rmdir("sub") or die "rmdir: $!"; pause();
open($f, ">", "$ENV{OUTSIDE}/ignored.txt") or die "outside: $!"; close($f); pause();
"#;

#[test]
fn file_operations_come_back_with_paths_and_the_process() {
    let work = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    // The paths fanotify names are canonical (no symlinks, e.g. in TMPDIR).
    let dir = std::fs::canonicalize(work.path()).unwrap();
    let dir = dir.to_string_lossy().into_owned();
    let filter = FileFilter {
        include: vec![format!("{dir}/")],
        ..FileFilter::default()
    };
    let Some(mut watch) = start(filter) else {
        return;
    };
    eprintln!("fanotify: {}", watch.status());

    // This process's own writes are never reported.
    std::fs::write(Path::new(&dir).join("own.txt"), b"mine").unwrap();
    let mut child = Command::new("perl")
        .args(["-e", SCRIPT])
        .current_dir(&dir)
        .env("OUTSIDE", outside.path())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut exited = None;
    // Until the script is done, and one more drain after.
    while exited.is_none() && Instant::now() < deadline {
        exited = child.try_wait().unwrap();
        watch.drain(&mut |e| events.push(e)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    watch.drain(&mut |e| events.push(e)).unwrap();
    let Some(status) = exited else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the script did not end; events so far: {events:?}");
    };
    assert!(status.success(), "script failed: {status}");

    let a = format!("{dir}/a.txt");
    let b = format!("{dir}/b.txt");
    let sub = format!("{dir}/sub");
    let mut seen = Vec::new();
    for event in &events {
        let (task, what) = match event {
            SensorEvent::FileWriteClose {
                task, path, flags, ..
            } => (
                task,
                format!(
                    "{} {path}",
                    if flags & FILE_CREATED != 0 {
                        "created"
                    } else {
                        "modified"
                    }
                ),
            ),
            SensorEvent::FileRename { task, from, to } => (task, format!("renamed {from} {to}")),
            SensorEvent::FileChmod { task, path, mode } => {
                (task, format!("chmod {path} {:o}", mode & 0o7777))
            }
            SensorEvent::FileDelete { task, path, dir } => (
                task,
                format!("deleted{} {path}", if *dir { " dir" } else { "" }),
            ),
            other => panic!("not a file event: {other:?}"),
        };
        assert_eq!(task.tgid, pid, "{what}: {task:?}");
        assert_eq!(task.comm, "perl", "{what}: {task:?}");
        assert!(task.start_ns > 0, "{what}: {task:?}");
        seen.push(what);
    }
    let expected = [
        format!("created {a}"),
        format!("modified {a}"),
        format!("renamed {a} {b}"),
        format!("chmod {b} 640"),
        format!("deleted {b}"),
        format!("deleted dir {sub}"),
    ];
    assert_eq!(seen, expected);
    // Other processes' events elsewhere on the filesystem may be unnameable (their directory
    // gone before being read); none may overflow the queue.
    let lost = watch.lost();
    assert_eq!(lost.by_kind[0], ("fanotify_overflow", 0), "{lost:?}");
}
