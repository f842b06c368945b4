//! Sensor events and logons become rows of Defender's tables: every column exists in the
//! hunting schema with a value of its type, lineage comes from the process table, and the
//! ActionTypes are Defender's.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use rampart_agent::clock::Clock;
use rampart_agent::hashes::HashCache;
use rampart_agent::logons::{SyslogMessage, parse_logon};
use rampart_agent::mapping::{FileFilter, Mapper, Row};
use rampart_agent::process::ProcessTable;
use rampart_agent::sensor::{FILE_CREATED, Net, Protocol, SensorEvent, Task};
use rampart_schema::{KustoType, Table};
use serde_json::{Value, json};

fn mapper() -> Mapper {
    Mapper {
        procs: ProcessTable::new(HashCache::new(1 << 30), Clock::now()),
        files: FileFilter::default(),
        host: "testhost".into(),
        dns_askers: Default::default(),
        file_name_from_path: false,
    }
}

/// A task of process `pid` whose parent is this test, with its real start time.
fn task(pid: u32, ppid: u32, table: &mut ProcessTable) -> Task {
    let start_ns = table.lookup(pid, None).map_or(0, |p| p.start_ns);
    let parent_start_ns = table.lookup(ppid, None).map_or(0, |p| p.start_ns);
    Task {
        pid,
        tgid: pid,
        ppid,
        cgroup_id: 1,
        comm: "x".into(),
        start_ns,
        parent_start_ns,
        time: Utc::now(),
        ..Task::default()
    }
}

/// Every column is the table's, and every value fits the column's type.
fn check_schema(row: &Row) {
    let table = Table::from_name(row.table).unwrap_or_else(|| panic!("no table {}", row.table));
    for (name, value) in &row.fields() {
        let column = table
            .column(name)
            .unwrap_or_else(|| panic!("{} has no column {name}", row.table));
        let fits = match column.kind {
            KustoType::String | KustoType::Dynamic => value.is_string(),
            KustoType::Long | KustoType::Int => value.is_i64() || value.is_u64(),
            KustoType::Bool => value.is_boolean(),
            KustoType::Real => value.is_number(),
            KustoType::DateTime => value
                .as_str()
                .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        };
        assert!(
            fits,
            "{}.{name} = {value} is not a {:?}",
            row.table, column.kind
        );
    }
    // As queued: with its sequence number where the table has the column.
    assert_eq!(
        rampart_agent::mapping::numbered(row.table.as_bytes()),
        table.column("ReportId").is_some(),
        "{}",
        row.table
    );
    // What goes into a block: the JSON object, appended.
    let mut written = b"left over".to_vec();
    row.write_object(&mut written);
    assert_eq!(&written[..9], b"left over");
    assert_eq!(
        serde_json::from_slice::<Value>(&written[9..]).ok(),
        Some(Value::Object(row.fields()))
    );
}

#[test]
fn exec_rows_carry_lineage_and_hashes() {
    let mut child = Command::new("/bin/sleep").arg("5").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut m = mapper();
    let t = task(child.id(), std::process::id(), &mut m.procs);
    let image = std::fs::metadata("/bin/sleep").unwrap();
    let row = m
        .event(&SensorEvent::Exec {
            task: t.clone(),
            filename: "/bin/sleep".into(),
            argv: vec!["/bin/sleep".into(), "5".into()],
            argv_truncated: false,
            cwd: "/tmp".into(),
            inode: std::os::unix::fs::MetadataExt::ino(&image),
            dev: std::os::unix::fs::MetadataExt::dev(&image),
            version: Some(rampart_agent::hashes::FileVersion::of(&image)),
            exe_deleted: false,
            exe_memfd: false,
        })
        .expect("a row");
    let _ = child.kill();
    let _ = child.wait();
    check_schema(&row);
    let f = &row.fields();
    assert_eq!(row.table, "DeviceProcessEvents");
    assert_eq!(f["ActionType"], "ProcessCreated");
    assert_eq!(f["FileName"], "sleep");
    assert_eq!(f["ProcessCommandLine"], "/bin/sleep 5");
    assert_eq!(f["ProcessId"], child.id());
    assert_eq!(f["AccountName"], "root");
    assert_eq!(f["InitiatingProcessId"], std::process::id());
    let me = std::env::current_exe().unwrap();
    assert_eq!(f["InitiatingProcessFolderPath"], me.display().to_string());
    assert_eq!(f["SHA256"].as_str().unwrap().len(), 64);
    assert!(f["InitiatingProcessParentFileName"].is_string());
    let extra: Value = serde_json::from_str(f["AdditionalFields"].as_str().unwrap()).unwrap();
    assert_eq!(extra["CurrentDirectory"], "/tmp");
    assert_eq!(
        (&extra["Uid"], &extra["Euid"], &extra["Gid"], &extra["Egid"]),
        (&json!(t.uid), &json!(t.euid), &json!(t.gid), &json!(t.egid))
    );
    assert_eq!(extra["CgroupId"], t.cgroup_id);
    assert_eq!(extra.get("LoginUid").is_some(), t.loginuid != u32::MAX);
    for absent in [
        "CommandLineTruncated",
        "ExecutedFromDeletedFile",
        "ExecutedFromMemory",
    ] {
        assert!(extra.get(absent).is_none(), "{absent}: {extra}");
    }

    // The process table now knows it: a file event of that task names it as initiator.
    let file = tempfile::NamedTempFile::new().unwrap();
    let opened = Utc::now();
    let row = m
        .event(&SensorEvent::FileWriteClose {
            task: t,
            path: file.path().display().to_string(),
            flags: (libc::O_WRONLY | libc::O_CREAT) as u32,
            inode: 0,
            size: 3,
            opened,
        })
        .unwrap();
    check_schema(&row);
    // O_CREAT, but the open did not create it: modified.
    assert_eq!(row.fields()["ActionType"], "FileModified");
    assert_eq!(row.fields()["InitiatingProcessFileName"], "sleep");
    assert_eq!(row.fields()["FileSize"], 3);
}

#[test]
fn file_network_and_other_events() {
    let mut m = mapper();
    let me = std::process::id();
    let ppid = std::os::unix::process::parent_id();
    let t = task(me, ppid, &mut m.procs);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("new.txt");
    std::fs::write(&fresh, b"x").unwrap();
    let created = m
        .event(&SensorEvent::FileWriteClose {
            task: t.clone(),
            path: fresh.display().to_string(),
            flags: (libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC) as u32 | FILE_CREATED,
            inode: 0,
            size: 1,
            opened: Utc::now(),
        })
        .unwrap();
    check_schema(&created);
    assert_eq!(created.fields()["ActionType"], "FileCreated");
    assert_eq!(created.fields()["FileName"], "new.txt");
    assert_eq!(created.fields()["InitiatingProcessId"], me);
    // Pseudo-files are not files.
    assert!(
        m.event(&SensorEvent::FileWriteClose {
            task: t.clone(),
            path: "/dev/null".into(),
            flags: libc::O_WRONLY as u32,
            inode: 0,
            size: 0,
            opened: Utc::now(),
        })
        .is_none()
    );
    let rename = SensorEvent::FileRename {
        task: t.clone(),
        from: "/tmp/a.txt".into(),
        to: "/tmp/b.txt".into(),
    };
    let renamed = m.event(&rename).unwrap();
    check_schema(&renamed);
    assert_eq!(renamed.fields()["PreviousFileName"], "a.txt");
    assert_eq!(renamed.fields()["FileName"], "b.txt");
    // A server that writes in a file's name from its path is sent the path alone.
    m.file_name_from_path = true;
    let renamed = m.event(&rename).unwrap();
    assert_eq!(renamed.fields().get("FileName"), None);
    assert_eq!(renamed.fields()["FolderPath"], "/tmp/b.txt");
    assert_eq!(renamed.fields()["PreviousFileName"], "a.txt");
    m.file_name_from_path = false;
    let chmod = m
        .event(&SensorEvent::FileChmod {
            task: t.clone(),
            path: "/tmp/b.txt".into(),
            mode: 0o104755,
        })
        .unwrap();
    check_schema(&chmod);
    assert!(
        chmod.fields()["AdditionalFields"]
            .as_str()
            .unwrap()
            .contains("4755")
    );
    let deleted = m
        .event(&SensorEvent::FileDelete {
            task: t.clone(),
            path: "/tmp/b.txt".into(),
            dir: false,
        })
        .unwrap();
    assert_eq!(deleted.fields()["ActionType"], "FileDeleted");

    let net = Net {
        protocol: Protocol::Tcp,
        local: "[::ffff:127.0.0.1]:40000".parse::<SocketAddr>().unwrap(),
        remote: "[::ffff:127.0.0.1]:8080".parse::<SocketAddr>().unwrap(),
    };
    for (result, action) in [
        (0, "ConnectionSuccess"),
        (-libc::EINPROGRESS, "ConnectionAttempt"),
        (-libc::ECONNREFUSED, "ConnectionFailed"),
    ] {
        let row = m
            .event(&SensorEvent::Connect {
                task: t.clone(),
                net: net.clone(),
                result,
            })
            .unwrap();
        check_schema(&row);
        assert_eq!(row.fields()["ActionType"], action);
        assert_eq!(row.fields()["RemoteIP"], "127.0.0.1");
        assert_eq!(row.fields()["RemoteIPType"], "Loopback");
        assert_eq!(row.fields()["RemotePort"], 8080);
    }
    let listen = m
        .event(&SensorEvent::Listen {
            task: t.clone(),
            net: Net {
                protocol: Protocol::Udp,
                local: "0.0.0.0:53".parse().unwrap(),
                remote: "0.0.0.0:0".parse().unwrap(),
            },
        })
        .unwrap();
    check_schema(&listen);
    assert_eq!(listen.fields()["ActionType"], "ListeningConnectionCreated");
    assert!(listen.fields().get("RemoteIP").is_none());
    assert_eq!(listen.fields()["LocalPort"], 53);
    assert_eq!(listen.fields()["Protocol"], "Udp");

    for event in [
        SensorEvent::ModuleLoad {
            task: t.clone(),
            name: "nf_tables".into(),
        },
        SensorEvent::Ptrace {
            task: t.clone(),
            request: 16,
            target_pid: me,
        },
        SensorEvent::SetId {
            task: t.clone(),
            call: "setuid",
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
        },
    ] {
        let row = m.event(&event).unwrap();
        check_schema(&row);
        assert_eq!(row.table, "DeviceEvents");
    }
    // Forks and exits keep the process table, without rows.
    assert!(m.event(&SensorEvent::Fork { task: t.clone() }).is_none());
    assert!(
        m.event(&SensorEvent::Exit {
            task: t,
            exit_code: 0,
            signal: 0
        })
        .is_none()
    );
}

#[test]
fn initiating_columns_are_rendered_per_process_and_table() {
    // A pid above the kernel's limit (2^22): no real process can answer for it.
    const CHILD: u32 = 5_000_000;
    let mut m = mapper();
    let me = std::process::id();
    let parent = task(me, std::os::unix::process::parent_id(), &mut m.procs);
    let delete = |m: &mut Mapper, t: &Task| {
        m.event(&SensorEvent::FileDelete {
            task: t.clone(),
            path: "/tmp/gone.txt".into(),
            dir: false,
        })
        .unwrap()
        .fields()
    };
    let first = delete(&mut m, &parent);
    assert_eq!(first["InitiatingProcessId"], me);
    // The second row takes the columns rendered for the first: the same row.
    assert_eq!(delete(&mut m, &parent), first);

    // A forked child is a copy of its parent but for its own identity and columns.
    let child = Task {
        pid: CHILD,
        tgid: CHILD,
        ppid: me,
        sessionid: 7,
        start_ns: parent.start_ns + 1_000_000_000,
        parent_start_ns: parent.start_ns,
        ..parent.clone()
    };
    assert!(
        m.event(&SensorEvent::Fork {
            task: child.clone()
        })
        .is_none()
    );
    let by_child = delete(&mut m, &child);
    assert_eq!(by_child["InitiatingProcessId"], CHILD);
    assert_eq!(by_child["InitiatingProcessParentId"], me);
    assert_eq!(by_child["InitiatingProcessSessionId"], 7);
    assert_eq!(
        by_child["InitiatingProcessFileName"], first["InitiatingProcessFileName"],
        "the image is the parent's until the child execs"
    );
    assert_eq!(
        by_child["InitiatingProcessParentFileName"],
        first["InitiatingProcessFileName"]
    );
    assert!(
        by_child.get("InitiatingProcessLogonId").is_none(),
        "DeviceFileEvents has no InitiatingProcessLogonId"
    );
    // DeviceEvents has one: the same process's columns, and its logon id.
    let module = m
        .event(&SensorEvent::ModuleLoad {
            task: child.clone(),
            name: "nf_tables".into(),
        })
        .unwrap()
        .fields();
    assert_eq!(module["InitiatingProcessLogonId"], 7);
    for (column, value) in by_child.iter().filter(|(c, _)| c.starts_with("Initiating")) {
        assert_eq!(&module[column], value, "{column}");
    }
}

#[test]
fn dns_rows_name_the_process_that_connected_the_socket() {
    let mut m = mapper();
    let me = std::process::id();
    let t = task(me, std::os::unix::process::parent_id(), &mut m.procs);
    let client: SocketAddr = "10.0.0.5:40123".parse().unwrap();
    let server: SocketAddr = "10.0.0.53:53".parse().unwrap();
    let connect = SensorEvent::Connect {
        task: t.clone(),
        net: Net {
            protocol: Protocol::Udp,
            local: client,
            remote: server,
        },
        result: 0,
    };
    check_schema(&m.event(&connect).unwrap());
    let exchange = rampart_agent::dns::DnsExchange {
        time: Utc::now(),
        client,
        server,
        query: "example.com".into(),
        query_type: "A".into(),
        rcode: Some("NOERROR".into()),
        answers: vec!["A 192.0.2.1".into()],
        truncated: false,
        over_tcp: false,
    };
    let row = m.dns(&exchange);
    check_schema(&row);
    assert_eq!(row.table, "DeviceEvents");
    assert_eq!(row.fields()["ActionType"], "DnsQueryResponse");
    assert_eq!(row.fields()["RemoteIP"], "10.0.0.53");
    assert_eq!(row.fields()["InitiatingProcessId"], me);
    let extra: Value =
        serde_json::from_str(row.fields()["AdditionalFields"].as_str().unwrap()).unwrap();
    assert_eq!(extra["DnsQueryString"], "example.com");
    assert_eq!(extra["DnsAnswers"][0], "A 192.0.2.1");
    assert_eq!(extra["Protocol"], "Udp");
    // Over TCP: the process whose TCP connect the sensor saw.
    let tcp_client: SocketAddr = "10.0.0.5:40200".parse().unwrap();
    let tcp_connect = SensorEvent::Connect {
        task: t,
        net: Net {
            protocol: Protocol::Tcp,
            local: tcp_client,
            remote: server,
        },
        result: 0,
    };
    check_schema(&m.event(&tcp_connect).unwrap());
    let row = m.dns(&rampart_agent::dns::DnsExchange {
        client: tcp_client,
        over_tcp: true,
        ..exchange.clone()
    });
    assert_eq!(row.fields()["InitiatingProcessId"], me);
    let extra: Value =
        serde_json::from_str(row.fields()["AdditionalFields"].as_str().unwrap()).unwrap();
    assert_eq!(extra["Protocol"], "Tcp");
    // Another socket's query: no asker known.
    let other = m.dns(&rampart_agent::dns::DnsExchange {
        client: "10.0.0.5:40999".parse().unwrap(),
        ..exchange
    });
    assert!(other.fields().get("InitiatingProcessId").is_none());
}

#[test]
fn snapshot_rows_fit_their_tables() {
    let now = Utc::now();
    check_schema(&rampart_agent::snapshot::device_info(now, "ebpf", "Active"));
    for row in rampart_agent::snapshot::network_info(now) {
        check_schema(&row);
    }
    let os = rampart_agent::snapshot::os_release();
    let software = [rampart_agent::inventory::Software {
        vendor: "debian".into(),
        name: "dpkg".into(),
        version: "1.21.22".into(),
    }];
    for row in rampart_agent::snapshot::software_rows(&os, &software) {
        check_schema(&row);
    }
}

#[test]
fn logon_rows() {
    let mut m = mapper();
    for line in [
        "<37>Dec  2 00:25:50 su[4242]: FAILED SU (to root) nobody on none",
        "<38>Dec  2 00:00:01 sshd[5]: Accepted publickey for alice from 203.0.113.9 port 4022 ssh2",
    ] {
        let logon = parse_logon(&SyslogMessage::parse(line).unwrap()).unwrap();
        let row = m.logon(&logon);
        check_schema(&row);
        assert_eq!(row.table, "DeviceLogonEvents");
    }
    let logon = parse_logon(
        &SyslogMessage::parse("<37>Dec  2 00:25:50 su[4242]: FAILED SU (to root) nobody on none")
            .unwrap(),
    )
    .unwrap();
    let row = m.logon(&logon);
    assert_eq!(row.fields()["ActionType"], "LogonFailed");
    assert_eq!(row.fields()["AccountName"], "root");
    assert_eq!(row.fields()["InitiatingProcessAccountName"], "nobody");
    assert_eq!(row.fields()["InitiatingProcessFileName"], "su");
}
