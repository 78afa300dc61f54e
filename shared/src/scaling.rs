//! Application Auto Scaling of SageMaker variants: the floor (MinCapacity) under a variant.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The resource id Application Auto Scaling gives a SageMaker variant.
pub fn resource_id(endpoint: &str, variant: &str) -> String {
    format!("endpoint/{endpoint}/variant/{variant}")
}

/// A registered scalable target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScalableTarget {
    pub resource_id: String,
    pub min: i32,
    pub max: i32,
}

/// The variant's scalable target, if it is registered.
pub async fn describe(
    client: &aws_sdk_applicationautoscaling::Client,
    endpoint: &str,
    variant: &str,
) -> Result<Option<ScalableTarget>> {
    let id = resource_id(endpoint, variant);
    let out = client
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_ids(&id)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeScalableTargets", e))?;
    Ok(out
        .scalable_targets()
        .iter()
        .find(|t| t.resource_id() == id)
        .map(|t| ScalableTarget {
            resource_id: id.clone(),
            min: t.min_capacity(),
            max: t.max_capacity(),
        }))
}

/// RegisterScalableTarget with these bounds (an update when the target exists).
pub async fn register(
    client: &aws_sdk_applicationautoscaling::Client,
    target: &ScalableTarget,
) -> Result<()> {
    client
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(&target.resource_id)
        .min_capacity(target.min)
        .max_capacity(target.max)
        .send()
        .await
        .map_err(|e| Error::aws("RegisterScalableTarget", e))?;
    Ok(())
}

/// Sets the scale-in cooldown of a target-tracking policy, keeping the rest of it: a short
/// cooldown lets autoscaling remove capacity between two bursts of traffic.
pub async fn set_scale_in_cooldown(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
    policy_name: &str,
    seconds: i32,
) -> Result<()> {
    let out = client
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_id(resource_id)
        .policy_names(policy_name)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeScalingPolicies", e))?;
    let Some(config) = out
        .scaling_policies()
        .iter()
        .find(|p| p.policy_name() == policy_name)
        .and_then(|p| p.target_tracking_scaling_policy_configuration())
    else {
        return Err(Error::InvalidData(format!(
            "{resource_id}: no target-tracking policy {policy_name}"
        )));
    };
    let mut updated = config.clone();
    updated.scale_in_cooldown = Some(seconds);
    client
        .put_scaling_policy()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(resource_id)
        .policy_name(policy_name)
        .policy_type(aws_sdk_applicationautoscaling::types::PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(updated)
        .send()
        .await
        .map_err(|e| Error::aws("PutScalingPolicy", e))?;
    Ok(())
}

/// A target-tracking policy, as much of it as a restore needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackingPolicy {
    pub name: String,
    pub target_value: f64,
    /// `SageMakerVariantInvocationsPerInstance`, ...
    pub predefined_metric: String,
    pub scale_in_cooldown: Option<i32>,
    pub scale_out_cooldown: Option<i32>,
    pub disable_scale_in: Option<bool>,
}

/// What a variant's autoscaling was, kept while it is deregistered around an update SageMaker
/// refuses otherwise, and restored from afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub resource_id: String,
    pub min: i32,
    pub max: i32,
    pub policies: Vec<TrackingPolicy>,
    /// Policies that cannot be restored from this snapshot (step scaling, customized metrics).
    pub unsupported: Vec<String>,
}

/// The variant's scalable target and its policies, if it is registered.
pub async fn snapshot(
    client: &aws_sdk_applicationautoscaling::Client,
    endpoint: &str,
    variant: &str,
) -> Result<Option<Snapshot>> {
    let Some(target) = describe(client, endpoint, variant).await? else {
        return Ok(None);
    };
    let out = client
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_id(&target.resource_id)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeScalingPolicies", e))?;
    let (mut policies, mut unsupported) = (vec![], vec![]);
    for p in out.scaling_policies() {
        let name = p.policy_name().to_string();
        let tracking = p.target_tracking_scaling_policy_configuration();
        match tracking.and_then(|c| Some((c, c.predefined_metric_specification()?))) {
            Some((c, metric)) => policies.push(TrackingPolicy {
                name,
                target_value: c.target_value(),
                predefined_metric: metric.predefined_metric_type().as_str().to_string(),
                scale_in_cooldown: c.scale_in_cooldown(),
                scale_out_cooldown: c.scale_out_cooldown(),
                disable_scale_in: c.disable_scale_in(),
            }),
            None => unsupported.push(name),
        }
    }
    Ok(Some(Snapshot {
        resource_id: target.resource_id,
        min: target.min,
        max: target.max,
        policies,
        unsupported,
    }))
}

/// DeregisterScalableTarget (its policies go with it). Already gone counts as done.
pub async fn deregister(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
) -> Result<bool> {
    let res = client
        .deregister_scalable_target()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(resource_id)
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if crate::error::error_code(&e) == Some("ObjectNotFoundException") => Ok(false),
        Err(e) => Err(Error::aws("DeregisterScalableTarget", e)),
    }
}

/// Registers `resource_id` with the snapshot's bounds and puts back its policies.
pub async fn restore(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
    s: &Snapshot,
) -> Result<()> {
    let target = ScalableTarget {
        resource_id: resource_id.to_string(),
        min: s.min,
        max: s.max,
    };
    register(client, &target).await?;
    put_policies(client, resource_id, &s.policies).await
}

/// Puts each target-tracking policy on a registered `resource_id`.
pub async fn put_policies(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
    policies: &[TrackingPolicy],
) -> Result<()> {
    use aws_sdk_applicationautoscaling::types::{
        MetricType, PolicyType, PredefinedMetricSpecification,
        TargetTrackingScalingPolicyConfiguration,
    };
    for p in policies {
        let metric = PredefinedMetricSpecification::builder()
            .predefined_metric_type(MetricType::from(p.predefined_metric.as_str()))
            .build()
            .map_err(|e| Error::InvalidData(format!("policy {}: {e}", p.name)))?;
        let config = TargetTrackingScalingPolicyConfiguration::builder()
            .target_value(p.target_value)
            .predefined_metric_specification(metric)
            .set_scale_in_cooldown(p.scale_in_cooldown)
            .set_scale_out_cooldown(p.scale_out_cooldown)
            .set_disable_scale_in(p.disable_scale_in)
            .build()
            .map_err(|e| Error::InvalidData(format!("policy {}: {e}", p.name)))?;
        client
            .put_scaling_policy()
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_id(resource_id)
            .policy_name(&p.name)
            .policy_type(PolicyType::TargetTrackingScaling)
            .target_tracking_scaling_policy_configuration(config)
            .send()
            .await
            .map_err(|e| Error::aws("PutScalingPolicy", e))?;
    }
    Ok(())
}

/// The live variant's autoscaling, when SageMaker would refuse an update to `variant` on
/// `instance_type` while it is registered (a changed instance type, a renamed variant).
pub async fn refused_update(
    client: &aws_sdk_applicationautoscaling::Client,
    endpoint: &str,
    live: &crate::endpoints::EndpointConfig,
    variant: &str,
    instance_type: &str,
) -> Result<Option<Snapshot>> {
    let Some(v) = live.variant(variant).or(live.variants.first()) else {
        return Ok(None);
    };
    let name = v.variant_name().unwrap_or_default();
    let same_type = v.instance_type().map(|t| t.as_str()) == Some(instance_type);
    if name == variant && same_type {
        return Ok(None);
    }
    snapshot(client, endpoint, name).await
}

/// The variant's scheduled actions whose names start with `prefix` (the suite's own).
pub async fn schedules(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
    prefix: &str,
) -> Result<Vec<crate::capacity::LiveSchedule>> {
    let out = client
        .describe_scheduled_actions()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_id(resource_id)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeScheduledActions", e))?;
    Ok(out
        .scheduled_actions()
        .iter()
        .filter(|a| a.scheduled_action_name().starts_with(prefix))
        .map(|a| crate::capacity::LiveSchedule {
            name: a.scheduled_action_name().to_string(),
            schedule: a.schedule().to_string(),
            timezone: a.timezone().map(str::to_string),
            min: a.scalable_target_action().and_then(|t| t.min_capacity()),
            max: a.scalable_target_action().and_then(|t| t.max_capacity()),
        })
        .collect())
}

/// PutScheduledAction (an update when it exists).
pub async fn put_schedule(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
    s: &crate::capacity::LiveSchedule,
) -> Result<()> {
    let action = aws_sdk_applicationautoscaling::types::ScalableTargetAction::builder()
        .set_min_capacity(s.min)
        .set_max_capacity(s.max)
        .build();
    client
        .put_scheduled_action()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(resource_id)
        .scheduled_action_name(&s.name)
        .schedule(&s.schedule)
        .set_timezone(s.timezone.clone())
        .scalable_target_action(action)
        .send()
        .await
        .map_err(|e| Error::aws("PutScheduledAction", e))?;
    Ok(())
}

/// DeleteScheduledAction. Already gone counts as done.
pub async fn delete_schedule(
    client: &aws_sdk_applicationautoscaling::Client,
    resource_id: &str,
    name: &str,
) -> Result<bool> {
    let res = client
        .delete_scheduled_action()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(resource_id)
        .scheduled_action_name(name)
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if crate::error::error_code(&e) == Some("ObjectNotFoundException") => Ok(false),
        Err(e) => Err(Error::aws("DeleteScheduledAction", e)),
    }
}
