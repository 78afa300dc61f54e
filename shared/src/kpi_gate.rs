//! The live KPI canary's judgement (issue "A live business-KPI canary"): is a candidate that
//! served a share of the traffic for the bake window not worse than the live variant?
//!
//! Pure: the deployer reads both variants' KPI and sample counts and hands them here. Not wired
//! into the reconcile loop yet; this is its decision, tested on its own.
//!
//! For a KPI that is a rate of counts (clicks over impressions) the test is a one-sided
//! two-proportion non-inferiority test: H0 "the candidate's rate is below (1 − δ) × the live
//! rate", rejected with the configured confidence → pass. The same z the other way round, past
//! the critical value, shows the candidate worse → fail. Neither → inconclusive (keep baking).
//! For any other KPI (an average order value) the comparison is relative, without a test.

use serde::Serialize;

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
    if let Some(floor) = bounds
        .min_value
        .filter(|f| candidate.value.partial_cmp(f).is_none_or(|o| o.is_lt()))
    {
        let why = format!(
            "the candidate's {} is below the floor {floor}",
            candidate.value
        );
        return judgement(Verdict::Fail { why }, "floor", None);
    }
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
    let z = match variance > 0.0 {
        true => (pc - bound) / variance.sqrt(),
        false => (pc - bound).signum() * f64::INFINITY,
    };
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
        assert_eq!(j.test, "floor");
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
        assert!(matches!(
            judge(&floor, s(0.084, 81_000.0), s(f64::NAN, 9_000.0)).verdict,
            Verdict::Fail { .. }
        ));
    }
}
