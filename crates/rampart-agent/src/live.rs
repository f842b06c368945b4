//! Live response (`run_command`): read-only investigation commands the server may ask for,
//! taken from a fixed allow-list ([`COMMANDS`]), run without a shell, with a timeout and a cap
//! on their output. The runner is shared with the investigation package (journal excerpts).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// How long a live-response command may run before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of stdout and stderr together a live-response command may return, counted as they are
/// reported (JSON-escaped), so the report stays within the server's 1 MiB request limit. The
/// command is killed once its raw output goes beyond.
pub const MAX_OUTPUT: usize = 960 << 10;
/// `find` must be given `-maxdepth N` with N at most this.
pub const MAX_FIND_DEPTH: u32 = 10;
/// Where programs are looked up (never the agent's own PATH), and the PATH they get.
const PROGRAM_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// One allowed command and the arguments it may be given.
pub struct Allowed {
    pub name: &'static str,
    rules: Rules,
    /// Passed before the caller's arguments, always (no pagers).
    fixed: &'static [&'static str],
}

enum Rules {
    /// getopt-style options, then operands.
    Options {
        /// Letters allowed as short options, alone or combined (`-tulpn`); none takes a value.
        letters: &'static str,
        /// Options allowed as whole arguments (long ones, single-dash words such as `-br`).
        words: &'static [&'static str],
        /// Options taking the next argument as their value.
        valued: &'static [&'static str],
        /// What the operands may be: any one of these forms.
        forms: &'static [Form],
    },
    /// `find`: absolute starting points, an expression of [`FIND_FLAGS`] and [`FIND_TESTS`],
    /// and `-maxdepth` at most [`MAX_FIND_DEPTH`].
    Find,
}

/// Operands: leading words each from a set (a subcommand and its verb), then the rest.
struct Form {
    sub: &'static [&'static [&'static str]],
    rest: Operands,
}

#[derive(Clone, Copy)]
enum Operands {
    None,
    /// Words not starting with `-` or `+` (filters, user names, BSD-style `ps aux`).
    Words,
    /// Absolute paths without `..`, at least `min` of them.
    Paths {
        min: usize,
    },
}

const NO_OPERANDS: &[Form] = &[Form {
    sub: &[],
    rest: Operands::None,
}];
const WORDS: &[Form] = &[Form {
    sub: &[],
    rest: Operands::Words,
}];
const PATHS: &[Form] = &[Form {
    sub: &[],
    rest: Operands::Paths { min: 1 },
}];
const OPTIONAL_PATHS: &[Form] = &[Form {
    sub: &[],
    rest: Operands::Paths { min: 0 },
}];
#[rustfmt::skip]
const IP_OBJECTS: &[&str] = &["address", "addr", "a", "route", "r", "link", "l", "neighbour", "neigh", "n", "rule"];
const LAST: Rules = Rules::Options {
    letters: "adFiwx",
    words: &[],
    valued: &["-n", "-s", "--since", "-t", "--until"],
    forms: WORDS,
};
const HEAD_TAIL: Rules = Rules::Options {
    letters: "qv",
    words: &[],
    valued: &["-n", "-c"],
    forms: PATHS,
};
const READ_FILE: Rules = Rules::Options {
    letters: "",
    words: &[],
    valued: &[],
    forms: PATHS,
};

/// The commands `run_command` accepts — all read-only — and their argument rules.
///
/// Arguments go to the program as they are: there is no shell, so no pipes, globbing,
/// redirection or substitution. Every option must be listed for its command; combined short
/// options (`-tulpn`) are split into letters, each of which must be allowed; an option taking a
/// value takes it as the next argument (`-n 50`, not `-n50` or `--lines=50`) and the value may
/// not start with `-`; `--` is refused. Operands are paths (absolute, no `..`) or plain words
/// (not starting with `-` or `+`), as listed. Programs are looked up in /usr/sbin, /usr/bin,
/// /sbin and /bin, and run with an empty environment but `PATH` and `LC_ALL=C`, stdin empty.
///
/// - `ps` `[-AaeFfHjlLTwx] [--forest --no-headers] [-o -p -u -U -C -g --sort VALUE] [WORD…]` (BSD `aux`)
/// - `ss` `[-aeHilmnoOprstuwx46] [--tcp --udp …] [-f -A VALUE] [FILTER…]` (no `-K` kill, `-D` dump, `-E` follow)
/// - `ip` `[-4 -6 -s -d -j -p -o -br …] OBJECT [show|list [FILTER…]]`, OBJECT one of address,
///   route, link, neighbour, rule (and their short forms); also `ip route get ADDRESS…`
/// - `netstat` `[-aegilnoprstuwWx46]` (no `-c` continuous)
/// - `lsof` `[-nPlUtRwb] [-p -u -c -g -d -i VALUE] [WORD…]`
/// - `who` `[-abdHlmpqrstTu]`, `w` `[-hsfiuo] [USER]`, `uptime` `[-ps]`, `lsmod`
/// - `last`, `lastb` `[-adFiwx] [-n -s -t --since --until VALUE] [USER|TTY…]`
/// - `df` `[-ahHiklPT] [--total] [PATH…]`; `mount` `[-l] [-t TYPE]` (lists only: no operands);
///   `findmnt` `[-lnrJDa] [-t -o VALUE]`
/// - `systemctl --no-pager [-al --all --full --failed …] [-t --type --state -p -n VALUE]
///   [status|list-units|list-unit-files|list-timers|list-sockets|list-dependencies|show|cat|is-active|is-enabled|is-failed [UNIT…]]`
/// - `journalctl --no-pager [-akrxqm -b] [-n -u -t -p -o -S -U -g VALUE …] [MATCH…]` (no
///   follow, vacuum, rotate, flush)
/// - `cat` `[-AbeEnstTuv]`, `sha256sum`, `sha1sum`, `md5sum` `PATH…`; `stat` `[-L] [-c FORMAT] PATH…`;
///   `file` `[-bLizk] PATH…`; `head`, `tail` `[-qv] [-n -c VALUE] PATH…` (no follow);
///   `ls` `[-1aAcdFhilLnrStuZ] PATH…` (no `-R`: use find); `readlink` `[-femnv] PATH…`
/// - `find` `[-H|-L|-P] PATH… -maxdepth N EXPRESSION` with N ≤ [`MAX_FIND_DEPTH`] and only the
///   tests and print actions of [`FIND_FLAGS`] / [`FIND_TESTS`] (never `-exec`, `-ok`,
///   `-delete`, `-fprint…`, `-fls`)
#[rustfmt::skip]
pub const COMMANDS: &[Allowed] = &[
    Allowed {
        name: "ps",
        rules: Rules::Options {
            letters: "AaeFfHjlLTwx",
            words: &["--forest", "--no-headers"],
            valued: &["-o", "-p", "-u", "-U", "-C", "-g", "--sort"],
            forms: WORDS,
        },
        fixed: &[],
    },
    Allowed {
        name: "ss",
        rules: Rules::Options {
            letters: "aeHilmnoOprstuwx46",
            words: &[
                "--tcp", "--udp", "--unix", "--raw", "--listening", "--all", "--numeric", "--processes",
                "--extended", "--info", "--memory", "--summary", "--options", "--no-header",
            ],
            valued: &["-f", "-A"],
            forms: WORDS,
        },
        fixed: &[],
    },
    Allowed {
        name: "ip",
        rules: Rules::Options {
            letters: "",
            words: &[
                "-4", "-6", "-s", "-d", "-j", "-p", "-o", "-br", "-brief", "-json", "-pretty", "-details",
                "-stats", "-statistics", "-oneline",
            ],
            valued: &[],
            forms: &[
                Form { sub: &[IP_OBJECTS], rest: Operands::None },
                Form { sub: &[IP_OBJECTS, &["show", "list"]], rest: Operands::Words },
                Form { sub: &[&["route", "r"], &["get"]], rest: Operands::Words },
            ],
        },
        fixed: &[],
    },
    Allowed {
        name: "netstat",
        rules: Rules::Options { letters: "aegilnoprstuwWx46", words: &[], valued: &[], forms: NO_OPERANDS },
        fixed: &[],
    },
    Allowed {
        name: "lsof",
        rules: Rules::Options {
            letters: "nPlUtRwb",
            words: &[],
            valued: &["-p", "-u", "-c", "-g", "-d", "-i"],
            forms: WORDS,
        },
        fixed: &[],
    },
    Allowed {
        name: "who",
        rules: Rules::Options { letters: "abdHlmpqrstTu", words: &[], valued: &[], forms: NO_OPERANDS },
        fixed: &[],
    },
    Allowed {
        name: "w",
        rules: Rules::Options { letters: "hsfiuo", words: &[], valued: &[], forms: WORDS },
        fixed: &[],
    },
    Allowed { name: "last", rules: LAST, fixed: &[] },
    Allowed { name: "lastb", rules: LAST, fixed: &[] },
    Allowed {
        name: "uptime",
        rules: Rules::Options { letters: "ps", words: &[], valued: &[], forms: NO_OPERANDS },
        fixed: &[],
    },
    Allowed {
        name: "df",
        rules: Rules::Options { letters: "ahHiklPT", words: &["--total"], valued: &[], forms: OPTIONAL_PATHS },
        fixed: &[],
    },
    Allowed {
        name: "mount",
        rules: Rules::Options { letters: "l", words: &[], valued: &["-t"], forms: NO_OPERANDS },
        fixed: &[],
    },
    Allowed {
        name: "findmnt",
        rules: Rules::Options { letters: "lnrJDa", words: &[], valued: &["-t", "-o"], forms: NO_OPERANDS },
        fixed: &[],
    },
    Allowed {
        name: "lsmod",
        rules: Rules::Options { letters: "", words: &[], valued: &[], forms: NO_OPERANDS },
        fixed: &[],
    },
    Allowed {
        name: "systemctl",
        rules: Rules::Options {
            letters: "al",
            words: &["--all", "--full", "--failed", "--no-legend", "--plain"],
            valued: &["-t", "--type", "--state", "-p", "--property", "-n", "--lines"],
            forms: &[
                Form { sub: &[], rest: Operands::None },
                Form {
                    sub: &[&[
                        "status", "list-units", "list-unit-files", "list-timers", "list-sockets",
                        "list-dependencies", "show", "cat", "is-active", "is-enabled", "is-failed",
                    ]],
                    rest: Operands::Words,
                },
            ],
        },
        fixed: &["--no-pager"],
    },
    Allowed {
        name: "journalctl",
        rules: Rules::Options {
            letters: "akrxqm",
            words: &["-b", "--utc", "--no-hostname"],
            valued: &[
                "-n", "--lines", "-u", "--unit", "-t", "--identifier", "-p", "--priority", "-o", "--output",
                "-S", "--since", "-U", "--until", "-g", "--grep", "--facility",
            ],
            forms: WORDS,
        },
        fixed: &["--no-pager"],
    },
    Allowed {
        name: "cat",
        rules: Rules::Options { letters: "AbeEnstTuv", words: &[], valued: &[], forms: PATHS },
        fixed: &[],
    },
    Allowed { name: "sha256sum", rules: READ_FILE, fixed: &[] },
    Allowed { name: "sha1sum", rules: READ_FILE, fixed: &[] },
    Allowed { name: "md5sum", rules: READ_FILE, fixed: &[] },
    Allowed {
        name: "stat",
        rules: Rules::Options { letters: "L", words: &[], valued: &["-c"], forms: PATHS },
        fixed: &[],
    },
    Allowed {
        name: "file",
        rules: Rules::Options { letters: "bLizk", words: &[], valued: &[], forms: PATHS },
        fixed: &[],
    },
    Allowed { name: "head", rules: HEAD_TAIL, fixed: &[] },
    Allowed { name: "tail", rules: HEAD_TAIL, fixed: &[] },
    Allowed {
        name: "ls",
        rules: Rules::Options { letters: "1aAcdFhilLnrStuZ", words: &["--full-time"], valued: &[], forms: PATHS },
        fixed: &[],
    },
    Allowed {
        name: "readlink",
        rules: Rules::Options { letters: "femnv", words: &[], valued: &[], forms: PATHS },
        fixed: &[],
    },
    Allowed { name: "find", rules: Rules::Find, fixed: &[] },
];

/// find's expression words that take no value.
#[rustfmt::skip]
pub const FIND_FLAGS: &[&str] = &[
    "-print", "-print0", "-ls", "-xdev", "-mount", "-depth", "-empty", "-executable", "-readable", "-writable",
    "-nouser", "-nogroup", "-true", "-false", "-not", "!", "(", ")", "-a", "-and", "-o", "-or",
];
/// find's tests (and `-printf`) that take one value.
#[rustfmt::skip]
pub const FIND_TESTS: &[&str] = &[
    "-maxdepth", "-mindepth", "-name", "-iname", "-path", "-ipath", "-wholename", "-iwholename", "-regex",
    "-iregex", "-regextype", "-lname", "-ilname", "-type", "-xtype", "-size", "-perm", "-user", "-group", "-uid",
    "-gid", "-mtime", "-mmin", "-atime", "-amin", "-ctime", "-cmin", "-newer", "-links", "-inum", "-samefile",
    "-fstype", "-printf",
];

/// `{"command": NAME, "args": [...]}`: runs an allowed command; answers
/// `{"exit_code", "stdout", "stderr", "truncated", "timed_out", "duration_ms"}`.
pub fn run_command(params: &Value) -> Result<Value> {
    let name = params["command"]
        .as_str()
        .ok_or_else(|| anyhow!("params.command must name a command"))?;
    let args: Vec<String> = match &params["args"] {
        Value::Null => Vec::new(),
        Value::Array(args) => args
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("params.args must be a list of strings"))?,
        _ => bail!("params.args must be a list of strings"),
    };
    let (program, argv) = check(name, &args)?;
    let output = run(&program, &argv, TIMEOUT, MAX_OUTPUT)?;
    // stderr first: it is usually short and says what went wrong.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (stderr, used, stderr_cut) = fit_json(&stderr, MAX_OUTPUT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (stdout, _, stdout_cut) = fit_json(&stdout, MAX_OUTPUT - used);
    Ok(json!({
        "exit_code": output.exit_code,
        "stdout": stdout,
        "stderr": stderr,
        "truncated": output.truncated || stdout_cut || stderr_cut,
        "timed_out": output.timed_out,
        "duration_ms": u64::try_from(output.duration.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// The longest start of `text` whose JSON string form takes at most `budget` bytes (control
/// characters become `\u00XX`); with the bytes it takes and whether it was cut.
fn fit_json(text: &str, budget: usize) -> (&str, usize, bool) {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let n = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if used + n > budget {
            return (&text[..i], used, true);
        }
        used += n;
    }
    (text, used, false)
}

/// The program and its full argument list, if `name` is allowed with `args`.
fn check(name: &str, args: &[String]) -> Result<(PathBuf, Vec<String>)> {
    let Some(allowed) = COMMANDS.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        bail!(
            "'{name}' is not an allowed command: live response runs only these read-only commands, without a shell: {}",
            names.join(", ")
        );
    };
    match &allowed.rules {
        Rules::Options {
            letters,
            words,
            valued,
            forms,
        } => check_options(name, letters, words, valued, forms, args)?,
        Rules::Find => check_find(args)?,
    }
    let program = find_program(name)?;
    let argv = allowed
        .fixed
        .iter()
        .map(|a| a.to_string())
        .chain(args.iter().cloned())
        .collect();
    Ok((program, argv))
}

fn check_options(
    name: &str,
    letters: &str,
    words: &[&str],
    valued: &[&str],
    forms: &[Form],
    args: &[String],
) -> Result<()> {
    let mut operands = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if !arg.starts_with('-') || arg == "-" {
            operands.push(arg.as_str());
        } else if valued.contains(&arg.as_str()) {
            // A value starting with '-' could be read as an option by a program whose option
            // takes an optional value.
            match args.next() {
                Some(value) if !value.starts_with('-') => {}
                _ => {
                    bail!("{name}: {arg} needs a value (the next argument, not starting with '-')")
                }
            }
        } else if !words.contains(&arg.as_str())
            && (arg.starts_with("--") || !arg[1..].chars().all(|c| letters.contains(c)))
        {
            bail!(
                "{name}: option '{arg}' is not allowed; allowed: {}",
                option_usage(letters, words, valued)
            );
        }
    }
    if let [form] = forms
        && form.sub.is_empty()
    {
        // A single form without subcommands: its own complaint is the clearest.
        return check_operands(name, form.rest, &operands);
    }
    let fits = |form: &Form| {
        form.sub.len() <= operands.len()
            && form
                .sub
                .iter()
                .zip(&operands)
                .all(|(set, op)| set.contains(op))
            && check_operands(name, form.rest, &operands[form.sub.len()..]).is_ok()
    };
    if forms.iter().any(fits) {
        return Ok(());
    }
    let forms: Vec<String> = forms.iter().map(form_usage).collect();
    bail!(
        "{name}: '{}' is not allowed; allowed: {}",
        operands.join(" "),
        forms.join(" | ")
    )
}

fn check_operands(name: &str, rest: Operands, operands: &[&str]) -> Result<()> {
    match rest {
        Operands::None => {
            if let Some(op) = operands.first() {
                bail!("{name}: '{op}': no operands are allowed here");
            }
        }
        Operands::Words => {
            if let Some(op) = operands
                .iter()
                .find(|o| o.starts_with('+') || o.starts_with('-'))
            {
                bail!("{name}: '{op}' is not allowed");
            }
        }
        Operands::Paths { min } => {
            if operands.len() < min {
                bail!("{name} needs at least {min} absolute path(s)");
            }
            for op in operands {
                check_path(name, op)?;
            }
        }
    }
    Ok(())
}

/// Secrets no live-response command may read: password hashes, and the agent's own state
/// (its private key) — registered at start by [`protect`].
const SECRETS: [&str; 4] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
];
static PROTECTED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Keeps `dir` (the agent's state directory) out of reach of live response.
pub fn protect(dir: &Path) {
    let _ = PROTECTED.set(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()));
}

fn check_path(name: &str, path: &str) -> Result<()> {
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        bail!("{name}: '{path}' must be an absolute path without '..'");
    }
    // Through symlinks too: what the path names in the end.
    let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let secret = SECRETS.iter().any(|s| real == Path::new(s))
        || PROTECTED.get().is_some_and(|dir| real.starts_with(dir));
    if secret {
        bail!("{name}: '{path}' holds secrets live response does not read");
    }
    Ok(())
}

fn check_find(args: &[String]) -> Result<()> {
    let mut i = args
        .iter()
        .take_while(|a| ["-H", "-L", "-P"].contains(&a.as_str()))
        .count();
    let starts = i;
    while let Some(a) = args
        .get(i)
        .filter(|a| !a.starts_with('-') && !["(", ")", "!"].contains(&a.as_str()))
    {
        check_path("find", a)?;
        i += 1;
    }
    if i == starts {
        bail!("find needs at least one absolute starting path");
    }
    let mut depth = None;
    while let Some(arg) = args.get(i) {
        i += 1;
        if FIND_FLAGS.contains(&arg.as_str()) {
            continue;
        }
        if !FIND_TESTS.contains(&arg.as_str()) {
            bail!(
                "find: '{arg}' is not allowed: only tests and printing are (never -exec, -ok, -delete, -fprint); allowed: {} {}",
                FIND_FLAGS.join(" "),
                FIND_TESTS.join(" ")
            );
        }
        let value = args
            .get(i)
            .ok_or_else(|| anyhow!("find: {arg} needs a value"))?;
        i += 1;
        if arg == "-maxdepth" {
            depth = Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|&d| d <= MAX_FIND_DEPTH)
                    .ok_or_else(|| {
                        anyhow!("find: -maxdepth must be a number from 0 to {MAX_FIND_DEPTH}")
                    })?,
            );
        }
    }
    if depth.is_none() {
        bail!("find needs -maxdepth N (N at most {MAX_FIND_DEPTH}) to bound its walk");
    }
    Ok(())
}

fn option_usage(letters: &str, words: &[&str], valued: &[&str]) -> String {
    let mut parts = Vec::new();
    if !letters.is_empty() {
        parts.push(format!("-[{letters}]"));
    }
    parts.extend(words.iter().map(|w| w.to_string()));
    parts.extend(valued.iter().map(|v| format!("{v} VALUE")));
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

fn form_usage(form: &Form) -> String {
    let mut parts: Vec<String> = form.sub.iter().map(|set| set.join("|")).collect();
    match form.rest {
        Operands::None => {}
        Operands::Words => parts.push("[WORD...]".into()),
        Operands::Paths { min: 0 } => parts.push("[/PATH...]".into()),
        Operands::Paths { .. } => parts.push("/PATH...".into()),
    }
    if parts.is_empty() {
        "(no operands)".into()
    } else {
        parts.join(" ")
    }
}

pub(crate) fn find_program(name: &str) -> Result<PathBuf> {
    PROGRAM_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "{name} is not installed here (looked in {})",
                PROGRAM_DIRS.join(", ")
            )
        })
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    /// None when it was killed by a signal (timeout, output cap).
    pub exit_code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The output went beyond the cap: it was cut there and the command killed.
    pub truncated: bool,
    pub timed_out: bool,
    pub duration: Duration,
}

/// Runs `program` with `args` (no shell, empty stdin, a minimal environment) in a process
/// group of its own, killed — with anything it started — after `timeout` or once stdout and
/// stderr together exceed `max_output` bytes (what fits is kept).
pub(crate) fn run(
    program: &Path,
    args: &[String],
    timeout: Duration,
    max_output: usize,
) -> Result<Output> {
    let started = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", PROGRAM_DIRS.join(":"))
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    let deadline = started + timeout;
    let (stdout, stderr, truncated, mut timed_out) =
        match read_until_done(&mut child, deadline, max_output) {
            Ok(read) => read,
            Err(e) => {
                kill_group(&child);
                let _ = child.wait();
                return Err(e);
            }
        };
    // Its output is closed, but the command may still be running.
    let status = loop {
        if truncated || timed_out {
            kill_group(&child);
            break child.wait();
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => timed_out = true,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(e),
        }
    }
    .with_context(|| format!("waiting for {}", program.display()))?;
    Ok(Output {
        exit_code: status.code(),
        stdout,
        stderr,
        truncated,
        timed_out,
        duration: started.elapsed(),
    })
}

/// stdout, stderr, truncated, timed out.
type Captured = (Vec<u8>, Vec<u8>, bool, bool);

/// Reads both pipes without blocking past `deadline` (a grandchild may hold them open) and
/// without keeping more than `max_output` bytes.
fn read_until_done(child: &mut Child, deadline: Instant, max_output: usize) -> Result<Captured> {
    let mut pipes: [(Option<File>, Vec<u8>); 2] = [
        (
            child.stdout.take().map(|p| File::from(OwnedFd::from(p))),
            Vec::new(),
        ),
        (
            child.stderr.take().map(|p| File::from(OwnedFd::from(p))),
            Vec::new(),
        ),
    ];
    for pipe in pipes.iter().filter_map(|(p, _)| p.as_ref()) {
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    let mut kept = 0usize;
    let mut chunk = vec![0u8; 64 << 10];
    while pipes.iter().any(|(p, _)| p.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let [(_, out), (_, err)] = pipes;
            return Ok((out, err, false, true));
        }
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|(p, _)| libc::pollfd {
                fd: p.as_ref().map_or(-1, AsRawFd::as_raw_fd),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait_ms = left.as_millis().min(1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of pollfd; negative fds are ignored by poll.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }
        for (i, (pipe, buf)) in pipes.iter_mut().enumerate() {
            let Some(reader) = pipe.as_mut() else {
                continue;
            };
            if fds[i].revents == 0 {
                continue;
            }
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => {
                        *pipe = None;
                        break;
                    }
                    Ok(n) => {
                        let keep = n.min(max_output - kept);
                        buf.extend_from_slice(&chunk[..keep]);
                        kept += keep;
                        if keep < n {
                            let [(_, out), (_, err)] = pipes;
                            return Ok((out, err, true, false));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("reading the command's output"),
                }
            }
        }
    }
    let [(_, out), (_, err)] = pipes;
    Ok((out, err, false, false))
}

fn kill_group(child: &Child) {
    // SAFETY: kill has no memory preconditions; the group is the child's own (process_group(0)).
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_kills_the_command_and_what_it_started() {
        let sh = find_program("sh").unwrap();
        // The shell's background sleep holds the pipes open: the timeout must not wait for it.
        let args = vec![
            "-c".to_string(),
            "echo started; sleep 30 & sleep 30".to_string(),
        ];
        let out = run(&sh, &args, Duration::from_millis(300), MAX_OUTPUT).unwrap();
        assert!(out.timed_out);
        assert!(!out.truncated);
        assert_eq!(out.exit_code, None, "killed by a signal");
        assert_eq!(
            out.stdout, b"started\n",
            "output before the timeout is kept"
        );
        assert!(out.duration < Duration::from_secs(5), "{:?}", out.duration);
        // Nor may a command that closed its output first.
        let args = vec!["-c".to_string(), "exec >&- 2>&-; sleep 30".to_string()];
        let out = run(&sh, &args, Duration::from_millis(300), MAX_OUTPUT).unwrap();
        assert!(out.timed_out);
        assert!(out.duration < Duration::from_secs(5), "{:?}", out.duration);
    }

    #[test]
    fn output_beyond_the_cap_is_cut_and_the_command_killed() {
        let yes = find_program("yes").unwrap();
        let out = run(&yes, &[], Duration::from_secs(20), 10_000).unwrap();
        assert!(out.truncated);
        assert!(!out.timed_out, "killed at the cap, not at the timeout");
        assert_eq!(out.stdout.len(), 10_000);
        assert!(out.stdout.starts_with(b"y\ny\n"));
        // Exactly the cap is not a truncation.
        let sh = find_program("sh").unwrap();
        let exact = run(
            &sh,
            &["-c".into(), "printf 12345; printf 678 >&2".into()],
            Duration::from_secs(20),
            8,
        )
        .unwrap();
        assert!(!exact.truncated);
        assert_eq!(
            (exact.stdout.as_slice(), exact.stderr.as_slice()),
            (&b"12345"[..], &b"678"[..])
        );
        assert_eq!(exact.exit_code, Some(0));
    }

    #[test]
    fn output_is_measured_as_json() {
        let text = "a\"\n\u{0}é";
        let (all, used, cut) = fit_json(text, 100);
        assert_eq!((all, cut), (text, false));
        assert_eq!(used, serde_json::to_string(text).unwrap().len() - 2);
        assert_eq!(fit_json(text, 11), ("a\"\n\u{0}", 1 + 2 + 2 + 6, true));
        assert_eq!(fit_json(text, 10), ("a\"\n", 5, true));
        assert_eq!(fit_json(text, 4), ("a\"", 3, true));
    }

    #[test]
    fn names_are_unique_and_no_short_option_is_both_a_letter_and_valued() {
        for c in COMMANDS {
            assert_eq!(
                COMMANDS.iter().filter(|o| o.name == c.name).count(),
                1,
                "{} twice",
                c.name
            );
            if let Rules::Options {
                letters, valued, ..
            } = &c.rules
            {
                // A letter that took a value would swallow the rest of a combined option.
                for v in valued.iter().filter(|v| v.len() == 2) {
                    assert!(
                        !letters.contains(&v[1..]),
                        "{}: {v} is both a letter and valued",
                        c.name
                    );
                }
            }
        }
    }
}
