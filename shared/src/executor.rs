//! The one place where plans touch AWS. Dry-run means: decide, record, do not act.

use tracing::{info, warn};

use crate::aws::Clients;
use crate::endpoints;
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::plan::{Action, Plan};
use crate::registry;
use crate::scaling;

pub struct Executor<'a> {
    pub clients: &'a Clients,
    pub ledger: &'a Ledger,
    /// The role SageMaker models run as (CreateModel needs it).
    pub execution_role_arn: &'a str,
    pub dry_run: bool,
}

/// What applying a plan did: one line per step, and the error that stopped it, if any.
#[derive(Debug, Default)]
pub struct Applied {
    pub results: Vec<String>,
    pub error: Option<Error>,
}

impl Executor<'_> {
    /// Applies the steps in order and stops at the first failure, so a later step never runs
    /// on the assumption that an earlier one happened.
    pub async fn apply(&self, plan: &Plan) -> Applied {
        let mut applied = Applied::default();
        for step in &plan.steps {
            let name = step.action.name();
            if self.dry_run {
                info!(action = name, reason = %step.reason, "dry run: not applied");
                applied
                    .results
                    .push(format!("{name}: dry run, not applied"));
                continue;
            }
            match self.run(&step.action).await {
                Ok(result) => {
                    info!(action = name, reason = %step.reason, result, "applied");
                    crate::metrics::mutation(name);
                    applied.results.push(format!("{name}: {result}"));
                }
                Err(e) => {
                    warn!(action = name, reason = %step.reason, error = %e, "failed");
                    applied.results.push(format!("{name}: failed: {e}"));
                    applied.error = Some(e);
                    break;
                }
            }
        }
        applied
    }

    async fn run(&self, action: &Action) -> Result<&'static str> {
        let sm = &self.clients.sagemaker;
        let created = |new: bool| if new { "done" } else { "already existed" };
        Ok(match action {
            Action::CreateModel {
                name,
                package_arn,
                tags,
            } => created(
                endpoints::create_model(sm, name, package_arn, self.execution_role_arn, tags)
                    .await?,
            ),
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
            } => {
                endpoints::update_endpoint(sm, endpoint, config, rollout.as_ref()).await?;
                "done"
            }
            Action::RejectPackage {
                package_arn,
                description,
            } => {
                registry::reject(sm, package_arn, description).await?;
                "done"
            }
            Action::BeginDeployment { record, expected } => {
                self.ledger.begin_deployment(record, *expected).await?;
                "done"
            }
            Action::NoteAlarm { endpoint, alarm } => {
                if self.ledger.note_alarm(endpoint, alarm).await? {
                    "noted"
                } else {
                    "no deployment in progress to note it on"
                }
            }
            Action::TagResource { arn, key, value } => {
                endpoints::tag(sm, arn, key, value).await?;
                "done"
            }
            Action::UntagResource { arn, key } => {
                endpoints::untag(sm, arn, key).await?;
                "done"
            }
            Action::DeleteEndpoint { endpoint } => {
                if endpoints::delete_endpoint(sm, endpoint).await? {
                    "done"
                } else {
                    "already gone"
                }
            }
            Action::DeleteEndpointConfig { config } => {
                if endpoints::delete_config(sm, config).await? {
                    "done"
                } else {
                    "already gone"
                }
            }
            Action::CopyEndpointConfig {
                from,
                name,
                min_instances,
            } => {
                let Some(source) = endpoints::describe_config(sm, from).await? else {
                    return Err(Error::InvalidData(format!(
                        "endpoint config {from} is gone"
                    )));
                };
                created(endpoints::copy_config(sm, &source, name, *min_instances).await?)
            }
            Action::SetScaleInCooldown {
                resource_id,
                policy_name,
                seconds,
            } => {
                scaling::set_scale_in_cooldown(
                    &self.clients.autoscaling,
                    resource_id,
                    policy_name,
                    *seconds,
                )
                .await?;
                "done"
            }
            Action::SetScalingBounds { target } => {
                scaling::register(&self.clients.autoscaling, target).await?;
                "done"
            }
            Action::SetInstanceCount {
                endpoint,
                variant,
                count,
            } => {
                endpoints::set_instance_count(sm, endpoint, variant, *count).await?;
                "done"
            }
            Action::FinishDeployment {
                endpoint,
                requested_at,
                status,
            } => {
                self.ledger
                    .finish_deployment(endpoint, *requested_at, *status)
                    .await?;
                "done"
            }
        })
    }
}
