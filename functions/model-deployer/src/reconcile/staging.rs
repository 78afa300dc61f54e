//! Staging first (seed 002's CI gating, seed 003's post-deployment validation): a target with
//! `promote_after` takes a version only once it has served the required target for
//! `soak_minutes`, with no rollback, no rejection and no rollback alarm firing there. The
//! registry stays the desired state: one approval flows through staging to production.

use lifecycle::decision::Decision;
use lifecycle::deployment::DeploymentStatus;
use lifecycle::ledger::millis_rfc3339;
use lifecycle::outcome::Outcome;

use super::{Candidate, Observed, Progress, with_news};

/// `Some` (waiting for staging, with what is missing) while `desired` has not soaked there.
pub(super) fn waiting(obs: &Observed, desired: &Candidate, p: &Progress) -> Option<Decision> {
    let rule = obs.target.promote_after.as_ref()?;
    // What serves here is no longer Approved: replacing it is the remedy, as without staging.
    let live_approved = obs
        .served_package()
        .is_none_or(|s| obs.approved.iter().any(|a| a == s));
    if !live_approved {
        return None;
    }
    let missing = match &obs.staging {
        None => format!("{} cannot be read", rule.target),
        Some(s) => missing(s, desired, rule.soak_minutes, obs.now_ms)?,
    };
    let reason = format!("version {} waits for staging: {missing}", desired.version);
    Some(
        Decision::new(Outcome::WaitingForStaging, with_news(&p.news, reason))
            .with_package(Some(desired.arn.clone())),
    )
}

/// What the required target still lacks for `desired`, in words; `None` when it has soaked.
fn missing(
    s: &super::Staging,
    desired: &Candidate,
    soak_minutes: i64,
    now_ms: i64,
) -> Option<String> {
    let here = s.record.as_ref().filter(|d| d.package_arn == desired.arn);
    let Some(d) = here else {
        return Some(format!(
            "{} does not serve version {} (its last deployment is of another version, or a rollback replaced it)",
            s.endpoint, desired.version
        ));
    };
    let Some(live_since) = d
        .finished_at
        .filter(|_| d.status == DeploymentStatus::Succeeded)
    else {
        return Some(format!(
            "its deployment to {} is {:?}, not Succeeded",
            s.endpoint, d.status
        ));
    };
    let firing: Vec<&str> = s
        .alarms
        .iter()
        .filter(|a| a.in_alarm)
        .map(|a| a.name.as_str())
        .collect();
    if !firing.is_empty() {
        return Some(format!("{} in ALARM on {}", firing.join(", "), s.endpoint));
    }
    let soaked_at = live_since + soak_minutes * 60_000;
    (now_ms < soaked_at).then(|| {
        format!(
            "it serves {} since {}; its {soak_minutes} min soak ends at {}",
            s.endpoint,
            millis_rfc3339(live_since),
            millis_rfc3339(soaked_at)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{arn, firing_since, in_flight, observed, target};
    use super::super::{Staging, decide};
    use super::*;
    use lifecycle::targets::PromoteAfter;

    fn production() -> lifecycle::targets::DeploymentTarget {
        let mut t = target();
        t.promote_after = Some(PromoteAfter {
            target: "recs-staging".into(),
            soak_minutes: 60,
        });
        t
    }

    /// Staging's record: version 3 went live at `live_since`, with `status`.
    fn staging(
        status: DeploymentStatus,
        live_since: i64,
        alarms: Vec<super::super::AlarmNow>,
    ) -> Staging {
        let t = target();
        let mut record = in_flight(&t, live_since - 60_000);
        (record.status, record.finished_at) = (status, Some(live_since));
        Staging {
            endpoint: "recs-staging".into(),
            record: Some(record),
            alarms,
        }
    }

    #[test]
    fn production_waits_for_staging_to_soak_then_deploys() {
        let t = production();
        let hour = 60 * 60_000;
        let at = |now_ms, staging| Observed {
            staging,
            now_ms,
            ..observed(&t)
        };
        let cases = [
            (at(hour, None), Outcome::WaitingForStaging, "cannot be read"),
            (
                at(
                    2 * hour,
                    Some(Staging {
                        record: None,
                        ..staging(DeploymentStatus::Succeeded, 0, vec![])
                    }),
                ),
                Outcome::WaitingForStaging,
                "does not serve version 3",
            ),
            (
                at(
                    2 * hour,
                    Some(staging(DeploymentStatus::RolledBack, 1_000, vec![])),
                ),
                Outcome::WaitingForStaging,
                "RolledBack",
            ),
            (
                at(
                    2 * hour,
                    Some(staging(
                        DeploymentStatus::Succeeded,
                        1_000,
                        vec![firing_since(1_000)],
                    )),
                ),
                Outcome::WaitingForStaging,
                "recs-5xx in ALARM",
            ),
            (
                at(
                    hour,
                    Some(staging(DeploymentStatus::Succeeded, 1_000, vec![])),
                ),
                Outcome::WaitingForStaging,
                "soak ends at",
            ),
            (
                at(
                    hour + 1_000,
                    Some(staging(DeploymentStatus::Succeeded, 1_000, vec![])),
                ),
                Outcome::Deploying,
                "",
            ),
        ];
        for (obs, outcome, why) in cases {
            let d = decide(&obs);
            assert_eq!(d.outcome, outcome, "{}", d.reason);
            assert!(d.reason.contains(why), "{why}: {}", d.reason);
            if outcome == Outcome::WaitingForStaging {
                assert!(d.plan.is_empty());
                assert_eq!(d.package.as_deref(), Some(arn(3).as_str()));
            }
        }
    }

    #[test]
    fn a_rejected_live_version_is_replaced_without_waiting() {
        let t = production();
        let obs = Observed {
            approved: vec![arn(3)],
            candidates: vec![super::super::tests::passing(3)],
            ..observed(&t)
        };
        assert_eq!(decide(&obs).outcome, Outcome::Deploying);
    }
}
