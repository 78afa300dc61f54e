//! The SageMaker Model Registry: model packages, their approval status and their evaluations.

use std::collections::BTreeMap;

use aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput;
use aws_sdk_sagemaker::types::{ModelApprovalStatus, ModelPackageSortBy, SortOrder};
use serde::Serialize;

use crate::endpoints::{self, EndpointConfig};
use crate::error::{Error, Result, error_message};
use crate::names::truncate;

/// ApprovalDescription is limited to 1024 characters by SageMaker.
const MAX_DESCRIPTION: usize = 1024;

/// CustomerMetadataProperties key by which a person pins a version: `lifecycle:pinned=true`.
/// The alarm responder never rolls back past (below) a pinned version.
pub const PINNED: &str = "lifecycle:pinned";

/// A model package as the suite needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPackage {
    pub arn: String,
    pub group: String,
    pub version: i64,
    pub status: Approval,
    pub approval_description: Option<String>,
    /// CustomerMetadataProperties: evaluation results, training cutoffs, pins.
    pub metadata: BTreeMap<String, String>,
    /// S3 URI of the ModelQuality statistics JSON, when the package has one.
    pub quality_statistics: Option<String>,
}

impl ModelPackage {
    pub fn is_pinned(&self) -> bool {
        self.metadata
            .get(PINNED)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Approval {
    Approved,
    Rejected,
    PendingManualApproval,
}

impl Approval {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Approved" => Some(Approval::Approved),
            "Rejected" => Some(Approval::Rejected),
            "PendingManualApproval" => Some(Approval::PendingManualApproval),
            _ => None,
        }
    }
}

/// A package version in a group, newest first when sorted with [`newest_first`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PackageSummary {
    pub arn: String,
    pub version: i64,
    pub status: Approval,
}

/// DescribeModelPackage. `None` when the package does not exist (deleted, or a bad ARN).
pub async fn describe(sm: &aws_sdk_sagemaker::Client, arn: &str) -> Result<Option<ModelPackage>> {
    Ok(describe_output(sm, arn)
        .await?
        .map(|out| package_of(&out, arn)))
}

/// DescribeModelPackage as SageMaker answers it; `None` when there is no such package.
pub async fn describe_output(
    sm: &aws_sdk_sagemaker::Client,
    arn: &str,
) -> Result<Option<DescribeModelPackageOutput>> {
    match sm
        .describe_model_package()
        .model_package_name(arn)
        .send()
        .await
    {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if error_message(&e)
                .is_some_and(|m| m.contains("not found") || m.contains("does not exist")) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::aws("DescribeModelPackage", e)),
    }
}

/// The suite's view of a described package (`arn` when the answer names none).
pub fn package_of(out: &DescribeModelPackageOutput, arn: &str) -> ModelPackage {
    let status = out
        .model_approval_status()
        .and_then(|s| Approval::parse(s.as_str()))
        .unwrap_or(Approval::PendingManualApproval);
    ModelPackage {
        arn: out.model_package_arn().unwrap_or(arn).to_string(),
        group: out
            .model_package_group_name()
            .unwrap_or_default()
            .to_string(),
        version: out
            .model_package_version()
            .map(i64::from)
            .unwrap_or_default(),
        status,
        approval_description: out.approval_description().map(str::to_string),
        metadata: out
            .customer_metadata_properties()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        quality_statistics: out
            .model_metrics()
            .and_then(|m| m.model_quality())
            .and_then(|q| q.statistics())
            .and_then(|s| s.s3_uri())
            .map(str::to_string),
    }
}

/// The package an endpoint config serves: its `lifecycle:model-package-arn` tag (configs the suite
/// made), else its variant's model and the package that model was created from (configs made by
/// hand). `variant`: the variant to follow; `None` for the first one.
pub async fn served_by(
    sm: &aws_sdk_sagemaker::Client,
    config: &EndpointConfig,
    variant: Option<&str>,
) -> Result<Option<ModelPackage>> {
    match served_arn(sm, config, variant).await? {
        Some(arn) => describe(sm, &arn).await,
        None => Ok(None),
    }
}

/// The ARN of the package an endpoint config serves, as far as it can be told: the package its
/// variant's model was created from, else (a model made from an image) the config's tag. A tag
/// that contradicts the model is not believed (anyone who may tag a config could otherwise make
/// the suite see another version live): unknown.
pub async fn served_arn(
    sm: &aws_sdk_sagemaker::Client,
    config: &EndpointConfig,
    variant: Option<&str>,
) -> Result<Option<String>> {
    let v = match variant {
        Some(name) => config.variant(name),
        None => config.variants.first(),
    };
    let from_model = match v.and_then(|v| v.model_name()) {
        Some(model) => endpoints::model_package_of(sm, model).await?,
        None => None,
    };
    match (config.package_arn(), from_model) {
        (Some(tag), Some(model)) if tag != model => {
            tracing::warn!(config = %config.name, tag, model, "package tag contradicts the model: unknown");
            Ok(None)
        }
        (tag, model) => Ok(model.or(tag.map(str::to_string))),
    }
}

/// Every version of a group with the given status (all pages), newest version first.
pub async fn list(
    sm: &aws_sdk_sagemaker::Client,
    group: &str,
    status: Approval,
) -> Result<Vec<PackageSummary>> {
    list_where(sm, group, Some(status)).await
}

/// Every version of a group, whatever its status, newest version first.
pub async fn list_all(sm: &aws_sdk_sagemaker::Client, group: &str) -> Result<Vec<PackageSummary>> {
    list_where(sm, group, None).await
}

async fn list_where(
    sm: &aws_sdk_sagemaker::Client,
    group: &str,
    status: Option<Approval>,
) -> Result<Vec<PackageSummary>> {
    let wanted = status.map(|s| match s {
        Approval::Approved => ModelApprovalStatus::Approved,
        Approval::Rejected => ModelApprovalStatus::Rejected,
        Approval::PendingManualApproval => ModelApprovalStatus::PendingManualApproval,
    });
    let mut pages = sm
        .list_model_packages()
        .model_package_group_name(group)
        .set_model_approval_status(wanted)
        .sort_by(ModelPackageSortBy::CreationTime)
        .sort_order(SortOrder::Descending)
        .into_paginator()
        .items()
        .send();
    let mut out = Vec::new();
    while let Some(item) = pages.next().await {
        let s = item.map_err(|e| Error::aws("ListModelPackages", e))?;
        out.push(PackageSummary {
            arn: s.model_package_arn().unwrap_or_default().to_string(),
            version: s.model_package_version().map(i64::from).unwrap_or_default(),
            status: status.unwrap_or_else(|| {
                s.model_approval_status()
                    .and_then(|a| Approval::parse(a.as_str()))
                    .unwrap_or(Approval::PendingManualApproval)
            }),
        });
    }
    Ok(newest_first(out))
}

/// Versions sorted newest first. Versions, not creation times: they are what people read.
pub fn newest_first(mut packages: Vec<PackageSummary>) -> Vec<PackageSummary> {
    packages.sort_by_key(|p| std::cmp::Reverse(p.version));
    packages
}

/// Sets a package to Rejected, with a description that says why.
pub async fn reject(sm: &aws_sdk_sagemaker::Client, arn: &str, description: &str) -> Result<()> {
    sm.update_model_package()
        .model_package_arn(arn)
        .model_approval_status(ModelApprovalStatus::Rejected)
        .approval_description(truncate(description, MAX_DESCRIPTION))
        .send()
        .await
        .map_err(|e| Error::aws("UpdateModelPackage", e))?;
    Ok(())
}

/// The group of a versioned package ARN (`.../model-package/group/7`), as the ARN writes it
/// (SageMaker lower-cases names in ARNs: compare without case).
pub fn group_of(arn: &str) -> Option<&str> {
    let rest = arn.split_once(":model-package/")?.1;
    let (group, version) = rest.rsplit_once('/')?;
    version.parse::<i64>().ok().map(|_| group)
}

/// The version number at the end of a versioned package ARN (`.../model-package/group/7`).
pub fn version_of(arn: &str) -> Option<i64> {
    arn.rsplit('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_sort_by_version_not_by_arrival() {
        let p = |v| PackageSummary {
            arn: format!("arn/{v}"),
            version: v,
            status: Approval::Approved,
        };
        let sorted = newest_first(vec![p(2), p(10), p(1)]);
        assert_eq!(
            sorted.iter().map(|p| p.version).collect::<Vec<_>>(),
            vec![10, 2, 1]
        );
    }

    #[test]
    fn groups_come_from_versioned_arns() {
        assert_eq!(
            group_of("arn:aws:sagemaker:us-east-1:1:model-package/recs-mpg/12"),
            Some("recs-mpg")
        );
        assert_eq!(
            group_of("arn:aws:sagemaker:us-east-1:1:model-package/recs-mpg"),
            None
        );
        assert_eq!(group_of("arn:aws:sagemaker:us-east-1:1:model/recs/1"), None);
    }

    #[test]
    fn versions_come_from_the_arn() {
        assert_eq!(
            version_of("arn:aws:sagemaker:us-east-1:1:model-package/recs/12"),
            Some(12)
        );
        assert_eq!(
            version_of("arn:aws:sagemaker:us-east-1:1:model-package/recs"),
            None
        );
    }

    #[test]
    fn descriptions_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
