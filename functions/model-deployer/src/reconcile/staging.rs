//! Staging first (seed 002's CI gating, seed 003's post-deployment validation): a target with
//! `promote_after` takes a version only once it has served the required target for
//! `soak_minutes`, not replaced there, with none of its rollback or KPI alarms firing or changing
//! state since. The registry stays the desired state: one approval flows through staging to
//! production.

use lifecycle::decision::Decision;
use lifecycle::ledger::millis_rfc3339;
use lifecycle::outcome::Outcome;

use super::{Candidate, Observed, Progress, Staging, with_news};

/// `Some` (waiting for staging, with what is missing) while `desired` has not soaked there.
pub(super) fn waiting(obs: &Observed, desired: &Candidate, p: &Progress) -> Option<Decision> {
    let rule = obs.target.promote_after.as_ref()?;
    let missing = match &obs.staging {
        None => format!("{} cannot be read", rule.target),
        Some(s) => missing(s, desired, rule.soak_minutes, obs.now_ms)?,
    };
    let reason = format!("version {} waits for staging: {missing}", desired.version);
    // What serves here is no longer Approved. Replacing it with an unsoaked version would skip
    // staging, and keeping it keeps what someone rejected: a person chooses.
    let live_rejected = obs
        .served_package()
        .is_some_and(|s| !obs.approved.iter().any(|a| a == s));
    let (outcome, reason) = if live_rejected {
        (
            Outcome::RemedyWaitsForStaging,
            format!(
                "{} serves a version that is no longer Approved, and {reason}; wait for the soak, or reject version {} too so the newest soaked one replaces it",
                obs.target.endpoint, desired.version
            ),
        )
    } else {
        (Outcome::WaitingForStaging, reason)
    };
    Some(Decision::new(outcome, with_news(&p.news, reason)).with_package(Some(desired.arn.clone())))
}

/// What the required target still lacks for `desired`, in words; `None` when it has soaked.
fn missing(s: &Staging, desired: &Candidate, soak_minutes: i64, now_ms: i64) -> Option<String> {
    // When it last went live there: the served history, not just the last deployment, so a
    // newer version rolled back on staging does not hide the soak of this one.
    let Some(live_since) = s
        .served
        .iter()
        .find(|v| v.package_arn == desired.arn)
        .and_then(|v| v.finished_at)
    else {
        return Some(
            match s.record.as_ref().filter(|d| d.package_arn == desired.arn) {
                Some(d) => format!(
                    "its deployment to {} is {:?}, not Succeeded",
                    s.endpoint, d.status
                ),
                None => format!("{} has not served version {}", s.endpoint, desired.version),
            },
        );
    };
    let soak_ms = soak_minutes * 60_000;
    // Another deployment there began before the soak was over: it was not a full soak. One of
    // another version replaced this one, even if its request was stamped before this verdict
    // was written (a rollback decided while the verdict was being recorded).
    let replaced = s
        .record
        .as_ref()
        .filter(|d| d.package_arn != desired.arn || d.requested_at > live_since)
        .map(|d| (d.requested_at.max(live_since), d.package_version))
        .filter(|(at, _)| *at < live_since + soak_ms);
    if let Some((at, version)) = replaced {
        return Some(format!(
            "a deployment of version {version} to {} began at {}, before its {soak_minutes} min soak there ended",
            s.endpoint,
            millis_rfc3339(at)
        ));
    }
    if let Some(why) = alarms_not_quiet(s) {
        return Some(why);
    }
    // An alarm that changed state since it went live may have fired and recovered: the soak
    // counts from its last change (CloudWatch's state keeps no more without its history).
    let changed = s
        .alarms
        .iter()
        .filter_map(|a| Some((a, (a.since?.unix_timestamp_nanos() / 1_000_000) as i64)))
        .filter(|(_, at)| *at > live_since)
        .max_by_key(|(_, at)| *at);
    let quiet_since = changed.map_or(live_since, |(_, at)| at);
    let soaked_at = quiet_since + soak_ms;
    let counted = match changed {
        Some((a, at)) => format!(
            "; counted from {}'s change of state at {}",
            a.name,
            millis_rfc3339(at)
        ),
        None => String::new(),
    };
    (now_ms < soaked_at).then(|| {
        format!(
            "it serves {} since {}; its {soak_minutes} min soak ends at {}{counted}",
            s.endpoint,
            millis_rfc3339(live_since),
            millis_rfc3339(soaked_at)
        )
    })
}

/// A staging alarm in ALARM, or one that does not exist (it says nothing of the soak: a person
/// makes it or unlists it).
fn alarms_not_quiet(s: &Staging) -> Option<String> {
    let names = |missing: bool| -> Vec<&str> {
        s.alarms
            .iter()
            .filter(|a| a.in_alarm && a.missing == missing)
            .map(|a| a.name.as_str())
            .collect()
    };
    if let firing @ [_, ..] = &names(false)[..] {
        return Some(format!("{} in ALARM on {}", firing.join(", "), s.endpoint));
    }
    let missing = names(true);
    (!missing.is_empty()).then(|| {
        format!(
            "{} of {} not found, so its soak cannot be judged",
            missing.join(", "),
            s.endpoint
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{arn, firing_since, in_flight, observed, target};
    use super::super::{AlarmNow, Staging, decide};
    use super::*;
    use lifecycle::deployment::DeploymentStatus;
    use lifecycle::ledger::Served;
    use lifecycle::targets::PromoteAfter;

    const MIN: i64 = 60_000;
    /// Version 3 went live on staging at this time.
    const LIVE: i64 = 10 * MIN;

    fn production() -> lifecycle::targets::DeploymentTarget {
        let mut t = target();
        t.promote_after = Some(PromoteAfter {
            target: "recs-staging".into(),
            soak_minutes: 60,
        });
        t
    }

    fn served(v: i64, at: i64) -> Served {
        Served {
            package_arn: arn(v),
            package_version: v,
            config: format!("cfg-v{v}"),
            finished_at: Some(at),
        }
    }

    /// Staging served version 3 from LIVE, and its last deployment is that one.
    fn soaking() -> Staging {
        let t = target();
        let mut record = in_flight(&t, LIVE - MIN);
        (record.status, record.finished_at) = (DeploymentStatus::Succeeded, Some(LIVE));
        Staging {
            endpoint: "recs-staging".into(),
            record: Some(record),
            served: vec![served(3, LIVE), served(2, 0)],
            alarms: vec![],
        }
    }

    /// A deployment of version 4 to staging, begun at `at`, that ended `status`.
    fn then_v4(at: i64, status: DeploymentStatus) -> Staging {
        let mut s = soaking();
        let r = s.record.as_mut().unwrap();
        (r.package_arn, r.package_version) = (arn(4), 4);
        (r.requested_at, r.status, r.finished_at) = (at, status, Some(at + MIN));
        s
    }

    fn quiet_since(ms: i64) -> AlarmNow {
        AlarmNow {
            in_alarm: false,
            ..firing_since(ms)
        }
    }

    #[test]
    fn production_waits_for_staging_to_soak_then_deploys() {
        use DeploymentStatus::*;
        let in_progress = Staging {
            served: vec![served(2, 0)],
            record: Some(in_flight(&target(), LIVE)),
            ..soaking()
        };
        let never = Staging {
            served: vec![served(2, 0)],
            record: None,
            ..soaking()
        };
        let with = |alarms| Staging {
            alarms,
            ..soaking()
        };
        let soaked = LIVE + 60 * MIN;
        let cases = [
            (soaked, None, "cannot be read"),
            (soaked, Some(never), "has not served version 3"),
            (soaked, Some(in_progress), "InProgress, not Succeeded"),
            (soaked - 1, Some(soaking()), "soak ends at"),
            (soaked, Some(soaking()), ""),
            // Replaced on staging before the soak was over, even if that deployment failed.
            (
                soaked + MIN,
                Some(then_v4(LIVE + 30 * MIN, RolledBack)),
                "version 4 to recs-staging began",
            ),
            // A rollback to version 4 stamped just before this version's verdict replaced it.
            (
                soaked + MIN,
                Some(then_v4(LIVE - 1_000, DeploymentStatus::Succeeded)),
                "version 4 to recs-staging began",
            ),
            // A newer version rolled back after the soak does not hide it.
            (soaked + MIN, Some(then_v4(soaked, RolledBack)), ""),
            (
                soaked,
                Some(with(vec![firing_since(LIVE + MIN)])),
                "recs-5xx in ALARM",
            ),
            // It fired and recovered: the soak counts from the recovery.
            (
                soaked + 10 * MIN,
                Some(with(vec![quiet_since(LIVE + 30 * MIN)])),
                "counted from recs-5xx's change of state",
            ),
            (
                soaked + 30 * MIN,
                Some(with(vec![quiet_since(LIVE + 30 * MIN)])),
                "",
            ),
            // A change of state before it went live is not its.
            (soaked, Some(with(vec![quiet_since(LIVE - MIN)])), ""),
        ];
        let t = production();
        for (now_ms, staging, why) in cases {
            let obs = Observed {
                staging,
                now_ms,
                ..observed(&t)
            };
            let d = decide(&obs);
            let outcome = if why.is_empty() {
                Outcome::Deploying
            } else {
                Outcome::WaitingForStaging
            };
            assert_eq!(d.outcome, outcome, "{why}: {}", d.reason);
            assert!(d.reason.contains(why), "{why}: {}", d.reason);
            if outcome == Outcome::WaitingForStaging {
                assert!(d.plan.is_empty());
                assert_eq!(d.package.as_deref(), Some(arn(3).as_str()));
            }
        }
    }

    #[test]
    fn a_rejected_live_version_is_replaced_only_by_a_soaked_one() {
        let t = production();
        let rejected = |now_ms| Observed {
            approved: vec![arn(3)],
            candidates: vec![super::super::tests::passing(3)],
            staging: Some(soaking()),
            now_ms,
            ..observed(&t)
        };
        let d = decide(&rejected(LIVE + 60 * MIN));
        assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
        let d = decide(&rejected(LIVE + MIN));
        assert_eq!(d.outcome, Outcome::RemedyWaitsForStaging, "{}", d.reason);
        assert!(d.plan.is_empty());
        assert!(
            d.reason.contains("no longer Approved") && d.reason.contains("soak ends at"),
            "{}",
            d.reason
        );
    }
}
