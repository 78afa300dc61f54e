//! The deployer's configuration, read once at cold start: the targets and the ledger, shared
//! with the alarm responder (see [`lifecycle::config::TargetsConfig`]).

pub use lifecycle::config::TargetsConfig as Config;
