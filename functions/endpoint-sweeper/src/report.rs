//! The sweep's report: every endpoint, its findings, what was done or withheld and why, and the
//! estimated monthly cost of idle and stale capacity. One JSON object in S3 per run.

use lifecycle::plan::ActionKind;
use serde::Serialize;

use crate::decide::{EndpointPlan, Withheld};
use crate::findings::{Finding, Judgement};
use crate::inventory::Variant;

#[derive(Debug, Clone, Serialize)]
pub struct ActionTaken {
    pub action: ActionKind,
    pub reason: String,
    pub result: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    #[serde(flatten)]
    pub judgement: Judgement,
    pub variants: Vec<Variant>,
    pub actions: Vec<ActionTaken>,
    pub withheld: Vec<Withheld>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub endpoints: usize,
    pub judged: usize,
    pub idle: usize,
    pub stale: usize,
    pub stale_with_traffic: usize,
    pub under_replicated: usize,
    pub scale_to_zero_risk: usize,
    pub short_scale_in_cooldown: usize,
    pub protected: usize,
    pub actions_taken: usize,
    pub actions_withheld: usize,
    /// Old versions of targets whose model was deleted this run (with their configs).
    pub versions_retired: usize,
    pub idle_monthly_usd: f64,
    pub stale_monthly_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub run_at: String,
    pub request_id: String,
    pub window_minutes: i64,
    pub dry_run: bool,
    pub totals: Totals,
    pub api_calls: std::collections::BTreeMap<&'static str, usize>,
    pub endpoints: Vec<EndpointReport>,
}

pub fn totals(endpoints: &[EndpointReport]) -> Totals {
    let mut t = Totals {
        endpoints: endpoints.len(),
        ..Totals::default()
    };
    for e in endpoints {
        let j = &e.judgement;
        t.judged += usize::from(j.not_judged.is_none());
        t.protected += usize::from(j.protected);
        t.actions_taken += e.actions.len();
        t.actions_withheld += e.withheld.len();
        // Only the retirement of old versions deletes models.
        t.versions_retired += e
            .actions
            .iter()
            .filter(|a| a.action == ActionKind::DeleteModel && a.result.ends_with(": done"))
            .count();
        let cost = j.monthly_usd.unwrap_or(0.0);
        if j.idle() {
            t.idle += 1;
            t.idle_monthly_usd += cost;
        }
        for f in &j.findings {
            match f {
                Finding::Stale { .. } => {
                    t.stale += 1;
                    t.stale_monthly_usd += cost;
                }
                Finding::StaleWithTraffic { .. } => {
                    t.stale_with_traffic += 1;
                    t.stale_monthly_usd += cost;
                }
                Finding::UnderReplicated { .. } => t.under_replicated += 1,
                Finding::ScaleToZeroRisk { .. } => t.scale_to_zero_risk += 1,
                Finding::ShortScaleInCooldown { .. } => t.short_scale_in_cooldown += 1,
                Finding::Idle => {}
            }
        }
    }
    t.idle_monthly_usd = (t.idle_monthly_usd * 100.0).round() / 100.0;
    t.stale_monthly_usd = (t.stale_monthly_usd * 100.0).round() / 100.0;
    t
}

impl Totals {
    /// The sweep in one sentence: what was found, what it costs, what was done.
    pub fn describe(&self, dry_run: bool) -> String {
        format!(
            "{} endpoints ({} judged): {} idle (${:.0}/month), {} stale (${:.0}/month), {} under-replicated, {} scale-to-zero risks, {} short cooldowns; {} actions{}, {} withheld",
            self.endpoints,
            self.judged,
            self.idle,
            self.idle_monthly_usd,
            self.stale + self.stale_with_traffic,
            self.stale_monthly_usd,
            self.under_replicated,
            self.scale_to_zero_risk,
            self.short_scale_in_cooldown,
            self.actions_taken,
            if dry_run {
                " (dry run: none applied)"
            } else {
                ""
            },
            self.actions_withheld,
        )
    }
}

/// Pairs each step of a plan with what applying it did.
pub fn taken(plan: &EndpointPlan, results: &[String]) -> Vec<ActionTaken> {
    plan.plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| ActionTaken {
            action: s.action.kind(),
            reason: s.reason.clone(),
            result: results
                .get(i)
                .cloned()
                .unwrap_or_else(|| "not attempted: an earlier step failed".into()),
        })
        .collect()
}
