//! SageMaker endpoints, their configs and models: what they are now, and the calls that change them.

use std::collections::BTreeMap;

use aws_sdk_sagemaker::types::{
    Alarm, AutoRollbackConfig, BlueGreenUpdatePolicy, CapacitySize, CapacitySizeType,
    ContainerDefinition, DeploymentConfig, ProductionVariant, ProductionVariantInstanceType, Tag,
    TrafficRoutingConfig, TrafficRoutingConfigType,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Error, Result, error_message};
use crate::targets::TrafficStrategy;

/// Endpoint config tags that say what a config serves; written by the deployer, read by everyone.
pub mod tags {
    pub const PACKAGE_ARN: &str = "lifecycle:model-package-arn";
    pub const PACKAGE_GROUP: &str = "lifecycle:model-package-group";
    pub const PACKAGE_VERSION: &str = "lifecycle:model-package-version";
    pub const REPLACES: &str = "lifecycle:replaces-config";
    /// On a canary's config: the candidate package and the variant it serves in (the live
    /// package stays in `PACKAGE_ARN`, as its variant serves it).
    pub const CANARY_PACKAGE: &str = "lifecycle:canary-package-arn";
    pub const CANARY_VARIANT: &str = "lifecycle:canary-variant";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EndpointStatus {
    Creating,
    Updating,
    SystemUpdating,
    RollingBack,
    InService,
    OutOfService,
    Deleting,
    Failed,
    UpdateRollbackFailed,
    Other(String),
}

impl EndpointStatus {
    /// Parses both spellings: `InService` (DescribeEndpoint) and `IN_SERVICE` (EventBridge).
    pub fn parse(s: &str) -> Self {
        let key: String = s
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        match key.as_str() {
            "creating" => Self::Creating,
            "updating" => Self::Updating,
            "systemupdating" => Self::SystemUpdating,
            "rollingback" => Self::RollingBack,
            "inservice" => Self::InService,
            "outofservice" => Self::OutOfService,
            "deleting" => Self::Deleting,
            "failed" => Self::Failed,
            "updaterollbackfailed" => Self::UpdateRollbackFailed,
            _ => Self::Other(s.to_string()),
        }
    }

    /// SageMaker is changing the endpoint; nobody else may.
    pub fn is_transitioning(&self) -> bool {
        matches!(
            self,
            Self::Creating
                | Self::Updating
                | Self::SystemUpdating
                | Self::RollingBack
                | Self::Deleting
        )
    }
}

/// One live variant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveVariant {
    pub name: String,
    pub current_instance_count: Option<i32>,
    /// The traffic weight it has now (it can differ from its config's initial weight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_weight: Option<f32>,
}

/// DescribeEndpoint, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub name: String,
    pub arn: String,
    pub status: EndpointStatus,
    pub config_name: String,
    /// The config an update in progress is moving to.
    pub pending_config: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_modified: Option<OffsetDateTime>,
    pub variants: Vec<LiveVariant>,
}

impl Endpoint {
    pub fn instance_count(&self, variant: &str) -> Option<i32> {
        self.variants
            .iter()
            .find(|v| v.name == variant)
            .and_then(|v| v.current_instance_count)
    }
}

/// DescribeEndpointConfig plus its tags.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub name: String,
    pub arn: String,
    pub variants: Vec<ProductionVariant>,
    pub data_capture: Option<aws_sdk_sagemaker::types::DataCaptureConfig>,
    pub kms_key_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub created: Option<OffsetDateTime>,
    /// Everything DescribeEndpointConfig said, so a copy keeps every field (async inference,
    /// shadow variants, VPC, execution role, ...), including fields added to SageMaker later.
    pub described:
        Box<aws_sdk_sagemaker::operation::describe_endpoint_config::DescribeEndpointConfigOutput>,
}

impl EndpointConfig {
    /// The models its production and shadow variants run.
    pub fn models(&self) -> Vec<String> {
        self.variants
            .iter()
            .chain(self.described.shadow_production_variants())
            .filter_map(|v| v.model_name().map(str::to_string))
            .collect()
    }

    /// The model package this config was made from, per its tags.
    pub fn package_arn(&self) -> Option<&str> {
        self.tags.get(tags::PACKAGE_ARN).map(String::as_str)
    }

    pub fn variant(&self, name: &str) -> Option<&ProductionVariant> {
        self.variants
            .iter()
            .find(|v| v.variant_name() == Some(name))
    }
}

fn not_found<E: aws_smithy_types::error::metadata::ProvideErrorMetadata, R>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
) -> bool {
    error_message(e).is_some_and(|m| m.starts_with("Could not find"))
}

type SdkResult<O, E> = std::result::Result<
    O,
    aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
>;

/// A create call's answer: `Ok(true)` when it made the resource, `Ok(false)` when the resource
/// already existed (names are deterministic, so a retry finds what the first try made).
fn created<O, E>(operation: &'static str, res: SdkResult<O, E>) -> Result<bool>
where
    E: std::error::Error
        + aws_smithy_types::error::metadata::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if error_message(&e).is_some_and(|m| m.contains("already exist")) => Ok(false),
        Err(e) => Err(Error::aws(operation, e)),
    }
}

/// A delete call's answer: `Ok(true)` when it deleted, `Ok(false)` when it was already gone.
fn deleted<O, E>(operation: &'static str, res: SdkResult<O, E>) -> Result<bool>
where
    E: std::error::Error
        + aws_smithy_types::error::metadata::ProvideErrorMetadata
        + Send
        + Sync
        + 'static,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(Error::aws(operation, e)),
    }
}

fn to_time(t: &aws_smithy_types::DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok()
}

/// DescribeEndpoint; `None` when there is no such endpoint.
pub async fn describe(sm: &aws_sdk_sagemaker::Client, name: &str) -> Result<Option<Endpoint>> {
    let out = match sm.describe_endpoint().endpoint_name(name).send().await {
        Ok(out) => out,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::aws("DescribeEndpoint", e)),
    };
    Ok(Some(Endpoint {
        name: out.endpoint_name().unwrap_or(name).to_string(),
        arn: out.endpoint_arn().unwrap_or_default().to_string(),
        status: EndpointStatus::parse(
            out.endpoint_status()
                .map(|s| s.as_str())
                .unwrap_or("Unknown"),
        ),
        config_name: out.endpoint_config_name().unwrap_or_default().to_string(),
        pending_config: out
            .pending_deployment_summary()
            .and_then(|p| p.endpoint_config_name())
            .map(str::to_string),
        last_modified: out.last_modified_time().and_then(to_time),
        variants: out
            .production_variants()
            .iter()
            .map(|v| LiveVariant {
                name: v.variant_name().unwrap_or_default().to_string(),
                current_instance_count: v.current_instance_count(),
                current_weight: v.current_weight(),
            })
            .collect(),
    }))
}

/// DescribeEndpointConfig and its tags; `None` when there is no such config.
pub async fn describe_config(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
) -> Result<Option<EndpointConfig>> {
    describe_config_with(sm, name, true).await
}

/// DescribeEndpointConfig, and its tags only if `with_tags` (one call fewer when they are not
/// needed, which counts when sweeping thousands of endpoints).
pub async fn describe_config_with(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
    with_tags: bool,
) -> Result<Option<EndpointConfig>> {
    let out = match sm
        .describe_endpoint_config()
        .endpoint_config_name(name)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::aws("DescribeEndpointConfig", e)),
    };
    let arn = out.endpoint_config_arn().unwrap_or_default().to_string();
    let tags = if with_tags {
        list_tags(sm, &arn).await?
    } else {
        BTreeMap::new()
    };
    Ok(Some(EndpointConfig {
        name: name.to_string(),
        arn,
        variants: out.production_variants().to_vec(),
        data_capture: out.data_capture_config().cloned(),
        kms_key_id: out.kms_key_id().map(str::to_string),
        tags,
        created: out.creation_time().and_then(to_time),
        described: Box::new(out),
    }))
}

/// The tags of a SageMaker resource (first page: SageMaker resources carry at most 50 tags).
pub async fn list_tags(
    sm: &aws_sdk_sagemaker::Client,
    arn: &str,
) -> Result<BTreeMap<String, String>> {
    Ok(sm
        .list_tags()
        .resource_arn(arn)
        .max_results(100)
        .send()
        .await
        .map_err(|e| Error::aws("ListTags", e))?
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect())
}

/// The model package a model was created from (DescribeModel); `None` for a model without one.
pub async fn model_package_of(
    sm: &aws_sdk_sagemaker::Client,
    model: &str,
) -> Result<Option<String>> {
    let out = match sm.describe_model().model_name(model).send().await {
        Ok(out) => out,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(Error::aws("DescribeModel", e)),
    };
    Ok(out
        .primary_container()
        .into_iter()
        .chain(out.containers())
        .find_map(|c| c.model_package_name())
        .map(str::to_string))
}

/// What a new endpoint config is made of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigSpec {
    pub name: String,
    pub variant: String,
    pub model: String,
    pub instance_type: String,
    pub instance_count: i32,
    /// A canary's candidate, beside the variant above, with its share of the traffic.
    pub canary: Option<CanaryVariant>,
    pub tags: BTreeMap<String, String>,
    /// Settings carried over from the config it replaces (data capture, KMS key, variant timeouts).
    #[serde(skip)]
    pub carried: Option<EndpointConfig>,
}

/// The second production variant of a canary's config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryVariant {
    pub variant: String,
    pub model: String,
    pub instance_type: String,
    pub instance_count: i32,
    /// Its share of the traffic, in percent; the first variant has the rest.
    pub percent: i32,
}

/// How an update shifts traffic and which alarms roll it back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RolloutSpec {
    pub strategy: TrafficStrategy,
    pub bake_seconds: i32,
    pub timeout_seconds: i32,
    pub rollback_alarms: Vec<String>,
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// CreateModel from a versioned model package. `Ok(false)` when it already exists.
pub async fn create_model(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
    package_arn: &str,
    role_arn: &str,
    tags: &BTreeMap<String, String>,
) -> Result<bool> {
    let res = sm
        .create_model()
        .model_name(name)
        .execution_role_arn(role_arn)
        .primary_container(
            ContainerDefinition::builder()
                .model_package_name(package_arn)
                .build(),
        )
        .set_tags(Some(sdk_tags(tags)))
        .send()
        .await;
    created("CreateModel", res)
}

/// CreateEndpointConfig. `Ok(false)` when it already exists.
pub async fn create_config(sm: &aws_sdk_sagemaker::Client, spec: &ConfigSpec) -> Result<bool> {
    let old_variant = spec
        .carried
        .as_ref()
        .and_then(|c| c.variant(&spec.variant).or(c.variants.first()));
    let variant = |name: &str, model: &str, instance_type: &str, count: i32, weight: f32| {
        let mut variant = ProductionVariant::builder()
            .variant_name(name)
            .model_name(model)
            .instance_type(ProductionVariantInstanceType::from(instance_type))
            .initial_instance_count(count)
            .initial_variant_weight(weight);
        if let Some(old) = old_variant {
            variant = variant
                .set_volume_size_in_gb(old.volume_size_in_gb())
                .set_model_data_download_timeout_in_seconds(
                    old.model_data_download_timeout_in_seconds(),
                )
                .set_container_startup_health_check_timeout_in_seconds(
                    old.container_startup_health_check_timeout_in_seconds(),
                );
        }
        variant.build()
    };
    let share = spec.canary.as_ref().map_or(0, |c| c.percent);
    let mut variants = vec![variant(
        &spec.variant,
        &spec.model,
        &spec.instance_type,
        spec.instance_count,
        (100 - share) as f32 / 100.0,
    )];
    if let Some(c) = &spec.canary {
        let weight = c.percent as f32 / 100.0;
        variants.push(variant(
            &c.variant,
            &c.model,
            &c.instance_type,
            c.instance_count,
            weight,
        ));
    }
    let res = sm
        .create_endpoint_config()
        .endpoint_config_name(&spec.name)
        .set_production_variants(Some(variants))
        .set_data_capture_config(spec.carried.as_ref().and_then(|c| c.data_capture.clone()))
        .set_kms_key_id(spec.carried.as_ref().and_then(|c| c.kms_key_id.clone()))
        .set_tags(Some(sdk_tags(&spec.tags)))
        .send()
        .await;
    created("CreateEndpointConfig", res)
}

/// CreateEndpoint. `Ok(false)` when it already exists.
pub async fn create_endpoint(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
    config: &str,
) -> Result<bool> {
    let res = sm
        .create_endpoint()
        .endpoint_name(name)
        .endpoint_config_name(config)
        .send()
        .await;
    created("CreateEndpoint", res)
}

/// A copy of a config with at least `min_instances` per production variant and every other field
/// as it was (the sweeper's fix for a single-instance production variant): the variants are
/// cloned whole; only their instance count changes, and it starts from what runs now (`live`),
/// so a sibling variant that scaled out is not shrunk back to its initial count, nor a drained one
/// given its initial weight back. `Ok(false)` when it already exists.
pub async fn copy_config(
    sm: &aws_sdk_sagemaker::Client,
    from: &EndpointConfig,
    name: &str,
    min_instances: i32,
    live: &[LiveVariant],
) -> Result<bool> {
    let d = &from.described;
    let variants = d
        .production_variants()
        .iter()
        .map(|v| {
            let mut v = v.clone();
            let now = live
                .iter()
                .find(|l| Some(l.name.as_str()) == v.variant_name());
            // Serverless variants have no instances to raise.
            if let Some(n) = v.initial_instance_count {
                let running = now.and_then(|l| l.current_instance_count).unwrap_or(n);
                v.initial_instance_count = Some(running.max(min_instances));
            }
            if let Some(w) = now.and_then(|l| l.current_weight) {
                v.initial_variant_weight = Some(w);
            }
            v
        })
        .collect();
    let mut tags = from.tags.clone();
    tags.insert(tags::REPLACES.to_string(), from.name.clone());
    let res = sm
        .create_endpoint_config()
        .endpoint_config_name(name)
        .set_production_variants(Some(variants))
        .set_shadow_production_variants(d.shadow_production_variants.clone())
        .set_data_capture_config(d.data_capture_config.clone())
        .set_kms_key_id(d.kms_key_id.clone())
        .set_async_inference_config(d.async_inference_config.clone())
        .set_explainer_config(d.explainer_config.clone())
        .set_execution_role_arn(d.execution_role_arn.clone())
        .set_vpc_config(d.vpc_config.clone())
        .set_enable_network_isolation(d.enable_network_isolation)
        .set_metrics_config(d.metrics_config.clone())
        .set_tags(Some(sdk_tags(&tags)))
        .send()
        .await;
    created("CreateEndpointConfig", res)
}

/// DeleteEndpoint; `Ok(false)` when it was already gone.
pub async fn delete_endpoint(sm: &aws_sdk_sagemaker::Client, name: &str) -> Result<bool> {
    let res = sm.delete_endpoint().endpoint_name(name).send().await;
    deleted("DeleteEndpoint", res)
}

/// DeleteModel; `Ok(false)` when it was already gone.
pub async fn delete_model(sm: &aws_sdk_sagemaker::Client, name: &str) -> Result<bool> {
    let res = sm.delete_model().model_name(name).send().await;
    deleted("DeleteModel", res)
}

/// DeleteEndpointConfig; `Ok(false)` when it was already gone.
pub async fn delete_config(sm: &aws_sdk_sagemaker::Client, name: &str) -> Result<bool> {
    let res = sm
        .delete_endpoint_config()
        .endpoint_config_name(name)
        .send()
        .await;
    deleted("DeleteEndpointConfig", res)
}

/// AddTags on any SageMaker resource.
pub async fn tag(sm: &aws_sdk_sagemaker::Client, arn: &str, key: &str, value: &str) -> Result<()> {
    sm.add_tags()
        .resource_arn(arn)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await
        .map_err(|e| Error::aws("AddTags", e))?;
    Ok(())
}

/// DeleteTags on any SageMaker resource.
pub async fn untag(sm: &aws_sdk_sagemaker::Client, arn: &str, key: &str) -> Result<()> {
    sm.delete_tags()
        .resource_arn(arn)
        .tag_keys(key)
        .send()
        .await
        .map_err(|e| Error::aws("DeleteTags", e))?;
    Ok(())
}

/// UpdateEndpoint to `config`, with a blue/green rollout when `rollout` is given.
pub async fn update_endpoint(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
    config: &str,
    rollout: Option<&RolloutSpec>,
) -> Result<()> {
    sm.update_endpoint()
        .endpoint_name(name)
        .endpoint_config_name(config)
        .set_deployment_config(rollout.map(deployment_config))
        .send()
        .await
        .map_err(|e| Error::aws("UpdateEndpoint", e))?;
    Ok(())
}

/// UpdateEndpointWeightsAndCapacities: the variant's instance count, in place, without a new
/// config (what a scale-up needs at once; SageMaker refuses it while the endpoint is updating).
pub async fn set_instance_count(
    sm: &aws_sdk_sagemaker::Client,
    endpoint: &str,
    variant: &str,
    count: i32,
) -> Result<()> {
    let desired = aws_sdk_sagemaker::types::DesiredWeightAndCapacity::builder()
        .variant_name(variant)
        .desired_instance_count(count)
        .build();
    sm.update_endpoint_weights_and_capacities()
        .endpoint_name(endpoint)
        .desired_weights_and_capacities(desired)
        .send()
        .await
        .map_err(|e| Error::aws("UpdateEndpointWeightsAndCapacities", e))?;
    Ok(())
}

/// SageMaker's DeploymentConfig for a rollout.
pub fn deployment_config(r: &RolloutSpec) -> DeploymentConfig {
    let percent = |v: i32| {
        CapacitySize::builder()
            .r#type(CapacitySizeType::CapacityPercent)
            .value(v)
            .build()
    };
    let routing = match r.strategy {
        TrafficStrategy::AllAtOnce => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::AllAtOnce)
            .wait_interval_in_seconds(0),
        TrafficStrategy::Canary {
            percent: p,
            wait_seconds,
        } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::Canary)
            .wait_interval_in_seconds(wait_seconds)
            .canary_size(percent(p)),
        TrafficStrategy::Linear {
            step_percent,
            wait_seconds,
        } => TrafficRoutingConfig::builder()
            .r#type(TrafficRoutingConfigType::Linear)
            .wait_interval_in_seconds(wait_seconds)
            .linear_step_size(percent(step_percent)),
    };
    let alarms = r
        .rollback_alarms
        .iter()
        .map(|a| Alarm::builder().alarm_name(a).build())
        .collect();
    // No alarms, no AutoRollbackConfiguration: SageMaker refuses an empty alarm list. The alarm
    // responder's rollbacks go out this way, fast and unguarded, to a version already trusted.
    let auto_rollback = (!r.rollback_alarms.is_empty()).then(|| {
        AutoRollbackConfig::builder()
            .set_alarms(Some(alarms))
            .build()
    });
    DeploymentConfig::builder()
        .blue_green_update_policy(
            BlueGreenUpdatePolicy::builder()
                .traffic_routing_configuration(routing.build())
                .termination_wait_in_seconds(r.bake_seconds)
                .maximum_execution_timeout_in_seconds(r.timeout_seconds)
                .build(),
        )
        .set_auto_rollback_configuration(auto_rollback)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_in_both_spellings() {
        assert_eq!(
            EndpointStatus::parse("IN_SERVICE"),
            EndpointStatus::InService
        );
        assert_eq!(
            EndpointStatus::parse("InService"),
            EndpointStatus::InService
        );
        assert_eq!(
            EndpointStatus::parse("ROLLING_BACK"),
            EndpointStatus::RollingBack
        );
        assert!(EndpointStatus::parse("UPDATING").is_transitioning());
        assert!(!EndpointStatus::parse("FAILED").is_transitioning());
    }

    #[test]
    fn a_linear_rollout_becomes_sagemakers_deployment_config() {
        let spec = RolloutSpec {
            strategy: TrafficStrategy::Linear {
                step_percent: 25,
                wait_seconds: 60,
            },
            bake_seconds: 300,
            timeout_seconds: 3600,
            rollback_alarms: vec!["a".into(), "b".into()],
        };
        let dc = deployment_config(&spec);
        let bg = dc.blue_green_update_policy().unwrap();
        let routing = bg.traffic_routing_configuration().unwrap();
        assert_eq!(routing.r#type(), Some(&TrafficRoutingConfigType::Linear));
        assert_eq!(routing.linear_step_size().unwrap().value(), Some(25));
        assert_eq!(bg.termination_wait_in_seconds(), Some(300));
        assert_eq!(dc.auto_rollback_configuration().unwrap().alarms().len(), 2);
    }
}
