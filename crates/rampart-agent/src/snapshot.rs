//! Periodic snapshots of the device: DeviceInfo (OS, agent, sensor health) and
//! DeviceNetworkInfo (one row per network adapter).

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::mapping::{Row, timestamp};

/// (PRETTY_NAME, ID) of /etc/os-release, e.g. ("Debian GNU/Linux 12 (bookworm)", "debian").
pub fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("PRETTY_NAME"), field("ID"))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The DeviceInfo row. `health` is the sensor's state ("Active", or why not).
pub fn device_info(time: DateTime<Utc>, sensor_mode: &str, health: &str) -> Row {
    let (pretty, id) = os_release();
    let mut fields = serde_json::Map::new();
    fields.insert("Timestamp".into(), timestamp(time).into());
    fields.insert("ClientVersion".into(), env!("CARGO_PKG_VERSION").into());
    fields.insert("OSPlatform".into(), "Linux".into());
    fields.insert(
        "OSArchitecture".into(),
        if cfg!(target_pointer_width = "64") {
            "64-bit"
        } else {
            "32-bit"
        }
        .into(),
    );
    fields.insert("OSDistribution".into(), id.into());
    fields.insert("OSVersionInfo".into(), pretty.clone().into());
    fields.insert("OSVersion".into(), pretty.into());
    fields.insert("OnboardingStatus".into(), "Onboarded".into());
    fields.insert("SensorHealthState".into(), health.into());
    fields.insert(
        "AdditionalFields".into(),
        json!({"KernelVersion": kernel_release(), "SensorMode": sensor_mode, "Architecture": std::env::consts::ARCH})
            .to_string()
            .into(),
    );
    Row::from_map("DeviceInfo", &fields)
}

/// One DeviceNetworkInfo row per adapter.
pub fn network_info(time: DateTime<Utc>) -> Vec<Row> {
    let dns: Vec<Value> = std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|a| Value::String(a.trim().to_string()))
        .collect();
    let gateways = default_gateways();
    let mut rows = Vec::new();
    for (name, addrs) in addresses() {
        let sys = format!("/sys/class/net/{name}");
        let read = |f: &str| {
            std::fs::read_to_string(format!("{sys}/{f}"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let mut fields = serde_json::Map::new();
        fields.insert("Timestamp".into(), timestamp(time).into());
        fields.insert("NetworkAdapterName".into(), name.clone().into());
        let mac = read("address").to_uppercase().replace(':', "-");
        if !mac.is_empty() {
            fields.insert("MacAddress".into(), mac.into());
        }
        let kind = match read("type").as_str() {
            "772" => "SoftwareLoopback",
            "1" if std::path::Path::new(&format!("{sys}/wireless")).exists() => "Wireless80211",
            "1" => "Ethernet",
            "65534" => "Tunnel",
            _ => "Other",
        };
        fields.insert("NetworkAdapterType".into(), kind.into());
        let status = match read("operstate").as_str() {
            "up" | "unknown" => "Up",
            _ => "Down",
        };
        fields.insert("NetworkAdapterStatus".into(), status.into());
        let ips: Vec<Value> = addrs
            .iter()
            .map(|(ip, prefix)| json!({"IPAddress": ip.to_string(), "SubnetPrefix": prefix, "AddressType": if ip.is_loopback() { "Loopback" } else { "Unicast" }}))
            .collect();
        fields.insert("IPAddresses".into(), Value::Array(ips).to_string().into());
        fields.insert(
            "DnsAddresses".into(),
            Value::Array(dns.clone()).to_string().into(),
        );
        if let Some(gw) = gateways.get(&name) {
            fields.insert("DefaultGateways".into(), json!([gw]).to_string().into());
        }
        rows.push(Row::from_map("DeviceNetworkInfo", &fields));
    }
    rows
}

/// One DeviceTvmSoftwareInventory row per installed package ([`crate::inventory::installed`]).
/// `os`: [`os_release`]'s (PRETTY_NAME, ID). The table has no Timestamp column.
pub fn software_inventory(os: &(String, String)) -> Vec<Row> {
    software_rows(os, &crate::inventory::installed_on(&os.1))
}

/// The DeviceTvmSoftwareInventory rows of `software`; the OS columns as in DeviceInfo.
pub fn software_rows(os: &(String, String), software: &[crate::inventory::Software]) -> Vec<Row> {
    let architecture = if cfg!(target_pointer_width = "64") {
        "64-bit"
    } else {
        "32-bit"
    };
    software
        .iter()
        .map(|s| {
            let mut fields = serde_json::Map::new();
            fields.insert("OSPlatform".into(), "Linux".into());
            if !os.0.is_empty() {
                fields.insert("OSVersion".into(), os.0.clone().into());
            }
            fields.insert("OSArchitecture".into(), architecture.into());
            if !s.vendor.is_empty() {
                fields.insert("SoftwareVendor".into(), s.vendor.clone().into());
            }
            fields.insert("SoftwareName".into(), s.name.clone().into());
            fields.insert("SoftwareVersion".into(), s.version.clone().into());
            fields.insert(
                "ProductCodeCpe".into(),
                crate::inventory::cpe(&s.vendor, &s.name, &s.version).into(),
            );
            Row::from_map("DeviceTvmSoftwareInventory", &fields)
        })
        .collect()
}

/// Interface → its addresses with prefix lengths (getifaddrs).
fn addresses() -> BTreeMap<String, Vec<(IpAddr, u32)>> {
    let mut out: BTreeMap<String, Vec<(IpAddr, u32)>> = BTreeMap::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; we only read it.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name from the kernel.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let entry = out.entry(name).or_default();
        if let (Some(ip), Some(mask)) = (sockaddr_ip(ifa.ifa_addr), sockaddr_ip(ifa.ifa_netmask)) {
            let prefix = match mask {
                IpAddr::V4(m) => u32::from(m).count_ones(),
                IpAddr::V6(m) => u128::from(m).count_ones(),
            };
            entry.push((ip, prefix));
        }
    }
    // SAFETY: the list getifaddrs allocated.
    unsafe { libc::freeifaddrs(head) };
    out
}

fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: the family says which sockaddr the pointer is.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// Interface → IPv4 default gateway, from /proc/net/route.
fn default_gateways() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) != Some(&"00000000") {
                return None;
            }
            let gw = u32::from_str_radix(f.get(2)?, 16).ok()?;
            Some((f[0].to_string(), IpAddr::from(gw.to_le_bytes()).to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_address() {
        let rows = network_info(Utc::now());
        let lo = rows
            .iter()
            .find(|r| r.fields()["NetworkAdapterName"] == "lo")
            .expect("lo");
        assert_eq!(lo.fields()["NetworkAdapterType"], "SoftwareLoopback");
        assert!(
            lo.fields()["IPAddresses"]
                .as_str()
                .unwrap()
                .contains("127.0.0.1")
        );
    }

    #[test]
    fn software_inventory_rows() {
        let os = os_release();
        let rows = software_inventory(&os);
        let dpkg = rows
            .iter()
            .find(|r| r.fields()["SoftwareName"] == "dpkg")
            .expect("dpkg is installed here");
        assert_eq!(dpkg.table, "DeviceTvmSoftwareInventory");
        assert_eq!(dpkg.fields()["OSPlatform"], "Linux");
        assert_eq!(dpkg.fields()["OSVersion"], os.0.as_str());
        let info = device_info(Utc::now(), "ebpf", "Active");
        assert_eq!(
            dpkg.fields()["OSArchitecture"],
            info.fields()["OSArchitecture"]
        );
        assert!(!dpkg.fields().contains_key("Timestamp"));
        let table = rampart_schema::Table::from_name(dpkg.table).expect("a hunting table");
        for (name, value) in &dpkg.fields() {
            assert!(table.column(name).is_some(), "no column {name}");
            assert!(value.is_string(), "{name}");
        }
        let fields = dpkg.fields();
        let cpe = fields["ProductCodeCpe"].as_str().unwrap();
        assert!(
            cpe.starts_with("cpe:2.3:a:") && cpe.contains(":dpkg:"),
            "{cpe}"
        );
        assert_eq!(cpe.split(':').count(), 13, "{cpe}");
    }

    #[test]
    fn device_info_names_the_os() {
        let row = device_info(Utc::now(), "ebpf", "Active");
        assert_eq!(row.fields()["OSPlatform"], "Linux");
        assert!(!row.fields()["OSVersion"].as_str().unwrap().is_empty());
    }
}
