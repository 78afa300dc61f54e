//! The responder's decision: given an alarm that fired on a live endpoint and what AWS looked like
//! a moment later, roll back, scale up, or say why not. Pure: everything was observed before.

use lifecycle::config::Environment;
use lifecycle::decision::Decision;
use lifecycle::deploy::{self, Deployment};
use lifecycle::deployment::{DeploymentRecord, DeploymentStatus};
use lifecycle::endpoints::{Endpoint, EndpointConfig, RolloutSpec};
use lifecycle::events::AlarmStateChange;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, Plan};
use lifecycle::registry::{self, Approval, ModelPackage};
use lifecycle::scaling::ScalableTarget;
use lifecycle::targets::TrafficStrategy;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::route::{Response, Route};

/// A rollback's deployment: everything at once, no bake, no alarms. The version it brings back
/// was trusted before; every minute on the bad one costs users.
const ROLLBACK_TIMEOUT_SECONDS: i32 = 600;
/// ApprovalDescription limit (SageMaker).
const MAX_DESCRIPTION: usize = 1024;

/// What the decision needs, read from AWS beforehand.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub route: Route<'a>,
    pub alarm: &'a AlarmStateChange,
    /// The alarm was noted while the endpoint updated, fired after the update began, and is still
    /// in ALARM now that the update is done: it judges the version that went live.
    pub after_update: bool,
    pub environment: Environment,
    pub endpoint: Option<Endpoint>,
    pub live_config: Option<EndpointConfig>,
    pub in_flight: Option<DeploymentRecord>,
    /// The package the endpoint serves (rollbacks only).
    pub served: Option<ModelPackage>,
    /// Versions below the served one, newest first, down to the first Approved or pinned one.
    pub older: Vec<ModelPackage>,
    /// Versions that served this endpoint successfully before the live one (the ledger's record),
    /// most recent first.
    pub worked: Vec<ModelPackage>,
    /// Whether the ledger knows any version that served before (false: an adopted endpoint).
    pub history_known: bool,
    /// A config that still exists and already serves the rollback candidate on this endpoint.
    pub candidate_config: Option<String>,
    /// KPI alarms: samples in the window since the live version went live (`None`: not read).
    pub samples: Option<f64>,
    /// When the live version went live: its deployment's verdict, else the endpoint's last change.
    pub went_live: Option<time::OffsetDateTime>,
    /// Rollbacks: the live variant's autoscaling, when the rollback's update must deregister it.
    pub rollback_scaling: Option<lifecycle::scaling::Snapshot>,
    /// Scale-ups: the variant's autoscaling bounds, if registered.
    pub scaling: Option<ScalableTarget>,
    pub now_ms: i64,
}

/// The alarm, as evidence.
pub fn alarm_evidence(alarm: &AlarmStateChange) -> Value {
    json!({
        "alarm": alarm.alarm_name,
        "kind": alarm.kind(),
        "state": alarm.state.value,
        "previous_state": alarm.previous_state.as_ref().map(|p| &p.value),
        "state_reason": alarm.state.reason,
        "state_time": alarm.state.timestamp.format(&Rfc3339).unwrap_or_default(),
        "reason_data": alarm.state.reason_data(),
    })
}

/// Before anything is read: alarms that are not a fresh transition into ALARM, or whose actions
/// are silenced, are recorded and ignored.
pub fn triage(alarm: &AlarmStateChange) -> Option<(Outcome, String)> {
    if !alarm.entered_alarm() {
        let from = alarm
            .previous_state
            .as_ref()
            .map(|p| p.value.as_str())
            .unwrap_or("unknown");
        return Some((
            Outcome::Ignored,
            format!(
                "{} went {from} -> {}; only a transition into ALARM is acted on",
                alarm.alarm_name, alarm.state.value
            ),
        ));
    }
    alarm.silenced().map(|why| {
        (
            Outcome::Muted,
            format!("{} is in ALARM but {why}; nothing done", alarm.alarm_name),
        )
    })
}

pub fn decide(obs: &Observed) -> Decision {
    let target = obs.route.target;
    let mut evidence = alarm_evidence(obs.alarm);
    evidence["route"] = json!({"via": obs.route.via, "response": obs.route.response});

    let Some(ep) = &obs.endpoint else {
        return Decision::new(
            Outcome::Ignored,
            format!("{} does not exist; nothing to act on", target.endpoint),
        )
        .with_evidence(evidence);
    };
    evidence["endpoint_status"] = json!(ep.status);
    evidence["serving_config"] = json!(ep.config_name);
    let decision = during_update(obs, ep)
        .or_else(|| verdict_pending(obs, ep))
        .or_else(|| superseded(obs, ep))
        .unwrap_or_else(|| match obs.route.response {
            Response::ScaleUp => scale_up(obs, ep, &mut evidence),
            Response::Rollback => stop_canary(obs, ep, &mut evidence)
                .unwrap_or_else(|| rollback(obs, ep, &mut evidence)),
        });
    decision.with_evidence(evidence)
}

/// During an update or a rollback SageMaker's guardrails own the endpoint: the alarm is kept
/// with the deployment in progress, so the deployer's verdict carries it.
fn during_update(obs: &Observed, ep: &Endpoint) -> Option<Decision> {
    if !ep.status.is_transitioning() {
        return None;
    }
    let target = obs.route.target;
    let mut plan = Plan::default();
    // Only an alarm that fired after the update began speaks of it (to the second, as the
    // deployer reads alarm times); an older one is not added to its evidence.
    let during = obs.in_flight.as_ref().is_none_or(|d| {
        obs.alarm.state.timestamp.unix_timestamp() >= d.requested_at.div_euclid(1000)
    });
    if during {
        plan.push(
            Action::NoteAlarm {
                endpoint: target.endpoint.clone(),
                alarm: obs.alarm.alarm_name.clone(),
            },
            "kept with the deployment in progress, so the deployer's verdict carries it",
        );
    }
    let reason = format!(
        "{} is {:?}: SageMaker's guardrails own it; {} recorded against the deployment in progress",
        target.endpoint, ep.status, obs.alarm.alarm_name
    );
    Some(
        Decision::new(Outcome::Noted, reason)
            .with_package(obs.in_flight.as_ref().map(|d| d.package_arn.clone()))
            .with_plan(plan),
    )
}

/// SageMaker put the previous config back after a confirmed update and the deployer has not
/// recorded its verdict yet: the alarm belongs to the version that was rolled back, which the
/// deployer rejects; the version serving now is not to blame.
fn verdict_pending(obs: &Observed, ep: &Endpoint) -> Option<Decision> {
    let d = obs
        .in_flight
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::InProgress && d.confirmed)?;
    (Some(&ep.config_name) == d.previous_config.as_ref()).then(|| {
        Decision::new(
            Outcome::Superseded,
            format!(
                "{} is back on {} after the update to version {}: the deployer's verdict on it is pending; {} is not blamed on what serves now",
                ep.name, ep.config_name, d.package_version, obs.alarm.alarm_name
            ),
        )
        .with_package(Some(d.package_arn.clone()))
    })
}

/// The endpoint changed after the alarm fired: the alarm judged what is no longer live.
fn superseded(obs: &Observed, ep: &Endpoint) -> Option<Decision> {
    if obs.after_update {
        return None;
    }
    let modified = ep.last_modified?;
    let fired = obs.alarm.state.timestamp;
    (modified > fired).then(|| {
        Decision::new(
            Outcome::Superseded,
            format!(
                "{} changed at {} after {} fired at {}; the alarm judged a fleet that is gone",
                obs.route.target.endpoint,
                modified.format(&Rfc3339).unwrap_or_default(),
                obs.alarm.alarm_name,
                fired.format(&Rfc3339).unwrap_or_default()
            ),
        )
    })
}

fn scale_up(obs: &Observed, ep: &Endpoint, evidence: &mut Value) -> Decision {
    let target = obs.route.target;
    let floor = target.scale_up_floor(obs.environment);
    let Some(live) = ep.instance_count(&target.variant) else {
        return Decision::new(
            Outcome::ScaleUpImpossible,
            format!(
                "{} has no variant {} with an instance count; nothing scaled",
                target.endpoint, target.variant
            ),
        );
    };
    let mut plan = Plan::default();
    let mut after_scaling = obs.scaling.clone();
    if let Some(s) = &obs.scaling
        && s.min < floor
    {
        let raised = ScalableTarget {
            resource_id: s.resource_id.clone(),
            min: floor,
            max: s.max.max(floor),
        };
        plan.push(
            Action::SetScalingBounds {
                target: raised.clone(),
            },
            format!(
                "MinCapacity {} -> {floor}, so autoscaling cannot take the variant below the floor",
                s.min
            ),
        );
        after_scaling = Some(raised);
    }
    if live < floor {
        plan.push(
            Action::SetInstanceCount {
                endpoint: target.endpoint.clone(),
                variant: target.variant.clone(),
                count: floor,
            },
            format!("{live} -> {floor} instances now, not after the next scaling cooldown"),
        );
    }
    evidence["before"] = json!({"instances": live, "scaling": obs.scaling});
    evidence["after"] = json!({"instances": live.max(floor), "scaling": after_scaling});
    let (alarm, ep_name, variant) = (&obs.alarm.alarm_name, &target.endpoint, &target.variant);
    if plan.is_empty() {
        return Decision::new(
            Outcome::AtFloor,
            format!(
                "{alarm} fired; {ep_name}/{variant} already has {live} instances and a floor of at least {floor}; nothing to raise"
            ),
        );
    }
    Decision::new(
        Outcome::ScaledUp,
        format!(
            "{alarm} fired: {ep_name}/{variant} raised to at least {floor} instances (was {live})"
        ),
    )
    .with_plan(plan)
}

/// A live KPI canary serves: the candidate beside the live version is what changed, so it is the
/// one rejected and taken away, at once; the live version keeps serving alone. Rolling the live
/// version back would punish the version that was trusted.
fn stop_canary(obs: &Observed, ep: &Endpoint, evidence: &mut Value) -> Option<Decision> {
    let open = obs
        .in_flight
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::InProgress);
    let group = &obs.route.target.model_package_group;
    let canary = deploy::canary_now(ep, obs.live_config.as_ref(), open, group)?;
    // A KPI alarm is believed only over enough traffic, here as for a live version.
    if let Some(refused) = obs
        .served
        .as_ref()
        .and_then(|s| kpi_check(obs, s, evidence))
    {
        return Some(refused.with_package(Some(canary.candidate.clone())));
    }
    let alarm = &obs.alarm.alarm_name;
    evidence["canary"] = json!({"candidate": canary.candidate, "variant": canary.candidate_variant,
                                "live": canary.live_package, "config": ep.config_name});
    let description = format!(
        "Rejected by the alarm responder: {alarm} went into ALARM at {} during the live KPI canary of this version on {} ({}). Reason: {}",
        obs.alarm
            .state
            .timestamp
            .format(&Rfc3339)
            .unwrap_or_default(),
        ep.name,
        canary.candidate_variant,
        obs.alarm.state.reason
    );
    let mut plan = Plan::default();
    plan.push(
        Action::RejectPackage {
            package_arn: canary.candidate.clone(),
            description: description.clone(),
        },
        description,
    );
    let why = format!(
        "{alarm} fired during the canary of version {}: back to version {} alone",
        canary.candidate_version, canary.live_version
    );
    let end = deploy::CanaryEnd {
        why: why.clone(),
        cause_alarm: Some(alarm.clone()),
        inconclusive: false,
        expected: obs.in_flight.as_ref().map(|d| d.requested_at),
        now_ms: obs.now_ms,
    };
    deploy::end_canary(
        obs.route.target,
        ep,
        obs.live_config.as_ref(),
        &canary,
        end,
        &mut plan,
    );
    Some(
        Decision::new(Outcome::CanaryFailed, why)
            .with_package(Some(canary.candidate.clone()))
            .with_plan(plan),
    )
}

/// Reject the live version with the evidence and bring back the previous approved one, all at
/// once; or say, for a person, why not.
fn rollback(obs: &Observed, ep: &Endpoint, evidence: &mut Value) -> Decision {
    let alarm = &obs.alarm.alarm_name;
    let Some(served) = &obs.served else {
        return Decision::new(
            Outcome::RollbackImpossible,
            format!(
                "{alarm} fired but the package {} serves is unknown (config {} has no package tag and its model no package); endpoint left as it is",
                obs.route.target.endpoint, ep.config_name
            ),
        );
    };
    evidence["serving_package"] =
        json!({"arn": served.arn, "version": served.version, "status": served.status});
    let package = Some(served.arn.clone());
    let refusal = kpi_check(obs, served, evidence)
        .or_else(|| pinned_live(obs, served))
        .or_else(|| too_late(obs, served));
    if let Some(d) = refusal {
        return d.with_package(package);
    }
    match rollback_candidate(obs, served) {
        Ok(candidate) => {
            evidence["rollback_to"] = json!({"arn": candidate.arn, "version": candidate.version,
                                             "reused_config": obs.candidate_config});
            rollback_plan(obs, ep, served, candidate)
        }
        Err(why) => Decision::new(Outcome::RollbackImpossible, why),
    }
    .with_package(package)
}

/// A KPI alarm is believed only over enough traffic; too little (or an unreadable count) is
/// inconclusive: nothing is done and a person is told.
fn kpi_check(obs: &Observed, served: &ModelPackage, evidence: &mut Value) -> Option<Decision> {
    let kpi = obs.route.kpi?;
    evidence["samples"] = json!({"metric": kpi.samples.metric, "window_minutes": kpi.window_minutes,
                                 "seen": obs.samples, "required": kpi.min_samples});
    if obs.samples.is_some_and(|s| s >= kpi.min_samples) {
        return None;
    }
    let seen = obs
        .samples
        .map_or("unreadable".to_string(), |s| s.to_string());
    Some(Decision::new(
        Outcome::Inconclusive,
        format!(
            "{} fired on version {} but the window had {seen} {} of the {} required; too little traffic to judge, nothing done",
            obs.alarm.alarm_name, served.version, kpi.samples.metric, kpi.min_samples
        ),
    ))
}

/// A version that has served longer than the target's window is not rolled back by itself: it
/// was trusted that long, and what changed may not be the model. A person decides.
fn too_late(obs: &Observed, served: &ModelPackage) -> Option<Decision> {
    let went_live = obs.went_live?;
    let now =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(obs.now_ms) * 1_000_000).ok()?;
    let days = obs.route.target.auto_rollback_days;
    (now - went_live > time::Duration::days(days)).then(|| {
        Decision::new(
            Outcome::RollbackTooLate,
            format!(
                "{} fired on version {}, live since {} (more than {days} days): too long ago to roll back by itself; endpoint left as it is, a person decides",
                obs.alarm.alarm_name,
                served.version,
                went_live.format(&Rfc3339).unwrap_or_default()
            ),
        )
    })
}

/// A person pinned the live version: it stays.
fn pinned_live(obs: &Observed, served: &ModelPackage) -> Option<Decision> {
    served.is_pinned().then(|| {
        Decision::new(
            Outcome::RollbackRefused,
            format!(
                "{} fired but version {} is pinned ({}=true); a person decided it stays. Endpoint left as it is",
                obs.alarm.alarm_name,
                served.version,
                registry::PINNED
            ),
        )
    })
}

/// What to roll back to: the most recent version that served this endpoint successfully and is
/// still Approved (the ledger knows); only when the ledger knows none (an adopted endpoint), the
/// newest older Approved version. Never past a pinned version; a version approved late that never
/// served is not an emergency rollback (the deployer takes it forward through its guardrails).
fn rollback_candidate<'o>(
    obs: &'o Observed,
    served: &ModelPackage,
) -> Result<&'o ModelPackage, String> {
    let alarm = &obs.alarm.alarm_name;
    let pinned_past = |above: i64| {
        obs.older
            .iter()
            .find(|p| p.version > above && p.is_pinned() && p.status != Approval::Approved)
    };
    if obs.history_known {
        let Some(c) = obs.worked.iter().find(|p| p.status == Approval::Approved) else {
            return Err(format!(
                "{alarm} fired on version {} and no version that served this endpoint before is still Approved; endpoint left as it is, a person must decide",
                served.version
            ));
        };
        if c.version >= served.version {
            return Err(format!(
                "{alarm} fired on version {}; the last version that served before it is {}, not an older one: no emergency rollback forward; endpoint left as it is, a person must decide",
                served.version, c.version
            ));
        }
        if obs.older.last().is_none_or(|p| p.version > c.version) {
            return Err(format!(
                "{alarm} fired on version {}; version {} served before, but the versions between were not all read (pins): endpoint left as it is, a person must decide",
                served.version, c.version
            ));
        }
        return match pinned_past(c.version) {
            Some(p) => Err(format!(
                "{alarm} fired on version {} but version {} is pinned and {:?}; refusing to roll back past it. Endpoint left as it is",
                served.version, p.version, p.status
            )),
            None => Ok(c),
        };
    }
    match obs
        .older
        .iter()
        .find(|p| p.status == Approval::Approved || p.is_pinned())
    {
        Some(p) if p.status == Approval::Approved => Ok(p),
        Some(p) => Err(format!(
            "{alarm} fired on version {} but version {} is pinned and {:?}; refusing to roll back past it. Endpoint left as it is",
            served.version, p.version, p.status
        )),
        None => Err(format!(
            "{alarm} fired on version {} and no earlier Approved version exists; endpoint left as it is, a person must decide",
            served.version
        )),
    }
}

/// A deployment whose verdict the deployer has not recorded yet is closed first, with the verdict
/// the endpoint shows, so the rollback's record never replaces a pending one.
fn close_pending(d: &DeploymentRecord, ep: &Endpoint) -> (Action, String) {
    let (status, why) = if ep.config_name == d.config {
        (
            DeploymentStatus::Succeeded,
            format!("version {} went live on {}", d.package_version, d.config),
        )
    } else {
        (
            DeploymentStatus::Abandoned,
            format!(
                "{} is on {}, not on {}: superseded by the rollback",
                ep.name, ep.config_name, d.config
            ),
        )
    };
    let action = Action::FinishDeployment {
        endpoint: d.endpoint.clone(),
        requested_at: d.requested_at,
        status,
    };
    (action, why)
}

/// Reject the bad version (unless a person already did), then deploy the candidate all at once.
fn rollback_plan(
    obs: &Observed,
    ep: &Endpoint,
    served: &ModelPackage,
    candidate: &ModelPackage,
) -> Decision {
    let target = obs.route.target;
    let alarm = &obs.alarm.alarm_name;
    let when = obs
        .alarm
        .state
        .timestamp
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut plan = Plan::default();
    if served.status != Approval::Rejected {
        let description = format!(
            "Rejected by alarm-responder: {alarm} entered ALARM at {when} on {}: {} Rolled back to version {}.",
            target.endpoint, obs.alarm.state.reason, candidate.version
        );
        plan.push(
            Action::RejectPackage {
                package_arn: served.arn.clone(),
                description: lifecycle::names::truncate(&description, MAX_DESCRIPTION).to_string(),
            },
            format!("version {} is bad: {alarm} fired on it", served.version),
        );
    }
    let pending = obs
        .in_flight
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::InProgress);
    if let Some((action, why)) = pending.map(|d| close_pending(d, ep)) {
        plan.push(action, why);
    }
    let expected = pending.map(|d| d.requested_at);
    deploy::plan(
        Deployment {
            target,
            package_arn: &candidate.arn,
            version: candidate.version,
            endpoint: Some(ep),
            live_config: obs.live_config.as_ref(),
            rollout: Some(RolloutSpec {
                strategy: TrafficStrategy::AllAtOnce,
                bake_seconds: 0,
                timeout_seconds: ROLLBACK_TIMEOUT_SECONDS,
                rollback_alarms: vec![],
            }),
            expected,
            now_ms: obs.now_ms,
            existing_config: obs.candidate_config.clone(),
            why: format!(
                "roll back from version {} to {}, all at once",
                served.version, candidate.version
            ),
            cause_alarm: Some(alarm.clone()),
            // A pending deployment that deregistered the variant's autoscaling: its snapshot
            // moves to the rollback's record, so the deployer restores it once the rollback is in.
            scaling: pending
                .and_then(|d| d.scaling.clone())
                .or_else(|| obs.rollback_scaling.clone()),
            canary: None,
            smoke_due: false,
        },
        &mut plan,
    );
    Decision::new(
        Outcome::RolledBack,
        format!(
            "{alarm} entered ALARM at {when}: version {} rejected, version {} brought back all at once",
            served.version, candidate.version
        ),
    )
    .with_plan(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::endpoints::{EndpointStatus, LiveVariant, tags};
    use lifecycle::outcome::Severity;
    use lifecycle::plan::ActionKind;
    use lifecycle::targets::Targets;
    use serde_json::json;
    use std::collections::BTreeMap;
    use time::OffsetDateTime;

    use crate::testing::targets;

    fn alarm(name: &str) -> AlarmStateChange {
        AlarmStateChange::parse(&json!({"alarmName": name,
            "state": {"value": "ALARM", "reason": "Threshold Crossed: 7.1 < 7.5",
                      "timestamp": "2026-03-01T06:00:00.000+0000"},
            "previousState": {"value": "OK", "reason": "ok", "timestamp": "2026-03-01T05:00:00.000+0000"}}))
        .unwrap()
    }

    fn package(version: i64, status: Approval, pinned: bool) -> ModelPackage {
        let mut metadata = BTreeMap::new();
        if pinned {
            metadata.insert(registry::PINNED.to_string(), "true".to_string());
        }
        ModelPackage {
            arn: format!("arn:aws:sagemaker:us-east-1:1:model-package/recs/{version}"),
            group: "recs".into(),
            version,
            status,
            approval_description: None,
            metadata,
            quality_statistics: None,
        }
    }

    fn endpoint(status: EndpointStatus, instances: i32) -> Endpoint {
        Endpoint {
            name: "recs-prod".into(),
            arn: "arn".into(),
            status,
            config_name: "recs-prod-v3-abc".into(),
            pending_config: None,
            last_modified: Some(OffsetDateTime::from_unix_timestamp(1772330000).unwrap()),
            variants: vec![LiveVariant {
                name: "AllTraffic".into(),
                current_instance_count: Some(instances),
                current_weight: None,
            }],
        }
    }

    fn observed<'a>(t: &'a Targets, a: &'a AlarmStateChange) -> Observed<'a> {
        Observed {
            route: crate::route::by_config(t, &a.alarm_name).unwrap(),
            alarm: a,
            after_update: false,
            environment: Environment::Production,
            endpoint: Some(endpoint(EndpointStatus::InService, 2)),
            live_config: None,
            in_flight: None,
            served: Some(package(3, Approval::Approved, false)),
            older: vec![
                package(2, Approval::Rejected, false),
                package(1, Approval::Approved, false),
            ],
            worked: vec![],
            history_known: false,
            candidate_config: None,
            went_live: None,
            rollback_scaling: None,
            samples: Some(5000.0),
            scaling: None,
            now_ms: 1,
        }
    }

    /// A confirmed deployment of `version` to `config`, its verdict not recorded yet.
    fn pending(
        version: i64,
        config: &str,
        previous: &str,
        requested_at: i64,
        rollback_alarms: Vec<String>,
    ) -> DeploymentRecord {
        DeploymentRecord {
            endpoint: "recs-prod".into(),
            config: config.into(),
            package_arn: package(version, Approval::Approved, false).arn,
            package_version: version,
            previous_config: Some(previous.into()),
            requested_at,
            finished_at: None,
            status: DeploymentStatus::InProgress,
            rollback_alarms,
            alarms_seen: vec![],
            confirmed: true,
            cause_alarm: None,
            recovered: None,
            canary: None,
            inconclusive: None,
            live_at: None,
            smoke_due: false,
            scaling: None,
        }
    }

    fn actions(d: &Decision) -> Vec<ActionKind> {
        d.plan.kinds()
    }

    #[test]
    fn an_alarm_during_a_canary_rejects_the_candidate_not_the_live_version() {
        use aws_sdk_sagemaker::types::ProductionVariant;
        let (t, a) = (targets(), alarm("recs-5xx"));
        let (live, candidate) = (
            package(2, Approval::Approved, false),
            package(3, Approval::Approved, false),
        );
        let variant = |name: &str| ProductionVariant::builder().variant_name(name).build();
        let config = EndpointConfig {
            name: "recs-prod-v3-abc".into(),
            arn: "arn".into(),
            variants: vec![variant("AllTraffic"), variant("AllTraffic-canary")],
            data_capture: None,
            kms_key_id: None,
            tags: BTreeMap::from([
                (tags::PACKAGE_ARN.to_string(), live.arn.clone()),
                (tags::PACKAGE_VERSION.to_string(), "2".to_string()),
                (tags::CANARY_PACKAGE.to_string(), candidate.arn.clone()),
                (tags::CANARY_VARIANT.to_string(), "AllTraffic-canary".to_string()),
                (tags::REPLACES.to_string(), "recs-prod-v2-def".to_string()),
            ]),
            created: None,
            described: Box::new(
                aws_sdk_sagemaker::operation::describe_endpoint_config::DescribeEndpointConfigOutput::builder().build(),
            ),
        };
        let mut record = pending(3, "recs-prod-v3-abc", "recs-prod-v2-def", 1_000, vec![]);
        record.canary = Some(lifecycle::deployment::Canary {
            variant: "AllTraffic-canary".into(),
            percent: 10,
            live_variant: "AllTraffic".into(),
            live_package: live.arn.clone(),
            live_version: 2,
        });
        let obs = Observed {
            live_config: Some(config),
            served: Some(live.clone()),
            in_flight: Some(record),
            ..observed(&t, &a)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryFailed, "{}", d.reason);
        let Action::RejectPackage {
            package_arn,
            description,
        } = &d.plan.steps[0].action
        else {
            panic!("{:?}", d.plan)
        };
        assert_eq!(package_arn, &candidate.arn);
        assert!(description.contains("recs-5xx"), "{description}");
        // The live version serves alone again on its own config, as it was; it is not rejected.
        let rejected: Vec<_> = d
            .plan
            .steps
            .iter()
            .filter(|s| s.action.kind() == ActionKind::RejectPackage)
            .collect();
        assert_eq!(rejected.len(), 1);
        let update = d.plan.steps.iter().find_map(|s| match &s.action {
            Action::UpdateEndpoint { config, .. } => Some(config.clone()),
            _ => None,
        });
        assert_eq!(update.as_deref(), Some("recs-prod-v2-def"));
        let begun = d.plan.steps.iter().find_map(|s| match &s.action {
            Action::BeginDeployment { record, expected } => Some((*record.clone(), *expected)),
            _ => None,
        });
        let (record, expected) = begun.unwrap();
        assert_eq!(
            (record.package_arn, record.cause_alarm.as_deref(), expected),
            (live.arn, Some("recs-5xx"), Some(1_000))
        );
    }

    #[test]
    fn a_rollback_rejects_the_live_version_and_skips_rejected_ones() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let d = decide(&observed(&t, &a));
        assert_eq!(d.outcome, Outcome::RolledBack);
        assert_eq!(
            actions(&d),
            [
                ActionKind::RejectPackage,
                ActionKind::CreateModel,
                ActionKind::CreateEndpointConfig,
                ActionKind::BeginDeployment,
                ActionKind::UpdateEndpoint,
                ActionKind::ConfirmDeployment
            ]
        );
        let Action::RejectPackage { description, .. } = &d.plan.steps[0].action else {
            panic!()
        };
        assert!(description.contains("recs-5xx entered ALARM at 2026-03-01T06:00:00Z"));
        assert!(description.contains("7.1 < 7.5"));
        assert!(d.reason.contains("version 1 brought back"));
        let Action::UpdateEndpoint { rollout, .. } = &d.plan.steps[4].action else {
            panic!()
        };
        let r = rollout.as_ref().unwrap();
        assert_eq!(
            (&r.strategy, r.rollback_alarms.len()),
            (&TrafficStrategy::AllAtOnce, 0)
        );
    }

    #[test]
    fn an_existing_config_is_reused() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.candidate_config = Some("recs-prod-v1-old".into());
        let d = decide(&o);
        assert_eq!(
            actions(&d),
            [
                ActionKind::RejectPackage,
                ActionKind::BeginDeployment,
                ActionKind::UpdateEndpoint,
                ActionKind::ConfirmDeployment
            ]
        );
    }

    #[test]
    fn no_earlier_version_or_a_pin_leaves_the_endpoint_alone_loudly() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.older = vec![package(2, Approval::Rejected, false)];
        let d = decide(&o);
        assert_eq!(
            (d.outcome, d.outcome.severity(), d.plan.is_empty()),
            (Outcome::RollbackImpossible, Severity::NeedsPerson, true)
        );

        o.older = vec![
            package(2, Approval::Rejected, true),
            package(1, Approval::Approved, false),
        ];
        let d = decide(&o);
        assert_eq!(d.outcome, Outcome::RollbackImpossible);
        assert!(d.reason.contains("version 2 is pinned"), "{}", d.reason);

        o.older = vec![package(2, Approval::Approved, true)];
        assert_eq!(decide(&o).outcome, Outcome::RolledBack);

        o.served = Some(package(3, Approval::Approved, true));
        let d = decide(&o);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::RollbackRefused, true)
        );
    }

    #[test]
    fn a_kpi_alarm_needs_enough_samples() {
        let (t, a) = (targets(), alarm("recs-ctr"));
        let mut o = observed(&t, &a);
        o.samples = Some(999.0);
        let d = decide(&o);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::Inconclusive, true)
        );
        o.samples = None;
        assert!(decide(&o).reason.contains("unreadable"));
        o.samples = Some(1000.0);
        assert_eq!(decide(&o).outcome, Outcome::RolledBack);
    }

    #[test]
    fn an_updating_endpoint_only_gets_a_note() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.endpoint = Some(endpoint(EndpointStatus::Updating, 2));
        let d = decide(&o);
        assert_eq!(
            (d.outcome, actions(&d)),
            (Outcome::Noted, vec![ActionKind::NoteAlarm])
        );
    }

    #[test]
    fn an_alarm_older_than_the_endpoints_last_change_is_superseded() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        let mut ep = endpoint(EndpointStatus::InService, 2);
        ep.last_modified = Some(a.state.timestamp + time::Duration::minutes(5));
        o.endpoint = Some(ep);
        assert_eq!(decide(&o).outcome, Outcome::Superseded);
    }

    #[test]
    fn a_scale_up_raises_the_floor_and_the_live_count() {
        let (t, a) = (targets(), alarm("recs-503"));
        let mut o = observed(&t, &a);
        o.endpoint = Some(endpoint(EndpointStatus::InService, 1));
        o.scaling = Some(ScalableTarget {
            resource_id: "endpoint/recs-prod/variant/AllTraffic".into(),
            min: 0,
            max: 1,
        });
        let d = decide(&o);
        assert_eq!(d.outcome, Outcome::ScaledUp);
        assert_eq!(
            actions(&d),
            [ActionKind::SetScalingBounds, ActionKind::SetInstanceCount]
        );
        let Action::SetScalingBounds { target } = &d.plan.steps[0].action else {
            panic!()
        };
        assert_eq!((target.min, target.max), (2, 2));
        assert_eq!(d.evidence["before"]["instances"], 1);
        assert_eq!(d.evidence["after"]["instances"], 2);

        o.endpoint = Some(endpoint(EndpointStatus::InService, 3));
        o.scaling = None;
        assert_eq!(decide(&o).outcome, Outcome::AtFloor);
    }

    #[test]
    fn ok_and_muted_alarms_are_triaged_out() {
        let ok = AlarmStateChange::parse(&json!({"alarmName": "a",
            "state": {"value": "OK", "reason": "back to normal", "timestamp": "2026-03-01T06:00:00.000+0000"},
            "previousState": {"value": "ALARM", "reason": "x", "timestamp": "2026-03-01T05:00:00.000+0000"}}))
        .unwrap();
        assert_eq!(triage(&ok).unwrap().0, Outcome::Ignored);
        let muted = AlarmStateChange::parse(&json!({"alarmName": "a",
            "state": {"value": "ALARM", "reason": "x", "timestamp": "2026-03-01T06:00:00.000+0000"},
            "muteDetail": {"mutedBy": "rule"}}))
        .unwrap();
        assert_eq!(triage(&muted).unwrap().0, Outcome::Muted);
        assert!(triage(&alarm("recs-5xx")).is_none());
    }

    #[test]
    fn rollback_candidate_is_the_newest_older_approved_and_never_past_a_pin() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        let served = package(3, Approval::Approved, false);
        assert_eq!(rollback_candidate(&o, &served).unwrap().version, 1);
        o.older = vec![
            package(2, Approval::Rejected, true),
            package(1, Approval::Approved, false),
        ];
        let why = rollback_candidate(&o, &served).unwrap_err();
        assert!(why.contains("version 2 is pinned"), "{why}");
        o.older = vec![];
        assert!(rollback_candidate(&o, &served).is_err());
    }

    #[test]
    fn a_kpi_check_passes_only_with_enough_readable_samples() {
        let (t, a) = (targets(), alarm("recs-ctr"));
        let mut o = observed(&t, &a);
        let served = package(3, Approval::Approved, false);
        let mut evidence = json!({});
        o.samples = Some(1000.0);
        assert!(kpi_check(&o, &served, &mut evidence).is_none());
        assert_eq!(evidence["samples"]["required"], 1000.0);
        o.samples = None;
        let d = kpi_check(&o, &served, &mut evidence).unwrap();
        assert_eq!(d.outcome, Outcome::Inconclusive);
        // Not a KPI alarm: nothing to check.
        let a5 = alarm("recs-5xx");
        let o5 = observed(&t, &a5);
        assert!(kpi_check(&o5, &served, &mut evidence).is_none());
    }

    #[test]
    fn during_an_update_the_alarm_is_noted_and_after_a_change_it_is_superseded() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let o = observed(&t, &a);
        let mut ep = endpoint(EndpointStatus::InService, 2);
        assert!(during_update(&o, &ep).is_none());
        assert!(
            superseded(&o, &ep).is_none(),
            "changed before the alarm fired"
        );
        ep.last_modified = Some(a.state.timestamp + time::Duration::seconds(1));
        assert_eq!(superseded(&o, &ep).unwrap().outcome, Outcome::Superseded);
        ep.status = EndpointStatus::RollingBack;
        let d = during_update(&o, &ep).unwrap();
        assert_eq!(
            (d.outcome, d.plan.kinds()),
            (Outcome::Noted, vec![ActionKind::NoteAlarm])
        );
    }

    #[test]
    fn a_pinned_live_version_stays() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let o = observed(&t, &a);
        assert!(pinned_live(&o, &package(3, Approval::Approved, false)).is_none());
        let d = pinned_live(&o, &package(3, Approval::Approved, true)).unwrap();
        assert_eq!(d.outcome, Outcome::RollbackRefused);
        assert_eq!(d.outcome.severity(), Severity::NeedsPerson);
    }

    #[test]
    fn a_pending_deployment_record_is_closed_before_the_rollback_writes_its_own() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.in_flight = Some(pending(
            3,
            "recs-prod-v3-abc",
            "recs-prod-v1-old",
            42,
            vec![],
        ));
        let d = decide(&o);
        assert_eq!(d.outcome, Outcome::RolledBack);
        let kinds = d.plan.kinds();
        let finish = kinds
            .iter()
            .position(|k| *k == ActionKind::FinishDeployment)
            .unwrap();
        let begin = kinds
            .iter()
            .position(|k| *k == ActionKind::BeginDeployment)
            .unwrap();
        assert!(finish < begin, "{kinds:?}");
        let Action::FinishDeployment { status, .. } = &d.plan.steps[finish].action else {
            panic!()
        };
        assert_eq!(
            *status,
            DeploymentStatus::Succeeded,
            "v3 was live: that fact stays"
        );
    }

    #[test]
    fn a_rollback_goes_back_to_what_served_not_to_a_version_approved_late() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        let served = package(5, Approval::Approved, false);
        // v4 was approved late and never served; v3 served before v5.
        o.older = vec![
            package(4, Approval::Approved, false),
            package(3, Approval::Approved, false),
        ];
        o.worked = vec![package(3, Approval::Approved, false)];
        o.history_known = true;
        assert_eq!(rollback_candidate(&o, &served).unwrap().version, 3);
        // Everything that served was rejected since: a person decides, not the late v4.
        o.worked = vec![package(3, Approval::Rejected, false)];
        let why = rollback_candidate(&o, &served).unwrap_err();
        assert!(why.contains("no version that served"), "{why}");
        // A pinned, rejected version between blocks it.
        o.worked = vec![package(3, Approval::Approved, false)];
        o.older = vec![
            package(4, Approval::Rejected, true),
            package(3, Approval::Approved, false),
        ];
        assert!(
            rollback_candidate(&o, &served)
                .unwrap_err()
                .contains("pinned")
        );
    }

    #[test]
    fn an_alarm_while_the_deployers_guardrail_verdict_is_pending_blames_nothing() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.in_flight = Some(pending(
            4,
            "recs-prod-v4-def",
            "recs-prod-v3-abc",
            42,
            vec!["recs-5xx".into()],
        ));
        let d = decide(&o);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Superseded, true));
        assert!(
            d.reason.contains("verdict on it is pending"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_version_live_longer_than_the_window_is_left_to_a_person() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        let now = OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap();
        o.now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        o.went_live = Some(now - time::Duration::days(8));
        let d = decide(&o);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::RollbackTooLate, true)
        );
        assert_eq!(d.outcome.severity(), Severity::NeedsPerson);
        o.went_live = Some(now - time::Duration::days(6));
        assert_eq!(decide(&o).outcome, Outcome::RolledBack);
    }

    #[test]
    fn an_alarm_older_than_the_update_is_not_noted_against_it() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.endpoint = Some(endpoint(EndpointStatus::Updating, 2));
        let fired_ms = a.state.timestamp.unix_timestamp() * 1000;
        o.in_flight = Some(pending(
            4,
            "recs-prod-v4-def",
            "recs-prod-v3-abc",
            fired_ms + 60_000,
            vec!["recs-5xx".into()],
        ));
        let d = decide(&o);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Noted, true));
        o.in_flight.as_mut().unwrap().requested_at = fired_ms - 60_000;
        assert_eq!(decide(&o).plan.kinds(), [ActionKind::NoteAlarm]);
    }
}
