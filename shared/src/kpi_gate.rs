//! The live KPI canary (issue "A live business-KPI canary"): a candidate serves a share of the
//! traffic beside the live variant for a bake window, and is promoted only if its business KPI
//! is not worse. This module holds the target's `kpi_gate` configuration, the reading of both
//! variants' KPI and sample counts, and the judgement, which is pure.
//!
//! For a KPI that is a rate of counts (clicks over impressions) the test is a one-sided
//! two-proportion non-inferiority test: H0 "the candidate's rate is below (1 − δ) × the live
//! rate", rejected with the configured confidence → pass. The same z the other way round, past
//! the critical value, shows the candidate worse → fail. Neither → inconclusive (keep baking).
//! For any other KPI (an average order value) the comparison is relative, without a test.

use serde::{Deserialize, Serialize};

/// A metric the application publishes per variant, with `EndpointName` and `VariantName`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantMetric {
    pub namespace: String,
    pub name: String,
    pub stat: String,
}

/// How the two variants' KPI are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// A rate of counts (clicks over impressions): the two-proportion test.
    #[default]
    Rate,
    /// Any other KPI (an average order value): relative, without a test.
    Relative,
}

/// A target's `kpi_gate`: a new version serves `canary_percent` of the traffic for `bake_minutes`
/// as a second production variant before it is promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiGate {
    /// The KPI (for a rate: its value per variant, e.g. CTR as Average).
    pub metric: VariantMetric,
    /// What the KPI stands on (impressions), summed over the window.
    pub samples: VariantMetric,
    #[serde(default)]
    pub comparison: Comparison,
    #[serde(default = "default_canary_percent")]
    pub canary_percent: i32,
    #[serde(default = "default_bake_minutes")]
    pub bake_minutes: i64,
    pub min_samples: f64,
    #[serde(default = "default_max_drop")]
    pub max_relative_drop_pct: f64,
    #[serde(default)]
    pub min_value: Option<f64>,
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// Past this, a canary still without enough evidence is stopped and a person asked.
    #[serde(default)]
    pub max_bake_minutes: Option<i64>,
}

fn default_canary_percent() -> i32 {
    10
}
fn default_bake_minutes() -> i64 {
    30
}
fn default_max_drop() -> f64 {
    5.0
}
fn default_confidence() -> f64 {
    0.95
}

/// CloudWatch's statistics, as GetMetricData takes them (percentiles are not a KPI's).
const STATS: &[&str] = &["Average", "Sum", "SampleCount", "Minimum", "Maximum"];

impl KpiGate {
    /// The longest a canary bakes waiting for enough samples: 4 × `bake_minutes` unless set.
    pub fn max_bake(&self) -> i64 {
        self.max_bake_minutes.unwrap_or(self.bake_minutes * 4)
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            min_samples: self.min_samples,
            max_relative_drop_pct: self.max_relative_drop_pct,
            min_value: self.min_value,
            confidence: self.confidence,
            rate_of_counts: self.comparison == Comparison::Rate,
        }
    }

    /// SageMaker's and the test's bounds, in words for the start-up error.
    pub fn validate(&self) -> Result<(), String> {
        for (what, m) in [("metric", &self.metric), ("samples", &self.samples)] {
            if m.namespace.trim().is_empty() || m.name.trim().is_empty() {
                return Err(format!("kpi_gate {what} needs a namespace and a name"));
            }
            if !STATS.contains(&m.stat.as_str()) {
                return Err(format!(
                    "kpi_gate {what} stat is {:?}, expected one of {}",
                    m.stat,
                    STATS.join(", ")
                ));
            }
        }
        if self.samples.stat != "Sum" {
            return Err("kpi_gate samples stat must be Sum: samples are counted".into());
        }
        if self.comparison == Comparison::Rate && self.metric.stat != "Average" {
            return Err(format!(
                "kpi_gate metric stat is {} with comparison rate: a rate per variant is an Average (use comparison relative for other statistics)",
                self.metric.stat
            ));
        }
        if !(1..=50).contains(&self.canary_percent) {
            return Err(format!(
                "kpi_gate canary_percent is {}, expected 1..=50",
                self.canary_percent
            ));
        }
        if !(1..=1440).contains(&self.bake_minutes) {
            return Err(format!(
                "kpi_gate bake_minutes is {}, expected 1..=1440",
                self.bake_minutes
            ));
        }
        if !(self.bake_minutes..=10080).contains(&self.max_bake()) {
            return Err(format!(
                "kpi_gate max_bake_minutes is {}, expected bake_minutes ({})..=10080",
                self.max_bake(),
                self.bake_minutes
            ));
        }
        if !(self.min_samples.is_finite() && self.min_samples >= 1.0) {
            return Err("kpi_gate min_samples must be at least 1".into());
        }
        if !(0.0..100.0).contains(&self.max_relative_drop_pct) {
            return Err("kpi_gate max_relative_drop_pct must be in 0..100".into());
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return Err("kpi_gate confidence must be between 0.5 and 1 (e.g. 0.95)".into());
        }
        match self.min_value {
            Some(v) if !v.is_finite() => Err("kpi_gate min_value must be a number".into()),
            Some(v) if self.comparison == Comparison::Rate && !(0.0..=1.0).contains(&v) => {
                Err("kpi_gate min_value of a rate must be in 0..=1".into())
            }
            _ => Ok(()),
        }
    }
}

/// One variant's KPI over the bake window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// The KPI: a rate in 0..=1 when `rate_of_counts`, else any value.
    pub value: f64,
    /// How many samples it stands on (impressions).
    pub samples: f64,
}

/// What the gate is configured with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min_samples: f64,
    /// δ, in percent of the live value.
    pub max_relative_drop_pct: f64,
    /// An absolute floor the candidate must reach, when set.
    pub min_value: Option<f64>,
    /// 0.5..1: how sure a pass or a fail must be.
    pub confidence: f64,
    pub rate_of_counts: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail {
        why: String,
    },
    /// Not enough evidence either way yet.
    Inconclusive {
        why: String,
    },
}

/// The verdict with its evidence: both values, both sample counts, the test and its p-value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub live: Sample,
    pub candidate: Sample,
    pub test: &'static str,
    /// P(data | the candidate is worse than the bound): small means a pass is safe.
    pub p_value: Option<f64>,
}

pub fn judge(bounds: &Bounds, live: Sample, candidate: Sample) -> Judgement {
    let judgement = |verdict, test, p_value| Judgement {
        verdict,
        live,
        candidate,
        test,
        p_value,
    };
    let short = [("live", live), ("candidate", candidate)]
        .into_iter()
        // NaN counts as short: it never passes.
        .filter(|(_, s)| {
            s.samples
                .partial_cmp(&bounds.min_samples)
                .is_none_or(|o| o.is_lt())
        })
        .map(|(name, s)| format!("{name} has {} of {} samples", s.samples, bounds.min_samples))
        .collect::<Vec<_>>();
    if !short.is_empty() {
        let why = short.join(", ");
        return judgement(Verdict::Inconclusive { why }, "none", None);
    }
    // No KPI value is no evidence either way (the application did not publish it): keep baking.
    if let Some((name, _)) = [("live", live), ("candidate", candidate)]
        .into_iter()
        .find(|(_, s)| !s.value.is_finite())
    {
        let why = format!("the {name} variant has no KPI value over the window");
        return judgement(Verdict::Inconclusive { why }, "none", None);
    }
    let compared = compare(bounds, live, candidate);
    // Below the floor fails whatever the comparison says; the comparison stays in the evidence.
    match bounds
        .min_value
        .filter(|f| candidate.value.partial_cmp(f).is_none_or(|o| o.is_lt()))
    {
        Some(floor) => {
            let why = format!(
                "the candidate's {} is below the floor {floor}",
                candidate.value
            );
            judgement(Verdict::Fail { why }, compared.test, compared.p_value)
        }
        None => compared,
    }
}

/// The candidate against the live variant, both with enough samples and a value.
fn compare(bounds: &Bounds, live: Sample, candidate: Sample) -> Judgement {
    let judgement = |verdict, test, p_value| Judgement {
        verdict,
        live,
        candidate,
        test,
        p_value,
    };
    let keep = 1.0 - bounds.max_relative_drop_pct / 100.0;
    let bound = live.value * keep;
    if !bounds.rate_of_counts {
        let verdict = match candidate.value >= bound {
            true => Verdict::Pass,
            false => Verdict::Fail {
                why: format!(
                    "the candidate's {} is more than {}% below the live {}",
                    candidate.value, bounds.max_relative_drop_pct, live.value
                ),
            },
        };
        return judgement(verdict, "relative", None);
    }
    let (pc, pl) = (candidate.value, live.value);
    let variance = pc * (1.0 - pc) / candidate.samples + pl * (1.0 - pl) / live.samples;
    // A rate outside 0..1 (published in percent, or summed) or no variance at all (both 0 or
    // both 1) gives the test nothing to stand on: no certainty either way.
    let rates = (0.0..=1.0).contains(&pc) && (0.0..=1.0).contains(&pl);
    if !rates || variance <= 0.0 {
        let why = format!(
            "rates {pl} and {pc} are not proportions with variance (is the KPI a rate between 0 and 1?)"
        );
        return judgement(Verdict::Inconclusive { why }, "none", None);
    }
    let z = (pc - bound) / variance.sqrt();
    let p_value = 1.0 - normal_cdf(z);
    let alpha = 1.0 - bounds.confidence;
    let verdict = if p_value < alpha {
        Verdict::Pass
    } else if normal_cdf(z) < alpha {
        Verdict::Fail {
            why: format!(
                "the candidate's rate {pc} is below {:.0}% of the live {pl} (z = {z:.2})",
                keep * 100.0
            ),
        }
    } else {
        Verdict::Inconclusive {
            why: format!(
                "z = {z:.2}: neither not-worse nor worse with {} confidence",
                bounds.confidence
            ),
        }
    };
    judgement(
        verdict,
        "two-proportion non-inferiority (one-sided z)",
        Some(p_value),
    )
}

/// Both variants' KPI and sample counts over `[start, end)` (epoch seconds), in one GetMetricData
/// with one period spanning the window. A variant that published nothing reads as no value and
/// no samples: too few samples, never a pass.
pub async fn read(
    cw: &aws_sdk_cloudwatch::Client,
    gate: &KpiGate,
    endpoint: &str,
    variants: [&str; 2],
    start: i64,
    end: i64,
) -> crate::Result<[Sample; 2]> {
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let start = start.div_euclid(60) * 60;
    // Through the second `end` is in: a datapoint published this second counts.
    let period = ((end + 1 - start).max(60) + 59) / 60 * 60;
    let query = |id: String, m: &VariantMetric, variant: &str| {
        let dims = [("EndpointName", endpoint), ("VariantName", variant)]
            .map(|(k, v)| Dimension::builder().name(k).value(v).build());
        let metric = Metric::builder()
            .namespace(&m.namespace)
            .metric_name(&m.name)
            .set_dimensions(Some(dims.to_vec()))
            .build();
        MetricDataQuery::builder()
            .id(id)
            .metric_stat(
                MetricStat::builder()
                    .metric(metric)
                    .period(period as i32)
                    .stat(&m.stat)
                    .build(),
            )
            .build()
    };
    let mut queries = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        queries.push(query(format!("kpi{i}"), &gate.metric, v));
        queries.push(query(format!("samples{i}"), &gate.samples, v));
    }
    let ts = aws_smithy_types::DateTime::from_secs;
    let out = cw
        .get_metric_data()
        .set_metric_data_queries(Some(queries))
        .start_time(ts(start))
        .end_time(ts(start + period))
        .send()
        .await
        .map_err(|e| crate::Error::aws("GetMetricData", e))?;
    let values = |id: String| -> Vec<f64> {
        out.metric_data_results()
            .iter()
            .filter(|r| r.id() == Some(id.as_str()))
            .flat_map(|r| r.values().iter().copied())
            .collect()
    };
    Ok([0, 1].map(|i| Sample {
        value: combine(&gate.metric.stat, &values(format!("kpi{i}"))),
        samples: values(format!("samples{i}")).iter().sum(),
    }))
}

/// Datapoints of one statistic as one value (one period usually gives one datapoint; a window
/// CloudWatch splits gives more). None at all: NaN, no value.
fn combine(stat: &str, v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    match stat {
        "Sum" | "SampleCount" => v.iter().sum(),
        "Minimum" => v.iter().copied().fold(f64::INFINITY, f64::min),
        "Maximum" => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => v.iter().sum::<f64>() / v.len() as f64,
    }
}

/// Φ(z), the standard normal CDF (Abramowitz and Stegun 7.1.26: error below 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_infinite() {
        return if z > 0.0 { 1.0 } else { 0.0 };
    }
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    0.5 * (1.0 + if z >= 0.0 { erf } else { -erf })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTR: Bounds = Bounds {
        min_samples: 5_000.0,
        max_relative_drop_pct: 5.0,
        min_value: None,
        confidence: 0.95,
        rate_of_counts: true,
    };

    fn s(value: f64, samples: f64) -> Sample {
        Sample { value, samples }
    }

    fn gate(extra: &str) -> Result<KpiGate, String> {
        let raw = format!(
            r#"{{"metric": {{"namespace": "Recs", "name": "ClickThroughRate", "stat": "Average"}},
                 "samples": {{"namespace": "Recs", "name": "Impressions", "stat": "Sum"}},
                 "min_samples": 1000{extra}}}"#
        );
        let g: KpiGate = serde_json::from_str(&raw).map_err(|e| e.to_string())?;
        g.validate().map(|()| g)
    }

    #[test]
    fn a_kpi_gate_has_the_seeds_defaults_and_refuses_what_cannot_work() {
        let g = gate("").unwrap();
        assert_eq!(
            (g.canary_percent, g.bake_minutes, g.max_bake()),
            (10, 30, 120)
        );
        assert_eq!((g.max_relative_drop_pct, g.confidence), (5.0, 0.95));
        assert!(g.bounds().rate_of_counts);
        for (extra, why) in [
            (r#", "canary_percent": 0"#, "canary_percent is 0"),
            (r#", "canary_percent": 60"#, "canary_percent is 60"),
            (r#", "bake_minutes": 0"#, "bake_minutes is 0"),
            (r#", "max_bake_minutes": 10"#, "max_bake_minutes is 10"),
            (r#", "confidence": 1.0"#, "confidence"),
            (r#", "max_relative_drop_pct": 100"#, "max_relative_drop_pct"),
            (r#", "min_value": 7.5"#, "min_value of a rate"),
            (r#", "comparison": "median""#, "unknown variant"),
            (r#", "canary": 10"#, "unknown field"),
        ] {
            let err = gate(extra).unwrap_err();
            assert!(err.contains(why), "{extra}: {err}");
        }
        let raw = r#"{"metric": {"namespace": "Recs", "name": "CTR", "stat": "p99"},
                      "samples": {"namespace": "Recs", "name": "Impressions", "stat": "Sum"},
                      "min_samples": 10}"#;
        let g: KpiGate = serde_json::from_str(raw).unwrap();
        assert!(g.validate().unwrap_err().contains("stat is \"p99\""));
        assert!(gate(r#", "comparison": "relative", "min_value": 7.5"#).is_ok());
    }

    #[test]
    fn the_normal_cdf_is_right_where_it_matters() {
        for (z, phi) in [
            (0.0, 0.5),
            (1.644_854, 0.95),
            (-1.959_964, 0.025),
            (3.0, 0.998_650),
        ] {
            assert!((normal_cdf(z) - phi).abs() < 1e-6, "{z}: {}", normal_cdf(z));
        }
    }

    #[test]
    fn the_seeds_regression_fails_on_ten_percent_of_the_traffic() {
        // Seed 000, scenario 3: 8.4% live, 7.1% candidate; 30 minutes at 10% of 180k impressions/h.
        let j = judge(&CTR, s(0.084, 81_000.0), s(0.071, 9_000.0));
        assert!(matches!(j.verdict, Verdict::Fail { .. }), "{j:?}");
        assert!(j.p_value.unwrap() > 0.99);
    }

    #[test]
    fn a_candidate_as_good_passes_and_the_evidence_keeps_both_sides() {
        let j = judge(&CTR, s(0.084, 81_000.0), s(0.085, 9_000.0));
        assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
        assert!(j.p_value.unwrap() < 0.05);
        assert_eq!((j.live.samples, j.candidate.value), (81_000.0, 0.085));
    }

    #[test]
    fn too_few_samples_is_inconclusive_not_a_pass() {
        let j = judge(&CTR, s(0.084, 81_000.0), s(0.09, 400.0));
        let Verdict::Inconclusive { why } = &j.verdict else {
            panic!("{j:?}")
        };
        assert!(why.contains("candidate has 400"), "{why}");
    }

    #[test]
    fn rates_that_are_not_proportions_prove_nothing() {
        for (live, candidate) in [(8.4, 8.5), (0.0, 0.0), (1.0, 1.0)] {
            let j = judge(&CTR, s(live, 81_000.0), s(candidate, 9_000.0));
            assert!(
                matches!(j.verdict, Verdict::Inconclusive { .. }),
                "{live} {candidate}: {j:?}"
            );
        }
        let mut summed = gate("").unwrap();
        summed.metric.stat = "Sum".into();
        assert!(summed.validate().unwrap_err().contains("Average"));
        summed.comparison = Comparison::Relative;
        assert!(summed.validate().is_ok());
    }

    #[test]
    fn close_but_unproven_is_inconclusive() {
        let j = judge(&CTR, s(0.084, 81_000.0), s(0.081, 6_000.0));
        assert!(matches!(j.verdict, Verdict::Inconclusive { .. }), "{j:?}");
    }

    #[test]
    fn the_floor_fails_a_candidate_that_keeps_pace_with_a_bad_live_variant() {
        let floor = Bounds {
            min_value: Some(0.075),
            ..CTR
        };
        let j = judge(&floor, s(0.072, 81_000.0), s(0.073, 9_000.0));
        assert!(matches!(j.verdict, Verdict::Fail { .. }), "{j:?}");
        assert!(matches!(j.verdict, Verdict::Fail { ref why } if why.contains("floor")));
        assert!(j.p_value.is_some(), "the comparison stays in the evidence");
    }

    #[test]
    fn a_kpi_that_is_not_a_rate_is_compared_relatively() {
        let aov = Bounds {
            rate_of_counts: false,
            min_samples: 100.0,
            ..CTR
        };
        assert_eq!(
            judge(&aov, s(40.0, 1_000.0), s(38.5, 200.0)).verdict,
            Verdict::Pass
        );
        assert!(matches!(
            judge(&aov, s(40.0, 1_000.0), s(37.0, 200.0)).verdict,
            Verdict::Fail { .. }
        ));
    }

    #[test]
    fn nan_samples_or_values_never_pass() {
        assert!(matches!(
            judge(&CTR, s(0.084, f64::NAN), s(0.085, 9_000.0)).verdict,
            Verdict::Inconclusive { .. }
        ));
        let floor = Bounds {
            min_value: Some(0.07),
            ..CTR
        };
        // No value is no evidence: neither a pass nor a rejection.
        assert!(matches!(
            judge(&floor, s(0.084, 81_000.0), s(f64::NAN, 9_000.0)).verdict,
            Verdict::Inconclusive { .. }
        ));
    }
}
