//! The deployer's configuration, read once at cold start: the targets and the ledger, shared
//! with the alarm responder (see [`lifecycle::targets::TargetsConfig`]).

pub use lifecycle::targets::TargetsConfig as Config;
