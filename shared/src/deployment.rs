//! A deployment: the change of an endpoint from one config to another, as the ledger keeps it.
//! Written before the call that starts it, closed with its verdict.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeploymentStatus {
    InProgress,
    Succeeded,
    /// SageMaker's guardrails put the old config back.
    RolledBack,
    /// Superseded before it was judged (the endpoint was replaced or deleted).
    Abandoned,
    /// SageMaker ran the update and it ended on the old config with no rollback alarm to explain
    /// it (capacity, a model that does not start): not the package's alarms; a person looks.
    Failed,
}

impl DeploymentStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::RolledBack => "RolledBack",
            Self::Abandoned => "Abandoned",
            Self::Failed => "Failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Self {
        match s {
            "InProgress" => Self::InProgress,
            "Succeeded" => Self::Succeeded,
            "RolledBack" => Self::RolledBack,
            "Failed" => Self::Failed,
            _ => Self::Abandoned,
        }
    }
}

/// The deployment in flight on an endpoint, written before the call that starts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentRecord {
    pub endpoint: String,
    pub config: String,
    pub package_arn: String,
    pub package_version: i64,
    pub previous_config: Option<String>,
    /// Epoch milliseconds; also the record's version for conditional writes.
    pub requested_at: i64,
    /// When its verdict was recorded (epoch milliseconds), once it has one.
    pub finished_at: Option<i64>,
    pub status: DeploymentStatus,
    pub rollback_alarms: Vec<String>,
    /// Alarms the alarm responder saw fire while this deployment was in progress.
    pub alarms_seen: Vec<String>,
    /// Set once the call that starts the deployment answered success. An unconfirmed record on
    /// an endpoint back on its old config may be a call that failed (or whose answer was lost),
    /// not a rollback: it is never read as SageMaker's verdict.
    pub confirmed: bool,
    /// For a rollback: the alarm that caused it, which must be OK again within the target's
    /// `recovery_minutes` once the rollback is done.
    pub cause_alarm: Option<String>,
    /// Whether that alarm recovered, once checked.
    pub recovered: Option<bool>,
    /// The live variant's autoscaling, deregistered for this update: restored on the variant that
    /// serves once the verdict is in.
    pub scaling: Option<crate::scaling::Snapshot>,
    /// For a live KPI canary: the candidate serves beside the live version until its verdict.
    /// Its Succeeded is never recorded: the canary ends in a promotion or a return to the live
    /// config, each a deployment of its own.
    pub canary: Option<Canary>,
    /// On the record that ended a canary without a verdict: its candidate, which the deployer does
    /// not try again by itself (a person approves another version or rejects this one).
    pub inconclusive: Option<String>,
    /// When the deployer first saw the endpoint InService on this record's config (epoch
    /// milliseconds): a canary's bake is timed from it, not from the request (provisioning its
    /// instances takes minutes in which no user sees the candidate).
    pub live_at: Option<i64>,
    /// A new version forward on a target with a smoke test: the test runs once it is live.
    pub smoke_due: bool,
}

impl DeploymentRecord {
    /// The canary in flight: an open record of one.
    pub fn open_canary(&self) -> Option<&Canary> {
        self.canary
            .as_ref()
            .filter(|_| self.status == DeploymentStatus::InProgress)
    }
}

/// A canary: the candidate (the record's package) in its own variant beside the live version,
/// which keeps the rest of the traffic on the record's `previous_config` variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub variant: String,
    pub percent: i32,
    pub live_variant: String,
    pub live_package: String,
    pub live_version: i64,
}
