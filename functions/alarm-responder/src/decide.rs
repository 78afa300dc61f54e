//! The responder's decision: given an alarm that fired on a live endpoint and what AWS looked like
//! a moment later, roll back, scale up, or say why not. Pure: everything was observed before.

use lifecycle::config::Environment;
use lifecycle::deploy::{self, Deployment};
use lifecycle::endpoints::{Endpoint, EndpointConfig, RolloutSpec};
use lifecycle::events::AlarmStateChange;
use lifecycle::deployment::{DeploymentRecord, DeploymentStatus};
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
    pub environment: Environment,
    pub endpoint: Option<Endpoint>,
    pub live_config: Option<EndpointConfig>,
    pub in_flight: Option<DeploymentRecord>,
    /// The package the endpoint serves (rollbacks only).
    pub served: Option<ModelPackage>,
    /// Versions below the served one, newest first, down to the first Approved or pinned one.
    pub older: Vec<ModelPackage>,
    /// A config that still exists and already serves the rollback candidate on this endpoint.
    pub candidate_config: Option<String>,
    /// KPI alarms: samples in the window (`None`: the metric could not be read).
    pub samples: Option<f64>,
    /// Scale-ups: the variant's autoscaling bounds, if registered.
    pub scaling: Option<ScalableTarget>,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: &'static str,
    pub reason: String,
    pub package: Option<String>,
    pub plan: Plan,
    pub evidence: Value,
    /// Someone must look at this: logged as an error and counted.
    pub loud: bool,
}

impl Decision {
    /// A decision that asks for nothing and needs no person.
    pub fn quiet(outcome: &'static str, reason: String, evidence: Value) -> Self {
        Self {
            outcome,
            reason,
            package: None,
            plan: Plan::default(),
            evidence,
            loud: false,
        }
    }

    fn loud(
        outcome: &'static str,
        reason: String,
        package: Option<String>,
        evidence: Value,
    ) -> Self {
        Self {
            outcome,
            reason,
            package,
            plan: Plan::default(),
            evidence,
            loud: true,
        }
    }
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
pub fn triage(alarm: &AlarmStateChange) -> Option<(&'static str, String)> {
    if !alarm.entered_alarm() {
        let from = alarm
            .previous_state
            .as_ref()
            .map(|p| p.value.as_str())
            .unwrap_or("unknown");
        return Some((
            "ignored",
            format!(
                "{} went {from} -> {}; only a transition into ALARM is acted on",
                alarm.alarm_name, alarm.state.value
            ),
        ));
    }
    alarm.silenced().map(|why| {
        (
            "muted",
            format!("{} is in ALARM but {why}; nothing done", alarm.alarm_name),
        )
    })
}

pub fn decide(obs: &Observed) -> Decision {
    let target = obs.route.target;
    let mut evidence = alarm_evidence(obs.alarm);
    evidence["route"] = json!({"via": obs.route.via, "response": obs.route.response});

    let Some(ep) = &obs.endpoint else {
        return Decision::quiet(
            "ignored",
            format!("{} does not exist; nothing to act on", target.endpoint),
            evidence,
        );
    };
    evidence["endpoint_status"] = json!(ep.status);
    evidence["serving_config"] = json!(ep.config_name);

    // During an update or a rollback SageMaker's guardrails own the endpoint.
    if ep.status.is_transitioning() {
        let mut plan = Plan::default();
        plan.push(
            Action::NoteAlarm {
                endpoint: target.endpoint.clone(),
                alarm: obs.alarm.alarm_name.clone(),
            },
            "kept with the deployment in progress, so the deployer's verdict carries it",
        );
        return Decision {
            outcome: "noted",
            reason: format!(
                "{} is {:?}: SageMaker's guardrails own it; {} recorded against the deployment in progress",
                target.endpoint, ep.status, obs.alarm.alarm_name
            ),
            package: obs.in_flight.as_ref().map(|d| d.package_arn.clone()),
            plan,
            evidence,
            loud: false,
        };
    }

    // The endpoint changed after the alarm fired: the alarm judged what is no longer live.
    if let Some(modified) = ep.last_modified
        && modified > obs.alarm.state.timestamp
    {
        return Decision::quiet(
            "superseded",
            format!(
                "{} changed at {} after {} fired at {}; the alarm judged a fleet that is gone",
                target.endpoint,
                modified.format(&Rfc3339).unwrap_or_default(),
                obs.alarm.alarm_name,
                obs.alarm
                    .state
                    .timestamp
                    .format(&Rfc3339)
                    .unwrap_or_default()
            ),
            evidence,
        );
    }

    match obs.route.response {
        Response::ScaleUp => scale_up(obs, ep, evidence),
        Response::Rollback => rollback(obs, ep, evidence),
    }
}

fn scale_up(obs: &Observed, ep: &Endpoint, mut evidence: Value) -> Decision {
    let target = obs.route.target;
    let floor = target.scale_up_floor(obs.environment);
    let Some(live) = ep.instance_count(&target.variant) else {
        return Decision::loud(
            "scale_up_impossible",
            format!(
                "{} has no variant {} with an instance count; nothing scaled",
                target.endpoint, target.variant
            ),
            None,
            evidence,
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
    if plan.is_empty() {
        return Decision {
            outcome: "at_floor",
            reason: format!(
                "{} fired; {}/{} already has {live} instances and a floor of at least {floor}; nothing to raise",
                obs.alarm.alarm_name, target.endpoint, target.variant
            ),
            package: None,
            plan,
            evidence,
            loud: false,
        };
    }
    Decision {
        outcome: "scaled_up",
        reason: format!(
            "{} fired: {}/{} raised to at least {floor} instances (was {live})",
            obs.alarm.alarm_name, target.endpoint, target.variant
        ),
        package: None,
        plan,
        evidence,
        loud: false,
    }
}

fn rollback(obs: &Observed, ep: &Endpoint, mut evidence: Value) -> Decision {
    let target = obs.route.target;
    let alarm = &obs.alarm.alarm_name;
    let Some(served) = &obs.served else {
        return Decision::loud(
            "rollback_impossible",
            format!(
                "{alarm} fired but the package {} serves is unknown (config {} has no package tag and its model no package); endpoint left as it is",
                target.endpoint, ep.config_name
            ),
            None,
            evidence,
        );
    };
    let package = Some(served.arn.clone());
    evidence["serving_package"] =
        json!({"arn": served.arn, "version": served.version, "status": served.status});

    if let Some(kpi) = obs.route.kpi {
        evidence["samples"] = json!({"metric": kpi.samples.metric, "window_minutes": kpi.window_minutes,
                                     "seen": obs.samples, "required": kpi.min_samples});
        let enough = obs.samples.is_some_and(|s| s >= kpi.min_samples);
        if !enough {
            let seen = obs
                .samples
                .map_or("unreadable".to_string(), |s| s.to_string());
            return Decision {
                outcome: "inconclusive",
                reason: format!(
                    "{alarm} fired on version {} but the window had {seen} {} of the {} required; too little traffic to judge, nothing done",
                    served.version, kpi.samples.metric, kpi.min_samples
                ),
                package,
                plan: Plan::default(),
                evidence,
                loud: false,
            };
        }
    }

    if served.is_pinned() {
        return Decision::loud(
            "rollback_refused",
            format!(
                "{alarm} fired but version {} is pinned ({}=true); a person decided it stays. Endpoint left as it is",
                served.version,
                registry::PINNED
            ),
            package,
            evidence,
        );
    }

    let candidate = obs
        .older
        .iter()
        .find(|p| p.status == Approval::Approved || p.is_pinned());
    let candidate = match candidate {
        Some(p) if p.status == Approval::Approved => p,
        Some(p) => {
            return Decision::loud(
                "rollback_impossible",
                format!(
                    "{alarm} fired on version {} but version {} is pinned and {:?}; refusing to roll back past it. Endpoint left as it is",
                    served.version, p.version, p.status
                ),
                package,
                evidence,
            );
        }
        None => {
            return Decision::loud(
                "rollback_impossible",
                format!(
                    "{alarm} fired on version {} and no earlier Approved version exists; endpoint left as it is, a person must decide",
                    served.version
                ),
                package,
                evidence,
            );
        }
    };
    evidence["rollback_to"] = json!({"arn": candidate.arn, "version": candidate.version,
                                     "reused_config": obs.candidate_config});

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
                description: registry::truncate(&description, MAX_DESCRIPTION).to_string(),
            },
            format!("version {} is bad: {alarm} fired on it", served.version),
        );
    }
    let expected = obs
        .in_flight
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::InProgress)
        .map(|d| d.requested_at);
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
        },
        &mut plan,
    );
    Decision {
        outcome: "rolled_back",
        reason: format!(
            "{alarm} entered ALARM at {when}: version {} rejected, version {} brought back all at once",
            served.version, candidate.version
        ),
        package,
        plan,
        evidence,
        loud: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::endpoints::{EndpointStatus, LiveVariant};
    use lifecycle::targets::Targets;
    use serde_json::json;
    use std::collections::BTreeMap;
    use time::OffsetDateTime;

    use crate::testing::targets;

    fn alarm(name: &str) -> AlarmStateChange {
        AlarmStateChange::parse(&json!({"alarmName": name,
            "state": {"value": "ALARM", "reason": "Threshold Crossed: 7.1 < 7.5",
                      "timestamp": "2026-03-01T06:00:00.000+0000"},
            "previousState": {"value": "OK", "timestamp": "2026-03-01T05:00:00.000+0000"}}))
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
            }],
        }
    }

    fn observed<'a>(t: &'a Targets, a: &'a AlarmStateChange) -> Observed<'a> {
        Observed {
            route: crate::route::by_config(t, &a.alarm_name).unwrap(),
            alarm: a,
            environment: Environment::Production,
            endpoint: Some(endpoint(EndpointStatus::InService, 2)),
            live_config: None,
            in_flight: None,
            served: Some(package(3, Approval::Approved, false)),
            older: vec![
                package(2, Approval::Rejected, false),
                package(1, Approval::Approved, false),
            ],
            candidate_config: None,
            samples: Some(5000.0),
            scaling: None,
            now_ms: 1,
        }
    }

    fn actions(d: &Decision) -> Vec<&'static str> {
        d.plan.steps.iter().map(|s| s.action.name()).collect()
    }

    #[test]
    fn a_rollback_rejects_the_live_version_and_skips_rejected_ones() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let d = decide(&observed(&t, &a));
        assert_eq!(d.outcome, "rolled_back");
        assert_eq!(
            actions(&d),
            [
                "RejectPackage",
                "CreateModel",
                "CreateEndpointConfig",
                "BeginDeployment",
                "UpdateEndpoint"
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
            ["RejectPackage", "BeginDeployment", "UpdateEndpoint"]
        );
    }

    #[test]
    fn no_earlier_version_or_a_pin_leaves_the_endpoint_alone_loudly() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.older = vec![package(2, Approval::Rejected, false)];
        let d = decide(&o);
        assert_eq!(
            (d.outcome, d.loud, d.plan.is_empty()),
            ("rollback_impossible", true, true)
        );

        o.older = vec![
            package(2, Approval::Rejected, true),
            package(1, Approval::Approved, false),
        ];
        let d = decide(&o);
        assert_eq!(d.outcome, "rollback_impossible");
        assert!(d.reason.contains("version 2 is pinned"), "{}", d.reason);

        o.older = vec![package(2, Approval::Approved, true)];
        assert_eq!(decide(&o).outcome, "rolled_back");

        o.served = Some(package(3, Approval::Approved, true));
        let d = decide(&o);
        assert_eq!((d.outcome, d.plan.is_empty()), ("rollback_refused", true));
    }

    #[test]
    fn a_kpi_alarm_needs_enough_samples() {
        let (t, a) = (targets(), alarm("recs-ctr"));
        let mut o = observed(&t, &a);
        o.samples = Some(999.0);
        let d = decide(&o);
        assert_eq!((d.outcome, d.plan.is_empty()), ("inconclusive", true));
        o.samples = None;
        assert!(decide(&o).reason.contains("unreadable"));
        o.samples = Some(1000.0);
        assert_eq!(decide(&o).outcome, "rolled_back");
    }

    #[test]
    fn an_updating_endpoint_only_gets_a_note() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        o.endpoint = Some(endpoint(EndpointStatus::Updating, 2));
        let d = decide(&o);
        assert_eq!((d.outcome, actions(&d)), ("noted", vec!["NoteAlarm"]));
    }

    #[test]
    fn an_alarm_older_than_the_endpoints_last_change_is_superseded() {
        let (t, a) = (targets(), alarm("recs-5xx"));
        let mut o = observed(&t, &a);
        let mut ep = endpoint(EndpointStatus::InService, 2);
        ep.last_modified = Some(a.state.timestamp + time::Duration::minutes(5));
        o.endpoint = Some(ep);
        assert_eq!(decide(&o).outcome, "superseded");
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
        assert_eq!(d.outcome, "scaled_up");
        assert_eq!(
            actions(&d),
            [
                "RegisterScalableTarget",
                "UpdateEndpointWeightsAndCapacities"
            ]
        );
        let Action::SetScalingBounds { target } = &d.plan.steps[0].action else {
            panic!()
        };
        assert_eq!((target.min, target.max), (2, 2));
        assert_eq!(d.evidence["before"]["instances"], 1);
        assert_eq!(d.evidence["after"]["instances"], 2);

        o.endpoint = Some(endpoint(EndpointStatus::InService, 3));
        o.scaling = None;
        assert_eq!(decide(&o).outcome, "at_floor");
    }

    #[test]
    fn ok_and_muted_alarms_are_triaged_out() {
        let ok = AlarmStateChange::parse(&json!({"alarmName": "a",
            "state": {"value": "OK", "timestamp": "2026-03-01T06:00:00.000+0000"},
            "previousState": {"value": "ALARM", "timestamp": "2026-03-01T05:00:00.000+0000"}}))
        .unwrap();
        assert_eq!(triage(&ok).unwrap().0, "ignored");
        let muted = AlarmStateChange::parse(&json!({"alarmName": "a",
            "state": {"value": "ALARM", "timestamp": "2026-03-01T06:00:00.000+0000"},
            "muteDetail": {"mutedBy": "rule"}}))
        .unwrap();
        assert_eq!(triage(&muted).unwrap().0, "muted");
        assert!(triage(&alarm("recs-5xx")).is_none());
    }
}
