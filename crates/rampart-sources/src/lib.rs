//! Rampart sources: readers of raw logs and mappers from them into the hunting schema.
//!
//! - [`evtx`] reads Windows `.evtx` files in parallel (files and chunks), reporting damaged
//!   chunks and records with their offsets and reading on.
//! - [`jsonl`] reads forwarded records as newline-delimited JSON, reporting bad lines by
//!   number and reading on.
//! - [`winevent`] holds a record as [`WinEvent`]: its System fields and event data under the
//!   flat names Sigma rules use.
//! - [`windows`] maps a [`WinEvent`] to a row of the hunting schema (Sysmon, Security, System,
//!   PowerShell, Defender, ...); a record without a specific mapping becomes a `DeviceEvents`
//!   row whose `ActionType` names its provider and event id, so no record is dropped.

pub mod evtx;
mod json;
pub mod jsonl;
pub mod windows;
pub mod winevent;

pub use winevent::WinEvent;
