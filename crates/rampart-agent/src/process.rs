//! The process table the agent keeps to give every event its process lineage: who ran what,
//! as whom, started when, from which parent — as Defender's InitiatingProcess* columns want.
//!
//! Built from exec, fork and exit events; a process the agent has not seen start (it predates
//! the agent, or its exec was lost) is read from /proc once. Exited processes stay a while,
//! because their children's events still name them as parents.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::hashes::{FileVersion, HashCache, Hashes};
use crate::sensor::Task;
use crate::users::Users;

/// How long an exited process is kept for its children's events (and the logon lines it
/// logged just before exiting); at 1,000 execs/s that is 5,000 entries.
const KEEP_EXITED: Duration = Duration::from_secs(5);
/// Entries at most; beyond it the oldest exited ones go first, then /proc misses are not kept.
const MAX_ENTRIES: usize = 65_536;
/// Resolved executable paths kept; all are forgotten when full.
const MAX_RESOLVED: usize = 4096;

/// One process as rows describe it.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// Kernel start time (ns since boot): with `pid`, identifies the process.
    pub start_ns: u64,
    pub created: DateTime<Utc>,
    /// The image's full path, and its file name. Text is shared: a fork copies its parent's,
    /// a thousand times a second under load.
    pub path: Arc<str>,
    pub name: Arc<str>,
    pub command_line: Arc<str>,
    pub uid: u32,
    pub account: Arc<str>,
    pub sessionid: u32,
    pub hashes: Option<Arc<Hashes>>,
    /// The InitiatingProcess* columns of the rows this process causes, as JSON pairs, rendered
    /// at its first such row (`Mapper`); a forked copy starts without.
    pub initiating: OnceLock<Arc<str>>,
}

/// An exec's image as its process describes it.
struct Image {
    path: Arc<str>,
    name: Arc<str>,
    hashes: Option<Arc<Hashes>>,
}

/// Where an executable's name led when last resolved.
struct Resolution {
    /// The path without links, and as text with its file name: shared by the processes that
    /// run it (a thousand execs a second of one program need no copy each).
    path: PathBuf,
    text: Arc<str>,
    name: Arc<str>,
    /// The file version found there when a `stat` last accepted it as an exec's image.
    found: Option<FileVersion>,
}

pub struct ProcessTable {
    /// By pid (the kernel's numbers: a fast hash; looked up for every event).
    procs: foldhash::HashMap<u32, Arc<Process>>,
    exited: VecDeque<(Instant, u32, u64)>,
    /// Executable paths as run (joined to the working directory) and where they led.
    resolved: HashMap<PathBuf, Resolution>,
    pub users: Users,
    pub hashes: HashCache,
    clock: Clock,
    proc_root: &'static str,
}

impl ProcessTable {
    pub fn new(hashes: HashCache, clock: Clock) -> ProcessTable {
        ProcessTable {
            procs: foldhash::HashMap::default(),
            exited: VecDeque::new(),
            resolved: HashMap::new(),
            users: Users::default(),
            hashes,
            clock,
            proc_root: "/proc",
        }
    }

    /// Records an exec: the process (same pid) now runs `filename` with `argv`; `image` is
    /// the (inode, device) of the executable the kernel mapped, and `version` its version
    /// when the kernel gave it.
    pub fn exec(
        &mut self,
        task: &Task,
        filename: &str,
        argv: &[String],
        cwd: &str,
        image: (u64, u64),
        version: Option<FileVersion>,
    ) -> Arc<Process> {
        let Image { path, name, hashes } =
            match version.and_then(|v| self.known_image(cwd, filename, &v)) {
                Some(known) => known,
                None => {
                    let (path, hashes) = self.image_of(task.tgid, filename, argv, cwd, image);
                    Image {
                        name: file_name(&path).into(),
                        path: path.into(),
                        hashes,
                    }
                }
            };
        let process = Arc::new(Process {
            pid: task.tgid,
            ppid: task.ppid,
            start_ns: task.start_ns,
            created: self.clock.boot_to_utc(task.start_ns),
            name,
            path,
            command_line: command_line(argv).into(),
            uid: task.uid,
            account: self.users.user(task.uid),
            sessionid: task.sessionid,
            hashes,
            initiating: OnceLock::new(),
        });
        self.insert(Arc::clone(&process));
        process
    }

    /// The path and hashes of the file version the kernel mapped, without a syscall, if the
    /// name it was run by led to that very version (same file, size and times) when last
    /// looked at, and its hashes are known: a program run a thousand times a second costs no
    /// `stat` each time. Anything else goes to [`ProcessTable::image_of`].
    fn known_image(&self, cwd: &str, name: &str, version: &FileVersion) -> Option<Image> {
        // Most programs are run by their absolute path: no joined copy to look it up.
        let joined;
        let key = if name.starts_with('/') {
            Path::new(name)
        } else {
            joined = Path::new(cwd).join(name);
            &joined
        };
        let resolution = self.resolved.get(key)?;
        if resolution.found.as_ref() != Some(version) {
            return None;
        }
        let hashes = self.hashes.cached(version)?;
        Some(Image {
            path: Arc::clone(&resolution.text),
            name: Arc::clone(&resolution.name),
            hashes,
        })
    }

    /// The executable's path and hashes. By the time the event is read the process may have
    /// exec'd again or exited, so each candidate counts only if it is the very file the kernel
    /// mapped (same inode and device): the name it was run by (one `stat` when its resolution
    /// is remembered), /proc/PID/exe (reaches deleted and memfd images, and the interpreter a
    /// script runs), then argv[0].
    fn image_of(
        &mut self,
        tgid: u32,
        filename: &str,
        argv: &[String],
        cwd: &str,
        (ino, dev): (u64, u64),
    ) -> (String, Option<Arc<Hashes>>) {
        use std::os::unix::fs::MetadataExt;
        let same = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .filter(|m| m.ino() == ino && (dev == 0 || m.dev() == dev))
        };
        let (named, meta) = self.resolve_image(cwd, filename, same);
        if let (Some(path), Some(meta)) = (&named, meta) {
            return (
                path.to_string_lossy().into_owned(),
                self.hashes.of_version(path, &meta),
            );
        }
        let exe = PathBuf::from(format!("{}/{tgid}/exe", self.proc_root));
        if let Some(meta) = same(&exe)
            && let Ok(target) = std::fs::read_link(&exe)
        {
            let path = target
                .to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string();
            return (path, self.hashes.of_version(&exe, &meta));
        }
        // argv[0] is most often the name itself, already refused.
        if let Some(arg0) = argv.first().filter(|a| *a != filename)
            && let (Some(path), Some(meta)) = self.resolve_image(cwd, arg0, same)
        {
            return (
                path.to_string_lossy().into_owned(),
                self.hashes.of_version(&path, &meta),
            );
        }
        // Nothing left to check against: the name it was run by, unhashed.
        let path = named.map_or_else(
            || filename.to_string(),
            |p| p.to_string_lossy().into_owned(),
        );
        (path, None)
    }

    /// `name` (relative to `cwd`) without symbolic links, and its metadata if `is_image`
    /// accepts it. Resolutions are remembered (a `realpath` is a syscall per path component,
    /// and the same programs run over and over); a remembered one that `is_image` refuses is
    /// resolved again, so a changed link is followed anew.
    fn resolve_image(
        &mut self,
        cwd: &str,
        name: &str,
        is_image: impl Fn(&Path) -> Option<std::fs::Metadata>,
    ) -> (Option<PathBuf>, Option<std::fs::Metadata>) {
        let joined = Path::new(cwd).join(name);
        if let Some(resolution) = self.resolved.get_mut(&joined)
            && let Some(meta) = is_image(&resolution.path)
        {
            resolution.found = Some(FileVersion::of(&meta));
            return (Some(resolution.path.clone()), Some(meta));
        }
        let remembered = self.resolved.get(&joined).map(|r| &r.path);
        let Ok(resolved) = std::fs::canonicalize(&joined) else {
            return (None, None);
        };
        // The same resolution was just refused (a script's name: the kernel mapped its
        // interpreter): no second `stat`.
        if remembered == Some(&resolved) {
            return (Some(resolved), None);
        }
        let meta = is_image(&resolved);
        if self.resolved.len() >= MAX_RESOLVED {
            self.resolved.clear();
        }
        let found = meta.as_ref().map(FileVersion::of);
        let text: Arc<str> = resolved.to_string_lossy().into();
        self.resolved.insert(
            joined,
            Resolution {
                path: resolved.clone(),
                name: file_name(&text).into(),
                text,
                found,
            },
        );
        (Some(resolved), meta)
    }

    /// A new process: a copy of its parent's image until it execs.
    pub fn fork(&mut self, child: &Task) {
        let parent = self.parent_of(child);
        let process = Arc::new(Process {
            pid: child.tgid,
            ppid: child.ppid,
            start_ns: child.start_ns,
            created: self.clock.boot_to_utc(child.start_ns),
            uid: child.uid,
            account: self.users.user(child.uid),
            sessionid: child.sessionid,
            initiating: OnceLock::new(),
            ..parent.as_deref().cloned().unwrap_or_else(|| Process {
                pid: 0,
                ppid: 0,
                start_ns: 0,
                created: DateTime::<Utc>::UNIX_EPOCH,
                path: "".into(),
                name: child.comm.as_str().into(),
                command_line: "".into(),
                uid: 0,
                account: "".into(),
                sessionid: 0,
                hashes: None,
                initiating: OnceLock::new(),
            })
        });
        self.insert(process);
    }

    pub fn exit(&mut self, task: &Task) {
        self.exited
            .push_back((Instant::now(), task.tgid, task.start_ns));
        self.expire();
    }

    /// The process an event's task belongs to; a start time of 0 (the fallback sensor's task
    /// of a process already gone from /proc) takes the pid's latest incarnation.
    pub fn of(&mut self, task: &Task) -> Option<Arc<Process>> {
        self.lookup(task.tgid, Some(task.start_ns).filter(|&n| n != 0))
    }

    /// The task's parent process.
    pub fn parent_of(&mut self, task: &Task) -> Option<Arc<Process>> {
        self.lookup(task.ppid, Some(task.parent_start_ns).filter(|&n| n != 0))
    }

    /// The process `pid`; with `start_ns`, only if it is that incarnation of the pid.
    pub fn lookup(&mut self, pid: u32, start_ns: Option<u64>) -> Option<Arc<Process>> {
        if pid == 0 {
            return None;
        }
        if let Some(p) = self.procs.get(&pid)
            && start_ns.is_none_or(|s| self.same_start(s, p.start_ns))
        {
            return Some(Arc::clone(p));
        }
        let process = Arc::new(self.read_proc(pid)?);
        if start_ns.is_some_and(|s| !self.same_start(s, process.start_ns)) {
            // The pid was reused: the process asked for is gone.
            return None;
        }
        if self.procs.len() < MAX_ENTRIES {
            self.procs.insert(pid, Arc::clone(&process));
        }
        Some(process)
    }

    fn insert(&mut self, process: Arc<Process>) {
        if self.procs.len() >= MAX_ENTRIES {
            self.expire_all_exited();
        }
        self.procs.insert(process.pid, process);
    }

    fn expire(&mut self) {
        while let Some(&(at, pid, start)) = self.exited.front() {
            if at.elapsed() < KEEP_EXITED && self.exited.len() < MAX_ENTRIES {
                break;
            }
            self.exited.pop_front();
            self.remove(pid, start);
        }
    }

    fn expire_all_exited(&mut self) {
        while let Some((_, pid, start)) = self.exited.pop_front() {
            self.remove(pid, start);
        }
    }

    fn remove(&mut self, pid: u32, start: u64) {
        // One lookup (a thousand exits a second, in a table too large for the cache).
        let tick = self.tick_ns();
        if let std::collections::hash_map::Entry::Occupied(entry) = self.procs.entry(pid)
            && same_tick(tick, entry.get().start_ns, start)
        {
            entry.remove();
        }
    }

    /// Whether two start times are the same process's: /proc gives them in clock ticks, the
    /// kernel events in nanoseconds, so they are compared at tick precision.
    fn same_start(&self, a: u64, b: u64) -> bool {
        same_tick(self.tick_ns(), a, b)
    }

    fn tick_ns(&self) -> u64 {
        1_000_000_000 / self.clock.ticks_per_second()
    }

    /// A process from /proc, for one the agent did not see start.
    fn read_proc(&mut self, pid: u32) -> Option<Process> {
        let dir = format!("{}/{pid}", self.proc_root);
        let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
        let (comm, ppid, start_ticks) = parse_stat(&stat)?;
        let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let argv = read_cmdline(&dir);
        let exe = format!("{dir}/exe");
        let path = std::fs::read_link(&exe)
            .map(|p| {
                p.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string()
            })
            .unwrap_or_default();
        let start_ns = start_ticks.saturating_mul(1_000_000_000 / self.clock.ticks_per_second());
        let sessionid = std::fs::read_to_string(format!("{dir}/sessionid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(u32::MAX);
        Some(Process {
            pid,
            ppid,
            start_ns,
            created: self.clock.boot_to_utc(start_ns),
            name: if path.is_empty() {
                comm.into()
            } else {
                file_name(&path).into()
            },
            hashes: if path.is_empty() {
                None
            } else {
                self.hashes.of(Path::new(&exe))
            },
            path: path.into(),
            command_line: command_line(&argv).into(),
            uid,
            account: self.users.user(uid),
            sessionid,
            initiating: OnceLock::new(),
        })
    }
}

/// Whether two times in nanoseconds fall in the same clock tick of `tick` nanoseconds.
fn same_tick(tick: u64, a: u64, b: u64) -> bool {
    a / tick == b / tick
}

/// The arguments of a process from `/proc/PID/cmdline` (`dir` = `/proc/PID`); none when gone.
pub(crate) fn read_cmdline(dir: &str) -> Vec<String> {
    std::fs::read(format!("{dir}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Defender shows a Linux command line as the arguments joined by spaces.
pub fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

pub fn file_name(path: &str) -> &str {
    // `rfind` of one ASCII byte is a memrchr.
    path.rfind('/').map_or(path, |slash| &path[slash + 1..])
}

/// (comm, ppid, starttime in clock ticks) from /proc/PID/stat; comm may hold spaces and ')'.
pub(crate) fn parse_stat(stat: &str) -> Option<(String, u32, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields after comm: state(3) ppid(4) ... starttime(22) → indexes 0, 1, 19.
    let ppid = rest.get(1)?.parse().ok()?;
    let start = rest.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task of process `pid` (its own thread group), started at 1 ns.
    fn task(pid: u32, comm: &str) -> Task {
        Task {
            pid,
            tgid: pid,
            ppid: 1,
            cgroup_id: 1,
            comm: comm.into(),
            start_ns: 1,
            time: Utc::now(),
            ..Task::default()
        }
    }

    #[test]
    fn stat_with_awkward_comm() {
        let stat =
            "4242 (a) b (c)) S 17 4242 4242 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(stat), Some(("a) b (c)".to_string(), 17, 123456)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn an_exec_names_the_file_the_kernel_mapped_when_a_link_moves() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b, link) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("run"),
        );
        std::fs::write(&a, b"first image").unwrap();
        std::fs::write(&b, b"second, longer image").unwrap();
        let mut table = ProcessTable::new(HashCache::new(1 << 30), Clock::now());
        let exec = |table: &mut ProcessTable, target: &Path, pid: u32| {
            let meta = std::fs::metadata(target).unwrap();
            let task = task(pid, "run");
            // Run by a relative name from the directory; pids above the kernel's limit have no
            // /proc entry to read the image from.
            let cwd = dir.path().to_str().unwrap();
            // The version as the kernel sensor reads it from the mapped inode.
            table.exec(
                &task,
                "./run",
                &["./run".into()],
                cwd,
                (meta.ino(), meta.dev()),
                Some(FileVersion::of(&meta)),
            )
        };
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let first = exec(&mut table, &a, 5_000_001);
        assert_eq!(Path::new(&*first.path), a.canonicalize().unwrap());
        assert_eq!(first.hashes.as_ref().unwrap().size, 11);
        // The link now leads elsewhere: the remembered resolution is not the mapped file.
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&b, &link).unwrap();
        let second = exec(&mut table, &b, 5_000_002);
        assert_eq!(Path::new(&*second.path), b.canonicalize().unwrap());
        assert_eq!(second.hashes.as_ref().unwrap().size, 20);
        assert_ne!(first.hashes, second.hashes);
        // A mapped file no name leads to any more: the name it was run by, unhashed.
        let gone = exec(&mut table, &a, 5_000_003);
        assert_eq!(Path::new(&*gone.path), b.canonicalize().unwrap());
        assert!(gone.hashes.is_none());
    }

    #[test]
    fn a_known_version_costs_no_stat_and_a_rewritten_one_is_hashed_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path().to_str().unwrap();
        let path = dir.path().join("x");
        let mut table = ProcessTable::new(HashCache::new(1 << 30), Clock::now());
        // Pids above the kernel's limit: no /proc entry to fall back on.
        let exec = |table: &mut ProcessTable, meta: &std::fs::Metadata, pid: u32| {
            let version = Some(FileVersion::of(meta));
            let image = (meta.ino(), meta.dev());
            table.exec(&task(pid, "x"), "./x", &["./x".into()], cwd, image, version)
        };
        std::fs::write(&path, b"one").unwrap();
        let first_meta = std::fs::metadata(&path).unwrap();
        let first = exec(&mut table, &first_meta, 5_000_001);
        let first_hashes = first.hashes.clone().expect("hashed");
        // Gone from its name since: the version the kernel mapped is known, so neither the
        // name nor the file is looked at again (a `stat` would find nothing).
        std::fs::rename(&path, dir.path().join("y")).unwrap();
        let again = exec(&mut table, &first_meta, 5_000_002);
        assert_eq!(
            Path::new(&*again.path),
            dir.path().canonicalize().unwrap().join("x")
        );
        assert_eq!(again.hashes.as_deref(), Some(&*first_hashes));
        // Rewritten in place, same size, its modification time put back: the change time makes
        // it a new version, looked at and hashed again.
        std::fs::rename(dir.path().join("y"), &path).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&path, b"two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(first_meta.modified().unwrap())
            .unwrap();
        let second_meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (
                second_meta.ino(),
                second_meta.size(),
                second_meta.mtime_nsec()
            ),
            (first_meta.ino(), first_meta.size(), first_meta.mtime_nsec())
        );
        let second = exec(&mut table, &second_meta, 5_000_003);
        let second_hashes = second.hashes.clone().expect("hashed");
        assert_ne!(second_hashes.sha256, first_hashes.sha256);
    }

    #[test]
    fn the_running_test_reads_from_proc() {
        let mut table = ProcessTable::new(HashCache::new(1 << 30), Clock::now());
        let me = table
            .lookup(std::process::id(), None)
            .expect("this process");
        assert!(me.path.starts_with('/'), "{me:?}");
        assert!(me.hashes.is_some());
        assert!(me.created <= Utc::now());
        assert!(me.created > Utc::now() - chrono::Duration::hours(1));
        // The same pid with another start time is not this process.
        // Kernel events give the start in ns: the same process at tick precision.
        let tick = 1_000_000_000 / Clock::now().ticks_per_second();
        assert!(
            table
                .lookup(std::process::id(), Some(me.start_ns + tick - 1))
                .is_some()
        );
        table.procs.clear();
        assert!(
            table
                .lookup(std::process::id(), Some(me.start_ns + tick - 1))
                .is_some()
        );
        // Another incarnation of the pid is not this process.
        assert!(
            table
                .lookup(std::process::id(), Some(me.start_ns + tick))
                .is_none()
        );
    }
}
