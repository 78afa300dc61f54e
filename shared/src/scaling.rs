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
