//! Sensor events and logons as rows of Defender's hunting tables, with Defender's ActionType
//! names where Defender has one, and the process lineage from the process table.
//!
//! Column names are Defender's (a test checks each against the schema); values the schema has
//! no column for ride in `AdditionalFields`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde_json::{Map, Value, json};

use crate::dns::DnsExchange;
use crate::logons::Logon;
use crate::prevent::Blocked;
use crate::process::{Process, ProcessTable, file_name};
use crate::sensor::{FILE_CREATED, Net, Protocol, SensorEvent, Task};

/// One row of one hunting table, kept as the JSON text it is sent as: rows are made at
/// ~11,000 a second, and a map of owned keys and boxed values per row cost a third of the
/// agent's CPU in allocation, hashing and serialisation.
#[derive(Debug, Clone)]
pub struct Row {
    pub table: &'static str,
    /// `"Column":value,` pairs (without the braces); a later pair of a column wins, as JSON
    /// readers take the last of duplicate keys.
    json: String,
    /// The InitiatingProcess* pairs of the process the row is about, shared by its rows
    /// ([`Mapper::initiating`]); the row's own pairs win over them.
    pub initiating: Option<Arc<str>>,
}

/// Room a new row's text starts with: an exec's row (hashes, command line, identity fields)
/// fits.
const ROW_CAPACITY: usize = 2048;
/// Buffers of dropped rows kept for new ones, per thread, and the largest kept.
const SPARE_ROWS: usize = 256;
const SPARE_MAX_CAPACITY: usize = 16 << 10;

thread_local! {
    /// Buffers of dropped rows: a row's text outgrows the allocator's per-thread cache (about
    /// 1 KiB in glibc), and allocating and freeing such buffers, ~11,000 a second, was a fifth
    /// of the agent's CPU.
    static SPARE: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Row {
    fn drop(&mut self) {
        let mut json = std::mem::take(&mut self.json);
        if json.capacity() >= ROW_CAPACITY && json.capacity() <= SPARE_MAX_CAPACITY {
            json.clear();
            // A thread being torn down has no spares any more: the buffer is freed.
            let _ = SPARE.try_with(|spare| {
                let mut spare = spare.borrow_mut();
                if spare.len() < SPARE_ROWS {
                    spare.push(json);
                }
            });
        }
    }
}

fn row_buffer() -> String {
    SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| String::with_capacity(ROW_CAPACITY))
}

/// A value a column can take; `write` returns false (writing nothing) for an empty one, so
/// empty strings and `None` leave the column out, as Defender does.
pub trait Field {
    fn write(&self, out: &mut String) -> bool;
}

/// Whether JSON needs `s` escaped. Whole chunks are checked without an early exit, so that
/// the compiler can vectorise the check: most values are paths, hashes and command lines with
/// nothing to escape.
fn needs_escape(s: &[u8]) -> bool {
    s.chunks(32).any(|chunk| {
        chunk.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        })
    })
}

impl Field for str {
    fn write(&self, out: &mut String) -> bool {
        if self.is_empty() {
            return false;
        }
        // Most values need no escaping: copy them as they are.
        if !needs_escape(self.as_bytes()) {
            out.push('"');
            out.push_str(self);
            out.push('"');
        } else {
            // A str always serialises.
            out.push_str(&serde_json::to_string(self).unwrap_or_default());
        }
        true
    }
}

impl Field for &str {
    fn write(&self, out: &mut String) -> bool {
        (**self).write(out)
    }
}

impl Field for String {
    fn write(&self, out: &mut String) -> bool {
        self.as_str().write(out)
    }
}

impl Field for Arc<str> {
    fn write(&self, out: &mut String) -> bool {
        (**self).write(out)
    }
}

impl Field for &String {
    fn write(&self, out: &mut String) -> bool {
        self.as_str().write(out)
    }
}

macro_rules! number_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn write(&self, out: &mut String) -> bool {
                // Without the formatting machinery: a few numbers in each of ~11,000 rows a
                // second.
                out.push_str(itoa::Buffer::new().format(*self));
                true
            }
        }
    )*};
}
number_field!(u16, u32, u64, i32, i64);

impl Field for bool {
    fn write(&self, out: &mut String) -> bool {
        out.push_str(if *self { "true" } else { "false" });
        true
    }
}

/// A time as Defender writes it, `2024-05-01T10:00:00.123456Z`, written without formatting
/// machinery (two per row at ~11,000 rows a second).
#[derive(Debug, Clone, Copy)]
pub struct Time(pub DateTime<Utc>);

thread_local! {
    /// The last whole second written and its `YYYY-MM-DDTHH:MM:SS` (rows come thousands a
    /// second, each with its time).
    static LAST_SECOND: std::cell::RefCell<(i64, String)> =
        const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

impl Time {
    fn push(self, out: &mut String) {
        let (secs, nanos) = (self.0.timestamp(), self.0.timestamp_subsec_nanos());
        let written = nanos < 1_000_000_000
            && LAST_SECOND
                .try_with(|last| {
                    let mut last = last.borrow_mut();
                    if last.0 != secs {
                        last.1.clear();
                        if !Time::push_second(self.0.naive_utc(), &mut last.1) {
                            return false;
                        }
                        last.0 = secs;
                    }
                    out.push_str(&last.1);
                    true
                })
                .unwrap_or(false);
        if !written {
            // Years of other than four digits, and leap seconds, in chrono's own way.
            out.push_str(&self.0.to_rfc3339_opts(SecondsFormat::Micros, true));
            return;
        }
        out.push('.');
        let micros = nanos / 1000;
        for shift in [100_000, 10_000, 1000, 100, 10, 1] {
            out.push(char::from(b'0' + (micros / shift % 10) as u8));
        }
        out.push('Z');
    }

    /// `YYYY-MM-DDTHH:MM:SS` of `t` into `out`; false (writing nothing) for a year of other
    /// than four digits.
    fn push_second(t: NaiveDateTime, out: &mut String) -> bool {
        let year = t.year();
        if !(0..=9999).contains(&year) {
            return false;
        }
        let mut b = *b"0000-00-00T00:00:00";
        let mut put = |at: usize, digits: usize, mut v: u32| {
            for i in (at..at + digits).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year as u32);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        put(17, 2, t.second());
        // Only ASCII digits were written into an ASCII template.
        out.push_str(std::str::from_utf8(&b).unwrap_or_default());
        true
    }
}

impl Field for Time {
    fn write(&self, out: &mut String) -> bool {
        out.push('"');
        self.push(out);
        out.push('"');
        true
    }
}

impl<T: Field> Field for Option<T> {
    fn write(&self, out: &mut String) -> bool {
        self.as_ref().is_some_and(|v| v.write(out))
    }
}

impl Field for Value {
    fn write(&self, out: &mut String) -> bool {
        match self {
            Value::Null => false,
            Value::String(s) => s.write(out),
            // A Value always serialises.
            other => {
                out.push_str(&serde_json::to_string(other).unwrap_or_default());
                true
            }
        }
    }
}

impl Row {
    fn new(table: &'static str, time: DateTime<Utc>, action: &str) -> Row {
        let mut row = Row {
            table,
            json: row_buffer(),
            initiating: None,
        };
        row.set("Timestamp", Time(time));
        row.set("ActionType", action);
        row
    }

    /// A row from a map of columns (snapshots, made rarely).
    pub fn from_map(table: &'static str, fields: &Map<String, Value>) -> Row {
        let mut row = Row {
            table,
            json: String::new(),
            initiating: None,
        };
        for (column, value) in fields {
            row.set(column, value.clone());
        }
        row
    }

    fn set(&mut self, column: &str, value: impl Field) {
        self.set_prefixed("", column, value);
    }

    /// Sets `{prefix}{column}` (`InitiatingProcess` + `FileName`) without building the name.
    fn set_prefixed(&mut self, prefix: &str, column: &str, value: impl Field) {
        let mark = self.json.len();
        self.json.push('"');
        self.json.push_str(prefix);
        self.json.push_str(column);
        self.json.push_str("\":");
        if value.write(&mut self.json) {
            self.json.push(',');
        } else {
            self.json.truncate(mark);
        }
    }

    /// Bytes of the row's JSON object at most (with its shared pairs).
    pub fn text_len(&self) -> usize {
        self.json.len() + self.initiating.as_deref().map_or(0, str::len) + 2
    }

    /// The JSON object of the row.
    pub fn json(&self) -> String {
        let mut out = Vec::new();
        self.write_object(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The row's columns (each once: the last value written wins), to look at.
    pub fn fields(&self) -> Map<String, Value> {
        serde_json::from_str(&self.json()).unwrap_or_default()
    }

    /// Appends the row's JSON object to `out` (what [`Row::json`] returns, without a copy):
    /// the shared InitiatingProcess* pairs first, so that the row's own win.
    pub fn write_object(&self, out: &mut Vec<u8>) {
        let shared = self.initiating.as_deref().unwrap_or_default();
        let own = self.json.trim_end_matches(',');
        out.push(b'{');
        if own.is_empty() {
            out.extend_from_slice(shared.trim_end_matches(',').as_bytes());
        } else {
            out.extend_from_slice(shared.as_bytes());
            out.extend_from_slice(own.as_bytes());
        }
        out.push(b'}');
    }

    /// Appends the row's JSON object with `"$i": reference` in place of its shared pairs
    /// (the server writes in the columns of entry `reference` of the batch's `initiating`).
    pub fn write_referring(&self, out: &mut Vec<u8>, reference: usize) {
        out.push(b'{');
        out.extend_from_slice(self.json.as_bytes());
        out.extend_from_slice(b"\"$i\":");
        out.extend_from_slice(itoa::Buffer::new().format(reference).as_bytes());
        out.push(b'}');
    }
}

/// Whether rows of `table` carry Defender's `ReportId` (the row's sequence number in the
/// agent's queue, written in as a block is sealed): the software inventory table has no such
/// column.
pub fn numbered(table: &[u8]) -> bool {
    !table.starts_with(b"DeviceTvm")
}

/// Which file events become rows.
#[derive(Debug, Clone)]
pub struct FileFilter {
    /// Only paths under these (empty: every path).
    pub include: Vec<String>,
    /// Never these: pseudo-filesystems whose writes are not files (`> /dev/null`).
    pub exclude: Vec<String>,
}

impl Default for FileFilter {
    fn default() -> Self {
        FileFilter {
            include: Vec::new(),
            exclude: ["/dev/", "/proc/", "/sys/"].map(String::from).to_vec(),
        }
    }
}

impl FileFilter {
    pub(crate) fn wants(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| path.starts_with(p.as_str())))
            && !self.exclude.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// The tables with an InitiatingProcessLogonId column.
const WITH_INITIATING_LOGON_ID: &[&str] = &["DeviceProcessEvents", "DeviceEvents"];

pub struct Mapper {
    pub procs: ProcessTable,
    pub files: FileFilter,
    /// The device's name, Defender's AccountDomain of local accounts.
    pub host: String,
    /// Who connected a UDP socket to a DNS server, by the socket's local address: the asker of
    /// the queries captured from it.
    pub dns_askers: DnsAskers,
    /// File events leave out their `FileName`, the last component of their `FolderPath`: the
    /// server writes it in (its policy says it does). A tenth of a file event's text.
    pub file_name_from_path: bool,
}

/// Recent UDP connects to port 53, by local address; bounded, oldest forgotten first.
#[derive(Default)]
pub struct DnsAskers {
    by_local: std::collections::HashMap<SocketAddr, (Task, std::time::Instant)>,
}

impl DnsAskers {
    const MAX: usize = 4096;
    const KEEP: std::time::Duration = std::time::Duration::from_secs(30);

    fn remember(&mut self, task: &Task, net: &Net) {
        if self.by_local.len() >= Self::MAX {
            self.by_local.retain(|_, (_, at)| at.elapsed() < Self::KEEP);
            if self.by_local.len() >= Self::MAX {
                self.by_local.clear();
            }
        }
        let local = SocketAddr::new(canonical(net.local.ip()), net.local.port());
        self.by_local
            .insert(local, (task.clone(), std::time::Instant::now()));
    }

    fn asker(&self, client: SocketAddr) -> Option<&Task> {
        let client = SocketAddr::new(canonical(client.ip()), client.port());
        self.by_local
            .get(&client)
            .or_else(|| {
                // A socket bound to the wildcard address: the port alone.
                self.by_local
                    .iter()
                    .find(|(a, _)| a.port() == client.port() && a.ip().is_unspecified())
                    .map(|(_, v)| v)
            })
            .map(|(t, _)| t)
    }
}

impl Mapper {
    /// The row an event makes, if any (forks and exits only update the process table).
    pub fn event(&mut self, event: &SensorEvent) -> Option<Row> {
        match event {
            SensorEvent::Exec {
                task,
                filename,
                argv,
                argv_truncated,
                cwd,
                inode,
                dev,
                version,
                exe_deleted,
                exe_memfd,
            } => {
                let parent = self.procs.parent_of(task);
                let process = self
                    .procs
                    .exec(task, filename, argv, cwd, (*inode, *dev), *version);
                let mut row = Row::new("DeviceProcessEvents", task.time, "ProcessCreated");
                self.image(&mut row, "", &process);
                row.set("ProcessId", process.pid);
                row.set("ProcessCommandLine", &*process.command_line);
                row.set("ProcessCreationTime", Time(process.created));
                row.set("AccountDomain", self.host.as_str());
                row.set("AccountName", &*process.account);
                if task.sessionid != u32::MAX {
                    row.set("LogonId", task.sessionid);
                    row.set("CreatedProcessSessionId", task.sessionid);
                }
                if let Some(parent) = &parent {
                    self.initiating(&mut row, parent);
                }
                let extra = ExecFields {
                    uid: task.uid,
                    gid: task.gid,
                    euid: task.euid,
                    egid: task.egid,
                    login_uid: (task.loginuid != u32::MAX).then_some(task.loginuid),
                    cgroup_id: task.cgroup_id,
                    current_directory: cwd,
                    command_line_truncated: argv_truncated.then_some(true),
                    executed_from_deleted_file: exe_deleted.then_some(true),
                    executed_from_memory: exe_memfd.then_some(true),
                };
                // Plain data always serialises.
                row.set(
                    "AdditionalFields",
                    serde_json::to_string(&extra).unwrap_or_default(),
                );
                Some(row)
            }
            SensorEvent::Fork { task } => {
                self.procs.fork(task);
                None
            }
            SensorEvent::Exit { task, .. } => {
                self.procs.exit(task);
                None
            }
            SensorEvent::FileWriteClose {
                task,
                path,
                flags,
                size,
                ..
            } => {
                // The kernel said whether that open created the file.
                let action = if flags & FILE_CREATED != 0 {
                    "FileCreated"
                } else {
                    "FileModified"
                };
                let mut row = self.file_row(task, action, path)?;
                row.set("FileSize", *size);
                Some(row)
            }
            SensorEvent::FileDelete { task, path, .. } => self.file_row(task, "FileDeleted", path),
            SensorEvent::FileRename { task, from, to } => {
                if !self.files.wants(from) && !self.files.wants(to) {
                    return None;
                }
                let mut row = self.file_row_unfiltered(task, "FileRenamed", to);
                row.set("PreviousFolderPath", from.as_str());
                row.set("PreviousFileName", file_name(from));
                Some(row)
            }
            SensorEvent::FileChmod { task, path, mode } => {
                let mut row = self.file_row(task, "FilePermissionsModified", path)?;
                row.set(
                    "AdditionalFields",
                    json!({"Mode": format!("{:o}", mode & 0o7777)}).to_string(),
                );
                Some(row)
            }
            SensorEvent::Connect { task, net, result } => {
                if net.remote.port() == 53 {
                    self.dns_askers.remember(task, net);
                }
                let action = match *result {
                    0 => "ConnectionSuccess",
                    r if r == -libc::EINPROGRESS => "ConnectionAttempt",
                    _ => "ConnectionFailed",
                };
                let mut row = self.network_row(task, action, net, true);
                if *result != 0 && *result != -libc::EINPROGRESS {
                    row.set(
                        "AdditionalFields",
                        json!({"Errno": -result, "Error": std::io::Error::from_raw_os_error(-result).to_string()}).to_string(),
                    );
                }
                Some(row)
            }
            SensorEvent::Accept { task, net } => {
                Some(self.network_row(task, "InboundConnectionAccepted", net, true))
            }
            SensorEvent::Listen { task, net } => {
                Some(self.network_row(task, "ListeningConnectionCreated", net, false))
            }
            SensorEvent::ModuleLoad { task, name } => {
                let mut row = self.device_event(task, "DriverLoad");
                row.set("FileName", name.as_str());
                row.set("AdditionalFields", json!({"ModuleName": name}).to_string());
                Some(row)
            }
            SensorEvent::Ptrace {
                task,
                request,
                target_pid,
            } => {
                let mut row = self.device_event(task, "PtraceAttach");
                row.set("ProcessId", *target_pid);
                if let Some(target) = self.procs.lookup(*target_pid, None) {
                    self.image(&mut row, "", &target);
                    row.set("ProcessCommandLine", &*target.command_line);
                    row.set("ProcessCreationTime", Time(target.created));
                }
                row.set("AdditionalFields", json!({"Request": request}).to_string());
                Some(row)
            }
            SensorEvent::SetId {
                task,
                call,
                uid,
                euid,
                gid,
                egid,
            } => {
                let mut row = self.device_event(task, "ProcessCredentialsChanged");
                row.set("AccountName", self.procs.users.user(*euid));
                row.set("AccountDomain", self.host.as_str());
                row.set(
                    "AdditionalFields",
                    json!({"Call": call, "Uid": uid, "Euid": euid, "Gid": gid, "Egid": egid})
                        .to_string(),
                );
                Some(row)
            }
        }
    }

    /// A DNS query and its answer as Defender's `DeviceEvents` `DnsQueryResponse`; the asking
    /// process when the sensor saw it connect the socket.
    pub fn dns(&mut self, x: &DnsExchange) -> Row {
        let mut row = Row::new("DeviceEvents", x.time, "DnsQueryResponse");
        set_endpoint(&mut row, "Local", x.client);
        set_endpoint(&mut row, "Remote", x.server);
        if let Some(task) = self.dns_askers.asker(x.client).cloned() {
            self.initiating_task(&mut row, &task);
        }
        row.set(
            "AdditionalFields",
            json!({
                "DnsQueryString": x.query,
                "DnsQueryType": x.query_type,
                "DnsResponseCode": x.rcode,
                "DnsAnswers": x.answers,
                "Truncated": x.truncated,
                "Protocol": if x.over_tcp { "Tcp" } else { "Udp" },
            })
            .to_string(),
        );
        row
    }

    /// A DeviceLogonEvents row; the process that logged it is the initiating one.
    pub fn logon(&mut self, logon: &Logon) -> Row {
        let action = if logon.success {
            "LogonSuccess"
        } else {
            "LogonFailed"
        };
        let mut row = Row::new("DeviceLogonEvents", logon.time, action);
        row.set("LogonType", logon.logon_type);
        row.set("AccountDomain", self.host.as_str());
        row.set("AccountName", logon.account.as_str());
        row.set("Protocol", logon.protocol.map(str::to_string));
        row.set("FailureReason", logon.failure_reason.map(str::to_string));
        row.set("RemoteIP", logon.remote_ip.as_deref());
        row.set("RemotePort", logon.remote_port);
        if let Some(ip) = logon.remote_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            row.set("RemoteIPType", ip_type(ip));
        }
        // The pid is the logging program's unless it was reused since (then its name differs).
        let process = logon
            .pid
            .and_then(|pid| self.procs.lookup(pid, None))
            .filter(|p| *p.name == *logon.program);
        if let Some(process) = process {
            self.initiating(&mut row, &process);
        } else {
            row.set("InitiatingProcessFileName", logon.program.as_str());
            row.set("InitiatingProcessId", logon.pid);
        }
        if let Some(by) = &logon.by {
            row.set("InitiatingProcessAccountName", by.as_str());
        }
        let mut extra = Map::new();
        extra.insert("Program".into(), logon.program.clone().into());
        if let Some(t) = &logon.terminal {
            extra.insert("Terminal".into(), t.clone().into());
        }
        row.set("AdditionalFields", Value::Object(extra).to_string());
        row
    }

    fn file_row(&mut self, task: &Task, action: &str, path: &str) -> Option<Row> {
        self.files
            .wants(path)
            .then(|| self.file_row_unfiltered(task, action, path))
    }

    fn file_row_unfiltered(&mut self, task: &Task, action: &str, path: &str) -> Row {
        let mut row = Row::new("DeviceFileEvents", task.time, action);
        if !self.file_name_from_path {
            row.set("FileName", file_name(path));
        }
        row.set("FolderPath", path);
        self.initiating_task(&mut row, task);
        row
    }

    fn network_row(&mut self, task: &Task, action: &str, net: &Net, remote: bool) -> Row {
        let mut row = Row::new("DeviceNetworkEvents", task.time, action);
        row.set(
            "Protocol",
            match net.protocol {
                Protocol::Tcp => "Tcp".to_string(),
                Protocol::Udp => "Udp".to_string(),
                Protocol::Other(p) => p.to_string(),
            },
        );
        set_endpoint(&mut row, "Local", net.local);
        if remote {
            set_endpoint(&mut row, "Remote", net.remote);
        }
        self.initiating_task(&mut row, task);
        row
    }

    /// An execution the exec guard denied for a block indicator: `DeviceEvents`
    /// `ExecutionBlocked` (Rampart's name; Defender has none for Linux), the blocked file as
    /// File*, the process whose `execve` failed as InitiatingProcess*, the indicator in
    /// AdditionalFields.
    pub fn blocked(&mut self, b: &Blocked) -> Row {
        let mut row = self.device_event(&b.task, "ExecutionBlocked");
        row.set("FileName", file_name(&b.path).to_string());
        row.set("FolderPath", b.path.as_str());
        row.set("SHA1", b.hashes.sha1.as_str());
        row.set("SHA256", b.hashes.sha256.as_str());
        row.set("MD5", b.hashes.md5.as_str());
        row.set("FileSize", b.hashes.size);
        row.set(
            "AdditionalFields",
            json!({"IndicatorId": b.indicator, "MatchedHash": b.kind}).to_string(),
        );
        row
    }

    fn device_event(&mut self, task: &Task, action: &str) -> Row {
        let mut row = Row::new("DeviceEvents", task.time, action);
        self.initiating_task(&mut row, task);
        row
    }

    /// InitiatingProcess* from the event's own task.
    fn initiating_task(&mut self, row: &mut Row, task: &Task) {
        match self.procs.of(task) {
            Some(process) => self.initiating(row, &process),
            None => {
                row.set("InitiatingProcessId", task.tgid);
                row.set("InitiatingProcessFileName", task.comm.as_str());
                row.set(
                    "InitiatingProcessAccountName",
                    self.procs.users.user(task.uid),
                );
                row.set("InitiatingProcessParentId", task.ppid);
            }
        }
    }

    /// InitiatingProcess* (and InitiatingProcessParent*) of `process`. Rendered once per
    /// process: the same ~800 bytes begin every row a process causes (one writer's 10,000 file
    /// events a second, say), and rendering them was the largest part of making a row.
    fn initiating(&mut self, row: &mut Row, process: &Arc<Process>) {
        let pairs = match process.initiating.get() {
            Some(pairs) => pairs,
            None => {
                let rendered = Arc::from(self.render_initiating(process));
                process.initiating.get_or_init(|| rendered)
            }
        };
        row.initiating = Some(Arc::clone(pairs));
        if process.sessionid != u32::MAX && WITH_INITIATING_LOGON_ID.contains(&row.table) {
            row.set("InitiatingProcessLogonId", process.sessionid);
        }
    }

    /// The pairs [`Mapper::initiating`] writes, but for the table-dependent LogonId. The
    /// parent is the one the pid names at this first row.
    fn render_initiating(&mut self, process: &Process) -> String {
        let mut row = Row {
            table: "",
            json: String::with_capacity(1024),
            initiating: None,
        };
        self.image(&mut row, "InitiatingProcess", process);
        row.set("InitiatingProcessId", process.pid);
        row.set("InitiatingProcessCommandLine", &*process.command_line);
        row.set("InitiatingProcessCreationTime", Time(process.created));
        row.set("InitiatingProcessAccountDomain", self.host.as_str());
        row.set("InitiatingProcessAccountName", &*process.account);
        if process.sessionid != u32::MAX {
            row.set("InitiatingProcessSessionId", process.sessionid);
        }
        row.set("InitiatingProcessParentId", process.ppid);
        if let Some(parent) = self.procs.lookup(process.ppid, None) {
            row.set("InitiatingProcessParentFileName", &*parent.name);
            row.set("InitiatingProcessParentCreationTime", Time(parent.created));
        }
        std::mem::take(&mut row.json)
    }

    /// FileName, FolderPath, hashes and size of an image, under `prefix` ("" or
    /// "InitiatingProcess").
    fn image(&self, row: &mut Row, prefix: &str, process: &Process) {
        row.set_prefixed(prefix, "FileName", &*process.name);
        row.set_prefixed(prefix, "FolderPath", &*process.path);
        if let Some(h) = &process.hashes {
            row.set_prefixed(prefix, "SHA1", h.sha1.as_str());
            row.set_prefixed(prefix, "SHA256", h.sha256.as_str());
            row.set_prefixed(prefix, "MD5", h.md5.as_str());
            row.set_prefixed(prefix, "FileSize", h.size);
        }
    }
}

fn set_endpoint(row: &mut Row, side: &str, addr: SocketAddr) {
    let ip = canonical(addr.ip());
    if !ip.is_unspecified() || side == "Local" {
        row.set_prefixed(side, "IP", ip.to_string());
        // DeviceNetworkEvents has the address types; DeviceEvents does not.
        if row.table == "DeviceNetworkEvents" {
            row.set_prefixed(side, "IPType", ip_type(ip));
        }
    }
    if addr.port() != 0 {
        row.set_prefixed(side, "Port", addr.port());
    }
}

/// IPv4 addresses seen through IPv6 sockets (`::ffff:a.b.c.d`) as IPv4, as Defender shows them.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Defender's IP address types.
fn ip_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "Loopback",
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => "Private",
        IpAddr::V4(v4) if v4.is_broadcast() => "Broadcast",
        IpAddr::V4(v4) if v4.is_multicast() => "Multicast",
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 || v4.octets()[0] >= 240 => {
            "Reserved"
        }
        IpAddr::V6(v6) if v6.is_loopback() => "Loopback",
        IpAddr::V6(v6) if v6.is_multicast() => "Multicast",
        IpAddr::V6(v6) if v6.is_unspecified() => "Reserved",
        // fc00::/7 unique local, fe80::/10 link local.
        IpAddr::V6(v6)
            if (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80 =>
        {
            "Private"
        }
        _ => "Public",
    }
}

/// An exec's `AdditionalFields`: raw identity fields Defender's columns have no room for, and
/// how the image was run. Serialised straight to text (a thousand execs a second), not built
/// as a map first.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecFields<'a> {
    uid: u32,
    gid: u32,
    euid: u32,
    egid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    login_uid: Option<u32>,
    cgroup_id: u64,
    current_directory: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    command_line_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executed_from_deleted_file: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executed_from_memory: Option<bool>,
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(27);
    Time(t).push(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let mut times: Vec<DateTime<Utc>> = [
            "0001-01-01T00:00:00Z",
            "1970-01-01T00:00:00.000001Z",
            "2024-02-29T23:59:59.999999Z",
            "2026-12-06T00:05:07.123456789Z",
            // The same second again (its text is remembered), then others.
            "2026-12-06T00:05:07.000001Z",
            "2026-12-06T00:05:08Z",
            "2026-12-06T00:05:07.999999Z",
            "1969-12-31T23:59:59.5Z",
            "9999-12-31T23:59:59.999999Z",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        // Every day of a few years, at a moving time of day.
        let mut t: DateTime<Utc> = "1999-12-25T01:02:03.000004Z".parse().unwrap();
        for i in 0..3_000 {
            times.push(t);
            t += chrono::Duration::seconds(86_400 + 3_607)
                + chrono::Duration::nanoseconds(i * 1_234_567);
        }
        // Past four digits and a leap second: chrono's own rendering.
        times.push("+10000-01-01T00:00:00Z".parse().unwrap());
        let second = |nanos| {
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|d| d.and_hms_nano_opt(23, 59, 59, nanos))
                .unwrap()
                .and_utc()
        };
        times.extend([second(500_000_000), second(1_500_000_000), second(7)]);
        for t in times {
            let expected = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            assert_eq!(timestamp(t), expected);
            let mut out = String::new();
            assert!(Time(t).write(&mut out));
            assert_eq!(out, format!("\"{expected}\""));
        }
    }

    #[test]
    fn escaping_is_noticed_anywhere_in_a_value() {
        for len in [1, 31, 32, 33, 100] {
            for at in [0, len / 2, len - 1] {
                for special in [b'"', b'\\', b'\n', 0x1f] {
                    let mut value = vec![b'a'; len];
                    value[at] = special;
                    assert!(needs_escape(&value), "{len} {at} {special}");
                    value[at] = b'z';
                    assert!(!needs_escape(&value));
                }
            }
        }
    }

    #[test]
    fn rows_are_valid_json_whatever_the_values() {
        let mut row = Row::new("DeviceEvents", Utc::now(), "Test");
        let awkward = "a \"quoted\" \\ back\\slash\n\tline\u{1} é ✓";
        row.set("ProcessCommandLine", awkward);
        row.set("FileName", "");
        row.set("FolderPath", None::<String>);
        row.set("ProcessId", 42u32);
        row.set("LogonId", -7i64);
        row.set("AccountName", "first");
        row.set("AccountName", "second");
        let fields = row.fields();
        assert_eq!(fields["ProcessCommandLine"], awkward);
        assert!(!fields.contains_key("FileName") && !fields.contains_key("FolderPath"));
        assert_eq!(
            (fields["ProcessId"].as_u64(), fields["LogonId"].as_i64()),
            (Some(42), Some(-7))
        );
        assert_eq!(fields["AccountName"], "second", "the last value wins");
        let mut written = b"[".to_vec();
        row.write_object(&mut written);
        let parsed: Map<String, Value> = serde_json::from_slice(&written[1..]).unwrap();
        assert_eq!(parsed["ProcessCommandLine"], awkward);
    }
}
