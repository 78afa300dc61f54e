//! Reading what the decision needs from AWS. No writes here.

use lifecycle::aws::Clients;
use lifecycle::endpoints;
use lifecycle::error::{Error, Result};
use lifecycle::ledger::{Ledger, now_ms};
use lifecycle::registry::{self, Approval, ModelPackage};
use lifecycle::targets::DeploymentTarget;
use serde_json::Value;

use crate::gates::{self, Metrics};
use crate::reconcile::{Candidate, Observed};

/// At most this many not-yet-live approved versions are evaluated per decision; older ones wait.
const MAX_CANDIDATES: usize = 5;
/// Statistics documents larger than this are not evaluation reports.
const MAX_STATISTICS_BYTES: i64 = 1 << 20;

pub async fn observe<'a>(
    clients: &Clients,
    ledger: &Ledger,
    target: &'a DeploymentTarget,
    only_if_live: Option<String>,
) -> Result<Observed<'a>> {
    let sm = &clients.sagemaker;
    let endpoint = endpoints::describe(sm, &target.endpoint).await?;
    let live_config = match &endpoint {
        Some(ep) if !ep.config_name.is_empty() => {
            endpoints::describe_config(sm, &ep.config_name).await?
        }
        _ => None,
    };
    let served = live_config
        .as_ref()
        .and_then(|c| c.package_arn())
        .map(str::to_string);
    let in_flight = ledger.deployment(&target.endpoint).await?;

    let mut candidates = Vec::new();
    for summary in registry::list(sm, &target.model_package_group, Approval::Approved).await? {
        if served.as_deref() == Some(summary.arn.as_str()) {
            candidates.push(Candidate {
                arn: summary.arn,
                version: summary.version,
                gates: None,
            });
            break;
        }
        if candidates.len() == MAX_CANDIDATES {
            break;
        }
        let Some(package) = registry::describe(sm, &summary.arn).await? else {
            continue;
        };
        if package.status != Approval::Approved {
            continue; // changed since it was listed
        }
        let metrics = metrics_of(clients, &package).await?;
        candidates.push(Candidate {
            arn: package.arn,
            version: package.version,
            gates: Some(gates::evaluate(&target.gates, &metrics)),
        });
    }

    let firing_alarms = firing(clients, &target.rollback_alarms).await?;
    Ok(Observed {
        target,
        endpoint,
        live_config,
        candidates,
        in_flight,
        firing_alarms,
        only_if_live,
        now_ms: now_ms(),
    })
}

/// A package's evaluation results: its metadata, and its ModelQuality statistics from S3.
async fn metrics_of(clients: &Clients, package: &ModelPackage) -> Result<Metrics> {
    let statistics = match &package.quality_statistics {
        Some(uri) => read_statistics(&clients.s3, uri).await?,
        None => None,
    };
    Ok(Metrics::collect(&package.metadata, statistics.as_ref()))
}

/// The statistics JSON. A document that cannot be read or parsed counts as no metrics (the gates
/// then fail closed); a transient S3 error is returned so the invocation is retried.
async fn read_statistics(s3: &aws_sdk_s3::Client, uri: &str) -> Result<Option<Value>> {
    let Some((bucket, key)) = uri
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
    else {
        tracing::warn!(uri, "model quality statistics URI is not s3://bucket/key");
        return Ok(None);
    };
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => {
            let err = Error::aws("GetObject", e);
            if err.is_retryable() {
                return Err(err);
            }
            tracing::warn!(uri, error = %err, "model quality statistics unreadable; gates fail closed");
            return Ok(None);
        }
    };
    if out.content_length().unwrap_or(0) > MAX_STATISTICS_BYTES {
        tracing::warn!(uri, "model quality statistics too large; gates fail closed");
        return Ok(None);
    }
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| Error::InvalidData(format!("reading {uri}: {e}")))?
        .into_bytes();
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Which of these alarms are in ALARM now.
async fn firing(clients: &Clients, alarms: &[String]) -> Result<Vec<String>> {
    if alarms.is_empty() {
        return Ok(vec![]);
    }
    let out = clients
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(alarms.to_vec()))
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeAlarms", e))?;
    // The state is checked again here: the filter is a request, the answer is the evidence
    // (moto, for one, ignores StateValue when AlarmNames is given).
    Ok(out
        .metric_alarms()
        .iter()
        .filter(|a| a.state_value() == Some(&aws_sdk_cloudwatch::types::StateValue::Alarm))
        .filter_map(|a| a.alarm_name().map(str::to_string))
        .collect())
}
