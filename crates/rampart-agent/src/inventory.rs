//! The installed software: dpkg's database and, where `rpm` exists, rpm's.
//!
//! dpkg: /var/lib/dpkg/status, packages whose Status says `installed` (its third word, whatever
//! is wanted of the package: "install ok installed", "hold ok installed"), the Version field as
//! dpkg prints it (epoch included). rpm: `rpm -qa` with a query format, the version as
//! `[EPOCH:]VERSION-RELEASE` (no "0:" epoch, as rpm prints it), `gpg-pubkey` entries (keys, not
//! software) left out. Each (vendor, name, version) once (multi-arch packages are installed
//! once per architecture).
//!
//! The vendor (lower case, spaces as `_`, company suffixes like ", Inc." dropped):
//! - rpm: the package's Vendor tag; the distribution id when it has none.
//! - dpkg: the package's Origin field when it has one. Otherwise the status file does not say
//!   where a package came from, and its Maintainer names a person as often as an organisation,
//!   so: the organisation of the Maintainer's address (its e-mail domain or URL host, e.g.
//!   "google" for `<https://code.google.com/...>`, "docker" for `<support@docker.com>`) when
//!   the Maintainer's name starts with that organisation ("Google Cloud CLI Authors", "Docker";
//!   not "Bob Proulx <bob@proulx.com>") or it owns the package's Homepage; else the distribution id of /etc/os-release ("debian", "ubuntu"),
//!   always for addresses of the distribution (debian.org, ubuntu.com, ...) and of public mail
//!   services (gmail.com, ...).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Software {
    pub vendor: String,
    pub name: String,
    pub version: String,
}

pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// `rpm -qa` is given this long (a locked database must not hold the agent).
const RPM_TIMEOUT: Duration = Duration::from_secs(120);

/// The installed software of this machine, sorted.
pub fn installed() -> Vec<Software> {
    installed_on(&crate::snapshot::os_release().1)
}

/// [`installed`] with the distribution id (os-release's ID) given.
pub fn installed_on(distribution: &str) -> Vec<Software> {
    let mut out = dpkg(Path::new(DPKG_STATUS), distribution);
    if let Some(text) = run_rpm() {
        out.extend(parse_rpm(&text, distribution));
    }
    out.sort();
    out.dedup();
    out
}

/// The installed packages of a dpkg status file; none when it cannot be read.
pub fn dpkg(status: &Path, distribution: &str) -> Vec<Software> {
    match std::fs::read(status) {
        Ok(bytes) => parse_dpkg_status(&String::from_utf8_lossy(&bytes), distribution),
        Err(_) => Vec::new(),
    }
}

/// The fields of one status paragraph that matter here.
#[derive(Default)]
struct Stanza {
    package: String,
    status: String,
    version: String,
    maintainer: String,
    origin: String,
    homepage: String,
}

#[derive(Clone, Copy)]
enum Field {
    Package,
    Status,
    Version,
    Maintainer,
    Origin,
    Homepage,
}

impl Stanza {
    fn field(&mut self, field: Field) -> &mut String {
        match field {
            Field::Package => &mut self.package,
            Field::Status => &mut self.status,
            Field::Version => &mut self.version,
            Field::Maintainer => &mut self.maintainer,
            Field::Origin => &mut self.origin,
            Field::Homepage => &mut self.homepage,
        }
    }
}

/// Parses dpkg's status file (deb822: paragraphs separated by blank lines, `Field: value`,
/// continuation lines starting with a space or tab).
pub fn parse_dpkg_status(text: &str, distribution: &str) -> Vec<Software> {
    let mut out = Vec::new();
    let mut stanza = Stanza::default();
    // The field continuation lines belong to (None: one not kept).
    let mut current: Option<Field> = None;
    let mut finish = |s: &mut Stanza| {
        let s = std::mem::take(s);
        let installed = s.status.split_whitespace().nth(2) == Some("installed");
        if installed && !s.package.is_empty() && !s.version.is_empty() {
            out.push(Software {
                vendor: dpkg_vendor(&s.maintainer, &s.homepage, &s.origin, distribution),
                name: s.package,
                version: s.version,
            });
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            finish(&mut stanza);
            current = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(field) = current {
                let value = stanza.field(field);
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            current = None;
            continue;
        };
        current = match name.trim().to_ascii_lowercase().as_str() {
            "package" => Some(Field::Package),
            "status" => Some(Field::Status),
            "version" => Some(Field::Version),
            "maintainer" => Some(Field::Maintainer),
            "origin" => Some(Field::Origin),
            "homepage" => Some(Field::Homepage),
            _ => None,
        };
        if let Some(field) = current {
            *stanza.field(field) = value.trim().to_string();
        }
    }
    finish(&mut stanza);
    out
}

/// Parses `rpm -qa --queryformat '%{VENDOR}\t%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n'`.
pub fn parse_rpm(text: &str, distribution: &str) -> Vec<Software> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (vendor, name, version) = (f.next()?.trim(), f.next()?.trim(), f.next()?.trim());
            if name.is_empty() || version.is_empty() || name == "gpg-pubkey" {
                return None;
            }
            let version = version.strip_prefix("0:").unwrap_or(version);
            let vendor = match vendor {
                "" | "(none)" => distribution.to_string(),
                v => normalise_vendor(v),
            };
            Some(Software {
                vendor,
                name: name.to_string(),
                version: version.to_string(),
            })
        })
        .collect()
}

/// Runs `rpm -qa` when rpm is on the PATH (or in /usr/bin, /bin); its output.
fn run_rpm() -> Option<String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    let rpm = std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|dir| dir.join("rpm"))
        .find(|p| p.is_file())?;
    let mut child = Command::new(rpm)
        .args([
            "-qa",
            "--queryformat",
            "%{VENDOR}\\t%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n",
        ])
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).ok().map(|_| text)
    });
    let deadline = Instant::now() + RPM_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let text = reader.join().ok().flatten()?;
                return status.success().then_some(text);
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Addresses of distributions: their packages' vendor is the distribution.
const DISTRIBUTION_DOMAINS: &[&str] = &[
    "debian.org",
    "debian.net",
    "ubuntu.com",
    "canonical.com",
    "launchpad.net",
    "fedoraproject.org",
    "redhat.com",
    "opensuse.org",
    "suse.com",
    "suse.de",
    "archlinux.org",
    "alpinelinux.org",
    "kali.org",
    "linuxmint.com",
    "raspberrypi.com",
    "raspberrypi.org",
];

/// Public mail services: a person, not an organisation.
const MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "posteo.de",
    "protonmail.com",
    "proton.me",
    "mailbox.org",
    "fastmail.com",
    "riseup.net",
    "sourceforge.net",
    "github.com",
    "users.noreply.github.com",
];

/// The vendor of a dpkg package (see the module's documentation).
pub fn dpkg_vendor(maintainer: &str, homepage: &str, origin: &str, distribution: &str) -> String {
    if !origin.trim().is_empty() {
        return normalise_vendor(origin);
    }
    let (name, contact) = match maintainer.split_once('<') {
        Some((name, rest)) => (name, rest.split('>').next().unwrap_or("")),
        None => (maintainer, ""),
    };
    let host = match contact.split_once("://") {
        Some(_) => url_host(contact),
        None => contact.rsplit_once('@').map(|(_, d)| d).unwrap_or(""),
    };
    let Some(domain) = registrable_domain(host) else {
        return distribution.to_string();
    };
    let org = domain.split('.').next().unwrap_or("");
    if org.is_empty()
        || org == distribution
        || DISTRIBUTION_DOMAINS.contains(&domain.as_str())
        || MAIL_DOMAINS.contains(&domain.as_str())
    {
        return distribution.to_string();
    }
    // Organisations put their name first ("Google Cloud CLI Authors"), people their surname
    // last ("Bob Proulx <bob@proulx.com>").
    let named = name
        .split(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty())
        .is_some_and(|w| w.eq_ignore_ascii_case(org));
    let owns_homepage = registrable_domain(url_host(homepage)).as_deref() == Some(&domain);
    if named || owns_homepage {
        org.to_string()
    } else {
        distribution.to_string()
    }
}

/// The host of a URL ("" when none).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host.split(':').next().unwrap_or("")
}

/// The domain an organisation registers: the last two labels, three under `co.uk`-like
/// second levels. None for what is not a domain name.
fn registrable_domain(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2
        || labels.iter().any(|l| l.is_empty())
        || labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let n = labels.len();
    let second_level = [
        "co", "com", "org", "net", "ac", "gov", "edu", "or", "ne", "go",
    ];
    let keep = if n >= 3 && labels[n - 1].len() == 2 && second_level.contains(&labels[n - 2]) {
        3
    } else {
        2
    };
    Some(labels[n - keep..].join("."))
}

/// "Red Hat, Inc." → "red_hat"; "Fedora Project" → "fedora_project".
pub fn normalise_vendor(vendor: &str) -> String {
    let mut v = vendor.trim().to_lowercase();
    loop {
        let trimmed = v.trim_end_matches(['.', ',', ' ']);
        let stripped = [
            " inc",
            " llc",
            " ltd",
            " gmbh",
            " corporation",
            " corp",
            " co",
            " ag",
            " s.a",
            " b.v",
        ]
        .iter()
        .find_map(|s| trimmed.strip_suffix(s));
        match stripped {
            Some(rest) if !rest.trim().is_empty() => v = rest.to_string(),
            _ => {
                v = trimmed.to_string();
                break;
            }
        }
    }
    v.split_whitespace().collect::<Vec<_>>().join("_")
}

/// `cpe:2.3:a:VENDOR:PRODUCT:VERSION:*:*:*:*:*:*:*`, each part in the formatted-string binding
/// of CPE 2.3 (NISTIR 7695): lower case, whitespace as `_`, every printable character other
/// than letters, digits, `_`, `-` and `.` escaped with a backslash, other characters dropped,
/// an empty part as `*` (any).
pub fn cpe(vendor: &str, product: &str, version: &str) -> String {
    format!(
        "cpe:2.3:a:{}:{}:{}:*:*:*:*:*:*:*",
        cpe_part(vendor),
        cpe_part(product),
        cpe_part(version)
    )
}

fn cpe_part(value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return "*".into();
    }
    if value == "-" {
        return "\\-".into(); // A lone "-" means "not applicable".
    }
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' | '-' | '.' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            c if c.is_whitespace() => out.push('_'),
            '!'..='~' => {
                out.push('\\');
                out.push(c);
            }
            _ => {}
        }
    }
    if out.is_empty() { "*".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: dpkg
Essential: yes
Status: install ok installed
Priority: required
Maintainer: Dpkg Developers <debian-dpkg@lists.debian.org>
Architecture: amd64
Version: 1.21.22
Description: Debian package management system
 This package provides the low-level infrastructure for handling the
 installation and removal of Debian software packages.
 .
 For Debian package development tools, install dpkg-dev.
Homepage: https://wiki.debian.org/Teams/Dpkg

Package: removed-pkg
Status: deinstall ok config-files
Version: 2.0-1
Maintainer: Someone <someone@example.org>

Package: half
Status: install reinstreq half-installed
Version: 1:3.0
Maintainer: Someone <someone@example.org>

package: held
status: hold ok installed
version: 1:2.3~rc1-4+deb12u1
maintainer: A Person
 <person@gmail.com>

Package: google-cloud-cli
Status: install ok installed
Maintainer: Google Cloud CLI Authors <https://code.google.com/p/google-cloud-sdk/>
Version: 528.0.0-0
Homepage: https://cloud.google.com/sdk/

Package: whois
Status: install ok installed
Maintainer: Marco d'Itri <md@linux.it>
Version: 5.5.17
Homepage: https://github.com/rfc1036/whois

Package: docker-ce
Status: install ok installed
Maintainer: Docker <support@docker.com>
Version: 5:27.1.1-1~debian.12~bookworm

Package: thing
Status: install ok installed
Origin: Acme Corp.
Maintainer: Jane <jane@acme.example>
Version: 1.0
";

    #[test]
    fn dpkg_status_parses_installed_packages_only() {
        let got = parse_dpkg_status(STATUS, "debian");
        let names: Vec<(&str, &str, &str)> = got
            .iter()
            .map(|s| (s.vendor.as_str(), s.name.as_str(), s.version.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("debian", "dpkg", "1.21.22"),
                ("debian", "held", "1:2.3~rc1-4+deb12u1"),
                ("google", "google-cloud-cli", "528.0.0-0"),
                ("debian", "whois", "5.5.17"),
                ("docker", "docker-ce", "5:27.1.1-1~debian.12~bookworm"),
                ("acme", "thing", "1.0"),
            ]
        );
        // No final newline, CRLF-free text without a trailing blank line: the last stanza counts.
        let one = "Package: x\nStatus: install ok installed\nVersion: 1";
        assert_eq!(parse_dpkg_status(one, "debian").len(), 1);
    }

    #[test]
    fn missing_status_file_is_empty() {
        assert!(dpkg(Path::new("/nonexistent/dpkg/status"), "debian").is_empty());
    }

    #[test]
    fn rpm_output_parses() {
        let text = "Red Hat, Inc.\tbash\t0:5.1.8-9.el9\n\
                    (none)\tgpg-pubkey\t0:fd431d51-4ae0493b\n\
                    Fedora Project\topenssl\t1:3.2.2-3.fc40\n\
                    (none)\tlocal-tool\t0:1.0-1\n\
                    garbage line\n\n";
        let got = parse_rpm(text, "rhel");
        assert_eq!(
            got,
            [
                Software {
                    vendor: "red_hat".into(),
                    name: "bash".into(),
                    version: "5.1.8-9.el9".into()
                },
                Software {
                    vendor: "fedora_project".into(),
                    name: "openssl".into(),
                    version: "1:3.2.2-3.fc40".into()
                },
                Software {
                    vendor: "rhel".into(),
                    name: "local-tool".into(),
                    version: "1.0-1".into()
                },
            ]
        );
    }

    #[test]
    fn cpe_escapes() {
        assert_eq!(
            cpe("debian", "libstdc++6", "1:2.3~rc1-4+deb12u1"),
            "cpe:2.3:a:debian:libstdc\\+\\+6:1\\:2.3\\~rc1-4\\+deb12u1:*:*:*:*:*:*:*"
        );
        assert_eq!(
            cpe("", "Foo Bar", "-"),
            "cpe:2.3:a:*:foo_bar:\\-:*:*:*:*:*:*:*"
        );
        assert_eq!(
            cpe("a*b", "x?y", "é"),
            "cpe:2.3:a:a\\*b:x\\?y:*:*:*:*:*:*:*:*"
        );
    }

    #[test]
    fn vendor_rule() {
        assert_eq!(normalise_vendor("Red Hat, Inc."), "red_hat");
        assert_eq!(normalise_vendor("Microsoft Corporation"), "microsoft");
        assert_eq!(normalise_vendor("Inc."), "inc");
        assert_eq!(
            dpkg_vendor(
                "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
                "",
                "",
                "ubuntu"
            ),
            "ubuntu"
        );
        assert_eq!(
            dpkg_vendor(
                "Microsoft Corporation <vscode-linux@microsoft.com>",
                "",
                "",
                "debian"
            ),
            "microsoft"
        );
        assert_eq!(
            dpkg_vendor(
                "Someone <x@example.co.uk>",
                "https://www.example.co.uk/p",
                "",
                "debian"
            ),
            "example"
        );
        assert_eq!(
            dpkg_vendor("John Gmail <j@gmail.com>", "", "", "debian"),
            "debian"
        );
        assert_eq!(dpkg_vendor("nobody", "", "", "debian"), "debian");
    }

    /// This machine's dpkg database lists dpkg with the version dpkg-query prints.
    #[test]
    fn this_machine_lists_dpkg() {
        let Ok(out) = Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", "dpkg"])
            .output()
        else {
            eprintln!("skipped: no dpkg-query on this machine");
            return;
        };
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!version.is_empty());
        let all = installed();
        let dpkg = all
            .iter()
            .find(|s| s.name == "dpkg")
            .expect("dpkg is listed");
        assert_eq!(dpkg.version, version);
        assert!(!dpkg.vendor.is_empty());
        assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
    }
}
