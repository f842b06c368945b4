//! `rampart-agent`: the Linux endpoint sensor. The kernel side (eBPF tracepoint programs) reports
//! raw events; the agent enriches them (process tree, user names, image hashes), maps them to
//! Defender's Device* hunting tables, keeps them in a bounded on-disk queue and sends them to
//! `rampart server` over mutual TLS, oldest first. It never links the query engine.

pub mod actions;
pub mod agent;
pub mod batch;
pub mod clock;
pub mod collect;
pub mod dns;
pub mod enroll;
pub mod fallback;
pub mod fanotify;
pub mod hashes;
pub mod inventory;
pub mod isolation;
pub mod live;
pub mod loadgen;
pub mod logons;
pub mod mapping;
pub mod prevent;
pub mod process;
pub mod queue;
pub mod sensor;
pub mod snapshot;
pub mod state;
pub mod transport;
pub mod users;
