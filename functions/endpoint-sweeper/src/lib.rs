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
use lifecycle::error::{Error, Result};
use lifecycle::events::Schedule;
use lifecycle::executor::{Applied, Executor};
use lifecycle::ledger::{self, Ledger};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{error, info};

pub use config::Config;

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
pub struct Summary {
    pub outcome: &'static str,
    pub reason: String,
    pub report_uri: String,
    pub totals: Totals,
    pub api_calls: BTreeMap<&'static str, usize>,
}

pub async fn handle(sweeper: &Sweeper, event: LambdaEvent<Value>) -> Result<Summary> {
    let schedule = Schedule::parse(&event.payload)?;
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let result = sweep(sweeper, &request_id, &schedule).await;
    if let Err(e) = &result {
        // Nothing was changed: the sweep acts only on a complete inventory.
        error!(error = %e, "sweep stopped before acting");
        let _ = record(
            sweeper,
            &request_id,
            &schedule,
            "stopped",
            &e.to_string(),
            json!({}),
        )
        .await;
    }
    lifecycle::metrics::flush(&request_id);
    result
}

async fn sweep(sweeper: &Sweeper, request_id: &str, schedule: &Schedule) -> Result<Summary> {
    let c = &sweeper.config;
    let clients = &sweeper.clients;
    let now = OffsetDateTime::now_utc();
    let mut calls: BTreeMap<&'static str, usize> = BTreeMap::new();

    // Account-wide reads first: if any fails, the sweep stops here, having changed nothing.
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
    let candidates: Vec<(String, String)> = facts
        .iter()
        .filter(|e| {
            e.error.is_none() && e.status == lifecycle::endpoints::EndpointStatus::InService
        })
        .filter(|e| {
            e.created
                .is_some_and(|t| t <= now - time::Duration::minutes(c.window_minutes))
        })
        .flat_map(|e| e.variants.iter().map(|v| (e.name.clone(), v.name.clone())))
        .collect();
    let (invocations, metric_calls) =
        inventory::invocations(&clients.cloudwatch, &candidates, now, c.window_minutes).await;
    calls.insert("GetMetricData", metric_calls);

    let rules = findings::Rules {
        targets: &c.targets,
        protection_tag: &c.protection_tag,
        environment_tag: &c.environment_tag,
        window_minutes: c.window_minutes,
        stale_threshold: c.stale_threshold,
        now,
    };
    let judgements: Vec<_> = facts
        .iter()
        .map(|e| findings::judge(e, &scaling, &invocations, &rules))
        .collect();
    let by_name: HashMap<&str, &inventory::EndpointFacts> =
        facts.iter().map(|e| (e.name.as_str(), e)).collect();
    let plans = decide::decide(
        &judgements,
        &by_name,
        &scaling,
        &decide::Limits {
            targets: &c.targets,
            max_actions: c.max_actions,
            remediate: c.remediate,
            grace_hours: c.grace_hours,
            protection_tag: &c.protection_tag,
            now,
        },
    );

    let mut plans: HashMap<String, decide::EndpointPlan> =
        plans.into_iter().map(|p| (p.endpoint.clone(), p)).collect();
    let mut endpoints = vec![];
    for (j, e) in judgements.into_iter().zip(&facts) {
        let plan = plans.remove(&j.endpoint).unwrap_or_default();
        let results = act(sweeper, request_id, &plan).await;
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
        request_id: request_id.to_string(),
        window_minutes: c.window_minutes,
        dry_run: c.dry_run,
        totals: totals.clone(),
        api_calls: calls.clone(),
        endpoints,
    };
    let uri = write_report(sweeper, &report, now).await?;
    publish(&totals);
    let reason = format!(
        "{} endpoints ({} judged): {} idle (${:.0}/month), {} stale (${:.0}/month), {} under-replicated, {} scale-to-zero risks, {} short cooldowns; {} actions{}, {} withheld",
        totals.endpoints,
        totals.judged,
        totals.idle,
        totals.idle_monthly_usd,
        totals.stale + totals.stale_with_traffic,
        totals.stale_monthly_usd,
        totals.under_replicated,
        totals.scale_to_zero_risk,
        totals.short_scale_in_cooldown,
        totals.actions_taken,
        if c.dry_run {
            " (dry run: none applied)"
        } else {
            ""
        },
        totals.actions_withheld,
    );
    info!(%reason, report = %uri, "swept");
    let evidence = json!({"report": uri, "totals": totals, "api_calls": calls});
    record(sweeper, request_id, schedule, "swept", &reason, evidence).await?;
    lifecycle::metrics::decision("swept");
    Ok(Summary {
        outcome: "swept",
        reason,
        report_uri: uri,
        totals,
        api_calls: calls,
    })
}

/// Applies one endpoint's plan under its lease (the deployer and the responder take the same one).
async fn act(sweeper: &Sweeper, request_id: &str, plan: &decide::EndpointPlan) -> Vec<String> {
    if plan.plan.is_empty() {
        return vec![];
    }
    let executor = Executor {
        clients: &sweeper.clients,
        ledger: &sweeper.ledger,
        execution_role_arn: "",
        dry_run: sweeper.config.dry_run,
    };
    if sweeper.config.dry_run {
        return executor.apply(&plan.plan).await.results;
    }
    let applied = sweeper
        .ledger
        .with_lease(&plan.endpoint, request_id, LEASE_SECONDS, async || {
            executor.apply(&plan.plan).await
        })
        .await;
    match applied {
        Ok(Some(Applied { results, error })) => {
            if let Some(e) = error {
                error!(endpoint = %plan.endpoint, error = %e, "sweep action failed");
            }
            results
        }
        Ok(None) => vec!["not applied: another function holds the endpoint; next run".into()],
        Err(e) => vec![format!("not applied: {e}")],
    }
}

async fn write_report(
    sweeper: &Sweeper,
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
    sweeper
        .clients
        .s3
        .put_object()
        .bucket(&c.report_bucket)
        .key(&key)
        .content_type("application/json")
        .body(body.into())
        .send()
        .await
        .map_err(|e| Error::aws("PutObject", e))?;
    Ok(format!("s3://{}/{key}", c.report_bucket))
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

async fn record(
    sweeper: &Sweeper,
    request_id: &str,
    schedule: &Schedule,
    outcome: &'static str,
    reason: &str,
    evidence: Value,
) -> Result<()> {
    let decision = ledger::Decision::unplanned(
        "sweep#endpoints".into(),
        FUNCTION,
        request_id,
        format!("schedule {}", schedule.event_id),
        outcome,
        reason.to_string(),
    );
    sweeper
        .ledger
        .record(&ledger::Decision {
            evidence,
            dry_run: sweeper.config.dry_run,
            ..decision
        })
        .await
}
