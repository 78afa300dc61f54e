//! model-deployer: the endpoint of each deployment target serves the newest Approved model
//! package of its group. Every event (approval, rejection, endpoint state change, tick) means
//! "compare desired and actual, then move one step": observe → decide → act → record.

pub mod config;
pub mod gates;
mod observe;
pub mod reconcile;
mod smoke;
pub mod trigger;

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::decision::{Decision, Subject};
use lifecycle::error::{Error, Result};
use lifecycle::executor::Executor;
use lifecycle::ledger::Ledger;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::{Pipeline, Summary};
use lifecycle::registry::{self, Approval};
use lifecycle::targets::DeploymentTarget;
use serde_json::Value;
use tracing::info;

pub use config::Config;
pub use lifecycle::pipeline::Reply;
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

    fn pipeline<'a>(&'a self, request_id: &'a str, trigger: &Trigger) -> Pipeline<'a> {
        Pipeline {
            function: FUNCTION,
            request_id,
            trigger: trigger.describe(),
            executor: Executor {
                clients: &self.clients,
                ledger: &self.ledger,
                execution_role_arn: &self.config.execution_role_arn,
                dry_run: self.config.dry_run,
            },
        }
    }
}

pub async fn handle(deployer: &Deployer, event: LambdaEvent<Value>) -> Result<Reply> {
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let trigger = Trigger::parse(&event.payload)?;
    info!(trigger = %trigger.describe(), "received");
    let pipeline = deployer.pipeline(&request_id, &trigger);
    let reply = reconcile_all(deployer, &pipeline, &trigger).await;
    lifecycle::metrics::flush(&request_id);
    // A tick is retried by the next tick; an event is retried by Lambda when that can help.
    reply.or_retryable_error(!matches!(trigger, Trigger::Tick { .. }))
}

/// Every target the trigger concerns, one decision each (a failure on one does not stop the
/// others); an event for no target is recorded as ignored.
async fn reconcile_all(deployer: &Deployer, pipeline: &Pipeline<'_>, trigger: &Trigger) -> Reply {
    let targets = &deployer.config.targets;
    let dry_run = deployer.config.dry_run;
    let one = async |target: &DeploymentTarget| {
        reconcile(deployer, pipeline, target, trigger)
            .await
            .unwrap_or_else(|e| {
                Summary::unrecorded(Subject::Endpoint(target.endpoint.clone()), dry_run, e)
            })
    };
    let (subject, package, reason) = match trigger {
        Trigger::Tick { .. } => {
            let mut reply = Reply::default();
            for target in targets.iter() {
                reply.decisions.push(one(target).await);
            }
            return reply;
        }
        Trigger::PackageChanged {
            group, package_arn, ..
        } => match targets.by_group(group).collect::<Vec<_>>() {
            // Staging then production: one approval reconciles each, each with its own rules.
            group_targets if !group_targets.is_empty() => {
                let mut reply = Reply::default();
                for t in group_targets {
                    reply.decisions.push(one(t).await);
                }
                return reply;
            }
            _ => (
                Subject::Group(group.clone()),
                Some(package_arn.clone()),
                format!("no deployment target for model package group {group}"),
            ),
        },
        Trigger::EndpointChanged { endpoint, .. } => match targets.by_endpoint(endpoint) {
            Some(t) => return Reply::one(one(t).await),
            None => (
                Subject::Endpoint(endpoint.clone()),
                None,
                format!("{endpoint} is not an endpoint of any deployment target"),
            ),
        },
    };
    // Answered, kept, never retried.
    let decision = Decision::new(Outcome::Ignored, reason).with_package(package);
    let summary = pipeline.run(subject.clone(), decision).await;
    Reply::one(summary.unwrap_or_else(|e| Summary::unrecorded(subject, dry_run, e)))
}

/// One target, under the endpoint's lease: observe, decide, and the pipeline applies and records.
async fn reconcile(
    deployer: &Deployer,
    pipeline: &Pipeline<'_>,
    target: &DeploymentTarget,
    trigger: &Trigger,
) -> Result<Summary> {
    let subject = Subject::Endpoint(target.endpoint.clone());
    let leased = deployer
        .ledger
        .with_lease(
            &target.endpoint,
            pipeline.request_id,
            LEASE_SECONDS,
            async || match decide(deployer, target, trigger).await {
                Ok(decision) => pipeline.run(subject.clone(), decision).await,
                Err(e) => pipeline.fail(subject.clone(), None, e).await,
            },
        )
        .await;
    match leased {
        Ok(Some(summary)) => summary,
        Ok(None) => {
            let busy = Error::Busy(target.endpoint.clone());
            pipeline.fail(subject, None, busy).await
        }
        Err(e) => pipeline.fail(subject, None, e).await,
    }
}

async fn decide(
    deployer: &Deployer,
    target: &DeploymentTarget,
    trigger: &Trigger,
) -> Result<Decision> {
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
    let staging = target
        .promote_after
        .as_ref()
        .and_then(|p| deployer.config.targets.by_endpoint(&p.target));
    let observed =
        observe::observe(clients, &deployer.ledger, target, staging, only_if_live).await?;
    Ok(reconcile::decide(&observed))
}
