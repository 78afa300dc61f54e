//! Everything the sweep judges, read from AWS. No writes here.
//!
//! Account-wide reads (the endpoint list, autoscaling targets and policies) must all succeed or
//! the sweep acts on nothing. Per-endpoint describes run concurrently with a bound; one that fails
//! leaves that endpoint unjudged. Invocations come from GetMetricData, up to 500 queries a call,
//! one query per variant (SageMaker publishes per EndpointName *and* VariantName; a query on the
//! endpoint alone returns nothing and would make every endpoint look idle).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_applicationautoscaling::types::ServiceNamespace;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat, StatusCode};
use futures_util::stream::{self, StreamExt};
use lifecycle::endpoints::{self, EndpointStatus};
use lifecycle::error::{Error, Result};
use serde::Serialize;
use time::OffsetDateTime;

/// GetMetricData's limit of queries per call.
pub const METRIC_BATCH: usize = 500;

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub name: String,
    pub instance_type: Option<String>,
    pub instances: Option<i32>,
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
    pub tags: BTreeMap<String, String>,
    /// The config's tags (the deployer's `lifecycle:model-package-group`, for one).
    pub config_tags: BTreeMap<String, String>,
    pub variants: Vec<Variant>,
    /// Why this endpoint could not be read in full; it is then not judged.
    pub error: Option<String>,
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

/// Invocations of one variant over the window: `None` when the metric could not be read.
pub type Invocations = HashMap<(String, String), Option<f64>>;

#[derive(Debug, Default)]
pub struct Inventory {
    pub endpoints: Vec<EndpointFacts>,
    pub scaling: HashMap<String, Scaling>,
    pub invocations: Invocations,
    pub metric_calls: usize,
}

/// Every endpoint of the account (all pages).
pub async fn list(
    sm: &aws_sdk_sagemaker::Client,
) -> Result<Vec<(String, EndpointStatus, Option<OffsetDateTime>)>> {
    let mut pages = sm
        .list_endpoints()
        .max_results(100)
        .into_paginator()
        .items()
        .send();
    let mut out = vec![];
    while let Some(e) = pages.next().await {
        let e = e.map_err(|e| Error::aws("ListEndpoints", e))?;
        out.push((
            e.endpoint_name().unwrap_or_default().to_string(),
            EndpointStatus::parse(e.endpoint_status().map(|s| s.as_str()).unwrap_or("Unknown")),
            e.creation_time()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok()),
        ));
    }
    Ok(out)
}

/// One endpoint: DescribeEndpoint, its tags and its config; the config's tags only when the
/// config may be the deployer's (named after a deployment target's endpoint), which is where the
/// `lifecycle:model-package-group` tag of a stale endpoint can come from if the endpoint has none.
async fn describe(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
    deployer_config: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<EndpointFacts>> {
    let Some(ep) = endpoints::describe(sm, name).await? else {
        return Ok(None);
    };
    let tags = endpoints::list_tags(sm, &ep.arn).await?;
    let with_tags =
        !tags.contains_key(endpoints::tags::PACKAGE_GROUP) && deployer_config(&ep.config_name);
    let config = endpoints::describe_config_with(sm, &ep.config_name, with_tags).await?;
    let variants = ep
        .variants
        .iter()
        .map(|v| {
            let configured = config.as_ref().and_then(|c| c.variant(&v.name));
            Variant {
                name: v.name.clone(),
                instance_type: configured
                    .and_then(|c| c.instance_type())
                    .map(|t| t.as_str().to_string()),
                instances: v.current_instance_count,
                inference_components: configured.is_some_and(|c| c.model_name().is_none()),
            }
        })
        .collect();
    Ok(Some(EndpointFacts {
        name: ep.name,
        arn: ep.arn,
        status: ep.status,
        created: None,
        config: ep.config_name,
        tags,
        config_tags: config.map(|c| c.tags).unwrap_or_default(),
        variants,
        error: None,
    }))
}

/// Describes the InService endpoints, `concurrency` at a time. Others are listed, not described:
/// they are not judged.
pub async fn endpoints(
    sm: &aws_sdk_sagemaker::Client,
    listed: Vec<(String, EndpointStatus, Option<OffsetDateTime>)>,
    concurrency: usize,
    deployer_config: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<EndpointFacts> {
    let mut out: Vec<EndpointFacts> = stream::iter(listed)
        .map(|(name, status, created)| async move {
            let shell = |error: Option<String>| EndpointFacts {
                name: name.clone(),
                arn: String::new(),
                status: status.clone(),
                created,
                config: String::new(),
                tags: BTreeMap::new(),
                config_tags: BTreeMap::new(),
                variants: vec![],
                error,
            };
            if status != EndpointStatus::InService {
                return shell(None);
            }
            match describe(sm, &name, deployer_config).await {
                Ok(Some(mut facts)) => {
                    facts.created = created;
                    facts
                }
                Ok(None) => shell(Some("deleted while the sweep ran".into())),
                Err(e) => shell(Some(e.to_string())),
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Every SageMaker scalable target and its policies, by resource id (all pages, two listings for
/// the whole account, not two calls per endpoint).
pub async fn scaling(
    client: &aws_sdk_applicationautoscaling::Client,
) -> Result<HashMap<String, Scaling>> {
    let mut out: HashMap<String, Scaling> = HashMap::new();
    let mut targets = client
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Sagemaker)
        .into_paginator()
        .items()
        .send();
    while let Some(t) = targets.next().await {
        let t = t.map_err(|e| Error::aws("DescribeScalableTargets", e))?;
        let s = out.entry(t.resource_id().to_string()).or_default();
        s.min = t.min_capacity();
        s.max = t.max_capacity();
    }
    let mut policies = client
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Sagemaker)
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
    Ok(out)
}

/// Invocations per variant over the window, in batches of [`METRIC_BATCH`] queries.
pub async fn invocations(
    cw: &aws_sdk_cloudwatch::Client,
    variants: &[(String, String)],
    now: OffsetDateTime,
    window_minutes: i64,
) -> (Invocations, usize) {
    let mut out = HashMap::new();
    let mut calls = 0;
    for batch in variants.chunks(METRIC_BATCH) {
        let queries = batch
            .iter()
            .enumerate()
            .map(|(i, (endpoint, variant))| query(i, endpoint, variant, window_minutes))
            .collect::<Vec<_>>();
        let (sums, failed, n) = sums(cw, queries, now, window_minutes).await;
        calls += n;
        for (i, key) in batch.iter().enumerate() {
            // A query missing from the answer, or not answered in full, was not read. A complete
            // answer without datapoints is zero invocations.
            let value = match sums.get(&format!("q{i}")) {
                Some((sum, true)) if !failed => Some(*sum),
                _ => None,
            };
            out.insert(key.clone(), value);
        }
    }
    (out, calls)
}

/// Invocations of one variant over the window: SageMaker publishes them per endpoint and variant.
fn query(i: usize, endpoint: &str, variant: &str, window_minutes: i64) -> MetricDataQuery {
    let dimension = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
    let metric = Metric::builder()
        .namespace("AWS/SageMaker")
        .metric_name("Invocations")
        .dimensions(dimension("EndpointName", endpoint))
        .dimensions(dimension("VariantName", variant))
        .build();
    MetricDataQuery::builder()
        .id(format!("q{i}"))
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period((window_minutes * 60) as i32)
                .stat("Sum")
                .build(),
        )
        .return_data(true)
        .build()
}

/// Per query id: the sum over every page, and whether every page answered it in full; whether a
/// call failed; how many calls it took.
async fn sums(
    cw: &aws_sdk_cloudwatch::Client,
    queries: Vec<MetricDataQuery>,
    now: OffsetDateTime,
    window_minutes: i64,
) -> (HashMap<String, (f64, bool)>, bool, usize) {
    let ts = |t: OffsetDateTime| aws_smithy_types::DateTime::from_secs(t.unix_timestamp());
    let start = now - time::Duration::minutes(window_minutes);
    let mut sums: HashMap<String, (f64, bool)> = HashMap::new();
    let mut token: Option<String> = None;
    let mut calls = 0;
    loop {
        calls += 1;
        let res = cw
            .get_metric_data()
            .set_metric_data_queries(Some(queries.clone()))
            .start_time(ts(start))
            .end_time(ts(now))
            .set_next_token(token.clone())
            .send()
            .await;
        let page = match res {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %Error::aws("GetMetricData", e), "invocations unreadable: those variants are not judged idle");
                return (sums, true, calls);
            }
        };
        token = page.next_token().map(str::to_string);
        for r in page.metric_data_results() {
            let entry = sums
                .entry(r.id().unwrap_or_default().to_string())
                .or_insert((0.0, true));
            entry.0 += r.values().iter().sum::<f64>();
            // PartialData means "more on the next page"; on the last page it means "not all".
            let complete = match r.status_code() {
                Some(StatusCode::Complete) | None => true,
                Some(StatusCode::PartialData) => token.is_some(),
                _ => false,
            };
            entry.1 &= complete;
        }
        if token.is_none() {
            return (sums, false, calls);
        }
    }
}

#[cfg(test)]
mod tests {
    //! GetMetricData answers moto never gives: partial and failed results, and pages. Mocked.
    use super::*;
    use aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataOutput;
    use aws_sdk_cloudwatch::types::MetricDataResult;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn result(id: &str, status: StatusCode, values: &[f64]) -> MetricDataResult {
        MetricDataResult::builder()
            .id(id)
            .status_code(status)
            .set_values(Some(values.to_vec()))
            .build()
    }

    fn variants(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("ep-{i}"), "AllTraffic".to_string()))
            .collect()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap()
    }

    #[tokio::test]
    async fn only_a_complete_answer_counts_and_no_datapoints_is_zero() {
        let answer = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(result("q0", StatusCode::Complete, &[]))
                .metric_data_results(result("q1", StatusCode::PartialData, &[3.0]))
                .metric_data_results(result("q2", StatusCode::InternalError, &[]))
                .metric_data_results(result("q3", StatusCode::Complete, &[2.0, 5.0]))
                .build()
        });
        let cw = mock_client!(aws_sdk_cloudwatch, [&answer]);
        let (inv, calls) = invocations(&cw, &variants(5), now(), 60).await;
        let get = |i: usize| inv[&(format!("ep-{i}"), "AllTraffic".to_string())];
        assert_eq!(get(0), Some(0.0), "complete, no datapoints: zero");
        assert_eq!(get(1), None, "partial on the last page: not read");
        assert_eq!(get(2), None, "failed: not read");
        assert_eq!(get(3), Some(7.0));
        assert_eq!(get(4), None, "missing from the answer: not read");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn pages_add_up_and_a_failed_call_reads_nothing() {
        let first = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(result("q0", StatusCode::PartialData, &[4.0]))
                .next_token("more")
                .build()
        });
        let second = mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_output(|| {
            GetMetricDataOutput::builder()
                .metric_data_results(result("q0", StatusCode::Complete, &[1.0]))
                .build()
        });
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&first, &second]);
        let (inv, calls) = invocations(&cw, &variants(1), now(), 60).await;
        assert_eq!(
            inv[&("ep-0".to_string(), "AllTraffic".to_string())],
            Some(5.0)
        );
        assert_eq!(calls, 2);

        // 600 variants: two batches, both refused.
        let denied = || {
            mock!(aws_sdk_cloudwatch::Client::get_metric_data).then_error(|| {
                aws_sdk_cloudwatch::operation::get_metric_data::GetMetricDataError::unhandled(
                    "AccessDenied",
                )
            })
        };
        let (a, b) = (denied(), denied());
        let cw = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&a, &b]);
        let (inv, calls) = invocations(&cw, &variants(600), now(), 60).await;
        assert_eq!(calls, 2);
        assert_eq!(inv.len(), 600);
        assert!(inv.values().all(Option::is_none), "unreadable is not idle");
    }
}
