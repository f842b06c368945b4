//! An alert as rows of the hunting tables `AlertInfo` and `AlertEvidence`, so hunting queries
//! over alerts (`AlertInfo | join AlertEvidence on AlertId`) run unchanged.

use rampart_schema::{AlertEvidence, AlertInfo, Row};
use serde_json::{Map, Value, json};

use crate::alert::Alert;
use crate::entity::{Entity, EntityData};

/// `AlertInfo.ServiceSource` of every Rampart alert.
pub const SERVICE_SOURCE: &str = "Rampart";

/// The alert's `AlertInfo` row, then one `AlertEvidence` row per entity.
///
/// `Timestamp` is the alert's first event time. `AttackTechniques` is a JSON list of
/// technique ids (`["T1059.001"]`; Defender writes names with the id in parentheses, which
/// Sigma tags do not carry). `AlertEvidence.Categories` is the JSON list of the alert's
/// tactic categories. Each evidence row fills the columns of its entity kind; its key, exact
/// role, and fields without a column (process id and creation time, MD5, registry data of a
/// key) go to `AdditionalFields`.
pub fn alert_rows(alert: &Alert) -> Vec<Row> {
    let d = &alert.draft;
    let techniques = Value::from(d.techniques.clone()).to_string();
    let mut rows: Vec<Row> = Vec::with_capacity(d.entities.len() + 1);
    rows.push(
        AlertInfo {
            timestamp: Some(d.first_event_time),
            alert_id: Some(alert.id.clone()),
            title: Some(d.title.clone()),
            category: Some(d.category.clone()),
            severity: Some(d.severity.name().to_string()),
            service_source: Some(SERVICE_SOURCE.to_string()),
            detection_source: Some(d.detection_source.name().to_string()),
            attack_techniques: Some(techniques.clone()),
        }
        .into(),
    );
    let categories: Vec<String> = if d.tactics.is_empty() {
        vec![d.category.clone()]
    } else {
        d.tactics.iter().map(|t| t.replace(' ', "")).collect()
    };
    let categories = Value::from(categories).to_string();
    for entity in &d.entities {
        let mut row = AlertEvidence {
            timestamp: Some(d.first_event_time),
            alert_id: Some(alert.id.clone()),
            title: Some(d.title.clone()),
            categories: Some(categories.clone()),
            attack_techniques: Some(techniques.clone()),
            service_source: Some(SERVICE_SOURCE.to_string()),
            detection_source: Some(d.detection_source.name().to_string()),
            severity: Some(d.severity.name().to_string()),
            entity_type: Some(entity.kind().evidence_type().to_string()),
            evidence_role: Some(entity.role.evidence_role().to_string()),
            ..Default::default()
        };
        let extra = fill(&mut row, entity);
        row.additional_fields = Some(Value::Object(extra).to_string());
        rows.push(row.into());
    }
    rows
}

/// Fills the entity's columns; returns what has no column.
fn fill(row: &mut AlertEvidence, entity: &Entity) -> Map<String, Value> {
    let mut extra = Map::new();
    extra.insert("EntityKey".into(), json!(entity.key()));
    extra.insert("Role".into(), json!(entity.role.name()));
    match &entity.data {
        EntityData::Device { name, id } => {
            row.device_name = Some(name.clone());
            row.device_id = id.clone();
        }
        EntityData::Account {
            name,
            domain,
            sid,
            upn,
        } => {
            row.account_name = name.clone();
            row.account_domain = domain.clone();
            row.account_sid = sid.clone();
            row.account_upn = upn.clone();
        }
        EntityData::Process {
            device,
            pid,
            image,
            file_name,
            command_line,
            sha1,
            sha256,
            creation_time,
        } => {
            row.device_name = device.clone();
            row.file_name = file_name.clone();
            row.folder_path = image.clone();
            row.process_command_line = command_line.clone();
            row.sha1 = sha1.clone();
            row.sha256 = sha256.clone();
            if let Some(pid) = pid {
                extra.insert("ProcessId".into(), json!(pid));
            }
            if let Some(t) = creation_time {
                extra.insert("ProcessCreationTime".into(), json!(t));
            }
        }
        EntityData::File {
            device,
            name,
            folder_path,
            sha1,
            sha256,
            md5,
        } => {
            row.device_name = device.clone();
            row.file_name = name.clone();
            row.folder_path = folder_path.clone();
            row.sha1 = sha1.clone();
            row.sha256 = sha256.clone();
            if let Some(md5) = md5 {
                extra.insert("MD5".into(), json!(md5));
            }
        }
        EntityData::Ip { address } => row.remote_ip = Some(address.clone()),
        EntityData::Url { url } => row.remote_url = Some(url.clone()),
        EntityData::Domain { name } => row.remote_url = Some(name.clone()),
        EntityData::RegistryKey { device, key } => {
            row.device_name = device.clone();
            row.registry_key = Some(key.clone());
        }
        EntityData::RegistryValue {
            device,
            key,
            name,
            data,
        } => {
            row.device_name = device.clone();
            row.registry_key = Some(key.clone());
            row.registry_value_name = Some(name.clone());
            row.registry_value_data = data.clone();
        }
        EntityData::Mailbox { address } => row.account_upn = Some(address.clone()),
        EntityData::CloudApp { name, id } => {
            row.application = Some(name.clone());
            row.application_id = *id;
        }
    }
    extra
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::AlertDraft;
    use crate::alert::tests::{detection, process_row};
    use rampart_schema::Table;
    use rampart_schema::arrow_array::cast::AsArray;
    use rampart_sigma::Level;

    #[test]
    fn info_and_evidence_rows_carry_the_right_columns() {
        let d = detection(
            &["attack.discovery", "attack.t1033", "attack.execution"],
            Level::Critical,
        );
        let alert = Alert::new(
            "ra-1",
            AlertDraft::from_detection(&d, Some(&process_row(77, "whoami /all"))),
        );
        let rows = alert_rows(&alert);
        let Row::AlertInfo(info) = &rows[0] else {
            panic!("AlertInfo first: {rows:?}")
        };
        assert_eq!(info.alert_id.as_deref(), Some("ra-1"));
        assert_eq!(info.title.as_deref(), Some("Whoami Execution"));
        assert_eq!(info.category.as_deref(), Some("Discovery"));
        assert_eq!(info.severity.as_deref(), Some("High"));
        assert_eq!(info.service_source.as_deref(), Some("Rampart"));
        assert_eq!(info.detection_source.as_deref(), Some("Sigma"));
        assert_eq!(info.attack_techniques.as_deref(), Some(r#"["T1033"]"#));
        assert_eq!(info.timestamp, Some(alert.draft.first_event_time));

        let evidence: Vec<&AlertEvidence> = rows[1..]
            .iter()
            .map(|r| match r {
                Row::AlertEvidence(e) => e.as_ref(),
                other => panic!("evidence rows only: {other:?}"),
            })
            .collect();
        assert_eq!(evidence.len(), alert.draft.entities.len());
        let types: Vec<(&str, &str)> = evidence
            .iter()
            .map(|e| {
                (
                    e.entity_type.as_deref().unwrap_or_default(),
                    e.evidence_role.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            types,
            [
                ("Machine", "Impacted"),
                ("User", "Impacted"),
                ("Process", "Related"),
                ("File", "Related")
            ]
        );
        assert_eq!(evidence[0].device_name.as_deref(), Some("ws01.corp.local"));
        assert_eq!(evidence[1].account_name.as_deref(), Some("bob"));
        assert_eq!(evidence[1].account_domain.as_deref(), Some("CORP"));
        let process = evidence[2];
        assert_eq!(process.process_command_line.as_deref(), Some("whoami /all"));
        assert_eq!(process.file_name.as_deref(), Some("whoami.exe"));
        let extra: Value =
            serde_json::from_str(process.additional_fields.as_deref().unwrap()).unwrap();
        assert_eq!(extra["ProcessId"], 77);
        assert_eq!(extra["Role"], "Child");
        assert_eq!(
            evidence[3].folder_path.as_deref(),
            Some(r"C:\Windows\System32\whoami.exe")
        );
        assert_eq!(
            evidence[3].categories.as_deref(),
            Some(r#"["Discovery","Execution"]"#)
        );

        // The rows go into the tables' Arrow batches as any source's rows do.
        let mut info_batch = Table::AlertInfo.batch_builder();
        let mut evidence_batch = Table::AlertEvidence.batch_builder();
        for row in &rows {
            match row.table() {
                Table::AlertInfo => info_batch.append(row).unwrap(),
                _ => evidence_batch.append(row).unwrap(),
            }
        }
        let batch = evidence_batch.finish();
        assert_eq!(batch.num_rows(), 4);
        let types = batch
            .column_by_name("EntityType")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(types.value(2), "Process");
        assert_eq!(info_batch.finish().num_rows(), 1);
    }
}
