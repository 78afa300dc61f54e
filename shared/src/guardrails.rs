//! Guardrail alarms the suite makes itself: a target may declare its error rate, latency and KPI
//! bounds, and the deployer keeps one CloudWatch alarm per bound and variant, under the alarm
//! prefix the responder hears. A new install then protects an endpoint without hand-made alarms.
//!
//! Names are deterministic, `<ALARM_NAME_PREFIX>managed-<endpoint>-<variant>-<kind>` with kind
//! `5xx-rate`, `p99-latency` or `kpi`, so the deployer finds its own alarms again, the target's
//! rollback and KPI lists name them (see [`crate::targets`]), and IAM lets the deployer write
//! these and no hand-made alarm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::targets::MetricRef;

/// What a target declares (`guardrails` in DEPLOY_TARGETS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Rolls back when 5XX responses exceed this percentage of invocations.
    #[serde(default)]
    pub error_rate_pct: Option<f64>,
    /// Rolls back when the p99 of `ModelLatency` exceeds this many milliseconds.
    #[serde(default)]
    pub p99_latency_ms: Option<f64>,
    /// The business KPI the application publishes per variant, judged by the responder once
    /// enough samples were seen.
    #[serde(default)]
    pub kpi: Option<KpiGuardrail>,
    #[serde(default = "default_period")]
    pub period_seconds: i32,
    /// Periods in a row over the bound before the alarm fires.
    #[serde(default = "default_evaluation_periods")]
    pub evaluation_periods: i32,
}

/// A KPI bound: the metric (with `EndpointName` and `VariantName` dimensions) must stay at or
/// above `min`; the responder believes it only after `min_samples` of `samples` in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiGuardrail {
    pub namespace: String,
    pub metric: String,
    #[serde(default = "default_kpi_stat")]
    pub stat: String,
    pub min: f64,
    /// The metric counting samples (impressions), with the same dimensions.
    pub samples: SamplesMetric,
    pub min_samples: f64,
    #[serde(default = "default_window")]
    pub window_minutes: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplesMetric {
    pub namespace: String,
    pub metric: String,
}

fn default_period() -> i32 {
    60
}
fn default_evaluation_periods() -> i32 {
    3
}
fn default_kpi_stat() -> String {
    "Average".into()
}
fn default_window() -> i32 {
    60
}

/// What an alarm watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AlarmMetric {
    /// One metric's statistic (`p99` and other percentiles are extended statistics).
    Stat {
        namespace: String,
        metric: String,
        dimensions: BTreeMap<String, String>,
        stat: String,
    },
    /// 100 × Invocation5XXErrors / Invocations (0 with no invocations).
    ErrorRate {
        dimensions: BTreeMap<String, String>,
    },
}

/// One managed alarm, as PutMetricAlarm gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmSpec {
    pub name: String,
    pub description: String,
    pub metric: AlarmMetric,
    pub threshold: f64,
    /// Fires above the threshold (errors, latency) or below it (a KPI).
    pub above: bool,
    pub period_seconds: i32,
    pub evaluation_periods: i32,
    pub tags: BTreeMap<String, String>,
    /// Notified in ALARM and back to OK (the stack's alert topic, `ALERT_TOPIC_ARN`).
    #[serde(default)]
    pub actions: Vec<String>,
}

/// Which list of the target a managed alarm belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Rollback,
    Kpi,
}

impl Guardrails {
    /// The checks a target's guardrails must pass at start-up.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: Option<f64>| match v {
            Some(v) if !(v.is_finite() && v > 0.0) => Err(format!("guardrails {name} must be > 0")),
            _ => Ok(()),
        };
        positive("error_rate_pct", self.error_rate_pct)?;
        positive("p99_latency_ms", self.p99_latency_ms)?;
        if self.error_rate_pct.is_some_and(|p| p > 100.0) {
            return Err("guardrails error_rate_pct must be at most 100".into());
        }
        // SageMaker publishes its endpoint metrics once a minute: a shorter period rarely has data.
        if self.period_seconds % 60 != 0 || !(60..=86_400).contains(&self.period_seconds) {
            return Err(format!(
                "guardrails period_seconds is {}, expected a multiple of 60 up to 86400",
                self.period_seconds
            ));
        }
        if !(1..=100).contains(&self.evaluation_periods) {
            return Err("guardrails evaluation_periods must be 1..=100".into());
        }
        // CloudWatch: period × evaluation periods at most one day.
        if self.period_seconds as i64 * self.evaluation_periods as i64 > 86_400 {
            return Err(
                "guardrails period_seconds × evaluation_periods must be at most 86400".into(),
            );
        }
        if self.error_rate_pct.is_none() && self.p99_latency_ms.is_none() && self.kpi.is_none() {
            return Err(
                "guardrails declares no bound (error_rate_pct, p99_latency_ms or kpi)".into(),
            );
        }
        if let Some(k) = &self.kpi {
            if k.namespace.is_empty() || k.metric.is_empty() || k.samples.metric.is_empty() {
                return Err("guardrails kpi needs namespace, metric and samples".into());
            }
            if !k.min.is_finite() || !k.min_samples.is_finite() || k.min_samples < 0.0 {
                return Err(
                    "guardrails kpi min and min_samples must be numbers, min_samples >= 0".into(),
                );
            }
            if !(1..=1440).contains(&k.window_minutes) {
                return Err("guardrails kpi window_minutes must be 1..=1440".into());
            }
            if !is_statistic(&k.stat) {
                return Err(format!(
                    "guardrails kpi stat {:?} is not a CloudWatch statistic (Average, Sum, Minimum, Maximum, SampleCount, pNN)",
                    k.stat
                ));
            }
        }
        Ok(())
    }

    /// The alarms for one variant of an endpoint, with the list each belongs to.
    pub fn alarms(&self, prefix: &str, endpoint: &str, variant: &str) -> Vec<(Role, AlarmSpec)> {
        let dimensions: BTreeMap<String, String> = [
            ("EndpointName".to_string(), endpoint.to_string()),
            ("VariantName".to_string(), variant.to_string()),
        ]
        .into();
        let spec = |kind: &str,
                    what: String,
                    metric: AlarmMetric,
                    threshold,
                    above,
                    action: &str| AlarmSpec {
            name: alarm_name(prefix, endpoint, variant, kind),
            // The definition's digest in the description: a change to the target's guardrails
            // (a KPI's namespace, a statistic) shows as a different description.
            description: format!(
                "{what} on {endpoint}/{variant}. Made by sagemaker-lifecycle from the target's guardrails; changes by hand are put back. [{}]",
                digest(&(
                    &metric,
                    threshold,
                    above,
                    self.period_seconds,
                    self.evaluation_periods
                ))
            ),
            metric,
            threshold,
            above,
            period_seconds: self.period_seconds,
            evaluation_periods: self.evaluation_periods,
            tags: [
                ("lifecycle:endpoint".to_string(), endpoint.to_string()),
                ("lifecycle:action".to_string(), action.to_string()),
                ("lifecycle:managed".to_string(), "true".to_string()),
            ]
            .into(),
            actions: vec![],
        };
        let mut out = Vec::new();
        if let Some(pct) = self.error_rate_pct {
            let metric = AlarmMetric::ErrorRate {
                dimensions: dimensions.clone(),
            };
            let what = format!("5XX responses above {pct}% of invocations");
            out.push((
                Role::Rollback,
                spec("5xx-rate", what, metric, pct, true, "rollback"),
            ));
        }
        if let Some(ms) = self.p99_latency_ms {
            let metric = AlarmMetric::Stat {
                namespace: "AWS/SageMaker".into(),
                metric: "ModelLatency".into(),
                dimensions: dimensions.clone(),
                stat: "p99".into(),
            };
            // SageMaker publishes ModelLatency in microseconds.
            let what = format!("p99 model latency above {ms} ms");
            out.push((
                Role::Rollback,
                spec("p99-latency", what, metric, ms * 1000.0, true, "rollback"),
            ));
        }
        if let Some(k) = &self.kpi {
            let metric = AlarmMetric::Stat {
                namespace: k.namespace.clone(),
                metric: k.metric.clone(),
                dimensions: dimensions.clone(),
                stat: k.stat.clone(),
            };
            let what = format!("{} ({}) below {}", k.metric, k.stat, k.min);
            out.push((
                Role::Kpi,
                spec("kpi", what, metric, k.min, false, "rollback"),
            ));
        }
        out
    }

    /// The KPI's samples metric for a variant, as the responder sums it.
    pub fn kpi_samples(&self, endpoint: &str, variant: &str) -> Option<MetricRef> {
        let k = self.kpi.as_ref()?;
        Some(MetricRef {
            namespace: k.samples.namespace.clone(),
            metric: k.samples.metric.clone(),
            dimensions: [
                ("EndpointName".to_string(), endpoint.to_string()),
                ("VariantName".to_string(), variant.to_string()),
            ]
            .into(),
            stat: "Sum".into(),
        })
    }
}

pub fn alarm_name(prefix: &str, endpoint: &str, variant: &str, kind: &str) -> String {
    format!("{}{variant}-{kind}", endpoint_prefix(prefix, endpoint))
}

/// What every managed alarm of an endpoint's name starts with.
pub fn endpoint_prefix(prefix: &str, endpoint: &str) -> String {
    format!("{prefix}managed-{endpoint}-")
}

/// CloudWatch's statistics, and percentiles as extended statistics (p0.0 to p100).
pub fn is_statistic(stat: &str) -> bool {
    matches!(
        stat,
        "Average" | "Sum" | "Minimum" | "Maximum" | "SampleCount"
    ) || stat
        .strip_prefix('p')
        .and_then(|p| p.parse::<f64>().ok())
        .is_some_and(|p| (0.0..=100.0).contains(&p))
}

/// A short, stable digest of a definition (FNV-1a of its JSON; not for security).
fn digest(value: &impl Serialize) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// A managed alarm as CloudWatch has it now: what the deployer compares with its spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveAlarm {
    pub name: String,
    pub description: String,
    /// The metric of a single-metric alarm (None for metric math).
    pub metric: Option<String>,
    pub threshold: f64,
    pub above: bool,
    pub period_seconds: i32,
    pub evaluation_periods: i32,
    /// Its AlarmActions (the OKActions are put with them).
    pub actions: Vec<String>,
}

impl AlarmSpec {
    /// What differs between the alarm as it is and as the target wants it (None: the same).
    /// Compared: what a person would change by hand, and the description, which says what the
    /// spec is.
    pub fn differs(&self, live: &LiveAlarm) -> Option<String> {
        let mut changes = Vec::new();
        if live.threshold != self.threshold {
            changes.push(format!("threshold {} → {}", live.threshold, self.threshold));
        }
        if live.above != self.above {
            changes.push("comparison".to_string());
        }
        if live.period_seconds != self.period_seconds {
            changes.push(format!(
                "period {} → {} s",
                live.period_seconds, self.period_seconds
            ));
        }
        if live.evaluation_periods != self.evaluation_periods {
            changes.push(format!(
                "evaluation periods {} → {}",
                live.evaluation_periods, self.evaluation_periods
            ));
        }
        let metric = match &self.metric {
            AlarmMetric::Stat { metric, .. } => Some(metric.as_str()),
            AlarmMetric::ErrorRate { .. } => None,
        };
        if live.metric.as_deref() != metric {
            changes.push(format!(
                "metric {} → {}",
                live.metric.as_deref().unwrap_or("metric math"),
                metric.unwrap_or("metric math")
            ));
        }
        if live.description != self.description {
            changes.push("description".to_string());
        }
        if live.actions != self.actions {
            changes.push(format!("actions {:?} → {:?}", live.actions, self.actions));
        }
        (!changes.is_empty()).then(|| changes.join(", "))
    }
}

/// An endpoint's managed alarms as they are: the live definitions of those the target declares
/// (`keep`), and the names of those it declares no more.
#[derive(Debug, Default)]
pub struct Managed {
    pub live: Vec<LiveAlarm>,
    pub leftovers: Vec<String>,
}

/// Every alarm under the endpoint's managed prefix, in one paginated DescribeAlarms. A leftover
/// must be tagged as managed for this endpoint: the prefix of endpoint `a` also starts the names
/// of endpoint `a-b`'s alarms.
pub async fn read(
    cw: &aws_sdk_cloudwatch::Client,
    name_prefix: &str,
    endpoint: &str,
    keep: &[String],
) -> crate::Result<Managed> {
    let mut managed = Managed::default();
    let mut pages = cw
        .describe_alarms()
        .alarm_name_prefix(name_prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| crate::Error::aws("DescribeAlarms", e))?;
        for alarm in page.metric_alarms() {
            let name = alarm.alarm_name().unwrap_or_default();
            if keep.iter().any(|k| k == name) {
                managed.live.push(live_alarm(alarm));
            } else if is_managed_for(cw, alarm, endpoint).await? {
                managed.leftovers.push(name.to_string());
            }
        }
    }
    Ok(managed)
}

fn live_alarm(a: &aws_sdk_cloudwatch::types::MetricAlarm) -> LiveAlarm {
    use aws_sdk_cloudwatch::types::ComparisonOperator as C;
    LiveAlarm {
        name: a.alarm_name().unwrap_or_default().to_string(),
        description: a.alarm_description().unwrap_or_default().to_string(),
        metric: a.metric_name().map(str::to_string),
        threshold: a.threshold().unwrap_or(f64::NAN),
        above: matches!(
            a.comparison_operator(),
            Some(C::GreaterThanThreshold | C::GreaterThanOrEqualToThreshold)
        ),
        // A metric-math alarm keeps its period in its queries.
        period_seconds: a.period().unwrap_or_else(|| {
            a.metrics()
                .iter()
                .find_map(|q| q.metric_stat().and_then(|s| s.period()))
                .unwrap_or_default()
        }),
        evaluation_periods: a.evaluation_periods().unwrap_or_default(),
        actions: a.alarm_actions().to_vec(),
    }
}

async fn is_managed_for(
    cw: &aws_sdk_cloudwatch::Client,
    alarm: &aws_sdk_cloudwatch::types::MetricAlarm,
    endpoint: &str,
) -> crate::Result<bool> {
    let Some(arn) = alarm.alarm_arn() else {
        return Ok(false);
    };
    let tags = cw
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .map_err(|e| crate::Error::aws("ListTagsForResource", e))?;
    let tag = |k: &str| {
        tags.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
    };
    Ok(tag("lifecycle:managed") == Some("true") && tag("lifecycle:endpoint") == Some(endpoint))
}

/// Deletes one managed alarm (DeleteAlarms succeeds for a name already gone).
pub async fn delete(cw: &aws_sdk_cloudwatch::Client, name: &str) -> crate::Result<()> {
    cw.delete_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| crate::Error::aws("DeleteAlarms", e))?;
    Ok(())
}

/// Creates or updates one managed alarm (PutMetricAlarm overwrites the definition and leaves
/// the state; tags are set only on creation).
pub async fn put(cw: &aws_sdk_cloudwatch::Client, spec: &AlarmSpec) -> crate::Result<()> {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic, Tag};
    let req = cw
        .put_metric_alarm()
        .alarm_name(&spec.name)
        .alarm_description(&spec.description)
        .threshold(spec.threshold)
        .comparison_operator(if spec.above {
            ComparisonOperator::GreaterThanThreshold
        } else {
            ComparisonOperator::LessThanThreshold
        })
        .evaluation_periods(spec.evaluation_periods)
        .set_alarm_actions(Some(spec.actions.clone()))
        .set_ok_actions(Some(spec.actions.clone()))
        // No traffic is no evidence against a version: missing data counts as within bounds (a
        // firing alarm clears when traffic stops; the rate is 0 without invocations anyway).
        .treat_missing_data("notBreaching")
        .set_tags(Some(
            spec.tags
                .iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ));
    let req = match &spec.metric {
        AlarmMetric::Stat {
            namespace,
            metric,
            dimensions,
            stat,
        } => {
            let req = req
                .namespace(namespace)
                .metric_name(metric)
                .set_dimensions(Some(sdk_dimensions(dimensions)))
                .period(spec.period_seconds);
            match Statistic::try_parse(stat) {
                Ok(s) => req.statistic(s),
                Err(_) => req.extended_statistic(stat),
            }
        }
        AlarmMetric::ErrorRate { dimensions } => {
            req.set_metrics(Some(error_rate_queries(dimensions, spec.period_seconds)))
        }
    };
    req.send()
        .await
        .map_err(|e| crate::Error::aws("PutMetricAlarm", e))?;
    Ok(())
}

fn sdk_dimensions(d: &BTreeMap<String, String>) -> Vec<aws_sdk_cloudwatch::types::Dimension> {
    use aws_sdk_cloudwatch::types::Dimension;
    d.iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect()
}

/// 100 × Invocation5XXErrors / Invocations as metric math, 0 without invocations.
fn error_rate_queries(
    dimensions: &BTreeMap<String, String>,
    period_seconds: i32,
) -> Vec<aws_sdk_cloudwatch::types::MetricDataQuery> {
    use aws_sdk_cloudwatch::types::{Metric, MetricDataQuery, MetricStat};
    let sum = |id: &str, name: &str| {
        let metric = Metric::builder()
            .namespace("AWS/SageMaker")
            .metric_name(name)
            .set_dimensions(Some(sdk_dimensions(dimensions)))
            .build();
        let stat = MetricStat::builder()
            .metric(metric)
            .period(period_seconds)
            .stat("Sum")
            .build();
        MetricDataQuery::builder()
            .id(id)
            .return_data(false)
            .metric_stat(stat)
            .build()
    };
    let rate = MetricDataQuery::builder()
        .id("rate")
        .expression("IF(invocations > 0, 100 * errors / invocations, 0)")
        .label("5XX rate (%)")
        .return_data(true)
        .build();
    vec![
        sum("errors", "Invocation5XXErrors"),
        sum("invocations", "Invocations"),
        rate,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guardrails() -> Guardrails {
        serde_json::from_str(
            r#"{"error_rate_pct": 1, "p99_latency_ms": 800,
                "kpi": {"namespace": "MangaAssist/Recommendations", "metric": "ClickThroughRate",
                        "min": 0.075, "samples": {"namespace": "MangaAssist/Recommendations", "metric": "Impressions"},
                        "min_samples": 1000}}"#,
        )
        .unwrap()
    }

    #[test]
    fn one_alarm_per_bound_with_deterministic_names_and_tags() {
        let alarms = guardrails().alarms("lc-", "recs-prod", "AllTraffic");
        let names: Vec<&str> = alarms.iter().map(|(_, a)| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lc-managed-recs-prod-AllTraffic-5xx-rate",
                "lc-managed-recs-prod-AllTraffic-p99-latency",
                "lc-managed-recs-prod-AllTraffic-kpi"
            ]
        );
        let (_, latency) = &alarms[1];
        assert_eq!(latency.threshold, 800_000.0, "microseconds");
        assert!(latency.above);
        let (role, kpi) = &alarms[2];
        assert_eq!(*role, Role::Kpi);
        assert!(!kpi.above, "a KPI fires below its floor");
        assert_eq!(kpi.tags["lifecycle:endpoint"], "recs-prod");
    }

    #[test]
    fn bad_bounds_are_refused() {
        let mut g = guardrails();
        g.error_rate_pct = Some(0.0);
        assert!(g.validate().is_err());
        let mut g = guardrails();
        g.period_seconds = 30;
        assert!(g.validate().is_err(), "SageMaker's metrics are per minute");
        let mut g = guardrails();
        (g.period_seconds, g.evaluation_periods) = (86_400, 2);
        assert!(g.validate().is_err(), "more than a day");
        let mut g = guardrails();
        g.kpi.as_mut().unwrap().stat = "avg".into();
        assert!(
            g.validate()
                .unwrap_err()
                .contains("not a CloudWatch statistic")
        );
        let empty: Guardrails = serde_json::from_str("{}").unwrap();
        assert!(empty.validate().unwrap_err().contains("no bound"));
        assert!(guardrails().validate().is_ok());
    }
}
