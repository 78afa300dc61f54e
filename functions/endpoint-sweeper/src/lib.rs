//! endpoint-sweeper: find idle, stale, under-replicated and scale-to-zero endpoints; delete or
//! shrink what is safe to, report the rest, never touch what is protected.
//!
//! schedule → inventory (account-wide reads, bounded-concurrent describes, batched metrics) →
//! judge (pure) → decide within the rails (pure) → act (leased, budgeted) → report (S3, ledger, EMF).

pub mod config;
pub mod decide;
pub mod findings;
pub mod inventory;
pub mod prices;
pub mod report;

use std::collections::{BTreeMap, HashMap};

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::decision::{Decision, Subject};
use lifecycle::endpoints::EndpointStatus;
use lifecycle::error::{Error, Result};
use lifecycle::events::Schedule;
use lifecycle::executor::Executor;
use lifecycle::ledger::Ledger;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::Pipeline;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::error;

pub use config::Config;

use crate::decide::EndpointPlan;
use crate::findings::Judgement;
use crate::report::{EndpointReport, SweepReport, Totals};

pub const FUNCTION: &str = "endpoint-sweeper";
const LEASE_SECONDS: i64 = 120;

pub struct Sweeper {
    pub clients: Clients,
    pub ledger: Ledger,
    pub config: Config,
}

impl Sweeper {
    pub fn new(clients: Clients, config: Config) -> Self {
        let ledger = Ledger::new(clients.dynamodb.clone(), config.ledger_table.clone());
        Self {
            clients,
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
        // A failed account-wide read stops the sweep before it acts; a failure after acting
        // (the report, the record) leaves the per-endpoint decisions already recorded.
        error!(error = %e, "sweep stopped");
        let _ = pipeline.fail(Subject::Sweep, None, e.clone()).await;
    }
    lifecycle::metrics::flush(&request_id);
    result
}

async fn sweep(sweeper: &Sweeper, pipeline: &Pipeline<'_>) -> Result<SweepSummary> {
    let c = &sweeper.config;
    let now = OffsetDateTime::now_utc();
    let seen = observe(sweeper, now).await?;
    let (judgements, plans) = judge_and_plan(c, &seen, now);
    let mut plans: HashMap<String, EndpointPlan> =
        plans.into_iter().map(|p| (p.endpoint.clone(), p)).collect();
    let mut endpoints = vec![];
    for (j, e) in judgements.into_iter().zip(&seen.facts) {
        let plan = plans.remove(&j.endpoint).unwrap_or_default();
        let results = act(sweeper, pipeline, &j, &plan).await;
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
    let uri = write_report(sweeper, pipeline, &report, now).await?;
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

/// What the sweep read of the account.
struct Seen {
    facts: Vec<inventory::EndpointFacts>,
    scaling: HashMap<String, inventory::Scaling>,
    invocations: inventory::Invocations,
    calls: BTreeMap<&'static str, usize>,
}

/// Account-wide reads first: if any fails, the sweep stops here, having changed nothing. Then
/// each endpoint (a failed describe leaves it unjudged) and the invocations of the old enough.
async fn observe(sweeper: &Sweeper, now: OffsetDateTime) -> Result<Seen> {
    let c = &sweeper.config;
    let clients = &sweeper.clients;
    let listed = inventory::list(&clients.sagemaker).await?;
    let scaling = inventory::scaling(&clients.autoscaling).await?;
    let deployer_config = |config: &str| {
        c.targets.iter().any(|t| {
            config
                .strip_prefix(t.endpoint.as_str())
                .is_some_and(|rest| rest.starts_with('-'))
        })
    };
    let facts =
        inventory::endpoints(&clients.sagemaker, listed, c.concurrency, &deployer_config).await;
    let window_start = now - time::Duration::minutes(c.window_minutes);
    let candidates: Vec<(String, String)> = facts
        .iter()
        .filter(|e| e.error.is_none() && e.status == EndpointStatus::InService)
        .filter(|e| e.created.is_some_and(|t| t <= window_start))
        .flat_map(|e| e.variants.iter().map(|v| (e.name.clone(), v.name.clone())))
        .collect();
    let (invocations, metric_calls) =
        inventory::invocations(&clients.cloudwatch, &candidates, now, c.window_minutes).await;
    Ok(Seen {
        facts,
        scaling,
        invocations,
        calls: BTreeMap::from([("GetMetricData", metric_calls)]),
    })
}

/// Findings per endpoint, then what to do about them within the rails. Pure.
fn judge_and_plan(
    c: &Config,
    seen: &Seen,
    now: OffsetDateTime,
) -> (Vec<Judgement>, Vec<EndpointPlan>) {
    let rules = findings::Rules {
        targets: &c.targets,
        protection_tag: &c.protection_tag,
        environment_tag: &c.environment_tag,
        window_minutes: c.window_minutes,
        stale_threshold: c.stale_threshold,
        now,
    };
    let judgements: Vec<_> = seen
        .facts
        .iter()
        .map(|e| findings::judge(e, &seen.scaling, &seen.invocations, &rules))
        .collect();
    let by_name: HashMap<&str, &inventory::EndpointFacts> =
        seen.facts.iter().map(|e| (e.name.as_str(), e)).collect();
    let limits = decide::Limits {
        targets: &c.targets,
        max_actions: c.max_actions,
        remediate: c.remediate,
        grace_hours: c.grace_hours,
        protection_tag: &c.protection_tag,
        now,
    };
    let plans = decide::decide(&judgements, &by_name, &seen.scaling, &limits);
    (judgements, plans)
}

/// One endpoint's decision through the pipeline, under the endpoint's lease (the deployer and
/// the responder take the same one). Returns what each step did, for the report.
async fn act(
    sweeper: &Sweeper,
    pipeline: &Pipeline<'_>,
    judgement: &Judgement,
    plan: &EndpointPlan,
) -> Vec<String> {
    let Some(outcome) = plan.outcome else {
        return vec![];
    };
    let subject = Subject::Endpoint(plan.endpoint.clone());
    let decision = Decision::new(outcome, plan.doing.join("; "))
        .with_plan(plan.plan.clone())
        .with_evidence(json!({"judgement": judgement, "withheld": plan.withheld}));
    // A dry run changes nothing: no lease, so it never makes the deployer or the responder wait.
    if sweeper.config.dry_run {
        return match pipeline.run(subject, decision).await {
            Ok(summary) => summary.results,
            Err(e) => vec![format!("dry run, not recorded: {e}")],
        };
    }
    let leased = sweeper
        .ledger
        .with_lease(
            &plan.endpoint,
            pipeline.request_id,
            LEASE_SECONDS,
            async || pipeline.run(subject.clone(), decision.clone()).await,
        )
        .await;
    match leased {
        Ok(Some(Ok(summary))) => {
            if let Some(e) = &summary.error {
                error!(endpoint = %plan.endpoint, error = %e, "sweep action failed");
            }
            summary.results
        }
        Ok(Some(Err(e))) => vec![format!("applied but not recorded: {e}")],
        Ok(None) => vec!["not applied: another function holds the endpoint; next run".into()],
        Err(e) => vec![format!("not applied: {e}")],
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
