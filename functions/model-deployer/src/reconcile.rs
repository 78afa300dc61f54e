//! The deployer's decision: compare what the registry wants with what the endpoint serves, and
//! plan one step toward it. Pure: everything it needs was observed before.
//!
//! [`decide`] walks four named steps, each its own function with its own tests:
//! [`relevant`] (does a non-approval event concern what is live?), [`endpoint_owner`] (is
//! SageMaker or a person in charge of the endpoint?), [`verdict`] (how did the deployment in
//! flight end?), [`choose`] (the newest approved package that passes its gates), and then
//! in sync, or one deployment step.

use lifecycle::decision::Decision;
use lifecycle::deploy::{self, Deployment};
use lifecycle::deployment::{DeploymentRecord, DeploymentStatus};
use lifecycle::endpoints::{Endpoint, EndpointConfig, EndpointStatus, RolloutSpec};
use lifecycle::ledger::millis_rfc3339;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, ActionKind, Plan};
use lifecycle::targets::DeploymentTarget;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::gates::GateReport;

mod canary;
mod capacity;
mod smoke;
mod staging;

/// An Approved package of the target's group.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub arn: String,
    pub version: i64,
    /// `None` for the package the endpoint serves now: it is live and is not gated again.
    pub gates: Option<GateReport>,
    /// Why its evaluation report could not be read, when a gate needed it: it cannot be judged.
    pub unreadable: Option<String>,
}

/// One rollback alarm as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmNow {
    pub name: String,
    /// In ALARM, or not found (a rollback alarm that does not exist guards nothing).
    pub in_alarm: bool,
    pub missing: bool,
    /// When it entered its current state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
}

impl AlarmNow {
    /// Whether its state changed during a shift that began at `ms` (epoch milliseconds). To the
    /// second: CloudWatch's timestamps may carry no more, and within the second the request was
    /// made the change counts as during it.
    fn changed_since(&self, ms: i64) -> bool {
        self.since
            .is_some_and(|t| t.unix_timestamp() >= ms.div_euclid(1000))
    }
}

/// Everything the decision needs, read from AWS beforehand.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub target: &'a DeploymentTarget,
    pub endpoint: Option<Endpoint>,
    /// The config the endpoint is on now, with its tags.
    pub live_config: Option<EndpointConfig>,
    /// The package the live config serves (its tag, or its model's package).
    pub served: Option<String>,
    /// Approved packages, newest first, down to the one the endpoint serves.
    pub candidates: Vec<Candidate>,
    pub in_flight: Option<DeploymentRecord>,
    /// The state of the target's rollback alarms now, and since when.
    pub alarms: Vec<AlarmNow>,
    /// The target's managed guardrail alarms that exist, as they are defined now.
    pub guardrails: Vec<lifecycle::guardrails::LiveAlarm>,
    /// Its managed alarms no bound declares any more (a bound removed, a variant renamed).
    pub leftover_alarms: Vec<String>,
    /// After a rollback by the responder, not checked yet: the alarm that caused it, now.
    pub cause: Option<AlarmNow>,
    /// The live variant's autoscaling, when the next update must deregister it first.
    pub scaling: Option<lifecycle::scaling::Snapshot>,
    /// For a non-Approved registry event: act only if this package is served or in flight.
    pub only_if_live: Option<String>,
    /// A canary's KPI over its bake, live variant first, once the bake is over (or why it could
    /// not be read).
    pub kpi: Option<std::result::Result<[lifecycle::kpi_gate::Sample; 2], String>>,
    /// Every Approved package, newest first, down to the one served (not capped like
    /// `candidates`).
    pub approved: Vec<String>,
    /// The target variant's autoscaling now, for a target that declares its capacity.
    pub capacity: Option<lifecycle::capacity::CapacityNow>,
    /// For a target that promotes after another: that target's state.
    pub staging: Option<Staging>,
    /// The target's smoke test, when a version has just gone live: run once, before its verdict.
    pub smoke: Option<Smoke>,
    pub now_ms: i64,
}

/// A smoke test run, and where a plain update that failed it goes back to.
#[derive(Debug, Clone)]
pub struct Smoke {
    /// The run, or why the model's answer could not be had (nothing is judged then).
    pub run: Result<lifecycle::smoke::SmokeRun, String>,
    /// Read only when it failed, on a plain update: the config it replaced, if still there.
    pub back: Option<WayBack>,
}

/// The config a deployment replaced and the version it serves.
#[derive(Debug, Clone)]
pub struct WayBack {
    pub config: String,
    pub package_arn: String,
    pub version: i64,
}

impl Observed<'_> {
    fn served_package(&self) -> Option<&str> {
        self.served.as_deref()
    }

    fn open_deployment(&self) -> Option<&DeploymentRecord> {
        self.in_flight
            .as_ref()
            .filter(|d| d.status == DeploymentStatus::InProgress)
    }
}

pub use lifecycle::deploy::config_name;

/// The target a version must soak on first, as its ledger and rollback alarms say.
#[derive(Debug, Clone)]
pub struct Staging {
    pub endpoint: String,
    /// Its current (or last) deployment.
    pub record: Option<DeploymentRecord>,
    /// The versions that served it, the most recent first.
    pub served: Vec<lifecycle::ledger::Served>,
    /// Its rollback and KPI alarms now.
    pub alarms: Vec<AlarmNow>,
}

/// What the steps so far have planned and learned, carried into the next step.
#[derive(Debug, Default)]
struct Progress {
    plan: Plan,
    /// What just happened, for the front of the reason: a verdict, gate rejections.
    news: Vec<String>,
    /// The verdict on the deployment in flight, when there was one to give.
    verdict: Option<Outcome>,
    /// Packages the verdict disqualified (a guardrail rollback).
    excluded: Vec<String>,
    /// `requested_at` of the record the next BeginDeployment must find (or replace).
    expected: Option<i64>,
    /// Why the newest approved package cannot be judged: nothing is deployed until it can.
    unjudged: Option<String>,
}

pub fn decide(obs: &Observed) -> Decision {
    let d = settle_scaling(obs, decide_step(obs));
    // Capacity last: an ApplyCapacity that fails (a time zone AAS refuses) holds up nothing.
    capacity::ensure(obs, ensure_guardrails(obs, d))
}

/// The target's managed guardrail alarms, made or put back first in the plan: a deployment in
/// the same plan names them as rollback alarms, and a hand change to one is undone with its
/// before and after in the reason.
fn ensure_guardrails(obs: &Observed, mut d: Decision) -> Decision {
    let mut plan = Plan::default();
    for spec in &obs.target.managed_alarms {
        let why = match obs.guardrails.iter().find(|a| a.name == spec.name) {
            None => format!(
                "guardrail alarm {} does not exist: made from the target's guardrails",
                spec.name
            ),
            Some(live) => match spec.differs(live) {
                None => continue,
                Some(change) => format!(
                    "guardrail alarm {} differs from the target's guardrails ({change}): put back",
                    spec.name
                ),
            },
        };
        let alarm = Box::new(spec.clone());
        plan.push(Action::PutAlarm { alarm }, why);
    }
    for name in &obs.leftover_alarms {
        let why = format!(
            "managed alarm {name} is declared by no bound of the target's guardrails now: deleted, so it neither pages nor rolls back"
        );
        let name = name.clone();
        plan.push(Action::DeleteAlarm { name }, why);
    }
    if plan.steps.is_empty() {
        return d;
    }
    let names: Vec<String> = plan
        .steps
        .iter()
        .map(|s| match &s.action {
            Action::PutAlarm { alarm } => alarm.name.clone(),
            Action::DeleteAlarm { name } => format!("{name} (deleted)"),
            _ => String::new(),
        })
        .collect();
    if d.outcome.severity() == lifecycle::outcome::Severity::Routine && d.plan.steps.is_empty() {
        d.outcome = Outcome::GuardrailsSet;
    }
    d.reason = format!("guardrail alarms set: {}; {}", names.join(", "), d.reason);
    // Before a deployment, which names them; after anything else, which never waits on them (a
    // restore of autoscaling is not held up by an alarm CloudWatch refuses).
    // A canary's way back never waits on them: it takes the candidate off users.
    let leaving = matches!(
        d.outcome,
        Outcome::CanaryFailed
            | Outcome::CanaryStopped
            | Outcome::CanaryInconclusive
            | Outcome::SmokeFailed
    );
    if !leaving
        && (d.plan.has(ActionKind::UpdateEndpoint) || d.plan.has(ActionKind::CreateEndpoint))
    {
        plan.steps.append(&mut d.plan.steps);
        d.plan = plan;
    } else {
        d.plan.steps.append(&mut plan.steps);
    }
    d
}

/// A deployment that deregistered autoscaling but whose update never took effect, when this
/// decision does not try it again (held, in sync, backing off): autoscaling goes back now, on the
/// variant that serves, and the record is closed; it is never left off while the suite waits.
fn settle_scaling(obs: &Observed, mut d: Decision) -> Decision {
    let Some(rec) = obs.open_deployment() else {
        return d;
    };
    let (Some(snapshot), Some(ep)) = (&rec.scaling, &obs.endpoint) else {
        return d;
    };
    let untouched = ep.status == EndpointStatus::InService && ep.config_name != rec.config;
    let handled = [
        ActionKind::UpdateEndpoint,
        ActionKind::CreateEndpoint,
        ActionKind::RestoreScaling,
    ]
    .iter()
    .any(|k| d.plan.has(*k));
    if !untouched || handled || d.outcome == Outcome::Waiting {
        return d;
    }
    let resource_id = restore_target(ep, &snapshot.resource_id, None);
    d.plan.push(
        Action::RestoreScaling {
            resource_id: resource_id.clone(),
            snapshot: snapshot.clone(),
        },
        format!("the update that deregistered {resource_id} has not taken effect and is not tried now: autoscaling back as it was"),
    );
    d.plan.push(
        Action::FinishDeployment {
            endpoint: rec.endpoint.clone(),
            requested_at: rec.requested_at,
            status: DeploymentStatus::Abandoned,
        },
        "not tried again now; a later reconcile starts afresh",
    );
    d
}

/// The variant to restore autoscaling on: `preferred` when the endpoint has it, else the one the
/// snapshot was taken from, else the endpoint's first variant.
fn restore_target(ep: &Endpoint, snapshot_resource: &str, preferred: Option<&str>) -> String {
    let has = |v: &str| ep.variants.iter().any(|l| l.name == v);
    let from_snapshot = snapshot_resource
        .rsplit("/variant/")
        .next()
        .unwrap_or_default();
    let variant = preferred
        .filter(|v| has(v))
        .or(Some(from_snapshot).filter(|v| has(v)))
        .or(ep.variants.first().map(|v| v.name.as_str()))
        .unwrap_or(from_snapshot);
    lifecycle::scaling::resource_id(&ep.name, variant)
}

fn decide_step(obs: &Observed) -> Decision {
    let mut evidence = json!({
        "endpoint_status": obs.endpoint.as_ref().map(|e| &e.status),
        "serving_config": obs.endpoint.as_ref().map(|e| &e.config_name),
        "serving_package": obs.served_package(),
    });
    if let Some(s) = &obs.smoke {
        evidence["smoke"] = match &s.run {
            Ok(run) => json!(run),
            Err(why) => json!({"unjudged": why}),
        };
    }
    if let Some(d) = relevant(obs)
        .or_else(|| endpoint_owner(obs))
        .or_else(|| rollback_in_flight(obs))
        .or_else(|| canary::step(obs))
        .or_else(|| smoke::unjudged(obs))
        .or_else(|| smoke::failed(obs))
    {
        return d.with_more_evidence(evidence);
    }
    let mut progress = verdict(obs, &mut evidence);
    restore_scaling(obs, &mut progress);
    if let Some(d) = recovery(obs, &mut progress) {
        return d.with_plan(progress.plan).with_evidence(evidence);
    }
    let desired = choose(obs, &mut progress, &mut evidence);
    let decision = match desired {
        Some(c) if failed_before(obs, c) => {
            return Decision::new(
                Outcome::BackingOff,
                with_news(
                    &progress.news,
                    format!(
                        "the last update to version {} failed in SageMaker; not tried again until a person approves another version or rejects this one",
                        c.version
                    ),
                ),
            )
            .with_package(Some(c.arn.clone()))
            .with_plan(progress.plan)
            .with_evidence(evidence);
        }
        Some(c) if inconclusive_before(obs, c) => {
            // The return to the live version may be judged in this very decision.
            return Decision::new(
                progress.verdict.unwrap_or(Outcome::BackingOff),
                with_news(
                    &progress.news,
                    format!(
                        "the live KPI canary of version {} ended inconclusive; not tried again until a person approves another version or rejects this one",
                        c.version
                    ),
                ),
            )
            .with_package(Some(c.arn.clone()))
            .with_plan(progress.plan)
            .with_evidence(evidence);
        }
        None if progress.unjudged.is_some() => unjudged(obs, &progress),
        None => nothing_to_deploy(obs, &progress),
        Some(c) if obs.endpoint.is_some() && obs.served_package() == Some(c.arn.as_str()) => {
            in_sync(obs, c, &progress)
        }
        Some(c) => {
            match staging::waiting(obs, c, &progress)
                .or_else(|| held_by_alarm(obs, c, &progress))
                .or_else(|| recovery_pending(obs, c, &progress))
                .or_else(|| scaling_unrestorable(obs, c))
            {
                Some(held) => held,
                None => return deploy_step(obs, c, progress).with_evidence(evidence),
            }
        }
    };
    decision.with_plan(progress.plan).with_evidence(evidence)
}

/// A registry event that is not an approval only matters if it concerns what is live.
fn relevant(obs: &Observed) -> Option<Decision> {
    let arn = obs.only_if_live.as_ref()?;
    let live = obs.served_package() == Some(arn.as_str())
        || obs.open_deployment().is_some_and(|d| &d.package_arn == arn);
    (!live).then(|| {
        Decision::new(
            Outcome::Ignored,
            format!(
                "{arn} is not Approved and not what {} serves; nothing to do",
                obs.target.endpoint
            ),
        )
        .with_package(Some(arn.clone()))
    })
}

/// While SageMaker is changing the endpoint it owns it; the next state change or tick resumes.
/// An endpoint that failed needs a person before anything is deployed on it.
fn endpoint_owner(obs: &Observed) -> Option<Decision> {
    let ep = obs.endpoint.as_ref()?;
    if ep.status.is_transitioning() {
        // Seen updating to the recorded config: the update runs, whatever became of the answer
        // to the call that started it (a crash or a lost answer left the record unconfirmed).
        let mut plan = Plan::default();
        if let Some(d) = obs
            .open_deployment()
            .filter(|d| !d.confirmed && ep.pending_config.as_deref() == Some(d.config.as_str()))
        {
            plan.push(
                Action::ConfirmDeployment {
                    endpoint: d.endpoint.clone(),
                    requested_at: d.requested_at,
                },
                format!("{} is updating to {}: the update runs", ep.name, d.config),
            );
        }
        return Some(
            Decision::new(
                Outcome::Waiting,
                format!(
                    "{} is {:?}; SageMaker owns it until it is InService again",
                    ep.name, ep.status
                ),
            )
            .with_package(obs.in_flight.as_ref().map(|d| d.package_arn.clone()))
            .with_plan(plan),
        );
    }
    (ep.status != EndpointStatus::InService).then(|| {
        Decision::new(
            Outcome::Blocked,
            format!(
                "{} is {:?}; a person must look at it before anything is deployed",
                ep.name, ep.status
            ),
        )
    })
}

/// How long the deployer leaves a rollback the responder started but did not finish to the
/// responder's retries (Lambda retries an event for up to 15 minutes, see the template).
const ROLLBACK_RETRY_MS: i64 = 15 * 60_000;

/// The responder wrote a rollback record but its update has not taken effect (a cut, or a lost
/// answer): its retry finishes it, with the version that worked. The deployer must not deploy its
/// own choice over it meanwhile.
fn rollback_in_flight(obs: &Observed) -> Option<Decision> {
    let d = obs
        .open_deployment()
        .filter(|d| d.cause_alarm.is_some() && !d.confirmed)?;
    let ep = obs.endpoint.as_ref()?;
    // Leaving a canary is the canary's step (see `canary::leaving`), whoever started it.
    let group = &obs.target.model_package_group;
    if deploy::canary_now(ep, obs.live_config.as_ref(), None, group).is_some() {
        return None;
    }
    let untouched = ep.config_name != d.config && !modified_since(ep, d.requested_at);
    let young = obs.now_ms - d.requested_at < ROLLBACK_RETRY_MS;
    (untouched && young).then(|| {
        Decision::new(
            Outcome::Waiting,
            format!(
                "the alarm responder's rollback of {} to version {} is in flight (its retry finishes it); nothing deployed over it",
                ep.name, d.package_version
            ),
        )
        .with_package(Some(d.package_arn.clone()))
    })
}

/// The verdict on the deployment in flight: done means InService on the requested config; InService
/// on the previous config after the request means SageMaker's guardrails rolled it back.
fn verdict(obs: &Observed, evidence: &mut Value) -> Progress {
    let mut p = Progress {
        expected: obs.in_flight.as_ref().map(|d| d.requested_at),
        ..Progress::default()
    };
    let Some(d) = obs.open_deployment() else {
        return p;
    };
    let finish = |status| Action::FinishDeployment {
        endpoint: d.endpoint.clone(),
        requested_at: d.requested_at,
        status,
    };
    match &obs.endpoint {
        None => p.plan.push(
            finish(DeploymentStatus::Abandoned),
            "the endpoint no longer exists",
        ),
        Some(ep) if ep.config_name == d.config => {
            p.plan.push(
                finish(DeploymentStatus::Succeeded),
                format!("{} is InService on {}", ep.name, d.config),
            );
            // Alarms the responder saw during the shift that SageMaker did not act on (not
            // rollback alarms): the verdict carries them, so a person sees them.
            if !d.alarms_seen.is_empty() {
                p.news.push(format!(
                    "version {} went live although {} fired during the shift",
                    d.package_version,
                    d.alarms_seen.join(", ")
                ));
                evidence["alarms_seen"] = json!(d.alarms_seen);
            }
            if let Some(Ok(run)) = obs.smoke.as_ref().map(|s| &s.run) {
                p.news.push(format!(
                    "version {} passed its smoke test (answered {})",
                    d.package_version, run.answer.status
                ));
            }
            p.verdict = Some(Outcome::Deployed);
        }
        Some(ep)
            if modified_since(ep, d.requested_at)
                && Some(&ep.config_name) == d.previous_config.as_ref()
                && d.confirmed =>
        {
            guardrail_rollback(obs, ep, d, &mut p, evidence)
        }
        // Back on the old config, but the call that started the update never answered success:
        // it failed, or its answer was lost, and something else (autoscaling, a person) changed
        // the endpoint. No evidence SageMaker ran it, so no verdict on the package: try again.
        Some(ep) if modified_since(ep, d.requested_at) && !d.confirmed => {
            p.plan.push(
                finish(DeploymentStatus::Abandoned),
                format!(
                    "{} is on {}, but the update to {} was never confirmed as started; not a rollback",
                    ep.name, ep.config_name, d.config
                ),
            );
            p.news.push(format!(
                "the update to version {} was never confirmed as started (a failed call or a lost answer): no verdict on it",
                d.package_version
            ));
        }
        Some(ep) if modified_since(ep, d.requested_at) => p.plan.push(
            finish(DeploymentStatus::Abandoned),
            format!(
                "{} moved to {} since the update to {} was requested",
                ep.name, ep.config_name, d.config
            ),
        ),
        // Not modified since the request: the UpdateEndpoint never took effect (its response
        // was lost or it failed). Deploy again, over the same record.
        Some(_) => p.expected = Some(d.requested_at),
    }
    p
}

/// A deployment that deregistered the live variant's autoscaling gets it back, on the variant that
/// serves now, before its verdict is recorded: a failure stops the plan there and the next
/// reconcile tries again, so autoscaling is never lost with a closed record.
fn restore_scaling(obs: &Observed, p: &mut Progress) {
    let Some(d) = obs.open_deployment() else {
        return;
    };
    let (Some(snapshot), Some(ep)) = (&d.scaling, &obs.endpoint) else {
        return;
    };
    let Some(at) = p
        .plan
        .steps
        .iter()
        .position(|s| s.action.kind() == ActionKind::FinishDeployment)
    else {
        return;
    };
    let preferred = (ep.config_name == d.config).then_some(obs.target.variant.as_str());
    let resource_id = restore_target(ep, &snapshot.resource_id, preferred);
    let step = lifecycle::plan::Step {
        action: Action::RestoreScaling {
            resource_id: resource_id.clone(),
            snapshot: snapshot.clone(),
        },
        reason: format!(
            "autoscaling {}-{} and its policies back on {resource_id}, as they were before the update",
            snapshot.min, snapshot.max
        ),
        undo: None,
    };
    p.plan.steps.insert(at, step);
}

/// SageMaker put the old config back: the package is rejected with the evidence, unless every
/// alarm that could explain it was already firing before the shift began (the package is never
/// blamed for those; it deploys again once they are OK).
fn guardrail_rollback(
    obs: &Observed,
    ep: &Endpoint,
    d: &DeploymentRecord,
    p: &mut Progress,
    evidence: &mut Value,
) {
    // Only the deployment's own rollback alarms can explain a guardrail rollback (the responder
    // also notes KPI and capacity alarms it saw during the shift: evidence, not cause).
    let during: Vec<&str> = obs
        .alarms
        .iter()
        .filter(|a| d.rollback_alarms.contains(&a.name) && a.changed_since(d.requested_at))
        .map(|a| a.name.as_str())
        .chain(
            d.alarms_seen
                .iter()
                .filter(|a| d.rollback_alarms.contains(a))
                .map(String::as_str),
        )
        .collect();
    let before: Vec<&AlarmNow> = obs
        .alarms
        .iter()
        .filter(|a| d.rollback_alarms.contains(&a.name))
        .filter(|a| a.in_alarm && !a.changed_since(d.requested_at))
        .collect();
    let finish = || Action::FinishDeployment {
        endpoint: d.endpoint.clone(),
        requested_at: d.requested_at,
        status: DeploymentStatus::RolledBack,
    };
    evidence["rolled_back"] =
        json!({"package": d.package_arn, "config": d.config, "alarms": obs.alarms});
    p.verdict = Some(Outcome::RolledBack);
    if during.is_empty() && before.is_empty() {
        return update_failed(ep, d, p);
    }
    if during.is_empty() {
        let names: Vec<&str> = before.iter().map(|a| a.name.as_str()).collect();
        let why = format!(
            "SageMaker rolled back version {}, but {} was already in ALARM before its shift began: not blamed",
            d.package_version,
            names.join(", ")
        );
        p.plan.push(finish(), why.clone());
        p.news.push(why);
        return;
    }
    let alarms = alarm_list(&during);
    let description = format!(
        "Rolled back by SageMaker deployment guardrails: {} ended InService on {} instead of {} \
         (update requested at {}). Alarms that fired during the shift: {alarms}.",
        ep.name,
        ep.config_name,
        d.config,
        millis_rfc3339(d.requested_at),
    );
    // Reject first: a crash between the two leaves an open record the next reconcile judges
    // again, never a verdict recorded for a package that is still Approved.
    p.plan.push(
        Action::RejectPackage {
            package_arn: d.package_arn.clone(),
            description: description.clone(),
        },
        description.clone(),
    );
    p.plan.push(finish(), description);
    p.news.push(format!(
        "SageMaker rolled back version {} (alarms: {alarms})",
        d.package_version
    ));
    p.excluded.push(d.package_arn.clone());
}

/// After a rollback (seed 000: "verify CTR recovers within 15 minutes"): once `recovery_minutes`
/// have passed since it was done, the alarm that caused it must be OK. Recovered is kept and the
/// reconcile goes on; not recovered (or an alarm that cannot be read) needs a person, once.
fn recovery(obs: &Observed, p: &mut Progress) -> Option<Decision> {
    let cause = obs.cause.as_ref()?;
    let d = obs.in_flight.as_ref()?;
    let done = d.finished_at?;
    let minutes = obs.target.recovery_minutes;
    let recovered = !cause.in_alarm;
    // Before its time, only a recovery is recorded (what still fires gets the rest of its time;
    // meanwhile nothing new deploys over the rollback, see `recovery_pending`).
    if obs.now_ms - done < minutes * 60_000 && !recovered {
        return None;
    }
    p.plan.push(
        Action::RecordRecovery {
            endpoint: d.endpoint.clone(),
            requested_at: d.requested_at,
            recovered,
        },
        format!(
            "{} checked after the rollback to version {}",
            cause.name, d.package_version
        ),
    );
    if recovered {
        p.news.push(format!(
            "{} recovered after the rollback to version {}",
            cause.name, d.package_version
        ));
        return None;
    }
    let state = if cause.missing {
        "cannot be read"
    } else {
        "is still in ALARM"
    };
    Some(
        Decision::new(
            Outcome::NotRecovered,
            with_news(
                &p.news,
                format!(
                    "{} {state} {minutes} min after the rollback to version {} was done: the rollback did not recover; a person must look",
                    cause.name, d.package_version
                ),
            ),
        )
        .with_package(Some(d.package_arn.clone())),
    )
}

/// Ended on the old config and no rollback alarm explains it (or there were none to watch, as in
/// an all-at-once rollback): SageMaker's update failed. Not the package's verdict; a person looks.
fn update_failed(ep: &Endpoint, d: &DeploymentRecord, p: &mut Progress) {
    let why = format!(
        "the update of {} to version {} ended on {} with no rollback alarm to explain it: \
         SageMaker's update failed (capacity, a model that does not start); not blamed, a person must look",
        ep.name, d.package_version, ep.config_name
    );
    p.plan.push(
        Action::FinishDeployment {
            endpoint: d.endpoint.clone(),
            requested_at: d.requested_at,
            status: DeploymentStatus::Failed,
        },
        why.clone(),
    );
    p.news.push(why);
    p.verdict = Some(Outcome::UpdateFailed);
    p.excluded.push(d.package_arn.clone());
}

/// Desired: the newest Approved package that passes its gates. Newer ones that fail are rejected.
fn choose<'o>(obs: &'o Observed, p: &mut Progress, evidence: &mut Value) -> Option<&'o Candidate> {
    let mut gates = Vec::new();
    let mut desired = None;
    for c in obs
        .candidates
        .iter()
        .filter(|c| !p.excluded.contains(&c.arn))
    {
        let Some(report) = &c.gates else {
            desired = Some(c);
            break;
        };
        gates.push(json!({"package": c.arn, "results": report, "unreadable": c.unreadable}));
        if let Some(why) = &c.unreadable {
            // Not a failure: the package stays Approved and deploys once its report can be read.
            p.unjudged = Some(format!("version {} cannot be judged: {why}", c.version));
            break;
        }
        if report.passed() {
            desired = Some(c);
            break;
        }
        let description = report.failure_description(c.version);
        p.news
            .push(format!("version {} failed its gates", c.version));
        p.plan.push(
            Action::RejectPackage {
                package_arn: c.arn.clone(),
                description: description.clone(),
            },
            description,
        );
    }
    if !gates.is_empty() {
        evidence["gates"] = json!(gates);
    }
    desired
}

fn nothing_to_deploy(obs: &Observed, p: &Progress) -> Decision {
    let t = obs.target;
    let (outcome, reason) = if p.plan.has(ActionKind::RejectPackage) {
        (
            Outcome::Rejected,
            format!(
                "no approved package of {} passes its gates; {} unchanged",
                t.model_package_group, t.endpoint
            ),
        )
    } else {
        (
            Outcome::NothingApproved,
            format!(
                "{} has no Approved package; {} unchanged",
                t.model_package_group, t.endpoint
            ),
        )
    };
    Decision::new(p.verdict.unwrap_or(outcome), with_news(&p.news, reason))
}

/// The newest approved package's report cannot be read: the endpoint stays as it is and a person
/// hears why (a bucket policy, a KMS key, a missing object).
fn unjudged(obs: &Observed, p: &Progress) -> Decision {
    let why = p.unjudged.clone().unwrap_or_default();
    let reason = format!(
        "{why}; {} unchanged until it can be read",
        obs.target.endpoint
    );
    Decision::new(Outcome::GateUnreadable, with_news(&p.news, reason))
}

fn in_sync(obs: &Observed, desired: &Candidate, p: &Progress) -> Decision {
    let outcome = p
        .verdict
        .unwrap_or(if p.plan.has(ActionKind::RejectPackage) {
            Outcome::Rejected
        } else {
            Outcome::InSync
        });
    let reason = format!(
        "{} serves version {}, the newest approved package that passes its gates",
        obs.target.endpoint, desired.version
    );
    Decision::new(outcome, with_news(&p.news, reason)).with_package(Some(desired.arn.clone()))
}

/// The last deployment of this very package ended `Failed` in SageMaker (see [`guardrail_rollback`]).
fn failed_before(obs: &Observed, c: &Candidate) -> bool {
    obs.in_flight
        .as_ref()
        .is_some_and(|d| d.status == DeploymentStatus::Failed && d.package_arn == c.arn)
}

/// This very package's live KPI canary was stopped without a verdict (see [`canary`]).
fn inconclusive_before(obs: &Observed, c: &Candidate) -> bool {
    // What serves is no longer Approved: replacing it is the remedy, not something to hold.
    let live_approved = obs
        .served_package()
        .is_some_and(|s| obs.approved.iter().any(|a| a == s));
    live_approved
        && obs
            .in_flight
            .as_ref()
            .and_then(|d| d.inconclusive.as_ref())
            .is_some_and(|arn| arn == &c.arn)
}

/// The update must deregister the live variant's autoscaling, and some of its policies could not
/// be put back (step scaling, a customized metric): a person does this one.
fn scaling_unrestorable(obs: &Observed, desired: &Candidate) -> Option<Decision> {
    let s = obs.scaling.as_ref().filter(|s| !s.unsupported.is_empty())?;
    Some(
        Decision::new(
            Outcome::Blocked,
            format!(
                "version {} needs {} deregistered from autoscaling for its update (instance type or variant changes), \
                 but its policies {} cannot be restored by the suite; a person must deploy it",
                desired.version,
                s.resource_id,
                s.unsupported.join(", ")
            ),
        )
        .with_package(Some(desired.arn.clone())),
    )
}

/// A rollback's recovery not checked yet: nothing new deploys over its record before it is.
fn recovery_pending(obs: &Observed, desired: &Candidate, p: &Progress) -> Option<Decision> {
    if p.plan.has(ActionKind::RecordRecovery) {
        return None; // checked in this very decision
    }
    let cause = obs.cause.as_ref()?;
    let d = obs.in_flight.as_ref()?;
    let due = d.finished_at? + obs.target.recovery_minutes * 60_000;
    Some(
        Decision::new(
            Outcome::Waiting,
            format!(
                "version {} waits: the rollback to version {} is checked for the recovery of {} at {} first",
                desired.version,
                d.package_version,
                cause.name,
                millis_rfc3339(due)
            ),
        )
        .with_package(Some(desired.arn.clone())),
    )
}

/// No deployment starts while a rollback alarm is in ALARM: SageMaker would roll it back at once
/// and the new version would be blamed for what was already wrong. It starts on the first
/// reconcile after the alarm is OK; a wait longer than the target allows needs a person.
fn held_by_alarm(obs: &Observed, desired: &Candidate, p: &Progress) -> Option<Decision> {
    // What serves now is no longer Approved (a person or the responder rejected it): replacing
    // it is the remedy for the alarm, not something to wait for.
    if obs.served_package().is_some() && !obs.candidates.iter().any(|c| c.gates.is_none()) {
        return None;
    }
    let now = OffsetDateTime::from_unix_timestamp_nanos(obs.now_ms as i128 * 1_000_000).ok()?;
    let firing: Vec<&AlarmNow> = obs.alarms.iter().filter(|a| a.in_alarm).collect();
    let oldest = firing.iter().filter_map(|a| a.since).min();
    if firing.is_empty() {
        return None;
    }
    let held_minutes = oldest.map_or(0, |t| (now - t).whole_minutes());
    let limit = obs.target.max_alarm_hold_minutes;
    let outcome = if held_minutes > limit {
        Outcome::HeldByAlarmTooLong
    } else {
        Outcome::HeldByAlarm
    };
    let alarms: Vec<String> = firing
        .iter()
        .map(|a| match a.since {
            _ if a.missing => format!("{} (not found: it cannot guard a deployment)", a.name),
            Some(t) => format!(
                "{} (in ALARM since {})",
                a.name,
                t.format(&Rfc3339).unwrap_or_default()
            ),
            None => format!("{} (in ALARM)", a.name),
        })
        .collect();
    let reason = format!(
        "version {} waits: {} {}; it deploys on the first reconcile after {}",
        desired.version,
        alarms.join(", "),
        if held_minutes > limit {
            format!(
                "for {held_minutes} min, longer than the {limit} min a deployment may wait: a person must look"
            )
        } else {
            format!("for {held_minutes} min")
        },
        if firing.len() == 1 {
            "it is OK"
        } else {
            "they are OK"
        },
    );
    Some(Decision::new(outcome, with_news(&p.news, reason)).with_package(Some(desired.arn.clone())))
}

/// One step toward the desired package: model, config, ledger record, then the endpoint call.
fn deploy_step(obs: &Observed, desired: &Candidate, mut p: Progress) -> Decision {
    if let Some(d) = canary::start(obs, desired, &mut p.plan) {
        let reason = with_news(&p.news, d.reason.clone());
        return Decision { reason, ..d }.with_plan(p.plan);
    }
    let target = obs.target;
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
                // Only a remedial deployment (what serves is no longer Approved) starts while an
                // alarm fires; that alarm judged the old version, so it cannot guard the new one.
                rollback_alarms: target
                    .rollback_alarms
                    .iter()
                    .filter(|a| {
                        !obs.alarms
                            .iter()
                            .any(|n| &n.name == *a && n.in_alarm && !n.missing)
                    })
                    .cloned()
                    .collect(),
            }),
            expected: p.expected,
            now_ms: obs.now_ms,
            existing_config: None,
            why,
            cause_alarm: None,
            // Deregistered by an earlier try whose update then failed: the record holds the
            // snapshot, and the new record must keep it.
            scaling: obs
                .scaling
                .clone()
                .or_else(|| obs.open_deployment().and_then(|d| d.scaling.clone())),
            canary: None,
            smoke_due: target.smoke_test.is_some(),
        },
        &mut p.plan,
    );
    let reason = format!(
        "deploying version {} to {}",
        desired.version, target.endpoint
    );
    Decision::new(Outcome::Deploying, with_news(&p.news, reason))
        .with_package(Some(desired.arn.clone()))
        .with_plan(p.plan)
}

/// "version 3 failed its gates; <state>": what just happened first, then where things stand.
fn with_news(news: &[String], reason: String) -> String {
    if news.is_empty() {
        reason
    } else {
        format!("{}; {reason}", news.join("; "))
    }
}

/// The alarms that fired during the shift, in words.
fn alarm_list(during: &[&str]) -> String {
    let mut all = during.to_vec();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::GateResult;
    use lifecycle::config::Environment;
    use lifecycle::endpoints::{LiveVariant, tags};
    use lifecycle::targets::TrafficStrategy;
    use std::collections::BTreeMap;

    pub(super) fn target() -> DeploymentTarget {
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
            max_alarm_hold_minutes: 60,
            auto_rollback_days: 7,
            recovery_minutes: 15,
            guardrails: None,
            managed_alarms: vec![],
            managed_alarm_prefix: None,
            kpi_gate: None,
            promote_after: None,
            capacity: None,
            smoke_test: None,
        }
    }

    pub(super) fn arn(v: i64) -> String {
        format!("arn:aws:sagemaker:us-east-1:123456789012:model-package/recs/{v}")
    }

    pub(super) fn endpoint(status: EndpointStatus, config: &str, modified_ms: i64) -> Endpoint {
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
                current_weight: None,
            }],
        }
    }

    pub(super) fn config_serving(v: i64) -> EndpointConfig {
        EndpointConfig {
            name: format!("cfg-v{v}"),
            arn: "arn".into(),
            variants: vec![],
            data_capture: None,
            kms_key_id: None,
            tags: BTreeMap::from([(tags::PACKAGE_ARN.to_string(), arn(v))]),
            created: None,
            described: Box::new(
                aws_sdk_sagemaker::operation::describe_endpoint_config::DescribeEndpointConfigOutput::builder().build(),
            ),
        }
    }

    pub(super) fn passing(v: i64) -> Candidate {
        Candidate {
            arn: arn(v),
            version: v,
            gates: Some(GateReport::default()),
            unreadable: None,
        }
    }

    pub(super) fn live(v: i64) -> Candidate {
        Candidate {
            arn: arn(v),
            version: v,
            gates: None,
            unreadable: None,
        }
    }

    pub(super) fn observed(t: &DeploymentTarget) -> Observed<'_> {
        Observed {
            target: t,
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 1_000)),
            live_config: Some(config_serving(2)),
            served: Some(arn(2)),
            candidates: vec![passing(3), live(2)],
            in_flight: None,
            alarms: vec![],
            guardrails: vec![],
            leftover_alarms: vec![],
            cause: None,
            scaling: None,
            only_if_live: None,
            kpi: None,
            approved: vec![arn(3), arn(2)],
            capacity: None,
            staging: None,
            smoke: None,
            now_ms: 5_000,
        }
    }

    pub(super) fn actions(d: &Decision) -> Vec<ActionKind> {
        d.plan.kinds()
    }

    /// The rollout of the plan's UpdateEndpoint.
    fn rollout(d: &Decision) -> &RolloutSpec {
        let update = d
            .plan
            .steps
            .iter()
            .map(|s| &s.action)
            .find_map(|a| match a {
                Action::UpdateEndpoint {
                    rollout: Some(r), ..
                } => Some(r),
                _ => None,
            });
        update.unwrap_or_else(|| panic!("no UpdateEndpoint with a rollout: {:?}", d.plan))
    }

    #[test]
    fn a_newer_approved_package_is_deployed_with_the_configured_rollout() {
        let t = target();
        let d = decide(&observed(&t));
        assert_eq!(d.outcome, Outcome::Deploying);
        assert_eq!(
            actions(&d),
            [
                ActionKind::CreateModel,
                ActionKind::CreateEndpointConfig,
                ActionKind::BeginDeployment,
                ActionKind::UpdateEndpoint,
                ActionKind::ConfirmDeployment
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
            served: None,
            candidates: vec![passing(1)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(
            actions(&d),
            [
                ActionKind::CreateModel,
                ActionKind::CreateEndpointConfig,
                ActionKind::BeginDeployment,
                ActionKind::CreateEndpoint,
                ActionKind::ConfirmDeployment
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
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::InSync, true));
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
                    unreadable: None,
                },
                live(2),
            ],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Rejected);
        assert_eq!(actions(&d), [ActionKind::RejectPackage]);
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
            assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Waiting, true));
        }
    }

    pub(super) fn in_flight(t: &DeploymentTarget, requested_at: i64) -> DeploymentRecord {
        DeploymentRecord {
            endpoint: t.endpoint.clone(),
            config: config_name(t, &arn(3), 3),
            package_arn: arn(3),
            package_version: 3,
            previous_config: Some("cfg-v2".into()),
            requested_at,
            finished_at: None,
            status: DeploymentStatus::InProgress,
            rollback_alarms: t.rollback_alarms.clone(),
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

    #[test]
    fn in_service_on_the_requested_config_is_a_success() {
        let t = target();
        let mut cfg = config_serving(3);
        cfg.name = config_name(&t, &arn(3), 3);
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, &cfg.name, 6_000)),
            live_config: Some(cfg),
            served: Some(arn(3)),
            candidates: vec![live(3)],
            in_flight: Some(in_flight(&t, 5_000)),
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Deployed);
        assert_eq!(actions(&d), [ActionKind::FinishDeployment]);
    }

    #[test]
    fn in_service_on_the_old_config_after_the_request_is_a_guardrail_rollback() {
        let t = target();
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 6_000)),
            in_flight: Some(in_flight(&t, 5_000)),
            alarms: vec![AlarmNow {
                name: "recs-5xx".into(),
                in_alarm: true,
                missing: false,
                since: OffsetDateTime::from_unix_timestamp_nanos(5_500 * 1_000_000).ok(),
            }],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::RolledBack);
        assert_eq!(
            actions(&d),
            [ActionKind::RejectPackage, ActionKind::FinishDeployment],
            "v2 is live again: nothing else to do; the rejection comes before the verdict"
        );
        let Action::RejectPackage { description, .. } = &d.plan.steps[0].action else {
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
        assert_eq!(d.outcome, Outcome::Deploying);
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
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Ignored, true));
    }

    #[test]
    fn rejecting_the_live_version_brings_back_the_newest_remaining_one() {
        let t = target();
        let mut cfg = config_serving(3);
        cfg.name = "cfg-v3".into();
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v3", 1_000)),
            live_config: Some(cfg),
            served: Some(arn(3)),
            only_if_live: Some(arn(3)),
            candidates: vec![passing(2)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Deploying);
        assert_eq!(d.package, Some(arn(2)));
    }

    #[test]
    fn a_non_approval_event_is_relevant_only_for_what_is_live() {
        let t = target();
        let mut obs = observed(&t);
        assert!(relevant(&obs).is_none(), "an approval is always relevant");
        obs.only_if_live = Some(arn(1));
        assert_eq!(relevant(&obs).unwrap().outcome, Outcome::Ignored);
        obs.only_if_live = Some(arn(2));
        assert!(relevant(&obs).is_none(), "v2 is served");
        obs.only_if_live = Some(arn(3));
        obs.in_flight = Some(in_flight(&t, 5_000));
        assert!(relevant(&obs).is_none(), "v3 is in flight");
    }

    #[test]
    fn sagemaker_owns_a_changing_endpoint_and_a_person_a_failed_one() {
        let t = target();
        let mut obs = observed(&t);
        assert!(endpoint_owner(&obs).is_none());
        obs.endpoint = Some(endpoint(EndpointStatus::Updating, "cfg-v2", 1_000));
        assert_eq!(endpoint_owner(&obs).unwrap().outcome, Outcome::Waiting);
        obs.endpoint = Some(endpoint(EndpointStatus::Failed, "cfg-v2", 1_000));
        let d = endpoint_owner(&obs).unwrap();
        assert_eq!(d.outcome, Outcome::Blocked);
        assert_eq!(
            d.outcome.severity(),
            lifecycle::outcome::Severity::NeedsPerson
        );
    }

    #[test]
    fn the_verdict_reads_which_config_the_endpoint_ended_on() {
        let t = target();
        let mut evidence = json!({});
        let mut obs = observed(&t);
        obs.in_flight = Some(in_flight(&t, 5_000));
        // Moved on to something else since the request: abandoned, no verdict.
        obs.endpoint = Some(endpoint(EndpointStatus::InService, "cfg-other", 6_000));
        let p = verdict(&obs, &mut evidence);
        assert_eq!(
            (p.verdict, p.plan.kinds()),
            (None, vec![ActionKind::FinishDeployment])
        );
        // Back on the previous config after the request, no alarm to explain it: the update
        // failed in SageMaker; not blamed, not retried by itself.
        obs.endpoint = Some(endpoint(EndpointStatus::InService, "cfg-v2", 6_000));
        let p = verdict(&obs, &mut evidence);
        assert_eq!(p.verdict, Some(Outcome::UpdateFailed));
        assert!(!p.plan.has(ActionKind::RejectPackage));
        // ... with a rollback alarm that fired during the shift: a guardrail rollback.
        obs.alarms = vec![firing_since(5_500)];
        let p = verdict(&obs, &mut evidence);
        assert_eq!(p.verdict, Some(Outcome::RolledBack));
        assert!(p.plan.has(ActionKind::RejectPackage));
        assert_eq!(p.excluded, [arn(3)]);
        obs.alarms = vec![];
        // Untouched since the request: the update never took effect; try again over the record.
        obs.endpoint = Some(endpoint(EndpointStatus::InService, "cfg-v2", 1_000));
        let p = verdict(&obs, &mut evidence);
        assert_eq!((p.verdict, p.expected), (None, Some(5_000)));
        assert!(p.plan.is_empty());
    }

    #[test]
    fn choosing_skips_excluded_packages_and_rejects_failing_ones() {
        let t = target();
        let mut obs = observed(&t);
        let failing = GateReport(vec![crate::gates::GateResult {
            metric: "loss".into(),
            value: None,
            min: None,
            max: Some(0.35),
            passed: false,
        }]);
        obs.candidates = vec![
            Candidate {
                arn: arn(4),
                version: 4,
                gates: Some(failing),
                unreadable: None,
            },
            passing(3),
            live(2),
        ];
        let mut p = Progress {
            excluded: vec![arn(3)],
            ..Progress::default()
        };
        let chosen = choose(&obs, &mut p, &mut json!({})).unwrap();
        assert_eq!(chosen.arn, arn(2), "v4 fails its gates, v3 was rolled back");
        assert_eq!(p.plan.kinds(), [ActionKind::RejectPackage]);
    }

    #[test]
    fn an_unreadable_report_blocks_and_rejects_nothing() {
        let t = target();
        let missing = GateReport(vec![crate::gates::GateResult {
            metric: "validation_loss".into(),
            value: None,
            min: None,
            max: Some(0.35),
            passed: false,
        }]);
        let obs = Observed {
            candidates: vec![
                Candidate {
                    arn: arn(3),
                    version: 3,
                    gates: Some(missing),
                    unreadable: Some(
                        "its evaluation report s3://b/k cannot be read: AccessDenied".into(),
                    ),
                },
                live(2),
            ],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::GateUnreadable);
        assert_eq!(
            d.outcome.severity(),
            lifecycle::outcome::Severity::NeedsPerson
        );
        assert!(
            d.plan.is_empty(),
            "not rejected, not deployed, not an older one instead"
        );
        assert!(d.reason.contains("AccessDenied"), "{}", d.reason);
    }

    /// A smoke test of `body` that was answered `status` and failed when it is not 200.
    pub(super) fn smoke_run(status: u16, variant: Option<&str>) -> lifecycle::smoke::SmokeRun {
        let request: lifecycle::smoke::SmokeTest =
            serde_json::from_value(json!({"body": r#"{"user_id":"u-1"}"#})).unwrap();
        let answer = lifecycle::smoke::Answer::new(status, br#"{"error":"boom"}"#, None);
        lifecycle::smoke::SmokeRun {
            endpoint: "recs-prod".into(),
            target_variant: variant.map(str::to_string),
            failure: request.judge(&answer, br#"{"error":"boom"}"#),
            request,
            answer,
        }
    }

    pub(super) fn firing_since(ms: i64) -> AlarmNow {
        AlarmNow {
            name: "recs-5xx".into(),
            in_alarm: true,
            missing: false,
            since: OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok(),
        }
    }

    #[test]
    fn no_deployment_starts_while_a_rollback_alarm_fires_and_a_long_wait_needs_a_person() {
        let t = target();
        let obs = Observed {
            alarms: vec![firing_since(1_000)],
            now_ms: 1_000 + 5 * 60_000,
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::HeldByAlarm, true));
        assert!(
            d.reason.contains("recs-5xx (in ALARM since"),
            "{}",
            d.reason
        );
        let obs = Observed {
            now_ms: 1_000 + 61 * 60_000,
            ..obs
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::HeldByAlarmTooLong);
        assert_eq!(
            d.outcome.severity(),
            lifecycle::outcome::Severity::NeedsPerson
        );
        // Back to OK: it deploys.
        let obs = Observed {
            alarms: vec![AlarmNow {
                in_alarm: false,
                ..firing_since(2_000)
            }],
            ..obs
        };
        assert_eq!(decide(&obs).outcome, Outcome::Deploying);
    }

    #[test]
    fn a_package_is_not_blamed_for_an_alarm_that_fired_before_its_shift() {
        let t = target();
        let obs = Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 6_000)),
            in_flight: Some(in_flight(&t, 5_000)),
            alarms: vec![firing_since(4_000)],
            now_ms: 7_000,
            ..observed(&t)
        };
        let d = decide(&obs);
        assert!(!d.plan.has(ActionKind::RejectPackage), "{:?}", d.plan);
        assert_eq!(d.plan.kinds(), [ActionKind::FinishDeployment]);
        assert!(d.reason.contains("not blamed"), "{}", d.reason);
        assert_eq!(
            d.outcome,
            Outcome::HeldByAlarm,
            "v3 redeploys once the alarm is OK"
        );
    }

    #[test]
    fn an_unconfirmed_update_on_the_old_config_is_not_a_guardrail_rollback() {
        let t = target();
        let mut record = in_flight(&t, 5_000);
        record.confirmed = false;
        let obs = Observed {
            // Autoscaling moved the instance count after the failed call: modified since.
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 6_000)),
            in_flight: Some(record),
            now_ms: 7_000,
            ..observed(&t)
        };
        let d = decide(&obs);
        assert!(!d.plan.has(ActionKind::RejectPackage), "{:?}", d.plan);
        assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
        assert!(d.reason.contains("never confirmed"), "{}", d.reason);
        let Action::FinishDeployment { status, .. } = &d.plan.steps[0].action else {
            panic!("{:?}", d.plan)
        };
        assert_eq!(*status, DeploymentStatus::Abandoned);
    }

    #[test]
    fn replacing_a_rejected_live_version_is_not_held_and_a_missing_alarm_holds_the_rest() {
        let t = target();
        // v2 serves but is no longer Approved (a person rejected it): v3 replaces it at once.
        let obs = Observed {
            candidates: vec![passing(3)],
            alarms: vec![firing_since(1_000)],
            ..observed(&t)
        };
        assert_eq!(decide(&obs).outcome, Outcome::Deploying);
        // A rollback alarm that does not exist guards nothing: wait, and say why.
        let obs = Observed {
            alarms: vec![AlarmNow {
                missing: true,
                since: None,
                ..firing_since(0)
            }],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::HeldByAlarm);
        assert!(d.reason.contains("not found"), "{}", d.reason);
    }

    #[test]
    fn an_update_that_failed_in_sagemaker_is_not_tried_again_by_itself() {
        let t = target();
        let mut record = in_flight(&t, 5_000);
        record.status = DeploymentStatus::Failed;
        let obs = Observed {
            in_flight: Some(record),
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::BackingOff, true));
        assert!(d.reason.contains("failed in SageMaker"), "{}", d.reason);
    }

    #[test]
    fn a_rollback_whose_alarm_stays_in_alarm_past_the_recovery_time_needs_a_person_once() {
        let t = target();
        let mut record = in_flight(&t, 1_000);
        record.status = DeploymentStatus::Succeeded;
        record.finished_at = Some(2_000);
        record.cause_alarm = Some("recs-ctr".into());
        record.package_arn = arn(2);
        record.package_version = 2;
        let still = AlarmNow {
            name: "recs-ctr".into(),
            ..firing_since(1_500)
        };
        let obs = Observed {
            in_flight: Some(record),
            cause: Some(still.clone()),
            now_ms: 2_000 + 10 * 60_000,
            candidates: vec![live(2)],
            ..observed(&t)
        };
        assert_eq!(
            decide(&obs).outcome,
            Outcome::InSync,
            "before its 15 minutes"
        );
        let late = Observed {
            now_ms: 2_000 + 16 * 60_000,
            ..obs.clone()
        };
        let d = decide(&late);
        assert_eq!(d.outcome, Outcome::NotRecovered);
        let Action::RecordRecovery { recovered, .. } = &d.plan.steps[0].action else {
            panic!("{:?}", d.plan)
        };
        assert!(!recovered, "checked once, recorded as not recovered");
        let ok = Observed {
            cause: Some(AlarmNow {
                in_alarm: false,
                ..still
            }),
            ..late
        };
        let d = decide(&ok);
        assert_eq!(d.outcome, Outcome::InSync);
        assert!(d.plan.has(ActionKind::RecordRecovery));
        assert!(
            d.reason.contains("recovered after the rollback"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn the_deployer_never_deploys_over_a_rollback_the_responder_has_not_finished() {
        let t = target();
        let mut rollback = in_flight(&t, 5_000);
        rollback.cause_alarm = Some("recs-5xx".into());
        rollback.confirmed = false;
        let obs = Observed {
            // Still on v2's config, untouched since the rollback was requested.
            endpoint: Some(endpoint(EndpointStatus::InService, "cfg-v2", 1_000)),
            in_flight: Some(rollback),
            now_ms: 5_000 + 60_000,
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Waiting, true));
        assert!(d.reason.contains("in flight"), "{}", d.reason);
        // Past the responder's retries, the deployer takes over.
        let late = Observed {
            now_ms: 5_000 + 16 * 60_000,
            ..obs
        };
        assert_eq!(decide(&late).outcome, Outcome::Deploying);
    }

    #[test]
    fn a_remedial_deployment_is_not_guarded_by_the_alarm_that_judged_the_old_version() {
        let t = target();
        let obs = Observed {
            candidates: vec![passing(3)], // v2 serves, no longer Approved
            alarms: vec![firing_since(1_000)],
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Deploying);
        let r = rollout(&d);
        assert!(r.rollback_alarms.is_empty(), "{:?}", r.rollback_alarms);
    }

    #[test]
    fn nothing_new_deploys_before_a_rollbacks_recovery_is_checked() {
        let t = target();
        let mut record = in_flight(&t, 1_000);
        record.status = DeploymentStatus::Succeeded;
        record.finished_at = Some(2_000);
        record.cause_alarm = Some("recs-ctr".into());
        record.package_arn = arn(2);
        let obs = Observed {
            in_flight: Some(record),
            cause: Some(AlarmNow {
                name: "recs-ctr".into(),
                ..firing_since(1_500)
            }),
            now_ms: 2_000 + 60_000,
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Waiting, true));
        assert!(
            d.reason.contains("checked for the recovery"),
            "{}",
            d.reason
        );
    }

    pub(super) fn guarded() -> DeploymentTarget {
        let raw = r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge",
            "instance_count":2,"rollback_alarms":[],"guardrails":{"error_rate_pct":1,"p99_latency_ms":800}}]"#;
        let targets =
            lifecycle::targets::Targets::parse_with(raw, Environment::Production, Some("lc-"))
                .unwrap();
        targets.0.into_iter().next().unwrap()
    }

    #[test]
    fn missing_guardrail_alarms_are_made_before_the_deployment_that_names_them() {
        let t = guarded();
        assert_eq!(
            t.rollback_alarms,
            [
                "lc-managed-recs-prod-AllTraffic-5xx-rate",
                "lc-managed-recs-prod-AllTraffic-p99-latency"
            ]
        );
        let mut obs = observed(&t);
        // Not found: managed alarms do not hold the deployment; the plan makes them first.
        obs.alarms = t
            .rollback_alarms
            .iter()
            .map(|a| AlarmNow {
                name: a.clone(),
                in_alarm: false,
                missing: true,
                since: None,
            })
            .collect();
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
        let kinds = actions(&d);
        assert_eq!(&kinds[..2], [ActionKind::PutAlarm, ActionKind::PutAlarm]);
        assert!(kinds.contains(&ActionKind::UpdateEndpoint));
        let r = rollout(&d);
        assert_eq!(r.rollback_alarms, t.rollback_alarms);
    }

    #[test]
    fn a_guardrail_alarm_changed_by_hand_is_put_back_and_an_intact_one_is_left() {
        let t = guarded();
        let mut obs = observed(&t);
        obs.candidates = vec![live(2)];
        let live = |spec: &lifecycle::guardrails::AlarmSpec| lifecycle::guardrails::LiveAlarm {
            name: spec.name.clone(),
            description: spec.description.clone(),
            metric: match &spec.metric {
                lifecycle::guardrails::AlarmMetric::Stat { metric, .. } => Some(metric.clone()),
                _ => None,
            },
            threshold: spec.threshold,
            above: spec.above,
            period_seconds: spec.period_seconds,
            evaluation_periods: spec.evaluation_periods,
            actions: spec.actions.clone(),
        };
        obs.guardrails = t.managed_alarms.iter().map(live).collect();
        assert_eq!(decide(&obs).outcome, Outcome::InSync);
        obs.guardrails[1].threshold = 5_000_000.0;
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::GuardrailsSet, "{}", d.reason);
        assert_eq!(actions(&d), [ActionKind::PutAlarm]);
        assert!(
            d.plan.steps[0]
                .reason
                .contains("threshold 5000000 → 800000"),
            "{}",
            d.plan.steps[0].reason
        );
    }
}
