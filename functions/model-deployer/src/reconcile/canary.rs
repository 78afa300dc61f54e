//! The live KPI canary (README, "A live KPI canary"), one step per reconcile: start it beside the
//! live version, let it bake, judge its KPI against the live variant's, then promote it or go
//! back. Its state is the canary config's tags and the ledger record; a Lambda never sleeps.

use lifecycle::decision::Decision;
use lifecycle::deploy::{self, CanaryEnd, CanaryNow, CanaryStart, Deployment};
use lifecycle::deployment::{Canary, DeploymentRecord, DeploymentStatus};
use lifecycle::endpoints::Endpoint;
use lifecycle::kpi_gate::{self, Judgement, Verdict};
use lifecycle::ledger::millis_rfc3339;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, Plan};
use serde_json::{Value, json};

use super::{Candidate, Observed, modified_since, scaling_unrestorable};

/// A new version goes live beside the live one instead of replacing it, when the target has a
/// `kpi_gate` and what serves is still Approved (replacing a rejected version is a remedy: it
/// does not wait for a canary).
pub(super) fn start(obs: &Observed, desired: &Candidate, plan: &mut Plan) -> Option<Decision> {
    let target = obs.target;
    let gate = target.kpi_gate.as_ref()?;
    let (ep, live_config) = (obs.endpoint.as_ref()?, obs.live_config.as_ref()?);
    let live_package = obs.served.as_ref()?;
    let live = obs.candidates.iter().find(|c| c.gates.is_none())?;
    let variant = match live_variant(obs, ep, live_config) {
        Ok(v) => v,
        Err(why) => {
            let reason = format!(
                "version {} needs a live KPI canary, but {why}; a person must deploy it",
                desired.version
            );
            let d = Decision::new(Outcome::Blocked, reason);
            return Some(d.with_package(Some(desired.arn.clone())));
        }
    };
    let percent = gate.canary_percent;
    let live_count = variant.count;
    let canary = CanaryStart {
        record: Canary {
            variant: target.canary_variant(),
            percent,
            live_variant: variant.name,
            live_package: live_package.clone(),
            live_version: live.version,
        },
        live_model: variant.model,
        live_instance_type: variant.instance_type,
        live_count,
        // In proportion to its share of the traffic, never none.
        candidate_count: ((live_count * percent + 99) / 100).max(1),
    };
    let why = format!(
        "version {} passed its offline gates; it serves {percent}% of the traffic beside version {} for {} min before its KPI is judged",
        desired.version, live.version, gate.bake_minutes
    );
    deploy::plan(
        Deployment {
            target,
            package_arn: &desired.arn,
            version: desired.version,
            endpoint: Some(ep),
            live_config: Some(live_config),
            // A plain update: SageMaker's guardrails need the same variant names in both configs,
            // and the canary is itself the gradual shift. The rollback alarms are watched by
            // every reconcile during it (see `alarm_fired`) and by the alarm responder.
            rollout: None,
            expected: obs.in_flight.as_ref().map(|d| d.requested_at),
            now_ms: obs.now_ms,
            existing_config: None,
            why,
            cause_alarm: None,
            scaling: None,
            canary: Some(canary),
            smoke_due: target.smoke_test.is_some(),
        },
        plan,
    );
    let reason = format!(
        "version {} is live on {percent}% of {}'s traffic as {}; judged on its KPI after {} min",
        desired.version,
        target.endpoint,
        target.canary_variant(),
        gate.bake_minutes
    );
    Some(Decision::new(Outcome::CanaryStarted, reason).with_package(Some(desired.arn.clone())))
}

/// The live variant as it runs, which the canary's config keeps beside the candidate.
struct LiveVariant {
    name: String,
    model: String,
    instance_type: String,
    count: i32,
}

fn live_variant(
    obs: &Observed,
    ep: &Endpoint,
    config: &lifecycle::endpoints::EndpointConfig,
) -> Result<LiveVariant, String> {
    let v = config
        .variant(&obs.target.variant)
        .or(config.variants.first())
        .ok_or(format!("{} has no production variant", config.name))?;
    let name = v.variant_name().unwrap_or_default().to_string();
    let (Some(model), Some(instance_type)) = (v.model_name(), v.instance_type()) else {
        return Err(format!(
            "{name} has no model or no instances (serverless): a canary needs instances beside it"
        ));
    };
    Ok(LiveVariant {
        count: ep
            .instance_count(&name)
            .or(v.initial_instance_count())
            .unwrap_or(1),
        model: model.to_string(),
        instance_type: instance_type.as_str().to_string(),
        name,
    })
}

/// The endpoint serves a canary: its next step. `None` when it serves none.
pub(super) fn step(obs: &Observed) -> Option<Decision> {
    let ep = obs.endpoint.as_ref()?;
    if let Some(d) = config_gone(obs, ep) {
        return Some(d);
    }
    let group = &obs.target.model_package_group;
    let canary = deploy::canary_now(ep, obs.live_config.as_ref(), obs.open_deployment(), group)?;
    let mut evidence = json!({
        "canary": {
            "candidate": canary.candidate,
            "candidate_variant": canary.candidate_variant,
            "live": canary.live_package,
            "live_variant": canary.live_variant,
            "config": ep.config_name,
        }
    });
    let decision = match (&canary.record, obs.open_deployment()) {
        (Some(record), _) => judge_step(obs, ep, &canary, record, &mut evidence),
        (None, Some(other)) => leaving(obs, ep, &canary, other),
        (None, None) => orphaned(obs, ep, &canary),
    };
    Some(
        decision
            .with_package(Some(canary.candidate.clone()))
            .with_evidence(evidence),
    )
}

/// The canary's record is open on the endpoint's config, but the config cannot be described (it
/// was deleted while in use): without its tags the canary cannot be left safely, and it must not
/// be read as a finished deployment of its candidate.
fn config_gone(obs: &Observed, ep: &Endpoint) -> Option<Decision> {
    let d = obs
        .open_deployment()
        .filter(|d| d.config == ep.config_name)?;
    d.open_canary()?;
    if obs
        .live_config
        .as_ref()
        .is_some_and(|c| c.name == ep.config_name)
    {
        return None;
    }
    let why = format!(
        "{} serves the canary of version {} on {}, which cannot be described (deleted?): a person must put the live version back",
        ep.name, d.package_version, ep.config_name
    );
    Some(Decision::new(Outcome::Blocked, why).with_package(Some(d.package_arn.clone())))
}

/// The canary's own record is open: stop it, let it bake, or judge it.
fn judge_step(
    obs: &Observed,
    ep: &Endpoint,
    canary: &CanaryNow,
    record: &DeploymentRecord,
    evidence: &mut Value,
) -> Decision {
    let version = canary.candidate_version;
    let waiting = newer_approvals(obs, canary);
    let end = |why: String, cause_alarm, inconclusive| {
        end_of(obs, record, why, cause_alarm, inconclusive)
    };
    let gate = match before_the_bake(obs, ep, canary, record) {
        Ok(gate) => gate,
        Err(stop) => return *stop,
    };
    let live_at = match baked(obs, ep, record, gate, &waiting) {
        Ok(live_at) => live_at,
        Err(baking) => return *baking,
    };
    let judgement = match &obs.kpi {
        Some(Ok([live, candidate])) => kpi_gate::judge(&gate.bounds(), *live, *candidate),
        Some(Err(why)) => unread(why),
        None => unread("it was not read"),
    };
    evidence["kpi"] = json!(judgement);
    let stop_at = live_at + gate.max_bake() * 60_000;
    match &judgement.verdict {
        Verdict::Pass => {
            let why = format!(
                "version {version} passed its live KPI canary ({} against {}, p = {}): promoted to all the traffic",
                judgement.candidate.value,
                judgement.live.value,
                judgement
                    .p_value
                    .map_or("n/a".into(), |p| format!("{p:.4}"))
            );
            promote(obs, ep, canary, record, why)
        }
        Verdict::Fail { why } => {
            let why = format!("version {version} failed its live KPI canary: {why}");
            failed(obs, ep, canary, end(why, None, false), Some(&judgement))
        }
        Verdict::Inconclusive { why } if obs.now_ms < stop_at => {
            let reason = format!(
                "version {version} cannot be judged yet ({why}); it bakes until {} at most{waiting}",
                millis_rfc3339(stop_at)
            );
            Decision::new(Outcome::CanaryBaking, reason)
        }
        Verdict::Inconclusive { why } => {
            let why = format!(
                "version {version} could not be judged in {} min ({why}): its canary is stopped; it stays Approved and is not tried again until a person approves another version or rejects it",
                gate.max_bake()
            );
            let reason = format!("{why}{waiting}");
            let d = stopped(obs, ep, canary, end(why, None, true));
            Decision {
                outcome: Outcome::CanaryInconclusive,
                reason,
                ..d
            }
        }
    }
}

/// How a canary ends, timed now and replacing its record.
fn end_of(
    obs: &Observed,
    record: &DeploymentRecord,
    why: String,
    cause_alarm: Option<String>,
    inconclusive: bool,
) -> CanaryEnd {
    CanaryEnd {
        why,
        cause_alarm,
        inconclusive,
        expected: Some(record.requested_at),
        now_ms: obs.now_ms,
    }
}

/// What ends a canary before its KPI is judged: the gate removed, the candidate or the live
/// version no longer Approved, a rollback alarm, its smoke test. `Ok`: the gate to judge it by.
fn before_the_bake<'o>(
    obs: &'o Observed,
    ep: &Endpoint,
    canary: &CanaryNow,
    record: &DeploymentRecord,
) -> Result<&'o lifecycle::kpi_gate::KpiGate, Box<Decision>> {
    let version = canary.candidate_version;
    let end = |why: String, cause_alarm, inconclusive| {
        end_of(obs, record, why, cause_alarm, inconclusive)
    };
    let Some(gate) = obs.target.kpi_gate.as_ref() else {
        let why = format!(
            "the target has no kpi_gate any more: the canary of version {version} is stopped, not judged; the next reconcile deploys the newest version as the target says"
        );
        return Err(Box::new(stopped(obs, ep, canary, end(why, None, false))));
    };
    let approved = |arn: &str| obs.approved.iter().any(|a| a == arn);
    if !approved(&canary.candidate) {
        let why = format!("version {version} is no longer Approved: its canary is stopped");
        return Err(Box::new(stopped(obs, ep, canary, end(why, None, false))));
    }
    if !approved(&canary.live_package) {
        // Going back would serve a rejected version to everyone: replacing it is the remedy,
        // as it is without a canary.
        let why = format!(
            "version {} was rejected during the canary: version {version} replaces it as a remedy, unjudged",
            canary.live_version
        );
        return Err(Box::new(promote(obs, ep, canary, record, why)));
    }
    if let Some(alarm) = alarm_fired(obs, record) {
        let why = format!(
            "{alarm} fired during the canary of version {version} (started {})",
            millis_rfc3339(record.requested_at)
        );
        let d = failed(obs, ep, canary, end(why, Some(alarm), false), None);
        return Err(Box::new(d));
    }
    // Its smoke test runs on the candidate's variant as the canary goes live, before the bake
    // (which starts only once it has passed).
    match obs.smoke.as_ref().map(|s| &s.run) {
        Some(Ok(run)) if !run.passed() => {
            let why = format!("version {version}: {}", run.describe());
            let d = failed(obs, ep, canary, end(why, None, false), None);
            Err(Box::new(Decision {
                outcome: Outcome::SmokeFailed,
                ..d
            }))
        }
        Some(Err(_)) => Err(Box::new(
            super::smoke::unjudged(obs).expect("an unjudged smoke test"),
        )),
        _ => Ok(gate),
    }
}

/// When the canary went live, once its bake is over; before, the baking decision (the first one
/// records when it went live).
fn baked(
    obs: &Observed,
    ep: &Endpoint,
    record: &DeploymentRecord,
    gate: &lifecycle::kpi_gate::KpiGate,
    waiting: &str,
) -> Result<i64, Box<Decision>> {
    let version = record.package_version;
    let Some(live_at) = record.live_at else {
        let mut plan = Plan::default();
        plan.push(
            Action::MarkLive {
                endpoint: record.endpoint.clone(),
                requested_at: record.requested_at,
                at: obs.now_ms,
            },
            format!(
                "{} is InService with the canary: its bake starts now",
                ep.name
            ),
        );
        let reason = format!(
            "version {version} went live on {}% of the traffic; judged after {} min{waiting}",
            canary_percent(record),
            gate.bake_minutes
        );
        return Err(Box::new(
            Decision::new(Outcome::CanaryBaking, reason).with_plan(plan),
        ));
    };
    let judged_at = live_at + gate.bake_minutes * 60_000;
    if obs.now_ms < judged_at {
        let reason = format!(
            "version {version} bakes on {}% of the traffic until {}{waiting}",
            canary_percent(record),
            millis_rfc3339(judged_at)
        );
        return Err(Box::new(Decision::new(Outcome::CanaryBaking, reason)));
    }
    Ok(live_at)
}

/// A KPI that could not be read is no evidence either way.
fn unread(why: &str) -> Judgement {
    let nothing = kpi_gate::Sample {
        value: f64::NAN,
        samples: 0.0,
    };
    Judgement {
        verdict: Verdict::Inconclusive {
            why: format!("the KPI could not be read: {why}"),
        },
        live: nothing,
        candidate: nothing,
        test: "none",
        p_value: None,
    }
}

fn canary_percent(record: &DeploymentRecord) -> i32 {
    record.canary.as_ref().map_or(0, |c| c.percent)
}

/// A rollback alarm of the target that went into ALARM since the canary started.
fn alarm_fired(obs: &Observed, record: &DeploymentRecord) -> Option<String> {
    obs.alarms
        .iter()
        .find(|a| a.in_alarm && !a.missing && a.changed_since(record.requested_at))
        .map(|a| a.name.clone())
}

/// "; version 5 waits for the verdict", when newer versions were approved during the canary.
fn newer_approvals(obs: &Observed, canary: &CanaryNow) -> String {
    let newer: Vec<String> = obs
        .candidates
        .iter()
        .filter(|c| c.version > canary.candidate_version)
        .map(|c| c.version.to_string())
        .collect();
    match newer.len() {
        0 => String::new(),
        1 => format!("; version {} waits for the verdict", newer[0]),
        _ => format!("; versions {} wait for the verdict", newer.join(", ")),
    }
}

/// Passed: the candidate takes all the traffic alone, as the target says (its variant, count and
/// autoscaling). A plain update, as the start was (the variant names change).
fn promote(
    obs: &Observed,
    ep: &Endpoint,
    canary: &CanaryNow,
    record: &DeploymentRecord,
    why: String,
) -> Decision {
    let candidate = Candidate {
        arn: canary.candidate.clone(),
        version: canary.candidate_version,
        gates: None,
        unreadable: None,
    };
    if let Some(blocked) = scaling_unrestorable(obs, &candidate) {
        return blocked;
    }
    let mut plan = Plan::default();
    deploy::plan(
        Deployment {
            target: obs.target,
            package_arn: &canary.candidate,
            version: canary.candidate_version,
            endpoint: Some(ep),
            live_config: obs.live_config.as_ref(),
            rollout: None,
            expected: Some(record.requested_at),
            now_ms: obs.now_ms,
            existing_config: None,
            why: why.clone(),
            cause_alarm: None,
            scaling: obs.scaling.clone(),
            canary: None,
            smoke_due: false,
        },
        &mut plan,
    );
    Decision::new(Outcome::CanaryPassed, why).with_plan(plan)
}

/// Failed (its KPI, or an alarm): the candidate is Rejected with the evidence, then the live
/// version serves alone again. Reject first: a crash between the two leaves the canary to be
/// stopped by the next reconcile (no longer Approved), never a rejection forgotten.
fn failed(
    obs: &Observed,
    ep: &Endpoint,
    canary: &CanaryNow,
    end: CanaryEnd,
    judgement: Option<&Judgement>,
) -> Decision {
    let mut description = format!(
        "Rejected by the live KPI canary on {}: {}.",
        ep.name, end.why
    );
    if let Some(j) = judgement {
        description.push_str(&format!(
            " Live {}: {} over {} samples; candidate {}: {} over {} samples; test: {}; p-value: {}.",
            canary.live_variant,
            j.live.value,
            j.live.samples,
            canary.candidate_variant,
            j.candidate.value,
            j.candidate.samples,
            j.test,
            j.p_value.map_or("n/a".into(), |p| format!("{p:.6}"))
        ));
    }
    let mut plan = Plan::default();
    plan.push(
        Action::RejectPackage {
            package_arn: canary.candidate.clone(),
            description: description.clone(),
        },
        description,
    );
    let reason = format!("{}; back to version {} alone", end.why, canary.live_version);
    deploy::end_canary(
        obs.target,
        ep,
        obs.live_config.as_ref(),
        canary,
        end,
        &mut plan,
    );
    Decision::new(Outcome::CanaryFailed, reason).with_plan(plan)
}

/// Stopped without a verdict on the candidate (it was rejected by hand, the gate removed).
fn stopped(obs: &Observed, ep: &Endpoint, canary: &CanaryNow, end: CanaryEnd) -> Decision {
    let reason = format!("{}; back to version {} alone", end.why, canary.live_version);
    let mut plan = Plan::default();
    deploy::end_canary(
        obs.target,
        ep,
        obs.live_config.as_ref(),
        canary,
        end,
        &mut plan,
    );
    Decision::new(Outcome::CanaryStopped, reason).with_plan(plan)
}

/// On the canary's config with another deployment open: the promotion or the stop that leaves
/// it has not taken effect. SageMaker ran it and it ended here: a person looks (the canary still
/// serves). Else the call failed or its answer was lost: made again, over the same record.
fn leaving(
    obs: &Observed,
    ep: &Endpoint,
    canary: &CanaryNow,
    other: &DeploymentRecord,
) -> Decision {
    let to = if other.package_arn == canary.candidate {
        "the promotion"
    } else {
        "the return to the live version"
    };
    if other.confirmed && modified_since(ep, other.requested_at) {
        let why = format!(
            "{to} from the canary of version {} ended back on {} (SageMaker's update failed): the canary still serves; a person must look",
            canary.candidate_version, ep.config_name
        );
        let mut plan = Plan::default();
        plan.push(
            Action::FinishDeployment {
                endpoint: other.endpoint.clone(),
                requested_at: other.requested_at,
                status: DeploymentStatus::Failed,
            },
            why.clone(),
        );
        return Decision::new(Outcome::UpdateFailed, why).with_plan(plan);
    }
    let why = format!(
        "{to} from the canary of version {} did not take effect (a failed call or a lost answer): made again",
        canary.candidate_version
    );
    let mut plan = Plan::default();
    deploy::plan(
        Deployment {
            target: obs.target,
            package_arn: &other.package_arn,
            version: other.package_version,
            endpoint: Some(ep),
            live_config: obs.live_config.as_ref(),
            rollout: None,
            expected: Some(other.requested_at),
            now_ms: obs.now_ms,
            existing_config: Some(other.config.clone()),
            why: why.clone(),
            cause_alarm: other.cause_alarm.clone(),
            scaling: other.scaling.clone(),
            canary: None,
            smoke_due: other.smoke_due,
        },
        &mut plan,
    );
    // The record it replaces keeps what it knew (an inconclusive stop stays inconclusive).
    for step in &mut plan.steps {
        if let Action::BeginDeployment { record, .. } = &mut step.action {
            record.inconclusive = other.inconclusive.clone();
        }
    }
    let outcome = match other.package_arn == canary.candidate {
        true => Outcome::CanaryPassed,
        false => Outcome::CanaryStopped,
    };
    Decision::new(outcome, why).with_plan(plan)
}

/// On a canary's config with no open record: the record was lost or closed by hand, so the bake
/// cannot be timed. Back to the live version; the next reconcile starts afresh. After a failed
/// attempt to leave it, nothing is tried again: a person looks.
fn orphaned(obs: &Observed, ep: &Endpoint, canary: &CanaryNow) -> Decision {
    let last = obs.in_flight.as_ref();
    if let Some(d) = last.filter(|d| d.status == DeploymentStatus::Failed) {
        let why = format!(
            "the update to {} from the canary of version {} failed in SageMaker: the canary still serves; a person must look",
            d.config, canary.candidate_version
        );
        return Decision::new(Outcome::UpdateFailed, why);
    }
    let end = CanaryEnd {
        why: format!(
            "{} serves a canary of version {} with no open ledger record (lost, or closed by hand): its bake cannot be timed; stopped",
            ep.name, canary.candidate_version
        ),
        cause_alarm: None,
        inconclusive: false,
        expected: last.map(|d| d.requested_at),
        now_ms: obs.now_ms,
    };
    stopped(obs, ep, canary, end)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        actions, arn, config_serving, endpoint, in_flight, live, observed, passing, target,
    };
    use super::super::{AlarmNow, config_name, decide};
    use super::*;
    use aws_sdk_sagemaker::types::{ProductionVariant, ProductionVariantInstanceType};
    use lifecycle::endpoints::{EndpointConfig, EndpointStatus, tags};
    use lifecycle::kpi_gate::Sample;
    use lifecycle::plan::ActionKind;
    use lifecycle::targets::DeploymentTarget;

    /// When the canary was requested; it went live a minute later.
    const REQUESTED: i64 = 10_000_000;
    const LIVE: i64 = REQUESTED + 60_000;
    const BAKED: i64 = LIVE + 30 * 60_000;
    const MAX_BAKE: i64 = LIVE + 120 * 60_000;

    fn gated() -> DeploymentTarget {
        let mut t = target();
        t.kpi_gate = Some(
            serde_json::from_str(
                r#"{"metric": {"namespace": "Recs", "name": "ClickThroughRate", "stat": "Average"},
                    "samples": {"namespace": "Recs", "name": "Impressions", "stat": "Sum"},
                    "min_samples": 1000}"#,
            )
            .unwrap(),
        );
        t
    }

    fn variant(name: &str, model: &str, count: i32) -> ProductionVariant {
        ProductionVariant::builder()
            .variant_name(name)
            .model_name(model)
            .instance_type(ProductionVariantInstanceType::from("ml.m5.xlarge"))
            .initial_instance_count(count)
            .build()
    }

    fn live_config() -> EndpointConfig {
        EndpointConfig {
            variants: vec![variant("AllTraffic", "recs-v2-model", 3)],
            ..config_serving(2)
        }
    }

    fn canary_config(t: &DeploymentTarget) -> EndpointConfig {
        let mut c = live_config();
        c.name = deploy::canary_config_name(t, &arn(3), 3, "cfg-v2", 10);
        c.variants
            .push(variant("AllTraffic-canary", "recs-v3-model", 1));
        for (k, v) in [
            (tags::CANARY_PACKAGE, arn(3)),
            (tags::CANARY_VARIANT, "AllTraffic-canary".into()),
            (tags::PACKAGE_VERSION, "2".into()),
            (tags::REPLACES, "cfg-v2".into()),
        ] {
            c.tags.insert(k.to_string(), v);
        }
        c
    }

    fn canary_record(t: &DeploymentTarget, live_at: Option<i64>) -> DeploymentRecord {
        DeploymentRecord {
            config: canary_config(t).name,
            canary: Some(Canary {
                variant: "AllTraffic-canary".into(),
                percent: 10,
                live_variant: "AllTraffic".into(),
                live_package: arn(2),
                live_version: 2,
            }),
            live_at,
            ..in_flight(t, REQUESTED)
        }
    }

    /// The endpoint InService with the canary, its record open.
    fn on_canary(t: &DeploymentTarget, live_at: Option<i64>, now_ms: i64) -> Observed<'_> {
        let cfg = canary_config(t);
        Observed {
            endpoint: Some(endpoint(
                EndpointStatus::InService,
                &cfg.name,
                REQUESTED + 50_000,
            )),
            live_config: Some(cfg),
            in_flight: Some(canary_record(t, live_at)),
            now_ms,
            ..observed(t)
        }
    }

    fn kpi(live: f64, candidate: f64, samples: f64) -> Option<Result<[Sample; 2], String>> {
        let s = |value| Sample { value, samples };
        Some(Ok([s(live), s(candidate)]))
    }

    fn update_to(d: &Decision) -> (&str, bool) {
        d.plan
            .steps
            .iter()
            .find_map(|s| match &s.action {
                Action::UpdateEndpoint {
                    config, rollout, ..
                } => Some((config.as_str(), rollout.is_some())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no UpdateEndpoint: {:?}", d.plan))
    }

    fn begun(d: &Decision) -> (&DeploymentRecord, Option<i64>) {
        d.plan
            .steps
            .iter()
            .find_map(|s| match &s.action {
                Action::BeginDeployment { record, expected } => Some((&**record, *expected)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no BeginDeployment: {:?}", d.plan))
    }

    #[test]
    fn a_version_that_passes_its_offline_gates_starts_as_a_canary_beside_the_live_one() {
        let t = gated();
        let obs = Observed {
            live_config: Some(live_config()),
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryStarted, "{}", d.reason);
        let Action::CreateEndpointConfig { spec } = &d.plan.steps[1].action else {
            panic!("{:?}", d.plan)
        };
        // The live variant as it runs (3 instances, its own model), the candidate on 10% of the
        // traffic with 1 instance (3 x 10%, rounded up).
        assert_eq!(
            (
                spec.variant.as_str(),
                spec.model.as_str(),
                spec.instance_count
            ),
            ("AllTraffic", "recs-v2-model", 3)
        );
        let c = spec.canary.as_ref().unwrap();
        assert_eq!(
            (c.variant.as_str(), c.percent, c.instance_count),
            ("AllTraffic-canary", 10, 1)
        );
        assert_eq!(
            spec.tags[tags::PACKAGE_ARN],
            arn(2),
            "readers still see v2 serve"
        );
        assert_eq!(spec.tags[tags::CANARY_PACKAGE], arn(3));
        assert_eq!(spec.tags[tags::REPLACES], "cfg-v2");
        let (record, _) = begun(&d);
        assert_eq!(record.canary.as_ref().map(|c| c.percent), Some(10));
        assert_eq!(record.package_arn, arn(3));
        // Different variant names: SageMaker's guardrails cannot run it, a plain update does.
        assert_eq!(update_to(&d), (spec.name.as_str(), false));
    }

    #[test]
    fn a_remedy_for_a_rejected_live_version_is_no_canary() {
        let t = gated();
        let obs = Observed {
            live_config: Some(live_config()),
            candidates: vec![passing(3)], // v2 serves but is no longer Approved
            ..observed(&t)
        };
        assert_eq!(decide(&obs).outcome, Outcome::Deploying);
    }

    #[test]
    fn a_canary_bakes_from_when_it_went_live_and_changes_nothing_meanwhile() {
        let t = gated();
        let d = decide(&on_canary(&t, None, REQUESTED + 55_000));
        assert_eq!(d.outcome, Outcome::CanaryBaking);
        assert_eq!(actions(&d), [ActionKind::MarkLive]);
        let d = decide(&on_canary(&t, Some(LIVE), BAKED - 1));
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::CanaryBaking, true)
        );
        assert_eq!(d.package.as_deref(), Some(arn(3).as_str()));
    }

    #[test]
    fn a_candidate_that_fails_its_smoke_test_on_its_variant_never_bakes() {
        let t = gated();
        let smoke = |status| super::super::Smoke {
            run: Ok(super::super::tests::smoke_run(
                status,
                Some("AllTraffic-canary"),
            )),
            back: None,
        };
        let obs = Observed {
            smoke: Some(smoke(500)),
            ..on_canary(&t, None, REQUESTED + 55_000)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::SmokeFailed, "{}", d.reason);
        let Action::RejectPackage {
            package_arn,
            description,
        } = &d.plan.steps[0].action
        else {
            panic!("reject first: {:?}", d.plan)
        };
        assert_eq!(package_arn, &arn(3));
        assert!(
            description.contains("variant AllTraffic-canary failed (status 500"),
            "{description}"
        );
        assert_eq!(update_to(&d), ("cfg-v2", false));
        let obs = Observed {
            smoke: Some(smoke(200)),
            ..on_canary(&t, None, REQUESTED + 55_000)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryBaking);
        assert_eq!(actions(&d), [ActionKind::MarkLive]);
    }

    #[test]
    fn a_candidate_not_worse_is_promoted_alone_to_the_targets_variant() {
        let t = gated();
        let obs = Observed {
            kpi: kpi(0.084, 0.085, 20_000.0),
            ..on_canary(&t, Some(LIVE), BAKED)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryPassed, "{}", d.reason);
        assert_eq!(update_to(&d), (config_name(&t, &arn(3), 3).as_str(), false));
        let (record, expected) = begun(&d);
        assert_eq!((record.canary.is_none(), expected), (true, Some(REQUESTED)));
        assert_eq!(d.evidence["kpi"]["verdict"]["verdict"], json!("pass"));
        assert!(!d.plan.has(ActionKind::RejectPackage));
    }

    #[test]
    fn the_seeds_regression_is_rejected_with_its_evidence_and_the_live_version_serves_alone() {
        let t = gated();
        let obs = Observed {
            kpi: kpi(0.084, 0.071, 20_000.0),
            ..on_canary(&t, Some(LIVE), BAKED)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryFailed, "{}", d.reason);
        let Action::RejectPackage {
            package_arn,
            description,
        } = &d.plan.steps[0].action
        else {
            panic!("reject first: {:?}", d.plan)
        };
        assert_eq!(package_arn, &arn(3));
        for part in ["0.084", "0.071", "20000", "two-proportion", "p-value"] {
            assert!(description.contains(part), "{part} in {description}");
        }
        // Back to the live config as it was: nothing new is made.
        assert_eq!(update_to(&d), ("cfg-v2", false));
        assert!(!d.plan.has(ActionKind::CreateEndpointConfig));
        assert_eq!(begun(&d).0.package_arn, arn(2));
    }

    #[test]
    fn too_few_samples_bake_on_until_the_limit_then_a_person_is_asked() {
        let t = gated();
        let quiet = |now| Observed {
            kpi: kpi(0.084, 0.085, 200.0),
            ..on_canary(&t, Some(LIVE), now)
        };
        let d = decide(&quiet(BAKED));
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::CanaryBaking, true)
        );
        assert!(d.reason.contains("200 of 1000 samples"), "{}", d.reason);
        let d = decide(&quiet(MAX_BAKE));
        assert_eq!(d.outcome, Outcome::CanaryInconclusive, "{}", d.reason);
        assert!(
            !d.plan.has(ActionKind::RejectPackage),
            "inconclusive is no fail"
        );
        assert_eq!(begun(&d).0.inconclusive.as_deref(), Some(arn(3).as_str()));
        assert_eq!(update_to(&d).0, "cfg-v2");
        // An unreadable KPI is no pass either.
        let obs = Observed {
            kpi: Some(Err("AccessDenied".into())),
            ..on_canary(&t, Some(LIVE), MAX_BAKE)
        };
        assert_eq!(decide(&obs).outcome, Outcome::CanaryInconclusive);
    }

    #[test]
    fn an_inconclusive_candidate_is_not_tried_again_but_a_newer_one_is() {
        let t = gated();
        let mut stop = in_flight(&t, REQUESTED);
        (stop.config, stop.package_arn, stop.package_version) = ("cfg-v2".into(), arn(2), 2);
        stop.status = DeploymentStatus::Succeeded;
        stop.inconclusive = Some(arn(3));
        let obs = Observed {
            live_config: Some(live_config()),
            in_flight: Some(stop),
            ..observed(&t)
        };
        assert_eq!(decide(&obs).outcome, Outcome::BackingOff);
        let newer = Observed {
            candidates: vec![passing(4), passing(3), live(2)],
            ..obs
        };
        assert_eq!(decide(&newer).outcome, Outcome::CanaryStarted);
    }

    #[test]
    fn an_alarm_during_the_canary_fails_it_and_names_the_alarm_as_the_cause() {
        let t = gated();
        let obs = Observed {
            alarms: vec![AlarmNow {
                name: "recs-5xx".into(),
                in_alarm: true,
                missing: false,
                since: time::OffsetDateTime::from_unix_timestamp(REQUESTED / 1000 + 600).ok(),
            }],
            ..on_canary(&t, Some(LIVE), LIVE + 60_000)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryFailed, "{}", d.reason);
        assert_eq!(d.plan.steps[0].action.kind(), ActionKind::RejectPackage);
        assert_eq!(begun(&d).0.cause_alarm.as_deref(), Some("recs-5xx"));
    }

    #[test]
    fn a_newer_approval_waits_for_the_verdict() {
        let t = gated();
        let obs = Observed {
            candidates: vec![passing(4), passing(3), live(2)],
            ..on_canary(&t, Some(LIVE), LIVE + 60_000)
        };
        let d = decide(&obs);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::CanaryBaking, true)
        );
        assert!(
            d.reason.contains("version 4 waits for the verdict"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_candidate_rejected_by_hand_or_a_lost_record_stops_the_canary_without_blame() {
        let t = gated();
        let rejected = Observed {
            candidates: vec![live(2)],
            approved: vec![arn(2)],
            ..on_canary(&t, Some(LIVE), LIVE + 60_000)
        };
        let lost = Observed {
            in_flight: None,
            ..on_canary(&t, Some(LIVE), LIVE + 60_000)
        };
        for obs in [rejected, lost] {
            let d = decide(&obs);
            assert_eq!(d.outcome, Outcome::CanaryStopped, "{}", d.reason);
            assert!(!d.plan.has(ActionKind::RejectPackage));
            assert_eq!(update_to(&d).0, "cfg-v2");
        }
    }

    #[test]
    fn a_promotion_that_did_not_take_effect_is_made_again_and_one_sagemaker_failed_needs_a_person()
    {
        let t = gated();
        let promotion = DeploymentRecord {
            config: config_name(&t, &arn(3), 3),
            requested_at: BAKED,
            confirmed: false,
            ..in_flight(&t, BAKED)
        };
        let obs = Observed {
            in_flight: Some(promotion.clone()),
            ..on_canary(&t, Some(LIVE), BAKED + 60_000)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryPassed, "{}", d.reason);
        assert_eq!(begun(&d).1, Some(BAKED));
        assert_eq!(update_to(&d).0, promotion.config);
        let failed = Observed {
            in_flight: Some(DeploymentRecord {
                confirmed: true,
                ..promotion
            }),
            endpoint: Some(endpoint(
                EndpointStatus::InService,
                &canary_config(&t).name,
                BAKED + 30_000,
            )),
            ..obs
        };
        let d = decide(&failed);
        assert_eq!(d.outcome, Outcome::UpdateFailed, "{}", d.reason);
        assert_eq!(actions(&d), [ActionKind::FinishDeployment]);
    }

    #[test]
    fn a_candidate_past_the_cap_of_judged_versions_still_counts_as_approved() {
        let t = gated();
        let obs = Observed {
            // Five newer approvals: the candidate is not among the judged ones, but Approved.
            candidates: (4..9).rev().map(passing).collect(),
            approved: (2..9).rev().map(arn).collect(),
            ..on_canary(&t, Some(LIVE), LIVE + 60_000)
        };
        let d = decide(&obs);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::CanaryBaking, true),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_live_version_rejected_during_the_canary_is_replaced_not_gone_back_to() {
        let t = gated();
        let obs = Observed {
            candidates: vec![passing(3)],
            approved: vec![arn(3)],
            ..on_canary(&t, Some(LIVE), LIVE + 60_000)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::CanaryPassed, "{}", d.reason);
        assert!(d.reason.contains("remedy"), "{}", d.reason);
        assert_eq!(update_to(&d).0, config_name(&t, &arn(3), 3));
    }

    #[test]
    fn a_canary_config_that_cannot_be_described_needs_a_person() {
        let t = gated();
        let obs = Observed {
            live_config: None,
            ..on_canary(&t, Some(LIVE), BAKED)
        };
        let d = decide(&obs);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::Blocked, true),
            "{}",
            d.reason
        );
    }

    #[test]
    fn tags_naming_another_groups_packages_are_no_canary() {
        let t = gated();
        let obs = on_canary(&t, Some(LIVE), BAKED);
        let ep = obs.endpoint.clone().unwrap();
        let mut cfg = obs.live_config.clone().unwrap();
        let group = &t.model_package_group;
        assert!(deploy::canary_now(&ep, Some(&cfg), None, group).is_some());
        cfg.tags.insert(
            tags::CANARY_PACKAGE.into(),
            "arn:aws:sagemaker:us-east-1:123456789012:model-package/payments/9".into(),
        );
        assert!(deploy::canary_now(&ep, Some(&cfg), None, group).is_none());
    }
}
