//! Domain-controller events of the Security log → `Identity*` tables, as Defender for Identity
//! would report them. `Application` is `Active Directory`, `DestinationDeviceName` the DC
//! (`Computer`), `Account*` the actor, `AdditionalFields` the record's fields (a JSON object).
//!
//! | id | table | ActionType |
//! |---|---|---|
//! | 4768, 4771 | IdentityLogonEvents | `LogonSuccess` / `LogonFailed`; `Protocol` `Kerberos`, `LogonType` `Credentials validation` |
//! | 4769 | IdentityLogonEvents | same, `LogonType` `Resource access`, `TargetDeviceName` from `ServiceName` |
//! | 4776 | IdentityLogonEvents | same, `Protocol` `Ntlm`, `DeviceName` from `Workstation` |
//! | 4662 (replication rights) | IdentityDirectoryEvents | `Directory Services replication` |
//! | 4728, 4732, 4756 / 4729, 4733, 4757 | IdentityDirectoryEvents | `Group Membership changed` (`TO.GROUP` / `FROM.GROUP`, `TARGET_OBJECT.USER` added, as MDI) |
//! | 4723, 4724 | IdentityDirectoryEvents | `Account Password changed` |
//! | 4720, 4741 | IdentityDirectoryEvents | `Account created`, `Computer account created` |
//! | 4722, 4725, 4726, 4743 | IdentityDirectoryEvents | `Account enabled`, `Account disabled`, `Account deleted`, `Computer account deleted` |
//! | 4738, 4742, 4781 | IdentityDirectoryEvents | `Account changed`, `Computer account changed`, `Account name changed` |
//! | 4740, 4767 | IdentityDirectoryEvents | `Account locked`, `Account unlocked` |
//! | 4765, 4766 | IdentityDirectoryEvents | `SID History added`, `SID History add failed` |
//! | 5136, 5137, 5139, 5141 | IdentityDirectoryEvents | `Directory object modified` / `created` / `moved` / `deleted` |
//! | 4661 (SAM objects) | IdentityQueryEvents | `SAMR query` (`QueryType` = object type, `QueryTarget` = object) |
//!
//! The first three directory names are Defender for Identity's own; the others are ours, in
//! the same style. A 4662 without replication rights has no specific mapping.

use rampart_schema::{IdentityDirectoryEvents, IdentityLogonEvents, IdentityQueryEvents, Row};
use serde_json::Value;

use super::common::*;
use crate::winevent::{WinEvent, parse_int};

/// DS-Replication-Get-Changes, -Get-Changes-All, -Get-Changes-In-Filtered-Set (DCSync).
const REPLICATION_RIGHTS: [&str; 3] = [
    "1131f6aa-9c07-11d1-f79f-00c04fc2dcd2",
    "1131f6ad-9c07-11d1-f79f-00c04fc2dcd2",
    "89e95b76-444d-4c62-991a-0facbeda640c",
];

/// The row of a domain-controller record, or `None` without a specific mapping.
pub(crate) fn map(ev: &WinEvent) -> Option<Row> {
    let row = match ev.event_id {
        4768 | 4769 | 4771 | 4776 => logon(ev).into(),
        4662 => replication(ev)?.into(),
        4661 => samr_query(ev)?.into(),
        id => directory(ev, directory_action(id)?).into(),
    };
    Some(row)
}

/// Why a Kerberos request failed, from its result code (4768/4769/4771 `Status`).
fn kerberos_reason(code: i64) -> String {
    let reason = match code {
        0x6 => "UnknownUser",
        0x7 => "UnknownServer",
        0xC => "PolicyRestriction",
        0xE => "EncryptionTypeNotSupported",
        0x12 => "AccountRevoked",
        0x17 => "PasswordExpired",
        0x18 => "WrongPassword",
        0x19 => "PreAuthenticationRequired",
        0x1F => "IntegrityCheckFailed",
        0x20 => "TicketExpired",
        0x25 => "ClockOutOfSync",
        other => return format!("{other:#x}"),
    };
    reason.to_string()
}

fn logon(ev: &WinEvent) -> IdentityLogonEvents {
    let kerberos = ev.event_id != 4776;
    let status = trimmed(ev, "Status");
    let code = status.as_deref().and_then(parse_int);
    // 4771 is a failure by definition; the others carry a result code.
    let failed = ev.event_id == 4771 || code.is_some_and(|c| c != 0);
    let action = if failed {
        "LogonFailed"
    } else {
        "LogonSuccess"
    };
    let mut row: IdentityLogonEvents = identity(ev, action, &[]);
    row.protocol = Some(if kerberos { "Kerberos" } else { "Ntlm" }.to_string());
    row.logon_type = Some(
        if ev.event_id == 4769 {
            "Resource access"
        } else {
            "Credentials validation"
        }
        .to_string(),
    );
    if failed {
        row.failure_reason = if kerberos {
            code.map(kerberos_reason)
        } else {
            status.as_deref().and_then(ntstatus_reason)
        };
    }
    // 4769 writes `user@REALM`.
    let (domain, name) = trimmed(ev, "TargetUserName")
        .map(|u| split_account(&u))
        .unwrap_or_default();
    row.set_account(
        trimmed(ev, "TargetDomainName").or(domain),
        name,
        sid(ev, "TargetSid"),
    );
    row.ip_address = ip(ev, "IpAddress");
    row.port = port(ev, "IpPort");
    row.device_name = trimmed(ev, "Workstation").map(|w| w.to_lowercase());
    if ev.event_id == 4769 {
        row.target_device_name = trimmed(ev, "ServiceName")
            .and_then(|s| s.strip_suffix('$').map(str::to_lowercase))
            .filter(|s| !s.is_empty());
    }
    row
}

fn replication(ev: &WinEvent) -> Option<IdentityDirectoryEvents> {
    let properties = text(ev, "Properties")?.to_ascii_lowercase();
    if !REPLICATION_RIGHTS.iter().any(|g| properties.contains(g)) {
        return None;
    }
    let mut row: IdentityDirectoryEvents = identity(ev, "Directory Services replication", &[]);
    let (domain, name, sid) = subject(ev);
    row.set_account(domain, name, sid);
    Some(row)
}

fn samr_query(ev: &WinEvent) -> Option<IdentityQueryEvents> {
    if trimmed(ev, "ObjectServer")? != "Security Account Manager" {
        return None;
    }
    let mut row: IdentityQueryEvents = identity(ev, "SAMR query", &[]);
    let (domain, name, sid) = subject(ev);
    row.set_account(domain, name, sid);
    row.protocol = Some("Samr".to_string());
    row.query_type = trimmed(ev, "ObjectType");
    row.query_target = trimmed(ev, "ObjectName");
    Some(row)
}

fn directory_action(id: u32) -> Option<&'static str> {
    Some(match id {
        4720 => "Account created",
        4741 => "Computer account created",
        4722 => "Account enabled",
        4725 => "Account disabled",
        4726 => "Account deleted",
        4743 => "Computer account deleted",
        4723 | 4724 => "Account Password changed",
        4738 => "Account changed",
        4742 => "Computer account changed",
        4781 => "Account name changed",
        4740 => "Account locked",
        4767 => "Account unlocked",
        4728 | 4729 | 4732 | 4733 | 4756 | 4757 => "Group Membership changed",
        4765 => "SID History added",
        4766 => "SID History add failed",
        5136 => "Directory object modified",
        5137 => "Directory object created",
        5139 => "Directory object moved",
        5141 => "Directory object deleted",
        _ => return None,
    })
}

/// The common name of a distinguished name (`CN=Bob\, Jr,OU=x` → `Bob, Jr`); other text as is.
fn common_name(dn: &str) -> String {
    let Some(rest) = dn
        .get(..3)
        .filter(|p| p.eq_ignore_ascii_case("CN="))
        .and_then(|_| dn.get(3..))
    else {
        return dn.to_string();
    };
    let mut name = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => name.extend(chars.next()),
            ',' => break,
            c => name.push(c),
        }
    }
    name
}

fn directory(ev: &WinEvent, action: &str) -> IdentityDirectoryEvents {
    let member = trimmed(ev, "MemberName")
        .map(|m| common_name(&m))
        .or_else(|| sid(ev, "MemberSid"));
    let mut extras: Vec<(&str, Value)> = Vec::new();
    if action == "Group Membership changed" {
        let added = matches!(ev.event_id, 4728 | 4732 | 4756);
        let side = if added { "TO.GROUP" } else { "FROM.GROUP" };
        extras.push((side, trimmed(ev, "TargetUserName").into()));
        extras.push(("TARGET_OBJECT.USER", member.clone().into()));
    }
    let mut row: IdentityDirectoryEvents = identity(ev, action, &extras);
    let (domain, name, sid) = subject(ev);
    row.set_account(domain, name, sid);
    let target = match ev.event_id {
        4728 | 4729 | 4732 | 4733 | 4756 | 4757 => member,
        4781 => trimmed(ev, "NewTargetUserName"),
        5136..=5141 => trimmed(ev, "ObjectDN").map(|dn| common_name(&dn)),
        _ => trimmed(ev, "TargetUserName").or_else(|| known(ev, "SamAccountName")),
    };
    row.target_account_upn = known(ev, "UserPrincipalName");
    row.target_device_name = known(ev, "DnsHostName").or_else(|| {
        target
            .as_deref()
            .and_then(|t| t.strip_suffix('$'))
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
    });
    row.target_account_display_name = target;
    if ev.event_id == 4740 {
        // The lockout record names the caller computer in TargetDomainName.
        row.device_name = trimmed(ev, "TargetDomainName").map(|d| d.to_lowercase());
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::tests::security;
    use serde_json::json;

    #[test]
    fn kerberos_service_ticket_4769() {
        let Row::IdentityLogonEvents(r) = security(
            4769,
            json!({"TargetUserName": "alice@CORP.LOCAL", "TargetDomainName": "CORP.LOCAL",
                "ServiceName": "SQL01$", "ServiceSid": "S-1-5-21-5", "TicketEncryptionType": "0x17",
                "IpAddress": "::ffff:10.0.0.5", "IpPort": "50123", "Status": "0x0"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("LogonSuccess"));
        assert_eq!(r.protocol.as_deref(), Some("Kerberos"));
        assert_eq!(r.logon_type.as_deref(), Some("Resource access"));
        assert_eq!(r.account_name.as_deref(), Some("alice"));
        assert_eq!(r.account_domain.as_deref(), Some("CORP.LOCAL"));
        assert_eq!(r.ip_address.as_deref(), Some("10.0.0.5"));
        assert_eq!(r.port, Some(50123));
        assert_eq!(r.target_device_name.as_deref(), Some("sql01"));
        assert_eq!(
            r.destination_device_name.as_deref(),
            Some("ws01.corp.local")
        );
        assert_eq!(r.application.as_deref(), Some("Active Directory"));
        assert_eq!(r.report_id.as_deref(), Some("42"));
        assert_eq!(r.additional_fields.unwrap()["TicketEncryptionType"], "0x17");
    }

    #[test]
    fn failed_tgt_and_ntlm() {
        let Row::IdentityLogonEvents(r) = security(
            4768,
            json!({"TargetUserName": "HD01", "TargetSid": "S-1-0-0", "Status": "0x6"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("LogonFailed"));
        assert_eq!(r.failure_reason.as_deref(), Some("UnknownUser"));
        assert_eq!(r.logon_type.as_deref(), Some("Credentials validation"));
        assert_eq!(r.account_sid, None);
        let Row::IdentityLogonEvents(r) = security(
            4776,
            json!({"TargetUserName": "Administrator", "Workstation": "02694W-WIN10", "Status": "0xc000006a"}),
        ) else {
            panic!()
        };
        assert_eq!(r.protocol.as_deref(), Some("Ntlm"));
        assert_eq!(r.failure_reason.as_deref(), Some("WrongPassword"));
        assert_eq!(r.device_name.as_deref(), Some("02694w-win10"));
    }

    #[test]
    fn group_membership_4728() {
        let Row::IdentityDirectoryEvents(r) = security(
            4728,
            json!({"MemberName": "CN=Smith\\, Bob,OU=Users,DC=corp,DC=local",
                "MemberSid": "S-1-5-21-1-1105", "TargetUserName": "Domain Admins",
                "TargetDomainName": "CORP", "TargetSid": "S-1-5-21-1-512",
                "SubjectUserSid": "S-1-5-21-1-500", "SubjectUserName": "Administrator",
                "SubjectDomainName": "CORP", "SubjectLogonId": "0x1"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("Group Membership changed"));
        assert_eq!(r.target_account_display_name.as_deref(), Some("Smith, Bob"));
        assert_eq!(r.account_name.as_deref(), Some("Administrator"));
        assert_eq!(r.account_sid.as_deref(), Some("S-1-5-21-1-500"));
        assert_eq!(
            r.destination_device_name.as_deref(),
            Some("ws01.corp.local")
        );
        let extra = r.additional_fields.unwrap();
        assert_eq!(extra["TO.GROUP"], "Domain Admins");
        assert_eq!(extra["TARGET_OBJECT.USER"], "Smith, Bob");
        assert_eq!(extra["MemberSid"], "S-1-5-21-1-1105");
    }

    #[test]
    fn replication_and_account_changes() {
        let Row::IdentityDirectoryEvents(r) = security(
            4662,
            json!({"SubjectUserName": "Administrator", "ObjectServer": "DS",
                "Properties": "%%7688\r\n\t\t{1131F6AD-9c07-11d1-f79f-00c04fc2dcd2}\r\n"}),
        ) else {
            panic!()
        };
        assert_eq!(
            r.action_type.as_deref(),
            Some("Directory Services replication")
        );
        assert!(matches!(
            security(4662, json!({"Properties": "%%1537"})),
            Row::DeviceEvents(_)
        ));
        let Row::IdentityDirectoryEvents(r) = security(
            4742,
            json!({"TargetUserName": "ALICE$", "DnsHostName": "-", "SubjectUserName": "Administrator"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("Computer account changed"));
        assert_eq!(r.target_device_name.as_deref(), Some("alice"));
        let Row::IdentityDirectoryEvents(r) = security(
            4720,
            json!({"TargetUserName": "eve", "UserPrincipalName": "eve@corp.local"}),
        ) else {
            panic!()
        };
        assert_eq!(r.action_type.as_deref(), Some("Account created"));
        assert_eq!(r.target_account_upn.as_deref(), Some("eve@corp.local"));
        assert_eq!(common_name("OU=x"), "OU=x");
        assert_eq!(common_name("CN=a\\"), "a");
    }
}
