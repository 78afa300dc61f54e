//! model-deployer: the endpoint of each deployment target serves the newest Approved model
//! package of its group. Every event (approval, rejection, endpoint state change, tick) means
//! "compare desired and actual, then move one step": observe → decide → act → record.

pub mod config;
pub mod gates;
mod observe;
pub mod reconcile;
pub mod trigger;

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::error::{Error, Result};
use lifecycle::executor::{Applied, Executor};
use lifecycle::ledger::{self, Ledger};
use lifecycle::registry::{self, Approval};
use lifecycle::targets::DeploymentTarget;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::{error, info};

pub use config::Config;
pub use lifecycle::report::{Report, Summary};
pub use trigger::Trigger;

pub const FUNCTION: &str = "model-deployer";
/// How long one invocation may hold an endpoint; longer than the function's timeout.
const LEASE_SECONDS: i64 = 120;

/// What the handler needs, built once at cold start.
pub struct Deployer {
    pub clients: Clients,
    pub ledger: Ledger,
    pub config: Config,
}

impl Deployer {
    pub fn new(clients: Clients, config: Config) -> Self {
        let ledger = Ledger::new(clients.dynamodb.clone(), config.ledger_table.clone());
        Self {
            clients,
            ledger,
            config,
        }
    }
}

pub async fn handle(deployer: &Deployer, event: LambdaEvent<Value>) -> Result<Report> {
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let trigger = Trigger::parse(&event.payload)?;
    info!(trigger = %trigger.describe(), "received");
    let mut report = Report::default();

    let targets: Vec<&DeploymentTarget> = match &trigger {
        Trigger::PackageChanged {
            group, package_arn, ..
        } => match deployer.config.targets.by_group(group) {
            Some(t) => vec![t],
            None => {
                let reason = format!("no deployment target for model package group {group}");
                record_unrouted(
                    deployer,
                    &request_id,
                    &trigger,
                    format!("group#{group}"),
                    Some(package_arn),
                    reason,
                    &mut report,
                )
                .await?;
                return Ok(report);
            }
        },
        Trigger::EndpointChanged { endpoint, .. } => {
            match deployer.config.targets.by_endpoint(endpoint) {
                Some(t) => vec![t],
                None => {
                    let reason = format!("{endpoint} is not an endpoint of any deployment target");
                    record_unrouted(
                        deployer,
                        &request_id,
                        &trigger,
                        ledger::endpoint_key(endpoint),
                        None,
                        reason,
                        &mut report,
                    )
                    .await?;
                    return Ok(report);
                }
            }
        }
        Trigger::Tick { .. } => deployer.config.targets.iter().collect(),
    };

    let mut failure = None;
    for target in targets {
        match reconcile(deployer, target, &trigger, &request_id).await {
            Ok(summary) => report.decisions.push(summary),
            Err(e) => {
                error!(endpoint = %target.endpoint, error = %e, "reconcile failed");
                report.decisions.push(Summary {
                    endpoint: Some(target.endpoint.clone()),
                    outcome: if matches!(e, Error::Busy(_)) {
                        "busy"
                    } else {
                        "failed"
                    },
                    reason: e.to_string(),
                    package: None,
                    actions: vec![],
                    results: vec![],
                });
                failure.get_or_insert(e);
            }
        }
    }
    lifecycle::metrics::flush(&request_id);
    match failure {
        // A tick is retried by the next tick; an event is retried by Lambda when that can help.
        Some(e) if e.is_retryable() && !matches!(trigger, Trigger::Tick { .. }) => Err(e),
        _ => Ok(report),
    }
}

/// One target: take the endpoint's lease, observe, decide, act, record, release.
async fn reconcile(
    deployer: &Deployer,
    target: &DeploymentTarget,
    trigger: &Trigger,
    request_id: &str,
) -> Result<Summary> {
    deployer
        .ledger
        .with_lease(&target.endpoint, request_id, LEASE_SECONDS, async || {
            reconcile_leased(deployer, target, trigger, request_id).await
        })
        .await?
        .unwrap_or_else(|| Err(Error::Busy(target.endpoint.clone())))
}

async fn reconcile_leased(
    deployer: &Deployer,
    target: &DeploymentTarget,
    trigger: &Trigger,
    request_id: &str,
) -> Result<Summary> {
    let clients = &deployer.clients;
    // A registry event that is not an approval only matters for the version that is live. The
    // event's status may be stale: the registry, re-read now, is the truth.
    let only_if_live = match trigger {
        Trigger::PackageChanged { package_arn, .. } => {
            match registry::describe(&clients.sagemaker, package_arn).await? {
                Some(p) if p.status == Approval::Approved => None,
                _ => Some(package_arn.clone()),
            }
        }
        _ => None,
    };
    let observed = observe::observe(clients, &deployer.ledger, target, only_if_live).await?;
    let decision = reconcile::decide(&observed);
    info!(endpoint = %target.endpoint, outcome = decision.outcome, reason = %decision.reason, "decided");

    let executor = Executor {
        clients,
        ledger: &deployer.ledger,
        execution_role_arn: &deployer.config.execution_role_arn,
        dry_run: deployer.config.dry_run,
    };
    let Applied { results, error } = executor.apply(&decision.plan).await;
    let outcome = if error.is_some() {
        "failed"
    } else {
        decision.outcome
    };
    lifecycle::metrics::decision(outcome);
    let record = ledger::Decision {
        subject: ledger::endpoint_key(&target.endpoint),
        at: OffsetDateTime::now_utc(),
        function: FUNCTION,
        request_id: request_id.to_string(),
        trigger: trigger.describe(),
        package: decision.package.clone(),
        outcome,
        reason: match &error {
            Some(e) => format!("{} — stopped: {e}", decision.reason),
            None => decision.reason.clone(),
        },
        plan: decision.plan.clone(),
        results: results.clone(),
        evidence: decision.evidence.clone(),
        dry_run: deployer.config.dry_run,
    };
    deployer.ledger.record(&record).await?;
    if let Some(e) = error {
        return Err(e);
    }
    Ok(Summary {
        endpoint: Some(target.endpoint.clone()),
        outcome,
        reason: decision.reason,
        package: decision.package,
        actions: decision
            .plan
            .steps
            .iter()
            .map(|s| s.action.name())
            .collect(),
        results,
    })
}

/// Records an event that maps to no target: answered, kept, never retried.
async fn record_unrouted(
    deployer: &Deployer,
    request_id: &str,
    trigger: &Trigger,
    subject: String,
    package: Option<&String>,
    reason: String,
    report: &mut Report,
) -> Result<()> {
    info!(%reason, "ignored");
    lifecycle::metrics::decision("ignored");
    let record = ledger::Decision {
        package: package.cloned(),
        evidence: json!({}),
        dry_run: deployer.config.dry_run,
        ..ledger::Decision::unplanned(
            subject,
            FUNCTION,
            request_id,
            trigger.describe(),
            "ignored",
            reason.clone(),
        )
    };
    deployer.ledger.record(&record).await?;
    report.decisions.push(Summary {
        endpoint: None,
        outcome: "ignored",
        reason,
        package: package.cloned(),
        actions: vec![],
        results: vec![],
    });
    Ok(())
}
