//! Windows event records → hunting-schema rows.

use rampart_schema::{DeviceEvents, Row};

use crate::winevent::WinEvent;

/// A record that has a mapping but whose content does not fit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError(pub String);

/// Maps one record to its row.
pub fn map_event(event: &WinEvent) -> Result<Row, MapError> {
    Ok(DeviceEvents {
        timestamp: Some(event.timestamp),
        device_name: Some(event.computer.clone()),
        action_type: Some(format!("{}-{}", event.provider, event.event_id)),
        ..Default::default()
    }
    .into())
}
