//! The target's declared capacity, kept: registered, its tracking policy and schedules put, and
//! a hand change undone with its before and after in the reason (README, "Capacity as code").

use lifecycle::capacity::{self, POLICY, SCHEDULE_PREFIX};
use lifecycle::decision::Decision;
use lifecycle::endpoints::EndpointStatus;
use lifecycle::outcome::{Outcome, Severity};
use lifecycle::plan::{Action, ActionKind};
use lifecycle::scaling;
use serde_json::json;

use super::Observed;

/// After the step's own plan: when nothing else touches the variant's autoscaling now.
pub(super) fn ensure(obs: &Observed, mut d: Decision) -> Decision {
    let (Some(declared), Some(now)) = (&obs.target.capacity, &obs.capacity) else {
        return d;
    };
    let Some(id) = ours_now(obs, &d) else {
        return d;
    };
    let mut want = declared.desired(&id, POLICY);
    let schedules = declared.desired_schedules(SCHEDULE_PREFIX);
    let (register, unexplained) = bounds(declared, &mut want, !schedules.is_empty(), now);
    let mut diffs = capacity::differences(&want, &schedules, now.scaling.as_ref(), &now.schedules);
    diffs.extend(unexplained);
    let stale: Vec<String> = now
        .schedules
        .iter()
        .filter(|s| !schedules.iter().any(|w| w.name == s.name))
        .map(|s| s.name.clone())
        .collect();
    diffs.extend(
        stale
            .iter()
            .map(|s| format!("schedule {s} is no longer declared")),
    );
    if diffs.is_empty() {
        return d;
    }
    let why = format!(
        "autoscaling of {id} differs from the target's capacity ({}): put back",
        diffs.join("; ")
    );
    if d.outcome.severity() == Severity::Routine && d.plan.steps.is_empty() {
        d.outcome = Outcome::CapacitySet;
    }
    d.evidence["capacity"] =
        json!({"before": now, "after": {"scaling": want, "schedules": schedules}});
    d.reason = format!("{why}; {}", d.reason);
    d.plan.push(
        Action::ApplyCapacity {
            snapshot: want,
            register,
            schedules,
            delete_schedules: stale,
        },
        why,
    );
    d
}

/// The variant's scalable resource id, when its autoscaling is the target's to keep now: the
/// endpoint InService, nothing in the plan moving autoscaling, no deployment that deregistered
/// it (it restores it itself), and the variant on the endpoint (not a canary's way, not an
/// adopted endpoint's).
fn ours_now(obs: &Observed, d: &Decision) -> Option<String> {
    let ep = obs
        .endpoint
        .as_ref()
        .filter(|e| e.status == EndpointStatus::InService)?;
    let variant = &obs.target.variant;
    let busy = [
        ActionKind::UpdateEndpoint,
        ActionKind::CreateEndpoint,
        ActionKind::DeregisterScaling,
        ActionKind::RestoreScaling,
    ]
    .iter()
    .any(|k| d.plan.has(*k));
    let deregistered = obs.open_deployment().is_some_and(|r| r.scaling.is_some());
    let has_variant = ep.variants.iter().any(|v| &v.name == variant);
    (!busy && !deregistered && has_variant).then(|| scaling::resource_id(&ep.name, variant))
}

/// The bounds to put: with schedules, a registered target keeps those they set and is not
/// registered again, unless no declared bound explains them (a hand change, named). Registered
/// then, a schedule firing between the read and the write is undone until its next firing.
/// Whether to register, and the hand change.
fn bounds(
    declared: &capacity::Capacity,
    want: &mut scaling::Snapshot,
    scheduled: bool,
    now: &capacity::CapacityNow,
) -> (bool, Option<String>) {
    let (true, Some(live)) = (scheduled, &now.scaling) else {
        return (true, None);
    };
    (want.min, want.max) = declared.within_declared(live.min, live.max);
    if (want.min, want.max) == (live.min, live.max) {
        return (false, None);
    }
    let change = format!(
        "bounds {}-{} -> {}-{} (no declared schedule sets them)",
        live.min, live.max, want.min, want.max
    );
    (true, Some(change))
}

#[cfg(test)]
mod tests {
    use super::super::decide;
    use super::super::tests::{live, observed, target};
    use super::*;
    use lifecycle::capacity::{Capacity, CapacityNow};

    fn declared(schedules: bool) -> Capacity {
        let mut c = serde_json::json!({"min": 2, "max": 10, "target_invocations": 70.0});
        if schedules {
            c["schedules"] = serde_json::json!([
                {"name": "evenings", "cron": "cron(0 20 ? * * *)", "timezone": "Asia/Tokyo", "min": 2, "max": 4}
            ]);
        }
        serde_json::from_value(c).unwrap()
    }

    /// v2 serves and is the newest: nothing to deploy.
    fn in_sync_with(t: &lifecycle::targets::DeploymentTarget, now: CapacityNow) -> Observed<'_> {
        Observed {
            candidates: vec![live(2)],
            approved: vec![],
            capacity: Some(now),
            ..observed(t)
        }
    }

    fn applied(d: &Decision) -> Option<&Action> {
        d.plan
            .steps
            .iter()
            .map(|s| &s.action)
            .find(|a| a.kind() == ActionKind::ApplyCapacity)
    }

    #[test]
    fn an_unregistered_variant_gets_the_declared_capacity() {
        let mut t = target();
        t.capacity = Some(declared(true));
        let none = CapacityNow {
            scaling: None,
            schedules: vec![],
        };
        let d = decide(&in_sync_with(&t, none));
        assert_eq!(d.outcome, Outcome::CapacitySet, "{}", d.reason);
        let Some(Action::ApplyCapacity {
            snapshot,
            register,
            schedules,
            ..
        }) = applied(&d)
        else {
            panic!("{:?}", d.plan)
        };
        assert!(register);
        assert_eq!((snapshot.min, snapshot.max), (2, 10));
        assert_eq!(snapshot.policies[0].scale_in_cooldown, Some(600));
        assert_eq!(schedules[0].name, "lifecycle-evenings");
    }

    #[test]
    fn a_hand_change_is_put_back_and_what_agrees_is_left_alone() {
        let mut t = target();
        let c = declared(true);
        t.capacity = Some(c.clone());
        let id = scaling::resource_id("recs-prod", "AllTraffic");
        let mut scaled = c.desired(&id, POLICY);
        scaled.max = 4; // the evening schedule ran: not a hand change
        let agrees = CapacityNow {
            scaling: Some(scaled.clone()),
            schedules: c.desired_schedules(SCHEDULE_PREFIX),
        };
        let d = decide(&in_sync_with(&t, agrees.clone()));
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::InSync, true),
            "{}",
            d.reason
        );

        let mut changed = agrees;
        changed.scaling.as_mut().unwrap().policies[0].scale_in_cooldown = Some(60);
        changed.schedules[0].name = "lifecycle-old".into();
        let d = decide(&in_sync_with(&t, changed));
        assert_eq!(d.outcome, Outcome::CapacitySet);
        for part in [
            "Some(60) -> Some(600)",
            "lifecycle-evenings missing",
            "lifecycle-old is no longer declared",
        ] {
            assert!(d.reason.contains(part), "{part}: {}", d.reason);
        }
        let Some(Action::ApplyCapacity {
            snapshot,
            register,
            delete_schedules,
            ..
        }) = applied(&d)
        else {
            panic!()
        };
        assert!(
            !register,
            "a schedule may have moved the bounds since the read"
        );
        assert_eq!(
            (snapshot.min, snapshot.max),
            (2, 4),
            "the schedule's bounds stand"
        );
        assert_eq!(delete_schedules, &["lifecycle-old"]);
    }

    #[test]
    fn bounds_no_schedule_explains_are_put_back_inside_the_declared_ones() {
        let mut t = target();
        let c = declared(true);
        t.capacity = Some(c.clone());
        let id = scaling::resource_id("recs-prod", "AllTraffic");
        let mut zero = c.desired(&id, POLICY);
        zero.min = 0; // by hand, at 3 a.m.
        let now = CapacityNow {
            scaling: Some(zero),
            schedules: c.desired_schedules(SCHEDULE_PREFIX),
        };
        let d = decide(&in_sync_with(&t, now));
        assert_eq!(d.outcome, Outcome::CapacitySet, "{}", d.reason);
        assert!(d.reason.contains("bounds 0-10 -> 2-10"), "{}", d.reason);
        let Some(Action::ApplyCapacity {
            snapshot, register, ..
        }) = applied(&d)
        else {
            panic!("{:?}", d.plan)
        };
        assert!(register);
        assert_eq!((snapshot.min, snapshot.max), (2, 10));
    }

    #[test]
    fn capacity_comes_after_guardrail_upkeep_so_its_failure_holds_nothing_up() {
        let mut t = super::super::tests::guarded();
        t.capacity = Some(declared(false));
        let none = CapacityNow {
            scaling: None,
            schedules: vec![],
        };
        let d = decide(&in_sync_with(&t, none));
        let kinds = super::super::tests::actions(&d);
        assert_eq!(
            kinds,
            [
                ActionKind::PutAlarm,
                ActionKind::PutAlarm,
                ActionKind::ApplyCapacity
            ],
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_deployment_moves_autoscaling_itself_so_capacity_waits() {
        let mut t = target();
        t.capacity = Some(declared(false));
        let none = CapacityNow {
            scaling: None,
            schedules: vec![],
        };
        let obs = Observed {
            capacity: Some(none),
            ..observed(&t)
        };
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::Deploying);
        assert!(applied(&d).is_none(), "{:?}", d.plan);
    }
}
