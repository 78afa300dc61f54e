//! Plans: what a decision wants done, as typed actions each carrying a human-readable reason.
//! Built by pure `decide` functions, applied by [`crate::executor::Executor`], kept in the ledger.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::endpoints::{ConfigSpec, RolloutSpec};
use crate::ledger::{DeploymentRecord, DeploymentStatus};
use crate::scaling::ScalableTarget;

/// One thing to do in AWS.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    CreateModel {
        name: String,
        package_arn: String,
        tags: BTreeMap<String, String>,
    },
    CreateEndpointConfig {
        spec: Box<ConfigSpec>,
    },
    CreateEndpoint {
        endpoint: String,
        config: String,
    },
    UpdateEndpoint {
        endpoint: String,
        config: String,
        rollout: Option<RolloutSpec>,
    },
    /// Set a model package to Rejected; the description is the evidence.
    RejectPackage {
        package_arn: String,
        description: String,
    },
    /// Write the in-flight deployment to the ledger before the call that starts it. `expected` is
    /// the `requested_at` of the record this plan was decided on, so two deciders cannot both win.
    BeginDeployment {
        record: DeploymentRecord,
        expected: Option<i64>,
    },
    /// Add an alarm to the evidence of the deployment in progress (a ledger write only).
    NoteAlarm {
        endpoint: String,
        alarm: String,
    },
    /// Raise (or set) the autoscaling bounds of a variant.
    SetScalingBounds {
        target: ScalableTarget,
    },
    /// Set a variant's instance count in place (UpdateEndpointWeightsAndCapacities).
    SetInstanceCount {
        endpoint: String,
        variant: String,
        count: i32,
    },
    /// Tag a SageMaker resource (the sweeper's idle mark).
    TagResource {
        arn: String,
        key: String,
        value: String,
    },
    UntagResource {
        arn: String,
        key: String,
    },
    DeleteEndpoint {
        endpoint: String,
    },
    DeleteEndpointConfig {
        config: String,
    },
    /// A copy of `from` with at least `min_instances` per variant.
    CopyEndpointConfig {
        from: String,
        name: String,
        min_instances: i32,
    },
    SetScaleInCooldown {
        resource_id: String,
        policy_name: String,
        seconds: i32,
    },
    /// Close the in-flight deployment with its verdict.
    FinishDeployment {
        endpoint: String,
        requested_at: i64,
        status: DeploymentStatus,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateModel { .. } => "CreateModel",
            Action::CreateEndpointConfig { .. } => "CreateEndpointConfig",
            Action::CreateEndpoint { .. } => "CreateEndpoint",
            Action::UpdateEndpoint { .. } => "UpdateEndpoint",
            Action::RejectPackage { .. } => "RejectPackage",
            Action::BeginDeployment { .. } => "BeginDeployment",
            Action::FinishDeployment { .. } => "FinishDeployment",
            Action::NoteAlarm { .. } => "NoteAlarm",
            Action::TagResource { .. } => "AddTags",
            Action::UntagResource { .. } => "DeleteTags",
            Action::DeleteEndpoint { .. } => "DeleteEndpoint",
            Action::DeleteEndpointConfig { .. } => "DeleteEndpointConfig",
            Action::CopyEndpointConfig { .. } => "CreateEndpointConfig",
            Action::SetScaleInCooldown { .. } => "PutScalingPolicy",
            Action::SetScalingBounds { .. } => "RegisterScalableTarget",
            Action::SetInstanceCount { .. } => "UpdateEndpointWeightsAndCapacities",
        }
    }
}

/// An action and why it is wanted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn push(&mut self, action: Action, reason: impl Into<String>) {
        self.steps.push(Step {
            action,
            reason: reason.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether the plan contains an action of this kind.
    pub fn has(&self, name: &str) -> bool {
        self.steps.iter().any(|s| s.action.name() == name)
    }
}
