//! The one place where plans touch AWS. Dry-run means: decide, record, do not act.

use tracing::{info, warn};

use crate::aws::Clients;
use crate::catalog;
use crate::endpoints;
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::plan::{Action, ActionKind, Plan};
use crate::registry;
use crate::scaling;
use crate::training;

pub struct Executor<'a> {
    pub clients: &'a Clients,
    pub ledger: &'a Ledger,
    /// The role SageMaker models run as (CreateModel needs it; only the deployer and the
    /// responder create models).
    pub execution_role_arn: &'a str,
    pub dry_run: bool,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// Changed what it was asked to change.
    Done,
    /// Found its work already done (a retry, or a concurrent run that won): nothing changed.
    AlreadyDone,
    DryRun,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    pub action: ActionKind,
    pub status: StepStatus,
    /// In words, for the ledger: "done", "already existed", the error, ...
    pub detail: String,
}

impl std::fmt::Display for StepResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.action, self.detail)
    }
}

/// What applying a plan did: one result per step that ran, and the error that stopped it.
#[derive(Debug, Default)]
pub struct Applied {
    pub results: Vec<StepResult>,
    pub error: Option<Error>,
}

impl Applied {
    /// Whether the step of this kind ran and found its work already done.
    pub fn already_done(&self, kind: ActionKind) -> bool {
        self.results
            .iter()
            .any(|r| r.action == kind && r.status == StepStatus::AlreadyDone)
    }
}

/// The executor's answer for one action: changed, or already so, in words.
enum Effect {
    Done(String),
    AlreadyDone(&'static str),
}

fn created(new: bool) -> Effect {
    if new {
        Effect::Done("done".into())
    } else {
        Effect::AlreadyDone("already existed")
    }
}

fn deleted(gone_now: bool) -> Effect {
    if gone_now {
        Effect::Done("done".into())
    } else {
        Effect::AlreadyDone("already gone")
    }
}

/// A call that either does what it was asked or fails.
fn done(_: ()) -> Effect {
    Effect::Done("done".into())
}

impl Executor<'_> {
    /// Applies the steps in order and stops at the first failure, so a later step never runs
    /// on the assumption that an earlier one happened.
    pub async fn apply(&self, plan: &Plan) -> Applied {
        let mut applied = Applied::default();
        for step in &plan.steps {
            let action = step.action.kind();
            let reason = step.reason.as_str();
            if self.dry_run {
                info!(%action, reason, "dry run: not applied");
                applied.results.push(StepResult {
                    action,
                    status: StepStatus::DryRun,
                    detail: "dry run, not applied".into(),
                });
                continue;
            }
            // Boxed: one step's future holds any of the AWS calls below (the catalog export's
            // among them); inline, every caller's future type would nest all of them.
            let (status, detail) = match Box::pin(self.run(&step.action)).await {
                Ok(Effect::Done(detail)) => {
                    crate::metrics::mutation(action);
                    (StepStatus::Done, detail)
                }
                Ok(Effect::AlreadyDone(detail)) => (StepStatus::AlreadyDone, detail.to_string()),
                Err(e) => {
                    warn!(%action, reason, error = %e, "failed");
                    applied.results.push(StepResult {
                        action,
                        status: StepStatus::Failed,
                        detail: format!("failed: {e}"),
                    });
                    applied.error = Some(e);
                    self.undo(plan, &mut applied).await;
                    break;
                }
            };
            info!(%action, reason, result = %detail, "applied");
            applied.results.push(StepResult {
                action,
                status,
                detail,
            });
        }
        applied
    }

    /// After a failure: puts back what the steps that ran changed and said how to undo, newest
    /// first. Best effort: each result is kept; the plan's error stays the one that stopped it.
    async fn undo(&self, plan: &Plan, applied: &mut Applied) {
        let ran = applied.results.len().saturating_sub(1);
        for step in plan.steps[..ran].iter().rev() {
            let Some(undo) = &step.undo else {
                continue;
            };
            let action = undo.kind();
            let (status, detail) = match Box::pin(self.run(undo)).await {
                Ok(Effect::Done(d)) => (StepStatus::Done, format!("undone: {d}")),
                Ok(Effect::AlreadyDone(d)) => (StepStatus::AlreadyDone, format!("undone: {d}")),
                Err(e) => (StepStatus::Failed, format!("undo failed: {e}")),
            };
            info!(%action, result = %detail, "undo");
            applied.results.push(StepResult {
                action,
                status,
                detail,
            });
        }
    }

    async fn run(&self, action: &Action) -> Result<Effect> {
        let sm = &self.clients.sagemaker;
        let role = self.execution_role_arn;
        Ok(match action {
            a @ (Action::BeginDeployment { .. }
            | Action::ConfirmDeployment { .. }
            | Action::MarkLive { .. }
            | Action::RecordRecovery { .. }
            | Action::FinishDeployment { .. }
            | Action::NoteAlarm { .. }) => self.write_ledger(a).await?,
            a @ (Action::DeregisterScaling { .. }
            | Action::RestoreScaling { .. }
            | Action::ApplyCapacity { .. }
            | Action::SetScaleInCooldown { .. }
            | Action::SetScalingBounds { .. }
            | Action::DeleteAlarm { .. }
            | Action::PutAlarm { .. }) => self.run_scaling_or_alarm(a).await?,
            Action::CreateModel {
                name,
                package_arn,
                tags,
            } => created(endpoints::create_model(sm, name, package_arn, role, tags).await?),
            Action::CreateEndpointConfig { spec } => {
                created(endpoints::create_config(sm, spec).await?)
            }
            Action::CreateEndpoint { endpoint, config } => {
                created(endpoints::create_endpoint(sm, endpoint, config).await?)
            }
            Action::UpdateEndpoint {
                endpoint,
                config,
                rollout,
            } => done(endpoints::update_endpoint(sm, endpoint, config, rollout.as_ref()).await?),
            Action::RejectPackage {
                package_arn,
                description,
            } => done(registry::reject(sm, package_arn, description).await?),
            Action::TagResource { arn, key, value } => {
                done(endpoints::tag(sm, arn, key, value).await?)
            }
            Action::UntagResource { arn, key } => done(endpoints::untag(sm, arn, key).await?),
            Action::DeleteEndpoint { endpoint } => {
                deleted(endpoints::delete_endpoint(sm, endpoint).await?)
            }
            Action::DeleteEndpointConfig { config } => {
                deleted(endpoints::delete_config(sm, config).await?)
            }
            Action::DeleteModel { model } => deleted(endpoints::delete_model(sm, model).await?),
            Action::CopyEndpointConfig {
                from,
                name,
                min_instances,
                live,
            } => {
                let Some(source) = endpoints::describe_config(sm, from).await? else {
                    return Err(Error::InvalidData(format!(
                        "endpoint config {from} is gone"
                    )));
                };
                created(endpoints::copy_config(sm, &source, name, *min_instances, live).await?)
            }
            Action::SetInstanceCount {
                endpoint,
                variant,
                count,
            } => done(endpoints::set_instance_count(sm, endpoint, variant, *count).await?),
            Action::ExportCatalog { export } => {
                exported(catalog::export(&self.clients.dynamodb, &self.clients.s3, export).await?)
            }
            Action::StartTrainingJob { job } => created(training::start(sm, job).await?),
            Action::RegisterPackage { package } => {
                let arn = crate::candidate::register(sm, &self.clients.s3, package).await?;
                Effect::Done(arn)
            }
        })
    }

    /// The steps that write only the ledger (the deployment record and its notes).
    async fn write_ledger(&self, action: &Action) -> Result<Effect> {
        let ledger = self.ledger;
        Ok(match action {
            Action::BeginDeployment { record, expected } => {
                done(ledger.begin_deployment(record, *expected).await?)
            }
            Action::ConfirmDeployment {
                endpoint,
                requested_at,
            } => done(ledger.confirm_deployment(endpoint, *requested_at).await?),
            Action::MarkLive {
                endpoint,
                requested_at,
                at,
            } => done(ledger.mark_live(endpoint, *requested_at, *at).await?),
            Action::RecordRecovery {
                endpoint,
                requested_at,
                recovered,
            } => done(
                ledger
                    .record_recovery(endpoint, *requested_at, *recovered)
                    .await?,
            ),
            Action::FinishDeployment {
                endpoint,
                requested_at,
                status,
            } => done(
                ledger
                    .finish_deployment(endpoint, *requested_at, *status)
                    .await?,
            ),
            Action::NoteAlarm { endpoint, alarm } => {
                match ledger.note_alarm(endpoint, alarm).await? {
                    true => Effect::Done("noted".into()),
                    false => Effect::AlreadyDone("no deployment in progress to note it on"),
                }
            }
            _ => unreachable!("run sends only ledger steps here"),
        })
    }

    /// Autoscaling and the managed alarms.
    async fn run_scaling_or_alarm(&self, action: &Action) -> Result<Effect> {
        let (aas, cw) = (&self.clients.autoscaling, &self.clients.cloudwatch);
        Ok(match action {
            Action::DeregisterScaling { resource_id } => {
                match scaling::deregister(aas, resource_id).await? {
                    true => Effect::Done("deregistered".into()),
                    false => Effect::AlreadyDone("already deregistered"),
                }
            }
            Action::RestoreScaling {
                resource_id,
                snapshot,
            } => done(scaling::restore(aas, resource_id, snapshot).await?),
            Action::SetScaleInCooldown {
                resource_id,
                policy_name,
                seconds,
            } => {
                done(scaling::set_scale_in_cooldown(aas, resource_id, policy_name, *seconds).await?)
            }
            Action::SetScalingBounds { target } => done(scaling::register(aas, target).await?),
            Action::ApplyCapacity {
                snapshot,
                register,
                schedules,
                delete_schedules,
            } => {
                let id = &snapshot.resource_id;
                if *register {
                    scaling::restore(aas, id, snapshot).await?;
                } else {
                    scaling::put_policies(aas, id, &snapshot.policies).await?;
                }
                for s in schedules {
                    scaling::put_schedule(aas, id, s).await?;
                }
                for name in delete_schedules {
                    scaling::delete_schedule(aas, id, name).await?;
                }
                Effect::Done(format!(
                    "{}-{} with {} policy and {} schedule(s)",
                    snapshot.min,
                    snapshot.max,
                    snapshot.policies.len(),
                    schedules.len()
                ))
            }
            Action::DeleteAlarm { name } => done(crate::guardrails::delete(cw, name).await?),
            Action::PutAlarm { alarm } => done(crate::guardrails::put(cw, alarm).await?),
            _ => unreachable!("run sends only scaling and alarm steps here"),
        })
    }
}

fn exported(out: catalog::Exported) -> Effect {
    if out.reused {
        Effect::AlreadyDone("already exported")
    } else {
        Effect::Done(format!(
            "{} items, {} bytes in {} parts to {}",
            out.items, out.bytes, out.parts, out.uri
        ))
    }
}
