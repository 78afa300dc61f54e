//! `lifecycle`: what every function of the suite shares.
//!
//! One module per AWS concept ([`registry`], [`endpoints`], [`ledger`]) and per shared idea
//! ([`targets`], [`plan`], [`executor`]). Functions observe AWS through these modules, decide with
//! pure functions of their own, and act only through [`executor::Executor`].

pub mod aws;
pub mod config;
pub mod deploy;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod executor;
pub mod ledger;
pub mod metrics;
pub mod names;
pub mod plan;
pub mod registry;
pub mod report;
pub mod scaling;
pub mod targets;
pub mod telemetry;

pub use error::{Error, Result};
