//! `lifecycle`: what every function of the suite shares.
//!
//! One module per AWS concept ([`registry`], [`endpoints`], [`scaling`], [`catalog`],
//! [`training`], [`ledger`]) and per shared idea ([`targets`], [`plan`], [`decision`],
//! [`outcome`]). Functions observe AWS through these modules, decide with pure functions of their
//! own, and hand each [`decision::Decision`] to the [`pipeline`], the only road to
//! [`executor::Executor`] and the ledger.

pub mod aws;
pub mod candidate;
pub mod capacity;
pub mod catalog;
pub mod config;
pub mod decision;
pub mod deploy;
pub mod deployment;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod executor;
pub mod guardrails;
pub mod kpi_gate;
pub mod ledger;
pub mod metrics;
pub mod names;
pub mod outcome;
pub mod pipeline;
pub mod plan;
pub mod publisher;
pub mod registry;
pub mod scaling;
pub mod smoke;
pub mod targets;
pub mod telemetry;
pub mod training;

pub use error::{Error, Result};
