//! The deployer's decision: compare what the registry wants with what the endpoint serves, and
//! plan one step toward it. Pure: everything it needs was observed before.

use lifecycle::deploy::{self, Deployment};
use lifecycle::endpoints::{Endpoint, EndpointConfig, EndpointStatus, RolloutSpec};
use lifecycle::ledger::{DeploymentRecord, DeploymentStatus};
use lifecycle::plan::{Action, Plan};
use lifecycle::targets::DeploymentTarget;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::gates::GateReport;

/// An Approved package of the target's group.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub arn: String,
    pub version: i64,
    /// `None` for the package the endpoint serves now: it is live and is not gated again.
    pub gates: Option<GateReport>,
}

/// Everything the decision needs, read from AWS beforehand.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub target: &'a DeploymentTarget,
    pub endpoint: Option<Endpoint>,
    /// The config the endpoint is on now, with its tags.
    pub live_config: Option<EndpointConfig>,
    /// Approved packages, newest first, down to the one the endpoint serves.
    pub candidates: Vec<Candidate>,
    pub in_flight: Option<DeploymentRecord>,
    /// The target's rollback alarms that are in ALARM now (evidence for a guardrail rollback).
    pub firing_alarms: Vec<String>,
    /// For a non-Approved registry event: act only if this package is served or in flight.
    pub only_if_live: Option<String>,
    pub now_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: &'static str,
    pub reason: String,
    pub package: Option<String>,
    pub plan: Plan,
    pub evidence: Value,
}

impl Observed<'_> {
    fn served_package(&self) -> Option<&str> {
        self.live_config
            .as_ref()
            .and_then(EndpointConfig::package_arn)
    }
}

pub use lifecycle::deploy::config_name;

pub fn decide(obs: &Observed) -> Decision {
    let target = obs.target;
    let mut plan = Plan::default();
    let mut evidence = json!({
        "endpoint_status": obs.endpoint.as_ref().map(|e| &e.status),
        "serving_config": obs.endpoint.as_ref().map(|e| &e.config_name),
        "serving_package": obs.served_package(),
    });

    // A registry event that is not an approval only matters if it concerns what is live.
    if let Some(arn) = &obs.only_if_live {
        let live = obs.served_package() == Some(arn.as_str())
            || obs
                .in_flight
                .as_ref()
                .is_some_and(|d| d.status == DeploymentStatus::InProgress && &d.package_arn == arn);
        if !live {
            return Decision {
                outcome: "ignored",
                reason: format!(
                    "{arn} is not Approved and not what {} serves; nothing to do",
                    target.endpoint
                ),
                package: Some(arn.clone()),
                plan,
                evidence,
            };
        }
    }

    // While SageMaker is changing the endpoint, it owns it. The next state change or tick resumes.
    if let Some(ep) = &obs.endpoint {
        if ep.status.is_transitioning() {
            return Decision {
                outcome: "waiting",
                reason: format!(
                    "{} is {:?}; SageMaker owns it until it is InService again",
                    ep.name, ep.status
                ),
                package: obs.in_flight.as_ref().map(|d| d.package_arn.clone()),
                plan,
                evidence,
            };
        }
        if ep.status != EndpointStatus::InService {
            return Decision {
                outcome: "blocked",
                reason: format!(
                    "{} is {:?}; a person must look at it before anything is deployed",
                    ep.name, ep.status
                ),
                package: None,
                plan,
                evidence,
            };
        }
    }

    // The verdict on the deployment in flight: done means InService on the requested config.
    let mut verdict: Option<&'static str> = None;
    // What happened before the steady-state part of the reason: a verdict, gate rejections.
    let mut news: Vec<String> = Vec::new();
    let mut expected = obs.in_flight.as_ref().map(|d| d.requested_at);
    let mut excluded: Vec<String> = Vec::new();
    if let Some(d) = obs
        .in_flight
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::InProgress)
    {
        let finish = |status| Action::FinishDeployment {
            endpoint: d.endpoint.clone(),
            requested_at: d.requested_at,
            status,
        };
        match &obs.endpoint {
            None => {
                plan.push(
                    finish(DeploymentStatus::Abandoned),
                    "the endpoint no longer exists",
                );
            }
            Some(ep) if ep.config_name == d.config => {
                plan.push(
                    finish(DeploymentStatus::Succeeded),
                    format!("{} is InService on {}", ep.name, d.config),
                );
                // Alarms the responder saw during the shift that SageMaker did not act on (not
                // rollback alarms): the verdict carries them, so a person sees them.
                if !d.alarms_seen.is_empty() {
                    news.push(format!(
                        "version {} went live although {} fired during the shift",
                        d.package_version,
                        d.alarms_seen.join(", ")
                    ));
                    evidence["alarms_seen"] = json!(d.alarms_seen);
                }
                verdict = Some("deployed");
            }
            Some(ep)
                if modified_since(ep, d.requested_at)
                    && Some(&ep.config_name) == d.previous_config.as_ref() =>
            {
                let description = format!(
                    "Rolled back by SageMaker deployment guardrails: {} ended InService on {} instead of {} \
                     (update requested at {}). Alarms that fired during the shift: {}.",
                    ep.name,
                    ep.config_name,
                    d.config,
                    millis_rfc3339(d.requested_at),
                    alarm_list(&obs.firing_alarms, &d.alarms_seen)
                );
                plan.push(finish(DeploymentStatus::RolledBack), description.clone());
                plan.push(
                    Action::RejectPackage {
                        package_arn: d.package_arn.clone(),
                        description: description.clone(),
                    },
                    description,
                );
                news.push(format!(
                    "SageMaker rolled back version {} (alarms: {})",
                    d.package_version,
                    alarm_list(&obs.firing_alarms, &d.alarms_seen)
                ));
                evidence["rolled_back"] = json!({"package": d.package_arn, "config": d.config, "firing_alarms": obs.firing_alarms});
                excluded.push(d.package_arn.clone());
                verdict = Some("rolled_back");
            }
            Some(ep) if modified_since(ep, d.requested_at) => {
                plan.push(
                    finish(DeploymentStatus::Abandoned),
                    format!(
                        "{} moved to {} since the update to {} was requested",
                        ep.name, ep.config_name, d.config
                    ),
                );
            }
            Some(_) => {
                // Not modified since the request: the UpdateEndpoint never took effect (its
                // response was lost or it failed). Deploy again below, over the same record.
                expected = Some(d.requested_at);
            }
        }
    }

    // Desired: the newest Approved package that passes its gates. Newer ones that fail are rejected.
    let mut desired: Option<&Candidate> = None;
    let mut gates = Vec::new();
    for c in obs.candidates.iter().filter(|c| !excluded.contains(&c.arn)) {
        match &c.gates {
            None => {
                desired = Some(c);
                break;
            }
            Some(report) => {
                gates.push(json!({"package": c.arn, "results": report}));
                if report.passed() {
                    desired = Some(c);
                    break;
                }
                let description = report.failure_description(c.version);
                news.push(format!("version {} failed its gates", c.version));
                plan.push(
                    Action::RejectPackage {
                        package_arn: c.arn.clone(),
                        description: description.clone(),
                    },
                    description,
                );
            }
        }
    }
    if !gates.is_empty() {
        evidence["gates"] = json!(gates);
    }

    let Some(desired) = desired else {
        let (outcome, reason) = if plan.has("RejectPackage") {
            (
                "rejected",
                format!(
                    "no approved package of {} passes its gates; {} unchanged",
                    target.model_package_group, target.endpoint
                ),
            )
        } else {
            (
                "nothing_approved",
                format!(
                    "{} has no Approved package; {} unchanged",
                    target.model_package_group, target.endpoint
                ),
            )
        };
        return Decision {
            outcome: verdict.unwrap_or(outcome),
            reason: with_news(&news, reason),
            package: None,
            plan,
            evidence,
        };
    };

    if obs.served_package() == Some(desired.arn.as_str()) && obs.endpoint.is_some() {
        let outcome = verdict.unwrap_or(if plan.has("RejectPackage") {
            "rejected"
        } else {
            "in_sync"
        });
        let reason = format!(
            "{} serves version {}, the newest approved package that passes its gates",
            target.endpoint, desired.version
        );
        return Decision {
            outcome,
            reason: with_news(&news, reason),
            package: Some(desired.arn.clone()),
            plan,
            evidence,
        };
    }

    // One step toward the desired package: model, config, ledger record, then the endpoint call.
    let why = match obs.served_package() {
        Some(s) => format!(
            "version {} is the newest approved package; {} serves {s}",
            desired.version, target.endpoint
        ),
        None if obs.endpoint.is_some() => format!(
            "version {} is the newest approved package; {} serves a config this suite did not make",
            desired.version, target.endpoint
        ),
        None => format!(
            "version {} is the newest approved package and {} does not exist yet",
            desired.version, target.endpoint
        ),
    };
    deploy::plan(
        Deployment {
            target,
            package_arn: &desired.arn,
            version: desired.version,
            endpoint: obs.endpoint.as_ref(),
            live_config: obs.live_config.as_ref(),
            rollout: Some(RolloutSpec {
                strategy: target.strategy.clone(),
                bake_seconds: target.bake_seconds,
                timeout_seconds: target.timeout_seconds,
                rollback_alarms: target.rollback_alarms.clone(),
            }),
            expected,
            now_ms: obs.now_ms,
            existing_config: None,
            why,
        },
        &mut plan,
    );
    Decision {
        outcome: "deploying",
        reason: with_news(
            &news,
            format!(
                "deploying version {} to {}",
                desired.version, target.endpoint
            ),
        ),
        package: Some(desired.arn.clone()),
        plan,
        evidence,
    }
}

/// "version 3 failed its gates; <state>": what just happened first, then where things stand.
fn with_news(news: &[String], reason: String) -> String {
    if news.is_empty() {
        reason
    } else {
        format!("{}; {reason}", news.join("; "))
    }
}

/// The alarms that fired: in ALARM now, or reported by the alarm responder during the shift.
fn alarm_list(firing: &[String], seen: &[String]) -> String {
    let mut all: Vec<&str> = firing.iter().chain(seen).map(String::as_str).collect();
    all.sort_unstable();
    all.dedup();
    if all.is_empty() {
        "none any more".to_string()
    } else {
        all.join(", ")
    }
}

fn modified_since(ep: &Endpoint, requested_at_ms: i64) -> bool {
    ep.last_modified
        .is_some_and(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64 >= requested_at_ms)
}

fn millis_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::GateResult;
    use lifecycle::endpoints::{LiveVariant, tags};
    use lifecycle::targets::TrafficStrategy;
    use std::collections::BTreeMap;

    fn target() -> DeploymentTarget {
        DeploymentTarget {
            model_package_group: "recs".into(),
            endpoint: "recs-prod".into(),
            variant: "AllTraffic".into(),
            instance_type: "ml.m5.xlarge".into(),
            instance_count: 2,
            strategy: TrafficStrategy::Linear {
                step_percent: 25,
                wait_seconds: 60,
            },
            bake_seconds: 300,
            timeout_seconds: 3600,
            rollback_alarms: vec!["recs-5xx".into()],
            gates: vec![],
            kpi_alarms: vec![],
            scale_up_alarms: vec![],
            scale_up_floor: None,
        }
    }

    fn arn(v: i64) -> String {
        format!("arn:aws:sagemaker:us-east-1:123456789012:model-package/recs/{v}")
    }

    fn endpoint(status: EndpointStatus, config: &str, modified_ms: i64) -> Endpoint {
        Endpoint {
            name: "recs-prod".into(),
            arn: "arn".into(),
            status,
            config_name: config.into(),
            pending_config: None,
            last_modified: OffsetDateTime::from_unix_timestamp_nanos(
                modified_ms as i128 * 1_000_000,
            )
            .ok(),
            variants: vec![LiveVariant {
                name: "AllTraffic".into(),
                current_instance_count: Some(3),
            }],
        }
    }

    fn config_serving(v: i64) -> EndpointConfig {
        EndpointConfig {
            name: format!("cfg-v{v}"),
            arn: "arn".into(),
            variants: vec![],
            data_capture: None,
            kms_key_id: None,
            tags: BTreeMap::from([(tags::PACKAGE_ARN.to_string(), arn(v))]),
        }
    }

    fn passing(v: i64) -> Candidate {
        Candidate {
            arn: arn(v),
            version: v,
            gates: Some(GateReport::default()),
        }
    }

    fn live(v: i64) -> Candidate {
        Candidate {
            arn: arn(v),
            version: v,
            gates: None,
        }
    }

    fn observed(t: &DeploymentTarget) -> Observed<'_> {
        Observed {
            target: t,
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 1_000)),
            live_config: Some(config_serving(2)),
            candidates: vec![passing(3), live(2)],
            in_flight: None,
            firing_alarms: vec![],
            only_if_live: None,
            now_ms: 5_000,
        }
    }

    fn actions(d: &Decision) -> Vec<&'static str> {
        d.plan.steps.iter().map(|s| s.action.name()).collect()
    }

    #[test]
    fn a_newer_approved_package_is_deployed_with_the_configured_rollout() {
        let t = target();
        let d = decide(&observed(&t));
        assert_eq!(d.outcome, "deploying");
        assert_eq!(
            actions(&d),
            [
                "CreateModel",
                "CreateEndpointConfig",
                "BeginDeployment",
                "UpdateEndpoint"
            ]
        );
        let Action::UpdateEndpoint {
            rollout: Some(r),
            config,
            ..
        } = &d.plan.steps[3].action
        else {
            panic!()
        };
        assert_eq!(
            r.strategy,
            TrafficStrategy::Linear {
                step_percent: 25,
                wait_seconds: 60
            }
        );
        assert_eq!(r.rollback_alarms, ["recs-5xx"]);
        assert_eq!(config, &config_name(&t, &arn(3), 3));
        let Action::CreateEndpointConfig { spec } = &d.plan.steps[1].action else {
            panic!()
        };
        assert_eq!(
            spec.instance_count, 3,
            "the live count (3) is kept over the configured 2"
        );
        assert_eq!(spec.tags[tags::REPLACES], "cfg-v2");
    }

    #[test]
    fn a_missing_endpoint_is_created() {
        let t = target();
        let obs = Observed {
            endpoint: None,
            live_config: None,
            candidates: vec![passing(1)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(
            actions(&d),
            [
                "CreateModel",
                "CreateEndpointConfig",
                "BeginDeployment",
                "CreateEndpoint"
            ]
        );
    }

    #[test]
    fn an_endpoint_serving_the_newest_approved_package_is_left_alone() {
        let t = target();
        let obs = Observed {
            candidates: vec![live(2)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!((d.outcome, d.plan.is_empty()), ("in_sync", true));
    }

    #[test]
    fn when_the_gate_fails_the_package_is_rejected_and_nothing_is_deployed() {
        let t = target();
        let failing = GateReport(vec![GateResult {
            metric: "loss".into(),
            value: Some(0.4),
            min: None,
            max: Some(0.35),
            passed: false,
        }]);
        let obs = Observed {
            candidates: vec![
                Candidate {
                    arn: arn(3),
                    version: 3,
                    gates: Some(failing),
                },
                live(2),
            ],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, "rejected");
        assert_eq!(actions(&d), ["RejectPackage"]);
        let Action::RejectPackage {
            description,
            package_arn,
        } = &d.plan.steps[0].action
        else {
            panic!()
        };
        assert_eq!(package_arn, &arn(3));
        assert!(
            description.contains("loss = 0.4 is above max 0.35"),
            "{description}"
        );
    }

    #[test]
    fn an_updating_endpoint_is_never_touched() {
        let t = target();
        for status in [
            EndpointStatus::Updating,
            EndpointStatus::RollingBack,
            EndpointStatus::Creating,
        ] {
            let obs = Observed {
                endpoint: Some(endpoint(status, "cfg-v2", 1_000)),
                ..observed(&t)
            };
            let d = decide(&obs);
            assert_eq!((d.outcome, d.plan.is_empty()), ("waiting", true));
        }
    }

    fn in_flight(t: &DeploymentTarget, requested_at: i64) -> DeploymentRecord {
        DeploymentRecord {
            endpoint: t.endpoint.clone(),
            config: config_name(t, &arn(3), 3),
            package_arn: arn(3),
            package_version: 3,
            previous_config: Some("cfg-v2".into()),
            requested_at,
            status: DeploymentStatus::InProgress,
            rollback_alarms: t.rollback_alarms.clone(),
            alarms_seen: vec![],
        }
    }

    #[test]
    fn in_service_on_the_requested_config_is_a_success() {
        let t = target();
        let mut cfg = config_serving(3);
        cfg.name = config_name(&t, &arn(3), 3);
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, &cfg.name, 6_000)),
            live_config: Some(cfg),
            candidates: vec![live(3)],
            in_flight: Some(in_flight(&t, 5_000)),
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, "deployed");
        assert_eq!(actions(&d), ["FinishDeployment"]);
    }

    #[test]
    fn in_service_on_the_old_config_after_the_request_is_a_guardrail_rollback() {
        let t = target();
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 6_000)),
            in_flight: Some(in_flight(&t, 5_000)),
            firing_alarms: vec!["recs-5xx".into()],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, "rolled_back");
        assert_eq!(
            actions(&d),
            ["FinishDeployment", "RejectPackage"],
            "v2 is live again: nothing else to do"
        );
        let Action::RejectPackage { description, .. } = &d.plan.steps[1].action else {
            panic!()
        };
        assert!(
            description.contains("guardrails") && description.contains("recs-5xx"),
            "{description}"
        );
    }

    #[test]
    fn an_update_that_never_took_effect_is_requested_again_over_the_same_record() {
        let t = target();
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 1_000)),
            in_flight: Some(in_flight(&t, 5_000)),
            now_ms: 9_000,
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, "deploying");
        let Action::BeginDeployment { expected, .. } = &d.plan.steps[2].action else {
            panic!()
        };
        assert_eq!(*expected, Some(5_000));
    }

    #[test]
    fn rejecting_a_version_that_is_not_live_changes_nothing() {
        let t = target();
        let obs = Observed {
            only_if_live: Some(arn(1)),
            candidates: vec![passing(4), live(2)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!((d.outcome, d.plan.is_empty()), ("ignored", true));
    }

    #[test]
    fn rejecting_the_live_version_brings_back_the_newest_remaining_one() {
        let t = target();
        let mut cfg = config_serving(3);
        cfg.name = "cfg-v3".into();
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v3", 1_000)),
            live_config: Some(cfg),
            only_if_live: Some(arn(3)),
            candidates: vec![passing(2)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, "deploying");
        assert_eq!(d.package, Some(arn(2)));
    }
}
