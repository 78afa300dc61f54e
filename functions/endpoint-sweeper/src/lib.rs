//! endpoint-sweeper: find idle, stale, under-replicated and scale-to-zero endpoints; delete or
//! shrink what is safe to, report the rest, never touch what is protected.
//!
//! schedule → inventory (account-wide reads, bounded-concurrent describes, batched metrics) →
//! judge (pure) → decide within the rails (pure) → per endpoint with a plan: take its lease, read
//! it again, judge and decide again, act (budgeted) → report (S3, ledger, EMF).

pub mod config;
pub mod decide;
pub mod findings;
pub mod inventory;
pub mod prices;
pub mod report;
pub mod traffic;
pub mod versions;

use std::collections::{BTreeMap, HashMap, HashSet};

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::decision::{Decision, Subject};
use lifecycle::endpoints::EndpointStatus;
use lifecycle::error::{Error, Result};
use lifecycle::events::Schedule;
use lifecycle::executor::Executor;
use lifecycle::ledger::{Ledger, Served};
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::Pipeline;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::error;

pub use config::Config;

use crate::decide::EndpointPlan;
use crate::findings::{IDLE_TAG, Judgement};
use crate::inventory::{EndpointFacts, Scaling};
use crate::report::{EndpointReport, SweepReport, Totals};
use crate::traffic::Invocations;
use crate::versions::Managed;

pub const FUNCTION: &str = "endpoint-sweeper";
/// Long enough for a plan's calls with the SDK's retries (each call at most 30 s).
const LEASE_SECONDS: i64 = 300;

pub struct Sweeper {
    pub clients: Clients,
    /// The Resource Groups Tagging API: every endpoint's tags in a few calls. Only the sweeper
    /// uses it, so only its package carries the client.
    pub tagging: aws_sdk_resourcegroupstagging::Client,
    pub ledger: Ledger,
    pub config: Config,
}

impl Sweeper {
    pub fn new(sdk: &aws_config::SdkConfig, config: Config) -> Self {
        let clients = Clients::new(sdk);
        let ledger = Ledger::new(clients.dynamodb.clone(), config.ledger_table.clone());
        Self {
            clients,
            tagging: aws_sdk_resourcegroupstagging::Client::new(sdk),
            ledger,
            config,
        }
    }
}

/// The handler's answer; the full report is in S3.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSummary {
    pub outcome: Outcome,
    pub reason: String,
    pub report_uri: String,
    pub totals: Totals,
    pub api_calls: BTreeMap<&'static str, usize>,
}

pub async fn handle(sweeper: &Sweeper, event: LambdaEvent<Value>) -> Result<SweepSummary> {
    let schedule = Schedule::parse(&event.payload)?;
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let pipeline = Pipeline {
        function: FUNCTION,
        request_id: &request_id,
        trigger: format!("schedule {}", schedule.event_id),
        executor: Executor {
            clients: &sweeper.clients,
            ledger: &sweeper.ledger,
            execution_role_arn: "",
            dry_run: sweeper.config.dry_run,
        },
    };
    let result = sweep(sweeper, &pipeline).await;
    if let Err(e) = &result {
        error!(error = %e, "sweep stopped");
    }
    lifecycle::metrics::flush(&request_id);
    result
}

async fn sweep(sweeper: &Sweeper, pipeline: &Pipeline<'_>) -> Result<SweepSummary> {
    let c = &sweeper.config;
    let now = OffsetDateTime::now_utc();
    // A failed account-wide read stops the sweep before it acts: recorded as such.
    let seen = match observe(sweeper, now).await {
        Ok(seen) => seen,
        Err(e) => {
            let _ = pipeline.fail(Subject::Sweep, None, e.clone()).await;
            return Err(e);
        }
    };
    let ctx = Context::new(c, &seen, now);
    let (judgements, plans) = judge_and_plan(&ctx, &seen);
    let mut plans: HashMap<String, EndpointPlan> =
        plans.into_iter().map(|p| (p.endpoint.clone(), p)).collect();
    let mut endpoints = vec![];
    // Endpoints this run changed: their own changes do not make the account look changed.
    let mut acted = HashSet::new();
    for (j, e) in judgements.into_iter().zip(&seen.facts) {
        let planned = plans.remove(&j.endpoint).unwrap_or_default();
        let (j, plan, results) = act(sweeper, pipeline, &ctx, &seen, &acted, j, e, planned).await;
        // Only what this sweep itself changed; an endpoint it could not act on (held by another
        // function, changed since the read) is exactly one someone else is changing.
        if results.iter().any(|r| r.ends_with(": done")) {
            acted.insert(e.name.clone());
        }
        endpoints.push(EndpointReport {
            actions: report::taken(&plan, &results),
            withheld: plan.withheld,
            variants: e.variants.clone(),
            judgement: j,
        });
    }
    let totals = report::totals(&endpoints);
    let report = SweepReport {
        run_at: now.format(&Rfc3339).unwrap_or_default(),
        request_id: pipeline.request_id.to_string(),
        window_minutes: c.window_minutes,
        dry_run: c.dry_run,
        totals: totals.clone(),
        api_calls: seen.calls.clone(),
        endpoints,
    };
    let uri = match write_report(sweeper, pipeline, &report, now).await {
        Ok(uri) => uri,
        Err(e) => return Err(report_unwritten(pipeline, &totals, e).await),
    };
    publish(&totals);
    let evidence = json!({"report": uri, "totals": totals, "api_calls": seen.calls});
    let decision =
        Decision::new(Outcome::Swept, totals.describe(c.dry_run)).with_evidence(evidence);
    let summary = pipeline.run(Subject::Sweep, decision).await?;
    Ok(SweepSummary {
        outcome: summary.outcome,
        reason: summary.reason,
        report_uri: uri,
        totals,
        api_calls: seen.calls,
    })
}

/// The sweep acted (each endpoint's decision is recorded under its own key) but the report is
/// lost: a person should know, and the invocation fails so the failed-invocations queue has it.
async fn report_unwritten(pipeline: &Pipeline<'_>, totals: &Totals, e: Error) -> Error {
    let reason = format!("the sweep's report could not be written: {e}");
    let decision = Decision::new(Outcome::ReportUnwritten, reason)
        .with_evidence(json!({"totals": totals, "error": e.to_string()}));
    if let Err(recorded) = pipeline.run(Subject::Sweep, decision).await {
        error!(error = %recorded, "report failure not recorded");
    }
    e
}

/// What the sweep read of the account.
pub struct Seen {
    pub facts: Vec<EndpointFacts>,
    pub scaling: HashMap<String, Scaling>,
    pub invocations: Invocations,
    /// Invocations since the idle mark, for marks older than the grace period.
    pub since_mark: Invocations,
    /// Per target endpoint: the versions it served (the ledger), its deployer-made models and
    /// configs.
    pub served: HashMap<String, Vec<Served>>,
    pub managed: HashMap<String, Vec<Managed>>,
    pub calls: BTreeMap<&'static str, usize>,
    /// When the account was read.
    pub read_at: OffsetDateTime,
}

/// Account-wide reads first: if any fails, the sweep stops here, having changed nothing. Then
/// each endpoint (a failed describe leaves it unjudged), the invocations of the old enough, the
/// configs a judgement needs, and what was invoked since an old idle mark.
async fn observe(sweeper: &Sweeper, now: OffsetDateTime) -> Result<Seen> {
    let c = &sweeper.config;
    let (sm, cw) = (&sweeper.clients.sagemaker, &sweeper.clients.cloudwatch);
    let listed = inventory::list(sm).await?;
    let tags = inventory::tags(&sweeper.tagging).await?;
    let scaling = inventory::scaling(&sweeper.clients.autoscaling).await?;
    let (mut served, mut managed) = (HashMap::new(), HashMap::new());
    for t in c.targets.iter() {
        served.insert(
            t.endpoint.clone(),
            sweeper.ledger.served(&t.endpoint).await?,
        );
        managed.insert(
            t.endpoint.clone(),
            versions::managed(sm, &t.endpoint, &tags).await?,
        );
    }
    let mut calls = BTreeMap::from([
        ("DescribeEndpoint", listed.len()),
        ("ListEndpoints", listed.len().div_ceil(100).max(1)),
    ]);
    let mut facts = inventory::endpoints(sm, listed, &tags, c.concurrency).await;
    let window_start = now - time::Duration::minutes(c.window_minutes);
    let candidates: Vec<(String, String)> = facts
        .iter()
        .filter(|e| e.error.is_none() && e.status == EndpointStatus::InService)
        .filter(|e| e.created.is_some_and(|t| t <= window_start))
        .flat_map(|e| e.variants.iter().map(|v| (e.name.clone(), v.name.clone())))
        .collect();
    let (invocations, metric_calls) =
        traffic::over_window(cw, &candidates, now, c.window_minutes).await;
    // With targets, every config (stale duplicates, versions in use); without, only where a
    // finding needs what is in it: an idle endpoint's cost, a MinCapacity 0's kind of variant.
    let with_targets = !c.targets.0.is_empty();
    let needs_config = |e: &EndpointFacts| {
        with_targets || idle_candidate(e, &invocations) || min_zero(e, &scaling)
    };
    let config_calls = inventory::configs(sm, &mut facts, needs_config, c.concurrency).await;
    let model_calls = match with_targets {
        true => inventory::packages(sm, &mut facts, c.concurrency).await,
        false => 0,
    };
    let marked = marked_past_grace(&facts, c.grace_hours, now);
    let (since_mark, since_calls) = traffic::since_mark(cw, &marked, now).await;
    calls.extend([
        ("DescribeEndpointConfig", config_calls),
        ("DescribeModel", model_calls),
        ("GetMetricData", metric_calls + since_calls),
    ]);
    Ok(Seen {
        facts,
        scaling,
        invocations,
        since_mark,
        served,
        managed,
        calls,
        read_at: now,
    })
}

fn idle_candidate(e: &EndpointFacts, invocations: &Invocations) -> bool {
    !e.variants.is_empty()
        && e.variants
            .iter()
            .all(|v| invocations.get(&(e.name.clone(), v.name.clone())) == Some(&Some(0.0)))
}

fn min_zero(e: &EndpointFacts, scaling: &HashMap<String, Scaling>) -> bool {
    e.variants.iter().any(|v| {
        scaling
            .get(&lifecycle::scaling::resource_id(&e.name, &v.name))
            .is_some_and(|s| s.min == 0)
    })
}

/// The variants of endpoints marked idle at least the grace period ago, with their mark.
fn marked_past_grace(
    facts: &[EndpointFacts],
    grace_hours: i64,
    now: OffsetDateTime,
) -> Vec<(String, String, OffsetDateTime)> {
    facts
        .iter()
        .filter(|e| e.error.is_none() && e.status == EndpointStatus::InService)
        .filter_map(|e| {
            let since = lifecycle::events::parse_time(e.tags.get(IDLE_TAG)?).ok()?;
            (now - since >= time::Duration::hours(grace_hours)).then_some((e, since))
        })
        .flat_map(|(e, since)| {
            e.variants
                .iter()
                .map(move |v| (e.name.clone(), v.name.clone(), since))
        })
        .collect()
}

/// What the judgements and decisions of one sweep share: built once from what was read.
struct Context<'a> {
    config: &'a Config,
    now: OffsetDateTime,
    /// The package version each endpoint serves, where known.
    versions: HashMap<String, i64>,
    /// Configs a target may roll back to: those of the last `KEEP_VERSIONS` it served.
    rollback_configs: HashSet<String>,
    retire: HashMap<String, Vec<versions::Retire>>,
}

impl<'a> Context<'a> {
    fn new(config: &'a Config, seen: &Seen, now: OffsetDateTime) -> Self {
        let versions = seen
            .facts
            .iter()
            .filter_map(|e| {
                let v = lifecycle::registry::version_of(e.package.as_deref()?)?;
                Some((e.name.clone(), v))
            })
            .collect();
        let mut rollback_configs = HashSet::new();
        for served in seen.served.values() {
            let mut newest: Vec<&Served> = served.iter().collect();
            newest.sort_by_key(|s| std::cmp::Reverse(s.package_version));
            rollback_configs.extend(
                newest
                    .into_iter()
                    .take(config.keep_versions)
                    .map(|s| s.config.clone()),
            );
        }
        Self {
            retire: retirements(config, seen, now),
            config,
            now,
            versions,
            rollback_configs,
        }
    }

    fn rules(&self, seen: &'a Seen) -> findings::Rules<'_> {
        let c = self.config;
        findings::Rules {
            targets: &c.targets,
            protection_tag: &c.protection_tag,
            environment_tag: &c.environment_tag,
            environment: c.environment,
            versions: &self.versions,
            since_mark: &seen.since_mark,
            window_minutes: c.window_minutes,
            stale_threshold: c.stale_threshold,
            now: self.now,
        }
    }

    fn limits(&self) -> decide::Limits<'_> {
        let c = self.config;
        decide::Limits {
            targets: &c.targets,
            max_actions: c.max_actions,
            remediate: c.remediate,
            grace_hours: c.grace_hours,
            stale_hours: c.stale_hours,
            protection_tag: &c.protection_tag,
            rollback_configs: &self.rollback_configs,
            retire: &self.retire,
            account_changed: None,
            now: self.now,
        }
    }
}

/// Each target's old versions to retire; none at all when some endpoint could not be read (it
/// could be using one).
fn retirements(
    c: &Config,
    seen: &Seen,
    now: OffsetDateTime,
) -> HashMap<String, Vec<versions::Retire>> {
    if seen.facts.iter().any(|e| e.error.is_some()) {
        return HashMap::new();
    }
    let configs_in_use: HashSet<String> = seen
        .facts
        .iter()
        .flat_map(|e| std::iter::once(e.config.clone()).chain(e.pending_config.clone()))
        .collect();
    let models_in_use: HashSet<String> = seen.facts.iter().flat_map(|e| e.models.clone()).collect();
    c.targets
        .iter()
        .filter_map(|t| Some((t, seen.managed.get(&t.endpoint)?)))
        .map(|(t, managed)| {
            let endpoint = &t.endpoint;
            let keep = versions::Keep {
                target: t,
                served: seen.served.get(endpoint).map_or(&[], Vec::as_slice),
                versions: c.keep_versions,
                configs_in_use: &configs_in_use,
                models_in_use: &models_in_use,
                grace_hours: c.grace_hours,
                now,
            };
            (endpoint.clone(), versions::retire(managed, &keep))
        })
        .collect()
}

/// Findings per endpoint, then what to do about them within the rails. Pure.
fn judge_and_plan(ctx: &Context, seen: &Seen) -> (Vec<Judgement>, Vec<EndpointPlan>) {
    let rules = ctx.rules(seen);
    let judgements: Vec<_> = seen
        .facts
        .iter()
        .map(|e| findings::judge(e, &seen.scaling, &seen.invocations, &rules))
        .collect();
    let by_name: HashMap<&str, &EndpointFacts> =
        seen.facts.iter().map(|e| (e.name.as_str(), e)).collect();
    let plans = decide::decide(&judgements, &by_name, &seen.scaling, &ctx.limits());
    (judgements, plans)
}

/// One endpoint's decision through the pipeline. For real, under the endpoint's lease (the
/// deployer and the responder take the same one), on the endpoint read again: the bulk reads can
/// be minutes old and the tagging API trails tag changes, so what is acted on is what is true
/// now, decided again within what the first decision was allowed of the budget. Returns the
/// judgement and plan acted on and what each step did, for the report.
#[allow(clippy::too_many_arguments)]
async fn act(
    sweeper: &Sweeper,
    pipeline: &Pipeline<'_>,
    ctx: &Context<'_>,
    seen: &Seen,
    acted: &HashSet<String>,
    judgement: Judgement,
    facts: &EndpointFacts,
    planned: EndpointPlan,
) -> (Judgement, EndpointPlan, Vec<String>) {
    if planned.outcome.is_none() {
        return (judgement, planned, vec![]);
    }
    // A dry run changes nothing: no lease, so it never makes the deployer or the responder wait.
    if sweeper.config.dry_run {
        let results = record(pipeline, &judgement, &planned).await;
        return (judgement, planned, results);
    }
    let endpoint = planned.endpoint.clone();
    let leased = sweeper
        .ledger
        .with_lease(&endpoint, pipeline.request_id, LEASE_SECONDS, async || {
            let again = decide_again(sweeper, ctx, seen, acted, facts, &planned).await;
            let (j, plan) = match again {
                Ok(again) => again,
                Err(e) => {
                    return (
                        judgement.clone(),
                        planned.clone(),
                        vec![format!("not applied: read again, {e}")],
                    );
                }
            };
            if plan.outcome.is_none() {
                let note = "not applied: changed since the sweep read it; nothing to do now".into();
                return (j, plan, vec![note]);
            }
            let results = record(pipeline, &j, &plan).await;
            (j, plan, results)
        })
        .await;
    match leased {
        Ok(Some(done)) => done,
        Ok(None) => {
            let note = "not applied: another function holds the endpoint; next run".into();
            (judgement, planned, vec![note])
        }
        Err(e) => (judgement, planned, vec![format!("not applied: {e}")]),
    }
}

/// The endpoint read again (its description, its tags, its config, its autoscaling, its
/// invocations since an idle mark, up to now) and decided again. No config or model is deleted if
/// other endpoints changed since the account was read (who uses what is then not known), nor any
/// old version this endpoint uses now.
async fn decide_again(
    sweeper: &Sweeper,
    ctx: &Context<'_>,
    seen: &Seen,
    acted: &HashSet<String>,
    old: &EndpointFacts,
    planned: &EndpointPlan,
) -> Result<(Judgement, EndpointPlan)> {
    let clients = &sweeper.clients;
    let with_targets = !sweeper.config.targets.0.is_empty();
    let fresh = inventory::read_again(&clients.sagemaker, old, with_targets).await?;
    let ids = fresh
        .variants
        .iter()
        .map(|v| lifecycle::scaling::resource_id(&fresh.name, &v.name))
        .collect();
    let scaling = inventory::scaling_of(&clients.autoscaling, Some(ids)).await?;
    let since_mark = match fresh
        .tags
        .get(findings::IDLE_TAG)
        .map(|t| lifecycle::events::parse_time(t))
    {
        Some(Ok(since)) => {
            let marked: Vec<_> = fresh
                .variants
                .iter()
                .map(|v| (fresh.name.clone(), v.name.clone(), since))
                .collect();
            traffic::since_mark(&clients.cloudwatch, &marked, OffsetDateTime::now_utc())
                .await
                .0
        }
        _ => Invocations::new(),
    };
    let margin = seen.read_at - time::Duration::seconds(5);
    let changed: Vec<String> = inventory::changed_since(&clients.sagemaker, margin)
        .await?
        .into_iter()
        .filter(|n| *n != fresh.name && !acted.contains(n))
        .collect();
    let changed = (!changed.is_empty()).then(|| changed.join(", "));
    let mut rules = ctx.rules(seen);
    rules.since_mark = &since_mark;
    let j = findings::judge(&fresh, &scaling, &seen.invocations, &rules);
    let mut others: Vec<&EndpointFacts> =
        seen.facts.iter().filter(|e| e.name != fresh.name).collect();
    others.push(&fresh);
    let users = decide::config_users(&others);
    let retire = still_retirable(ctx, &fresh);
    let limits = decide::Limits {
        account_changed: changed.as_deref(),
        retire: &retire,
        ..ctx.limits()
    };
    let mut allowance = planned.plan.steps.len();
    let plan = decide::plan_endpoint(
        &j,
        &fresh,
        &scaling,
        users.as_ref(),
        &mut allowance,
        &limits,
    );
    Ok((j, plan))
}

/// The endpoint's old versions to retire, less any it uses now (a rollback to an old version
/// reuses its config and model as they are).
fn still_retirable(
    ctx: &Context<'_>,
    fresh: &EndpointFacts,
) -> HashMap<String, Vec<versions::Retire>> {
    let in_use: HashSet<&String> = std::iter::once(&fresh.config)
        .chain(&fresh.pending_config)
        .chain(&fresh.models)
        .collect();
    let used = |a: &lifecycle::plan::Action| match a {
        lifecycle::plan::Action::DeleteModel { model } => in_use.contains(model),
        lifecycle::plan::Action::DeleteEndpointConfig { config } => in_use.contains(config),
        _ => false,
    };
    let mut out = ctx.retire.clone();
    for groups in out.values_mut() {
        groups.retain(|r| !r.steps.iter().any(|(a, _)| used(a)));
    }
    out
}

/// Runs and records one endpoint's decision; what each step did.
async fn record(pipeline: &Pipeline<'_>, j: &Judgement, plan: &EndpointPlan) -> Vec<String> {
    let Some(outcome) = plan.outcome else {
        return vec![];
    };
    let decision = Decision::new(outcome, plan.doing.join("; "))
        .with_plan(plan.plan.clone())
        .with_evidence(json!({"judgement": j, "withheld": plan.withheld}));
    match pipeline
        .run(Subject::Endpoint(plan.endpoint.clone()), decision)
        .await
    {
        Ok(summary) => {
            if let Some(e) = &summary.error {
                error!(endpoint = %plan.endpoint, error = %e, "sweep action failed");
            }
            summary.results
        }
        Err(e) if pipeline.executor.dry_run => vec![format!("dry run, not recorded: {e}")],
        // The steps may or may not have run: the record of them is what failed.
        Err(e) => {
            error!(endpoint = %plan.endpoint, error = %e, "sweep decision not recorded");
            let unknown =
                format!("unknown: the decision could not be recorded ({e}); see the logs");
            vec![unknown; plan.plan.steps.len()]
        }
    }
}

async fn write_report(
    sweeper: &Sweeper,
    pipeline: &Pipeline<'_>,
    report: &SweepReport,
    now: OffsetDateTime,
) -> Result<String> {
    let c = &sweeper.config;
    let d = now.date();
    let key = format!(
        "{}{:04}/{:02}/{:02}/{:02}{:02}{:02}-{}.json",
        c.report_prefix,
        d.year(),
        u8::from(d.month()),
        d.day(),
        now.hour(),
        now.minute(),
        now.second(),
        report.request_id
    );
    let body = serde_json::to_vec(report).map_err(|e| Error::InvalidData(e.to_string()))?;
    pipeline.put_report(&c.report_bucket, &key, body).await
}

fn publish(t: &Totals) {
    metrics::gauge!("EndpointsSwept").set(t.endpoints as f64);
    metrics::gauge!("IdleEndpoints").set(t.idle as f64);
    metrics::gauge!("StaleEndpoints").set((t.stale + t.stale_with_traffic) as f64);
    metrics::gauge!("UnderReplicatedEndpoints").set(t.under_replicated as f64);
    metrics::gauge!("ScaleToZeroRisks").set(t.scale_to_zero_risk as f64);
    metrics::gauge!("IdleMonthlyUSD").set(t.idle_monthly_usd);
    metrics::gauge!("StaleMonthlyUSD").set(t.stale_monthly_usd);
}
