//! Rampart's Sigma engine for Windows event logs and Linux agent telemetry.
//!
//! Parsing, compilation to matchers and evaluation of the Sigma specification (all value
//! modifiers, conditions, filters, correlation rules) come from the `rsigma-parser` and
//! `rsigma-eval` crates; this crate adds what triage and the server need around them:
//!
//! - [`taxonomy`]: Sigma's Windows logsource taxonomy — which channels and event ids each
//!   `service` and `category` covers, and the field aliases that let a `process_creation` rule
//!   written on Sysmon names read Security 4688 records;
//! - [`linux`]: the `product: linux` categories on agent telemetry — which hunting-table rows
//!   each covers ([`TelemetryRow`]) and the Sigma field names their columns answer to;
//! - [`RuleSet`]: loading folders of rules in parallel, reporting each rule that cannot load
//!   with its reason, routing records only to the rules of their logsource, and holding back
//!   what correlation rules need until records can be fed in time order ([`Correlator`]).

mod event;
mod expand;
mod filter;
mod level;
pub mod linux;
mod prefilter;
mod ruleset;
pub mod taxonomy;

pub use event::{Origin, Record, SigmaEvent};
pub use level::Level;
pub use linux::TelemetryRow;
pub use ruleset::{
    CorrelationInput, Correlator, Detection, MAX_RULE_FILE_BYTES, RuleInfo, RuleKind, RuleReport,
    RuleSet, RuleStatus,
};
