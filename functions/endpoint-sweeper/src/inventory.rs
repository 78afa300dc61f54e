//! Everything the sweep judges, read from AWS. No writes here.
//!
//! Account-wide reads (the endpoint list, every endpoint's and config's tags, autoscaling targets
//! and policies) must all succeed or the sweep acts on nothing. Then every endpoint, in every
//! state, is described once (its config counts as in use whatever the state); configs are
//! described once per run each, only where a judgement needs what is in them; models only to find
//! the package of an endpoint nothing tags. A per-endpoint read that fails leaves that endpoint
//! unjudged, and no config is deleted that run (it could be the unreadable endpoint's).

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_applicationautoscaling::types::ServiceNamespace;
use futures_util::stream::{self, StreamExt};
use lifecycle::endpoints::{self, EndpointStatus, tags};
use lifecycle::error::{Error, Result};
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    /// `None` until the config is read.
    pub instance_type: Option<String>,
    pub instances: Option<i32>,
    /// Its traffic weight now.
    #[serde(skip)]
    pub weight: Option<f32>,
    /// No model: the variant hosts inference components (the only kind that can scale to zero).
    pub inference_components: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointFacts {
    pub name: String,
    pub arn: String,
    pub status: EndpointStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    pub config: String,
    /// The config an update in progress moves to: in use too.
    pub pending_config: Option<String>,
    /// When it last changed (an update, a capacity change).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_modified: Option<OffsetDateTime>,
    /// Why its Invocations say nothing about its traffic, if they do not (asynchronous inference,
    /// inference components): it is then never judged idle.
    pub traffic_unmeasured: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The config's tags (the deployer's `lifecycle:model-package-group`, for one).
    pub config_tags: BTreeMap<String, String>,
    pub variants: Vec<Variant>,
    /// Whether the config was read: instance types, costs and models are known only then.
    pub config_read: bool,
    /// The models the config runs (when read).
    pub models: Vec<String>,
    /// The model package it serves: from its tags, its config's tags, or its model.
    pub package: Option<String>,
    /// Why this endpoint could not be read in full; it is then not judged.
    pub error: Option<String>,
}

impl EndpointFacts {
    /// The model package group it serves, if anything says.
    pub fn group(&self) -> Option<String> {
        self.tags
            .get(tags::PACKAGE_GROUP)
            .or_else(|| self.config_tags.get(tags::PACKAGE_GROUP))
            .cloned()
            .or_else(|| {
                let arn = self.package.as_deref()?;
                lifecycle::registry::group_of(arn).map(str::to_string)
            })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub name: String,
    /// Target-tracking policies only; step policies have no scale-in cooldown.
    pub scale_in_cooldown: Option<i32>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Scaling {
    pub min: i32,
    pub max: i32,
    pub policies: Vec<Policy>,
}

/// One row of ListEndpoints.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub arn: String,
    pub status: EndpointStatus,
    pub created: Option<OffsetDateTime>,
}

/// Tags by lower-cased ARN (SageMaker writes names lower-case in ARNs).
pub type TagMap = HashMap<String, BTreeMap<String, String>>;

/// Every endpoint of the account (all pages).
pub async fn list(sm: &aws_sdk_sagemaker::Client) -> Result<Vec<Listed>> {
    let mut pages = sm
        .list_endpoints()
        .max_results(100)
        .into_paginator()
        .items()
        .send();
    let mut out = vec![];
    while let Some(e) = pages.next().await {
        let e = e.map_err(|e| Error::aws("ListEndpoints", e))?;
        out.push(Listed {
            name: e.endpoint_name().unwrap_or_default().to_string(),
            arn: e.endpoint_arn().unwrap_or_default().to_string(),
            status: EndpointStatus::parse(
                e.endpoint_status().map(|s| s.as_str()).unwrap_or("Unknown"),
            ),
            created: e
                .creation_time()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
        });
    }
    Ok(out)
}

/// The tags of every endpoint and endpoint config of the account that has any, 100 a call (the
/// Resource Groups Tagging API), instead of one ListTags per endpoint. It can trail a tag change
/// by a little: what is acted on is read again, endpoint by endpoint, under its lease.
pub async fn tags(tagging: &aws_sdk_resourcegroupstagging::Client) -> Result<TagMap> {
    let mut out = TagMap::new();
    let mut token: Option<String> = None;
    loop {
        let page = tagging
            .get_resources()
            .resource_type_filters("sagemaker:endpoint")
            .resource_type_filters("sagemaker:endpoint-config")
            .resources_per_page(100)
            .set_pagination_token(token.clone())
            .send()
            .await
            .map_err(|e| Error::aws("GetResources", e))?;
        for r in page.resource_tag_mapping_list() {
            let tags = r
                .tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect();
            out.insert(r.resource_arn().unwrap_or_default().to_lowercase(), tags);
        }
        token = page
            .pagination_token()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// An endpoint config's ARN, from its endpoint's (same account and region), lower-cased.
fn config_arn(endpoint_arn: &str, config: &str) -> String {
    match endpoint_arn.to_lowercase().split_once(":endpoint/") {
        Some((head, _)) => format!("{head}:endpoint-config/{}", config.to_lowercase()),
        None => String::new(),
    }
}

/// DescribeEndpoint of every listed endpoint, whatever its state, `concurrency` at a time.
pub async fn endpoints(
    sm: &aws_sdk_sagemaker::Client,
    listed: Vec<Listed>,
    tags: &TagMap,
    concurrency: usize,
) -> Vec<EndpointFacts> {
    let mut out: Vec<EndpointFacts> = stream::iter(listed)
        .map(|l| async move {
            let described = endpoints::describe(sm, &l.name).await;
            facts(l, described, tags)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One endpoint's facts from its listing, its description and the account's tags.
pub fn facts(
    l: Listed,
    described: Result<Option<endpoints::Endpoint>>,
    tags: &TagMap,
) -> EndpointFacts {
    let mut f = EndpointFacts {
        tags: tags.get(&l.arn.to_lowercase()).cloned().unwrap_or_default(),
        name: l.name,
        arn: l.arn,
        status: l.status,
        created: l.created,
        config: String::new(),
        pending_config: None,
        last_modified: None,
        traffic_unmeasured: None,
        config_tags: BTreeMap::new(),
        variants: vec![],
        config_read: false,
        models: vec![],
        package: None,
        error: None,
    };
    match described {
        Ok(Some(ep)) => {
            f.status = ep.status;
            f.config_tags = tags
                .get(&config_arn(&f.arn, &ep.config_name))
                .cloned()
                .unwrap_or_default();
            f.package = f
                .tags
                .get(tags::PACKAGE_ARN)
                .or_else(|| f.config_tags.get(tags::PACKAGE_ARN))
                .cloned();
            f.config = ep.config_name;
            f.pending_config = ep.pending_config;
            f.last_modified = ep.last_modified;
            f.variants = ep
                .variants
                .into_iter()
                .map(|v| Variant {
                    name: v.name,
                    instance_type: None,
                    instances: v.current_instance_count,
                    weight: v.current_weight,
                    inference_components: false,
                })
                .collect();
        }
        Ok(None) => f.error = Some("deleted while the sweep ran".into()),
        Err(e) => f.error = Some(e.to_string()),
    }
    f
}

/// Describes the configs of the endpoints `wanted` picks, each config once, and fills in their
/// variants' instance types, the models and (when nothing tagged it) the package.
pub async fn configs(
    sm: &aws_sdk_sagemaker::Client,
    facts: &mut [EndpointFacts],
    wanted: impl Fn(&EndpointFacts) -> bool,
    concurrency: usize,
) -> usize {
    // The config an update moves to, too: the models it names are in use.
    let names: HashSet<String> = facts
        .iter()
        .filter(|f| f.error.is_none() && !f.config.is_empty() && wanted(f))
        .flat_map(|f| std::iter::once(f.config.clone()).chain(f.pending_config.clone()))
        .collect();
    let calls = names.len();
    let read: HashMap<String, Result<Option<endpoints::EndpointConfig>>> = stream::iter(names)
        .map(|name| async move {
            let c = endpoints::describe_config_with(sm, &name, false).await;
            (name, c)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for f in facts.iter_mut() {
        match read.get(&f.config) {
            None => {}
            Some(Ok(Some(c))) => fill(f, c),
            Some(Ok(None)) => f.error = Some(format!("its config {} is gone", f.config)),
            Some(Err(e)) => f.error = Some(e.to_string()),
        }
        match f.pending_config.as_ref().and_then(|p| read.get(p)) {
            Some(Ok(Some(c))) => f.models.extend(c.models()),
            Some(Err(e)) => f.error = Some(e.to_string()),
            _ => {}
        }
    }
    calls
}

fn fill(f: &mut EndpointFacts, c: &endpoints::EndpointConfig) {
    for v in &mut f.variants {
        let configured = c.variant(&v.name);
        v.instance_type = configured
            .and_then(|c| c.instance_type())
            .map(|t| t.as_str().to_string());
        v.inference_components = configured.is_some_and(|c| c.model_name().is_none());
    }
    f.models = c.models();
    f.config_read = true;
    // SageMaker publishes no Invocations for asynchronous endpoints, and those of inference
    // components per component: zero there is not idle.
    f.traffic_unmeasured = if c.described.async_inference_config().is_some() {
        Some("asynchronous inference: no Invocations metric".into())
    } else if f.variants.iter().any(|v| v.inference_components) {
        Some("inference components: Invocations are per component".into())
    } else {
        None
    };
}

/// The package of each endpoint whose tags name none, through its first model's
/// `ModelPackageName` (DescribeModel, each model once): how an untagged copy of a target's model
/// is found. A model that cannot be read leaves the endpoint unjudged: it could be such a copy.
pub async fn packages(
    sm: &aws_sdk_sagemaker::Client,
    facts: &mut [EndpointFacts],
    concurrency: usize,
) -> usize {
    let models: HashSet<String> = facts
        .iter()
        .filter(|f| f.error.is_none() && f.package.is_none())
        .filter_map(|f| f.models.first().cloned())
        .collect();
    let calls = models.len();
    let read: HashMap<String, Result<Option<String>>> = stream::iter(models)
        .map(|m| async move {
            let p = endpoints::model_package_of(sm, &m).await;
            (m, p)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for f in facts.iter_mut() {
        if f.package.is_some() {
            continue;
        }
        match f.models.first().and_then(|m| read.get(m)) {
            Some(Ok(p)) => f.package = p.clone(),
            Some(Err(e)) => f.error = Some(e.to_string()),
            None => {}
        }
    }
    calls
}

/// One endpoint read again in full, with its own ListTags (not the tagging API, which can trail a
/// change): what the sweeper acts on, under the endpoint's lease.
pub async fn read_again(
    sm: &aws_sdk_sagemaker::Client,
    old: &EndpointFacts,
    with_packages: bool,
) -> Result<EndpointFacts> {
    let listed = Listed {
        name: old.name.clone(),
        arn: old.arn.clone(),
        status: old.status.clone(),
        created: old.created,
    };
    let Some(ep) = endpoints::describe(sm, &old.name).await? else {
        return Ok(facts(listed, Ok(None), &TagMap::new()));
    };
    let mut tags = TagMap::from([(
        old.arn.to_lowercase(),
        endpoints::list_tags(sm, &ep.arn).await?,
    )]);
    let config = endpoints::describe_config(sm, &ep.config_name).await?;
    if let Some(c) = &config {
        tags.insert(config_arn(&old.arn, &ep.config_name), c.tags.clone());
    }
    let mut f = facts(listed, Ok(Some(ep)), &tags);
    match &config {
        Some(c) => fill(&mut f, c),
        None => f.error = Some(format!("its config {} is gone", f.config)),
    }
    if with_packages && f.error.is_none() {
        packages(sm, std::slice::from_mut(&mut f), 1).await;
    }
    Ok(f)
}

/// The endpoints created or changed after `since` (ListEndpoints' LastModifiedTimeAfter): what
/// the sweep's first read could not know about.
pub async fn changed_since(
    sm: &aws_sdk_sagemaker::Client,
    since: OffsetDateTime,
) -> Result<Vec<String>> {
    let mut pages = sm
        .list_endpoints()
        .last_modified_time_after(aws_smithy_types::DateTime::from_secs(
            since.unix_timestamp(),
        ))
        .max_results(100)
        .into_paginator()
        .items()
        .send();
    let mut out = vec![];
    while let Some(e) = pages.next().await {
        let e = e.map_err(|e| Error::aws("ListEndpoints", e))?;
        out.push(e.endpoint_name().unwrap_or_default().to_string());
    }
    Ok(out)
}

/// Every SageMaker scalable target and its policies, by resource id (all pages, two listings for
/// the whole account, not two calls per endpoint), or only those of `ids`.
pub async fn scaling(
    client: &aws_sdk_applicationautoscaling::Client,
) -> Result<HashMap<String, Scaling>> {
    scaling_of(client, None).await
}

pub async fn scaling_of(
    client: &aws_sdk_applicationautoscaling::Client,
    ids: Option<Vec<String>>,
) -> Result<HashMap<String, Scaling>> {
    let mut out: HashMap<String, Scaling> = HashMap::new();
    let mut targets = client
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Sagemaker)
        .set_resource_ids(ids.clone())
        .into_paginator()
        .items()
        .send();
    while let Some(t) = targets.next().await {
        let t = t.map_err(|e| Error::aws("DescribeScalableTargets", e))?;
        let s = out.entry(t.resource_id().to_string()).or_default();
        s.min = t.min_capacity();
        s.max = t.max_capacity();
    }
    // Policies of the targets asked about, or all; one resource id at a time is what the API takes.
    let per_id: Vec<Option<String>> = match ids {
        Some(ids) => ids.into_iter().map(Some).collect(),
        None => vec![None],
    };
    for id in per_id {
        policies(client, id, &mut out).await?;
    }
    Ok(out)
}

async fn policies(
    client: &aws_sdk_applicationautoscaling::Client,
    id: Option<String>,
    out: &mut HashMap<String, Scaling>,
) -> Result<()> {
    let mut policies = client
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Sagemaker)
        .set_resource_id(id)
        .into_paginator()
        .items()
        .send();
    while let Some(p) = policies.next().await {
        let p = p.map_err(|e| Error::aws("DescribeScalingPolicies", e))?;
        let tracking = p.target_tracking_scaling_policy_configuration();
        if let Some(s) = out.get_mut(p.resource_id()) {
            s.policies.push(Policy {
                name: p.policy_name().to_string(),
                scale_in_cooldown: tracking.and_then(|t| t.scale_in_cooldown()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configs_arn_follows_its_endpoints_in_lower_case() {
        assert_eq!(
            config_arn(
                "arn:aws:sagemaker:us-east-1:111:endpoint/Recs-Prod",
                "Recs-Prod-v3-ab"
            ),
            "arn:aws:sagemaker:us-east-1:111:endpoint-config/recs-prod-v3-ab"
        );
        assert_eq!(config_arn("not an arn", "c"), "");
    }
}
