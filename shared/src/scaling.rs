//! Application Auto Scaling of SageMaker variants: the floor (MinCapacity) under a variant.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use serde::Serialize;

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
