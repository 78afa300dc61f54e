//! Putting a model package on an endpoint, as plan steps: shared by the deployer (the newest
//! approved version, with the target's rollout) and the alarm responder (the previous version,
//! all at once). Pure: the caller observed the endpoint before.

use std::collections::BTreeMap;

use crate::deployment::{DeploymentRecord, DeploymentStatus};
use crate::endpoints::{ConfigSpec, Endpoint, EndpointConfig, RolloutSpec, tags};
use crate::names::{fingerprint, sagemaker_name};
use crate::plan::{Action, Plan};
use crate::targets::DeploymentTarget;

/// The model a package becomes on a target's endpoint. The package ARN is in the name (as a
/// fingerprint, beside its version for people): a target moved to another group, or two groups'
/// version 3, never reuse each other's model.
pub fn model_name(target: &DeploymentTarget, arn: &str, version: i64) -> String {
    sagemaker_name(
        &target.endpoint,
        &format!("v{version}-{}", fingerprint(&[arn])),
    )
}

/// The endpoint config of a package version on a target; changes when the target's sizing does.
pub fn config_name(target: &DeploymentTarget, arn: &str, version: i64) -> String {
    let fp = fingerprint(&[
        arn,
        &target.variant,
        &target.instance_type,
        &target.instance_count.to_string(),
    ]);
    sagemaker_name(&target.endpoint, &format!("v{version}-{fp}"))
}

/// What to deploy and how.
pub struct Deployment<'a> {
    pub target: &'a DeploymentTarget,
    pub package_arn: &'a str,
    pub version: i64,
    pub endpoint: Option<&'a Endpoint>,
    pub live_config: Option<&'a EndpointConfig>,
    /// `None` for CreateEndpoint; for updates, how traffic moves.
    pub rollout: Option<RolloutSpec>,
    /// `requested_at` of the in-flight record this plan was decided on (see [`Action::BeginDeployment`]).
    pub expected: Option<i64>,
    pub now_ms: i64,
    /// An endpoint config that already serves this package on this endpoint (for example the one
    /// the live config replaced): reused as it is, without creating a model or a config.
    pub existing_config: Option<String>,
    /// Why, in words, for the endpoint call.
    pub why: String,
    /// For a rollback: the alarm that caused it (it must recover afterwards).
    pub cause_alarm: Option<String>,
    /// The live variant's autoscaling, when the update must deregister it first.
    pub scaling: Option<crate::scaling::Snapshot>,
}

/// Model, config, ledger record, then the endpoint call.
pub fn plan(d: Deployment, plan: &mut Plan) {
    let target = d.target;
    let model = model_name(target, d.package_arn, d.version);
    let reused = d.existing_config.is_some();
    let config = d
        .existing_config
        .clone()
        .unwrap_or_else(|| config_name(target, d.package_arn, d.version));
    let live_count = d
        .endpoint
        .and_then(|e| e.instance_count(&target.variant))
        .unwrap_or(0);
    let instance_count = target.instance_count.max(live_count);
    let previous = d.endpoint.map(|e| e.config_name.clone());
    if !reused {
        create_model_and_config(
            &d,
            model,
            &config,
            previous.clone(),
            instance_count,
            live_count,
            plan,
        );
    }
    plan.push(
        Action::BeginDeployment {
            record: record(&d, &config, previous),
            expected: d.expected,
        },
        "recorded before the call, so a retry or a concurrent invocation finds it",
    );
    if let Some(s) = &d.scaling {
        plan.push_with_undo(
            Action::DeregisterScaling {
                resource_id: s.resource_id.clone(),
            },
            "SageMaker refuses this update while the variant is registered for autoscaling; restored after it",
            Action::RestoreScaling {
                resource_id: s.resource_id.clone(),
                snapshot: s.clone(),
            },
        );
    }
    match d.endpoint {
        Some(_) => plan.push(
            Action::UpdateEndpoint {
                endpoint: target.endpoint.clone(),
                config,
                rollout: d.rollout,
            },
            d.why,
        ),
        None => plan.push(
            Action::CreateEndpoint {
                endpoint: target.endpoint.clone(),
                config,
            },
            d.why,
        ),
    }
    plan.push(
        Action::ConfirmDeployment {
            endpoint: target.endpoint.clone(),
            requested_at: d.now_ms,
        },
        "the call answered success: SageMaker runs the deployment",
    );
}

/// The in-flight deployment, as written before the endpoint call.
fn record(d: &Deployment, config: &str, previous: Option<String>) -> DeploymentRecord {
    let target = d.target;
    DeploymentRecord {
        endpoint: target.endpoint.clone(),
        config: config.to_string(),
        package_arn: d.package_arn.to_string(),
        package_version: d.version,
        previous_config: previous,
        requested_at: d.now_ms,
        finished_at: None,
        status: DeploymentStatus::InProgress,
        rollback_alarms: d
            .rollout
            .as_ref()
            .map(|r| r.rollback_alarms.clone())
            .unwrap_or_default(),
        alarms_seen: vec![],
        confirmed: false,
        cause_alarm: d.cause_alarm.clone(),
        recovered: None,
        scaling: d.scaling.clone(),
    }
}

/// The model and the endpoint config of a version that has none on this endpoint yet.
fn create_model_and_config(
    d: &Deployment,
    model: String,
    config: &str,
    previous: Option<String>,
    instance_count: i32,
    live_count: i32,
    plan: &mut Plan,
) {
    let target = d.target;
    let mut config_tags = BTreeMap::from([
        (tags::PACKAGE_ARN.to_string(), d.package_arn.to_string()),
        (
            tags::PACKAGE_GROUP.to_string(),
            target.model_package_group.clone(),
        ),
        (tags::PACKAGE_VERSION.to_string(), d.version.to_string()),
    ]);
    if let Some(p) = &previous {
        config_tags.insert(tags::REPLACES.to_string(), p.clone());
    }
    plan.push(
        Action::CreateModel {
            name: model.clone(),
            package_arn: d.package_arn.to_string(),
            tags: BTreeMap::from([(tags::PACKAGE_ARN.to_string(), d.package_arn.to_string())]),
        },
        format!("the model for version {}", d.version),
    );
    plan.push(
        Action::CreateEndpointConfig {
            spec: Box::new(ConfigSpec {
                name: config.to_string(),
                variant: target.variant.clone(),
                model,
                instance_type: target.instance_type.clone(),
                instance_count,
                tags: config_tags,
                carried: d.live_config.cloned(),
            }),
        },
        format!(
            "{instance_count} x {} (configured {}, live {live_count})",
            target.instance_type, target.instance_count
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_collide_across_groups_or_targets() {
        let a = crate::targets::Targets::parse(
            r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge","instance_count":1,"rollback_alarms":["a"]},
                {"model_package_group":"search","endpoint":"recs-prod-search","instance_type":"ml.m5.xlarge","instance_count":1,"rollback_alarms":["b"]}]"#,
            crate::config::Environment::Staging,
        )
        .unwrap();
        let (t1, t2) = (&a.0[0], &a.0[1]);
        let recs3 = "arn:aws:sagemaker:us-east-1:1:model-package/recs/3";
        let search3 = "arn:aws:sagemaker:us-east-1:1:model-package/search/3";
        // The same target moved to another group: version 3 of each is a different model.
        assert_ne!(model_name(t1, recs3, 3), model_name(t1, search3, 3));
        assert_ne!(config_name(t1, recs3, 3), config_name(t1, search3, 3));
        // Two targets, one version number: different names.
        assert_ne!(model_name(t1, recs3, 3), model_name(t2, search3, 3));
        assert_eq!(model_name(t1, recs3, 3), model_name(t1, recs3, 3), "stable");
    }
}
