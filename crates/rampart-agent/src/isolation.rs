//! Network isolation (`isolate` / `release`): an nftables table of the agent's own lets only
//! loopback and the Rampart server (its addresses, TCP to its port, and the answers) through,
//! in and out; everything else — new connections and established ones alike — is dropped.
//! Releasing deletes that table and nothing else, so the host's own rules are never touched.
//! The state is kept in the state directory and applied again when the agent starts.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The table (family and name) that holds the isolation rules.
pub const TABLE: &str = "inet rampart_isolation";
pub const STATE_FILE: &str = "isolation.json";

/// What isolation lets through, kept while the host is isolated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The server URL the addresses were resolved from.
    pub server: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub since: chrono::DateTime<chrono::Utc>,
    /// The resolvers of /etc/resolv.conf (port 53 only), kept reachable when the server is
    /// named by a hostname: the agent's HTTP client resolves it again on every new connection,
    /// and without an answer the agent could never hear the release.
    #[serde(default)]
    pub resolvers: Vec<IpAddr>,
}

/// Isolates the host, leaving `server` (`https://HOST:PORT`, resolved now: DNS is cut off
/// after) reachable. Isolating an isolated host applies the rules again (with the saved
/// addresses if the name cannot be resolved any more).
pub fn isolate(state_dir: &Path, server: &str) -> Result<Value> {
    let (host, port) = crate::transport::host_port(server)?;
    let saved = saved(state_dir)?.filter(|s| s.server == server);
    let addresses = match (resolve(&host, port), &saved) {
        (Ok(addresses), _) => addresses,
        (Err(_), Some(saved)) => saved.addresses.clone(),
        (Err(e), None) => return Err(e),
    };
    let resolvers = if host.parse::<IpAddr>().is_ok() {
        Vec::new()
    } else {
        resolvers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    };
    let isolation = Isolation {
        server: server.to_string(),
        addresses,
        port,
        since: saved.map_or_else(chrono::Utc::now, |s| s.since),
        resolvers,
    };
    nft(&ruleset(&isolation))?;
    crate::state::write_atomic(
        &state_file(state_dir),
        &serde_json::to_vec_pretty(&isolation)?,
        0o600,
    )
    .context(
        "the host is isolated, but the state could not be saved: a restart would not isolate again",
    )?;
    Ok(json!({
        "isolated": true,
        "since": isolation.since,
        "table": TABLE,
        "allowed": {
            "loopback": true,
            "server": {"addresses": isolation.addresses, "port": isolation.port, "protocol": "tcp"},
            "dns": isolation.resolvers,
        },
    }))
}

/// Ends isolation: deletes the agent's table (if there) and the saved state.
pub fn release(state_dir: &Path) -> Result<Value> {
    let was_isolated = table_exists()?;
    // Declaring the table first makes the delete succeed when it is not there.
    nft(&format!("table {TABLE}\ndelete table {TABLE}\n"))?;
    match std::fs::remove_file(state_file(state_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).context("the network is released, but the saved state remains: a restart would isolate again");
        }
    }
    Ok(json!({"isolated": false, "was_isolated": was_isolated}))
}

/// At agent start: isolates again if the saved state says so (the kernel forgets nftables
/// rules at reboot). Uses the saved addresses, since DNS may be unreachable while isolated.
/// Returns what was applied, `None` when the host is not isolated.
pub fn resume(state_dir: &Path) -> Result<Option<Isolation>> {
    let Some(isolation) = saved(state_dir)? else {
        return Ok(None);
    };
    nft(&ruleset(&isolation))?;
    Ok(Some(isolation))
}

/// The saved state: the host is isolated when there is one.
fn saved(state_dir: &Path) -> Result<Option<Isolation>> {
    let path = state_file(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

/// The server's addresses, each once.
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>> {
    let addresses: BTreeSet<IpAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the server {host}"))?
        .map(|a| a.ip())
        .collect();
    if addresses.is_empty() {
        bail!("the server {host} resolves to no address: isolating would cut the agent off");
    }
    Ok(addresses.into_iter().collect())
}

/// The nftables script: replaces the table atomically (`nft -f` is one transaction), so applying
/// it twice is the same as once.
///
/// Stateless address/port matches (not "established" alone) let the server through, so the
/// agent's existing connections to anyone else are cut too; incoming packets from the server
/// must belong to a connection the agent opened. ICMP errors about allowed connections (path
/// MTU) and IPv6 neighbour discovery (IPv6's ARP; ARP itself is not in the inet family) pass.
pub fn ruleset(isolation: &Isolation) -> String {
    let port = isolation.port;
    format!(
        "table {TABLE}
delete table {TABLE}
table {TABLE} {{
	set server4 {{ type ipv4_addr;{v4} }}
	set server6 {{ type ipv6_addr;{v6} }}
	set dns4 {{ type ipv4_addr;{dns4} }}
	set dns6 {{ type ipv6_addr;{dns6} }}
	chain input {{
		type filter hook input priority filter - 10; policy drop;
		iif \"lo\" accept
		ip saddr @server4 tcp sport {port} ct state established accept
		ip6 saddr @server6 tcp sport {port} ct state established accept
		ip saddr @dns4 meta l4proto {{ udp, tcp }} th sport 53 ct state established accept
		ip6 saddr @dns6 meta l4proto {{ udp, tcp }} th sport 53 ct state established accept
		meta l4proto {{ icmp, ipv6-icmp }} ct state related accept
		icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept
	}}
	chain output {{
		type filter hook output priority filter - 10; policy drop;
		oif \"lo\" accept
		ip daddr @server4 tcp dport {port} accept
		ip6 daddr @server6 tcp dport {port} accept
		ip daddr @dns4 meta l4proto {{ udp, tcp }} th dport 53 accept
		ip6 daddr @dns6 meta l4proto {{ udp, tcp }} th dport 53 accept
		icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
	}}
	chain forward {{
		type filter hook forward priority filter - 10; policy drop;
	}}
}}
",
        v4 = elements(&isolation.addresses, false),
        v6 = elements(&isolation.addresses, true),
        dns4 = elements(&isolation.resolvers, false),
        dns6 = elements(&isolation.resolvers, true),
    )
}

/// The ` elements = { … };` clause of an nftables set of the IPv6 (`v6`) or IPv4 ones among
/// `addresses`; empty when there are none (a set may not list no elements).
pub(crate) fn elements(addresses: &[IpAddr], v6: bool) -> String {
    let addrs: Vec<String> = addresses
        .iter()
        .filter(|a| a.is_ipv6() == v6)
        .map(IpAddr::to_string)
        .collect();
    if addrs.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }};", addrs.join(", "))
    }
}

/// The `nameserver` addresses of a resolv.conf.
fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse().ok())
        .collect()
}

fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

fn table_exists() -> Result<bool> {
    let out = Command::new(nft_program()?)
        .args(["list", "table"])
        .args(TABLE.split(' '))
        .stdin(Stdio::null())
        .output()
        .context("cannot run nft")?;
    Ok(out.status.success())
}

/// Runs an nftables script as one transaction.
pub(crate) fn nft(script: &str) -> Result<()> {
    let mut child = Command::new(nft_program()?)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft refused the rules ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn nft_program() -> Result<PathBuf> {
    crate::live::find_program("nft")
        .context("network isolation needs nft (Debian/Ubuntu package nftables)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_lists_each_family_in_its_set() {
        let rules = ruleset(&Isolation {
            server: "https://rampart.example:8443".into(),
            addresses: vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
            port: 8443,
            since: chrono::Utc::now(),
            resolvers: resolvers(
                "# resolv.conf\nnameserver 192.0.2.53\nsearch example\nnameserver bad\n",
            ),
        });
        assert!(
            rules.contains("set dns4 { type ipv4_addr; elements = { 192.0.2.53 }; }"),
            "{rules}"
        );
        assert!(rules.contains("set dns6 { type ipv6_addr; }"), "{rules}");
        assert!(
            rules.contains("set server4 { type ipv4_addr; elements = { 192.0.2.7 }; }"),
            "{rules}"
        );
        assert!(
            rules.contains("set server6 { type ipv6_addr; elements = { 2001:db8::7 }; }"),
            "{rules}"
        );
        assert!(rules.contains("ip daddr @server4 tcp dport 8443 accept"));
        assert_eq!(rules.matches("policy drop").count(), 3);
        // Replacing, not adding: the table is deleted before it is defined again.
        assert!(
            rules
                .starts_with("table inet rampart_isolation\ndelete table inet rampart_isolation\n")
        );
    }

    #[test]
    fn a_server_that_cannot_be_resolved_is_not_isolated_from() {
        let dir = tempfile::tempdir().unwrap();
        let err = isolate(dir.path(), "https://rampart.invalid:8443").unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot resolve the server rampart.invalid"),
            "{err:#}"
        );
        assert!(
            isolate(dir.path(), "http://10.0.0.1:80").is_err(),
            "only https:// servers"
        );
        assert!(!dir.path().join(STATE_FILE).exists());
    }
}
