//! A retrained adapter becomes a candidate package (seed 000, scenario 2; the registry holds every
//! version with its lineage, and only evaluated versions deploy): a new version of the group the
//! adapter endpoint serves, with that package's inference specification, the job's model
//! artifacts, its lineage in the metadata and its final metrics as a ModelQuality statistics
//! report the deployer's gates read like any other.

use std::collections::BTreeMap;

use aws_sdk_sagemaker::types::{
    InferenceSpecification, MetricsSource, ModelApprovalStatus, ModelMetrics,
    ModelPackageContainerDefinition, ModelPackageSortBy, ModelQuality, SortOrder,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// The metadata key naming the training job a package was registered from.
pub const TRAINING_JOB: &str = "training_job";
/// A page of the registry's versions, read for one registered from a job already.
const PAGE: i32 = 50;

/// What a package serves with (its InferenceSpecification), as the suite copies it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceSpec {
    pub containers: Vec<Container>,
    pub content_types: Vec<String>,
    pub response_types: Vec<String>,
    pub realtime_instance_types: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Container {
    pub image: String,
    pub model_data_url: Option<String>,
    pub environment: BTreeMap<String, String>,
}

/// A candidate package to register: a plan action ([`crate::plan::Action::RegisterPackage`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidatePackage {
    pub group: String,
    pub description: String,
    pub inference: InferenceSpec,
    pub metadata: BTreeMap<String, String>,
    /// The ModelQuality statistics report, written to `statistics_uri` before registering.
    pub statistics: Value,
    pub statistics_uri: String,
    /// Registered Approved (the deployer's gates still apply) or PendingManualApproval.
    pub approve: bool,
    /// SageMaker's idempotency token: one job, one package, even when two deliveries race.
    pub client_token: String,
}

impl InferenceSpec {
    /// The same specification with the adapter's new model data in its first container (the
    /// one that serves the adapter; any others, a shared base model, are kept as they are).
    pub fn with_model_data(&self, url: &str) -> Self {
        let mut spec = self.clone();
        if let Some(c) = spec.containers.first_mut() {
            c.model_data_url = Some(url.to_string());
        }
        spec
    }
}

/// A training job's final metrics as a ModelQuality statistics report:
/// `{"training_metrics": {"<metric>": {"value": v}}}`, the shape the deployer's gates read.
pub fn statistics(metrics: &BTreeMap<String, f64>) -> Value {
    let section: serde_json::Map<String, Value> = metrics
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| (k.clone(), json!({"value": v})))
        .collect();
    json!({"training_metrics": section})
}

/// The inference specification of a described package; `None` when it has none (a package
/// made from an algorithm, say).
pub fn inference_of(
    out: &aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput,
) -> Option<InferenceSpec> {
    let spec = out.inference_specification()?;
    let strings = |v: &[String]| v.to_vec();
    Some(InferenceSpec {
        containers: spec
            .containers()
            .iter()
            .map(|c| Container {
                image: c.image().unwrap_or_default().to_string(),
                model_data_url: c.model_data_url().map(str::to_string),
                environment: c
                    .environment()
                    .map(|e| e.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            })
            .collect(),
        content_types: strings(spec.supported_content_types()),
        response_types: strings(spec.supported_response_mime_types()),
        realtime_instance_types: spec
            .supported_realtime_inference_instance_types()
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
    })
}

/// Every version of `group` registered since `since` (epoch seconds; a job's creation), newest
/// first, described. Read page by page: a package of the job cannot be older, so a search for it
/// is complete however many versions others registered meanwhile.
pub async fn registered_since(
    sm: &aws_sdk_sagemaker::Client,
    group: &str,
    since: Option<i64>,
) -> Result<Vec<crate::registry::ModelPackage>> {
    // A minute's slack for the clocks of the two services.
    let after = since.map(|s| aws_smithy_types::DateTime::from_secs(s - 60));
    let mut pages = sm
        .list_model_packages()
        .model_package_group_name(group)
        .set_creation_time_after(after)
        .sort_by(ModelPackageSortBy::CreationTime)
        .sort_order(SortOrder::Descending)
        .max_results(PAGE)
        .into_paginator()
        .items()
        .send();
    let mut out = Vec::new();
    while let Some(p) = pages.next().await {
        let p = p.map_err(|e| Error::aws("ListModelPackages", e))?;
        let arn = p.model_package_arn().unwrap_or_default();
        out.extend(crate::registry::describe(sm, arn).await?);
    }
    Ok(out)
}

/// Writes the statistics report, then CreateModelPackage. Returns the package's ARN.
pub async fn register(
    sm: &aws_sdk_sagemaker::Client,
    s3: &aws_sdk_s3::Client,
    c: &CandidatePackage,
) -> Result<String> {
    let (bucket, key) = c
        .statistics_uri
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(|| Error::InvalidData(format!("{} is no S3 URI", c.statistics_uri)))?;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(c.statistics.to_string().into_bytes().into())
        .send()
        .await
        .map_err(|e| Error::aws("PutObject", e))?;
    let statistics = MetricsSource::builder()
        .content_type("application/json")
        .s3_uri(&c.statistics_uri)
        .build();
    let status = if c.approve {
        ModelApprovalStatus::Approved
    } else {
        ModelApprovalStatus::PendingManualApproval
    };
    let out = sm
        .create_model_package()
        .model_package_group_name(&c.group)
        .model_package_description(crate::names::truncate(&c.description, 1000))
        .inference_specification(specification(&c.inference))
        .model_metrics(
            ModelMetrics::builder()
                .model_quality(ModelQuality::builder().statistics(statistics).build())
                .build(),
        )
        .set_customer_metadata_properties(Some(c.metadata.clone().into_iter().collect()))
        .model_approval_status(status)
        .client_token(&c.client_token)
        .send()
        .await
        .map_err(|e| Error::aws("CreateModelPackage", e))?;
    Ok(out.model_package_arn().unwrap_or_default().to_string())
}

fn specification(s: &InferenceSpec) -> InferenceSpecification {
    let containers = s
        .containers
        .iter()
        .map(|c| {
            ModelPackageContainerDefinition::builder()
                .image(&c.image)
                .set_model_data_url(c.model_data_url.clone())
                .set_environment(
                    (!c.environment.is_empty())
                        .then(|| c.environment.clone().into_iter().collect()),
                )
                .build()
        })
        .collect();
    InferenceSpecification::builder()
        .set_containers(Some(containers))
        .set_supported_content_types(Some(s.content_types.clone()))
        .set_supported_response_mime_types(Some(s.response_types.clone()))
        .set_supported_realtime_inference_instance_types(Some(
            s.realtime_instance_types
                .iter()
                .map(|t| t.as_str().into())
                .collect(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_metrics_become_a_report_the_gates_read() {
        let metrics = BTreeMap::from([
            ("validation_loss".to_string(), 0.29),
            ("broken".to_string(), f64::NAN),
        ]);
        assert_eq!(
            statistics(&metrics),
            json!({"training_metrics": {"validation_loss": {"value": 0.29}}})
        );
    }

    #[test]
    fn only_the_first_container_gets_the_new_adapter() {
        let c = |url: &str| Container {
            image: "img".into(),
            model_data_url: Some(url.into()),
            environment: BTreeMap::new(),
        };
        let spec = InferenceSpec {
            containers: vec![c("s3://m/old.tar.gz"), c("s3://m/base.tar.gz")],
            content_types: vec![],
            response_types: vec![],
            realtime_instance_types: vec![],
        };
        let new = spec.with_model_data("s3://m/new.tar.gz");
        assert_eq!(
            new.containers[0].model_data_url.as_deref(),
            Some("s3://m/new.tar.gz")
        );
        assert_eq!(new.containers[1], spec.containers[1]);
    }
}
