//! Putting a model package on an endpoint, as plan steps: shared by the deployer (the newest
//! approved version, with the target's rollout) and the alarm responder (the previous version,
//! all at once). Pure: the caller observed the endpoint before.

use std::collections::BTreeMap;

use crate::deployment::{Canary, DeploymentRecord, DeploymentStatus};
use crate::endpoints::{CanaryVariant, ConfigSpec, Endpoint, EndpointConfig, RolloutSpec, tags};
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

/// A canary's config: the live config's variant as it is, the candidate beside it.
pub fn canary_config_name(
    target: &DeploymentTarget,
    arn: &str,
    version: i64,
    live_config: &str,
    percent: i32,
) -> String {
    let fp = fingerprint(&[
        arn,
        live_config,
        &target.instance_type,
        &percent.to_string(),
    ]);
    sagemaker_name(&target.endpoint, &format!("v{version}-canary-{fp}"))
}

/// How a canary starts: the candidate in its own variant, the live variant kept as it runs now.
#[derive(Debug, Clone)]
pub struct CanaryStart {
    pub record: Canary,
    /// The live variant's model and instance type, from the live config.
    pub live_model: String,
    pub live_instance_type: String,
    pub live_count: i32,
    pub candidate_count: i32,
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
    /// A canary beside the live version instead of a replacement of it.
    pub canary: Option<CanaryStart>,
    /// A new version forward, for a target with a smoke test: tested once it is live. Not a way
    /// back, a rollback or a canary's promotion (tested on its own variant).
    pub smoke_due: bool,
}

/// Model, config, ledger record, then the endpoint call.
pub fn plan(d: Deployment, plan: &mut Plan) {
    let target = d.target;
    let model = model_name(target, d.package_arn, d.version);
    let reused = d.existing_config.is_some();
    let config = match (&d.existing_config, &d.canary, d.endpoint) {
        (Some(c), _, _) => c.clone(),
        (None, Some(c), Some(ep)) => canary_config_name(
            target,
            d.package_arn,
            d.version,
            &ep.config_name,
            c.record.percent,
        ),
        _ => config_name(target, d.package_arn, d.version),
    };
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
            record: Box::new(record(&d, &config, previous)),
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

/// A canary serving on an endpoint now, as its config's tags tell (they are written with the
/// config, before the update that serves it, so a canary survives a lost ledger record).
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryNow {
    pub candidate: String,
    pub candidate_version: i64,
    pub candidate_variant: String,
    pub live_package: String,
    pub live_version: i64,
    pub live_variant: String,
    /// The config the live version serves alone on, to go back to.
    pub live_config: Option<String>,
    /// The canary's own open record, when the ledger has it: its start, its bake.
    pub record: Option<DeploymentRecord>,
}

/// Tags name packages of the target's `group` only: a config copied by hand from another group's
/// endpoint is no canary of this one (its packages are never rejected or deployed from here).
pub fn canary_now(
    ep: &Endpoint,
    config: Option<&EndpointConfig>,
    open: Option<&DeploymentRecord>,
    group: &str,
) -> Option<CanaryNow> {
    let config = config.filter(|c| c.name == ep.config_name)?;
    let tag = |k: &str| config.tags.get(k).cloned();
    let ours =
        |arn: &str| crate::registry::group_of(arn).is_some_and(|g| g.eq_ignore_ascii_case(group));
    let candidate = tag(tags::CANARY_PACKAGE).filter(|a| ours(a))?;
    let candidate_variant = tag(tags::CANARY_VARIANT)?;
    let live_variant = config
        .variants
        .iter()
        .filter_map(|v| v.variant_name())
        .find(|n| *n != candidate_variant)?
        .to_string();
    let record = open
        .filter(|d| d.config == ep.config_name && d.package_arn == candidate)
        .filter(|d| d.open_canary().is_some())
        .cloned();
    Some(CanaryNow {
        candidate_version: record
            .as_ref()
            .map(|d| d.package_version)
            .or_else(|| crate::registry::version_of(&candidate))
            .unwrap_or_default(),
        candidate,
        candidate_variant,
        live_package: tag(tags::PACKAGE_ARN).filter(|a| ours(a))?,
        live_version: tag(tags::PACKAGE_VERSION)?.parse().ok()?,
        live_variant,
        live_config: tag(tags::REPLACES),
        record,
    })
}

/// Why and how a canary ends.
pub struct CanaryEnd {
    pub why: String,
    /// The alarm that stopped it, when one did (its recovery is then checked).
    pub cause_alarm: Option<String>,
    /// Stopped without a verdict: the candidate is not tried again until a person decides.
    pub inconclusive: bool,
    /// `requested_at` of the record the new one replaces.
    pub expected: Option<i64>,
    pub now_ms: i64,
}

/// Ends a canary: the live version alone again, on its own config, at once (it was trusted
/// before; every minute more on the candidate costs users). A plain update: SageMaker's guardrails
/// need the same variant names in both configs. Its record replaces the canary's.
pub fn end_canary(
    target: &DeploymentTarget,
    ep: &Endpoint,
    config: Option<&EndpointConfig>,
    canary: &CanaryNow,
    end: CanaryEnd,
    plan: &mut Plan,
) {
    let start = plan.steps.len();
    self::plan(
        Deployment {
            target,
            package_arn: &canary.live_package,
            version: canary.live_version,
            endpoint: Some(ep),
            live_config: config,
            rollout: None,
            expected: end.expected,
            now_ms: end.now_ms,
            existing_config: canary.live_config.clone(),
            why: end.why,
            cause_alarm: end.cause_alarm,
            scaling: None,
            canary: None,
            smoke_due: false,
        },
        plan,
    );
    for step in &mut plan.steps[start..] {
        if let Action::BeginDeployment { record, .. } = &mut step.action {
            record.inconclusive = end.inconclusive.then(|| canary.candidate.clone());
        }
    }
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
        canary: d.canary.as_ref().map(|c| c.record.clone()),
        inconclusive: None,
        live_at: None,
        scaling: d.scaling.clone(),
        smoke_due: d.smoke_due,
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
    let (spec, why) = match &d.canary {
        Some(c) => canary_spec(d, c, model, config, config_tags),
        None => (
            ConfigSpec {
                name: config.to_string(),
                variant: target.variant.clone(),
                model,
                instance_type: target.instance_type.clone(),
                instance_count,
                canary: None,
                tags: config_tags,
                carried: d.live_config.cloned(),
            },
            format!(
                "{instance_count} x {} (configured {}, live {live_count})",
                target.instance_type, target.instance_count
            ),
        ),
    };
    let spec = Box::new(spec);
    plan.push(Action::CreateEndpointConfig { spec }, why);
}

/// A canary's config: the live variant as it runs (its model, type and count, the live package in
/// the tags, so every reader still sees it as what serves), the candidate beside it.
fn canary_spec(
    d: &Deployment,
    c: &CanaryStart,
    model: String,
    config: &str,
    mut tags_: BTreeMap<String, String>,
) -> (ConfigSpec, String) {
    let r = &c.record;
    tags_.insert(tags::CANARY_PACKAGE.into(), d.package_arn.to_string());
    tags_.insert(tags::CANARY_VARIANT.into(), r.variant.clone());
    tags_.insert(tags::PACKAGE_ARN.into(), r.live_package.clone());
    tags_.insert(tags::PACKAGE_VERSION.into(), r.live_version.to_string());
    let why = format!(
        "{} keeps {}% on {} x {}; version {} takes {}% on {} x {} in {}",
        r.live_variant,
        100 - r.percent,
        c.live_count,
        c.live_instance_type,
        d.version,
        r.percent,
        c.candidate_count,
        d.target.instance_type,
        r.variant
    );
    let spec = ConfigSpec {
        name: config.to_string(),
        variant: r.live_variant.clone(),
        model: c.live_model.clone(),
        instance_type: c.live_instance_type.clone(),
        instance_count: c.live_count,
        canary: Some(CanaryVariant {
            variant: r.variant.clone(),
            model,
            instance_type: d.target.instance_type.clone(),
            instance_count: c.candidate_count,
            percent: r.percent,
        }),
        tags: tags_,
        carried: d.live_config.cloned(),
    };
    (spec, why)
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
