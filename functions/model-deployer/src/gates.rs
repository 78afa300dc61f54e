//! Mandatory evaluations. A package is deployed only if every gate of its target passes on the
//! package's own evaluation results. A missing metric fails closed.

use std::collections::BTreeMap;
use std::fmt::Write;

use lifecycle::targets::Gate;
use serde::Serialize;
use serde_json::Value;

/// A package's evaluation results by metric name, with where each came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(pub BTreeMap<String, (f64, &'static str)>);

impl Metrics {
    /// Collects numeric CustomerMetadataProperties and, when present, the ModelQuality statistics
    /// JSON (`{"<section>": {"<metric>": {"value": 0.31, ...}}}`), known as `<metric>` and
    /// `<section>.<metric>`. Metadata wins over statistics when both name a metric.
    pub fn collect(metadata: &BTreeMap<String, String>, statistics: Option<&Value>) -> Self {
        let mut out = BTreeMap::new();
        if let Some(Value::Object(sections)) = statistics {
            for (section, metrics) in sections {
                let Value::Object(metrics) = metrics else {
                    continue;
                };
                for (name, m) in metrics {
                    if let Some(v) = m.get("value").and_then(Value::as_f64) {
                        out.insert(name.clone(), (v, "model quality statistics"));
                        out.insert(format!("{section}.{name}"), (v, "model quality statistics"));
                    }
                }
            }
        }
        for (k, v) in metadata {
            if let Ok(v) = v.trim().parse::<f64>() {
                out.insert(k.clone(), (v, "customer metadata"));
            }
        }
        Metrics(out)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub metric: String,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub passed: bool,
}

impl GateResult {
    fn explain(&self) -> String {
        match (self.value, self.min, self.max) {
            (None, _, _) => format!("{} is missing (fails closed)", self.metric),
            (Some(v), Some(min), _) if v < min => {
                format!("{} = {v} is below min {min}", self.metric)
            }
            (Some(v), _, Some(max)) if v > max => {
                format!("{} = {v} is above max {max}", self.metric)
            }
            (Some(v), _, _) => format!("{} = {v} passes", self.metric),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(transparent)]
pub struct GateReport(pub Vec<GateResult>);

impl GateReport {
    pub fn passed(&self) -> bool {
        self.0.iter().all(|g| g.passed)
    }

    /// The ApprovalDescription of a rejected package: every failing metric, its value and bound.
    pub fn failure_description(&self, version: i64) -> String {
        let mut s =
            format!("Rejected by model-deployer: version {version} failed its evaluation gates: ");
        let failing: Vec<String> = self
            .0
            .iter()
            .filter(|g| !g.passed)
            .map(GateResult::explain)
            .collect();
        let _ = write!(s, "{}.", failing.join("; "));
        s
    }
}

/// Checks every gate. Pure: the metrics were read before.
pub fn evaluate(gates: &[Gate], metrics: &Metrics) -> GateReport {
    GateReport(
        gates
            .iter()
            .map(|g| {
                let value = metrics
                    .0
                    .get(&g.metric)
                    .map(|(v, _)| *v)
                    .filter(|v| v.is_finite());
                let passed = value.is_some_and(|v| {
                    g.min.is_none_or(|min| v >= min) && g.max.is_none_or(|max| v <= max)
                });
                GateResult {
                    metric: g.metric.clone(),
                    value,
                    min: g.min,
                    max: g.max,
                    passed,
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(metric: &str, min: Option<f64>, max: Option<f64>) -> Gate {
        Gate {
            metric: metric.into(),
            min,
            max,
        }
    }

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_package_within_every_bound_passes() {
        let m = Metrics::collect(
            &meta(&[("validation_loss", "0.31"), ("offline_ctr", "0.084")]),
            None,
        );
        let r = evaluate(
            &[
                gate("validation_loss", None, Some(0.35)),
                gate("offline_ctr", Some(0.075), None),
            ],
            &m,
        );
        assert!(r.passed());
    }

    #[test]
    fn when_the_gate_fails_the_description_names_metric_value_and_bound() {
        let m = Metrics::collect(&meta(&[("validation_loss", "0.41")]), None);
        let r = evaluate(&[gate("validation_loss", None, Some(0.35))], &m);
        assert!(!r.passed());
        assert_eq!(
            r.failure_description(4),
            "Rejected by model-deployer: version 4 failed its evaluation gates: validation_loss = 0.41 is above max 0.35."
        );
    }

    #[test]
    fn a_missing_or_non_numeric_metric_fails_closed() {
        let m = Metrics::collect(&meta(&[("offline_ctr", "n/a")]), None);
        let r = evaluate(&[gate("offline_ctr", Some(0.075), None)], &m);
        assert!(!r.passed());
        assert!(
            r.failure_description(2)
                .contains("offline_ctr is missing (fails closed)")
        );
    }

    #[test]
    fn model_quality_statistics_are_read_by_metric_and_by_section() {
        let stats =
            json!({"regression_metrics": {"rmse": {"value": 1.5, "standard_deviation": 0.1}}});
        let m = Metrics::collect(&BTreeMap::new(), Some(&stats));
        assert!(evaluate(&[gate("rmse", None, Some(2.0))], &m).passed());
        assert!(!evaluate(&[gate("regression_metrics.rmse", None, Some(1.0))], &m).passed());
    }

    #[test]
    fn no_gates_means_nothing_to_fail() {
        assert!(evaluate(&[], &Metrics::default()).passed());
    }
}
