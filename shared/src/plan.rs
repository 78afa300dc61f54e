//! Plans: what a decision wants done, as typed actions each carrying a human-readable reason.
//! Built by pure `decide` functions, applied by [`crate::executor::Executor`], kept in the ledger.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::deployment::{DeploymentRecord, DeploymentStatus};
use crate::endpoints::{ConfigSpec, RolloutSpec};
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
        record: Box<DeploymentRecord>,
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
    DeleteModel {
        model: String,
    },
    /// A copy of `from` with at least `min_instances` per production variant, starting from the
    /// counts and weights the variants have now (`live`).
    CopyEndpointConfig {
        from: String,
        name: String,
        min_instances: i32,
        live: Vec<crate::endpoints::LiveVariant>,
    },
    SetScaleInCooldown {
        resource_id: String,
        policy_name: String,
        seconds: i32,
    },
    /// Mark the in-flight deployment as started: the call before it answered success.
    ConfirmDeployment {
        endpoint: String,
        requested_at: i64,
    },
    /// Keep when the endpoint was first seen InService on the deployment's config.
    MarkLive {
        endpoint: String,
        requested_at: i64,
        at: i64,
    },
    /// Deregister a variant's autoscaling before an update SageMaker refuses while it is
    /// registered (an instance type change, a renamed variant); the snapshot to restore it from
    /// is in the deployment record.
    DeregisterScaling {
        resource_id: String,
    },
    /// Register `resource_id` with the snapshot's bounds and put its policies back.
    RestoreScaling {
        resource_id: String,
        snapshot: crate::scaling::Snapshot,
    },
    /// The target's declared capacity: bounds and tracking policy (a restore of them), its
    /// scheduled actions, and the suite's schedules no longer declared deleted.
    ApplyCapacity {
        snapshot: crate::scaling::Snapshot,
        /// Register the bounds too. Not when schedules own a registered target's bounds: a
        /// register would undo a schedule that fired since they were read.
        register: bool,
        schedules: Vec<crate::capacity::LiveSchedule>,
        delete_schedules: Vec<String>,
    },
    /// Keep whether a rollback's cause alarm recovered in time.
    RecordRecovery {
        endpoint: String,
        requested_at: i64,
        recovered: bool,
    },
    /// Close the in-flight deployment with its verdict.
    FinishDeployment {
        endpoint: String,
        requested_at: i64,
        status: DeploymentStatus,
    },
    /// Create or correct a managed guardrail alarm (PutMetricAlarm).
    PutAlarm {
        alarm: Box<crate::guardrails::AlarmSpec>,
    },
    /// Delete a managed guardrail alarm no bound of the target declares any more.
    DeleteAlarm {
        name: String,
    },
    /// Export the catalog table to S3 as JSON Lines (a training job's input).
    ExportCatalog {
        export: crate::catalog::CatalogExport,
    },
    /// Start the adapter's retraining job.
    StartTrainingJob {
        job: Box<crate::training::TrainingJob>,
    },
    /// Register a retrained adapter as a candidate version of its group (its statistics report
    /// written first).
    RegisterPackage {
        package: Box<crate::candidate::CandidatePackage>,
    },
}

macro_rules! action_kinds {
    ($($kind:ident => $text:literal;)*) => {
        /// The kind of an [`Action`], without its data: what plans are searched by and what
        /// metrics count. The same snake_case text as the `action` field of a plan in the ledger.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ActionKind {
            $($kind,)*
        }

        impl ActionKind {
            pub const ALL: &[ActionKind] = &[$(ActionKind::$kind,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ActionKind::$kind => $text,)*
                }
            }
        }

        impl Action {
            pub fn kind(&self) -> ActionKind {
                match self {
                    $(Action::$kind { .. } => ActionKind::$kind,)*
                }
            }
        }
    };
}

action_kinds! {
    CreateModel => "create_model";
    CreateEndpointConfig => "create_endpoint_config";
    CreateEndpoint => "create_endpoint";
    UpdateEndpoint => "update_endpoint";
    RejectPackage => "reject_package";
    BeginDeployment => "begin_deployment";
    NoteAlarm => "note_alarm";
    SetScalingBounds => "set_scaling_bounds";
    SetInstanceCount => "set_instance_count";
    TagResource => "tag_resource";
    UntagResource => "untag_resource";
    DeleteEndpoint => "delete_endpoint";
    DeleteEndpointConfig => "delete_endpoint_config";
    DeleteModel => "delete_model";
    CopyEndpointConfig => "copy_endpoint_config";
    SetScaleInCooldown => "set_scale_in_cooldown";
    ConfirmDeployment => "confirm_deployment";
    MarkLive => "mark_live";
    FinishDeployment => "finish_deployment";
    RecordRecovery => "record_recovery";
    DeregisterScaling => "deregister_scaling";
    RestoreScaling => "restore_scaling";
    ApplyCapacity => "apply_capacity";
    PutAlarm => "put_alarm";
    DeleteAlarm => "delete_alarm";
    ExportCatalog => "export_catalog";
    StartTrainingJob => "start_training_job";
    RegisterPackage => "register_package";
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action and why it is wanted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
    /// What puts this step's change back if a later step of the plan fails (the executor runs
    /// it then): a deregistered autoscaling is never left off by an update that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<Box<Action>>,
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
            undo: None,
        });
    }

    /// A step, and what puts it back should a later step fail.
    pub fn push_with_undo(&mut self, action: Action, reason: impl Into<String>, undo: Action) {
        self.steps.push(Step {
            action,
            reason: reason.into(),
            undo: Some(Box::new(undo)),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Whether the plan contains an action of this kind.
    pub fn has(&self, kind: ActionKind) -> bool {
        self.steps.iter().any(|s| s.action.kind() == kind)
    }

    /// The kinds of the plan's actions, in order.
    pub fn kinds(&self) -> Vec<ActionKind> {
        self.steps.iter().map(|s| s.action.kind()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_kind_is_the_action_tag_of_the_plan_in_the_ledger() {
        let mut plan = Plan::default();
        plan.push(
            Action::DeleteEndpoint {
                endpoint: "e".into(),
            },
            "idle",
        );
        plan.push(
            Action::UntagResource {
                arn: "a".into(),
                key: "k".into(),
            },
            "traffic returned",
        );
        let json = serde_json::to_value(&plan).unwrap();
        for (step, kind) in json.as_array().unwrap().iter().zip(plan.kinds()) {
            assert_eq!(step["action"], kind.as_str());
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        assert!(plan.has(ActionKind::DeleteEndpoint));
        assert!(!plan.has(ActionKind::UpdateEndpoint));
    }
}
