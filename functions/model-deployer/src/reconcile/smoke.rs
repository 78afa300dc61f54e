//! A plain update whose version failed its smoke test: the version is rejected with the request,
//! the answer and the reason, and the version before comes back at once, as an alarm would bring
//! it (a canary's candidate is judged in [`super::canary`]).

use lifecycle::decision::Decision;
use lifecycle::deploy::{self, Deployment};
use lifecycle::deployment::DeploymentStatus;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, Plan};

use super::Observed;

pub(super) fn failed(obs: &Observed) -> Option<Decision> {
    let smoke = obs.smoke.as_ref().filter(|s| !s.run.passed())?;
    let d = obs
        .open_deployment()
        .filter(|d| d.open_canary().is_none())?;
    let ep = obs.endpoint.as_ref()?;
    let description = format!("Rejected: {}", smoke.run.describe());
    let mut plan = Plan::default();
    plan.push(
        Action::RejectPackage {
            package_arn: d.package_arn.clone(),
            description: description.clone(),
        },
        description,
    );
    let version = d.package_version;
    let reason = match &smoke.back {
        Some(back) => {
            let why = format!(
                "version {version} failed its smoke test ({}): back to version {} on {}",
                smoke.run.failure.as_deref().unwrap_or_default(),
                back.version,
                back.config
            );
            let start = plan.steps.len();
            // Autoscaling the update deregistered stays so until the way back is live; its
            // record restores it then.
            deploy::plan(
                Deployment {
                    target: obs.target,
                    package_arn: &back.package_arn,
                    version: back.version,
                    endpoint: Some(ep),
                    live_config: obs.live_config.as_ref(),
                    rollout: None,
                    expected: Some(d.requested_at),
                    now_ms: obs.now_ms,
                    existing_config: Some(back.config.clone()),
                    why: why.clone(),
                    cause_alarm: None,
                    scaling: d.scaling.is_none().then(|| obs.scaling.clone()).flatten(),
                    canary: None,
                },
                &mut plan,
            );
            for step in &mut plan.steps[start..] {
                if let (Action::BeginDeployment { record, .. }, Some(s)) =
                    (&mut step.action, &d.scaling)
                {
                    record.scaling = Some(s.clone());
                }
            }
            why
        }
        None => {
            plan.push(
                Action::FinishDeployment {
                    endpoint: d.endpoint.clone(),
                    requested_at: d.requested_at,
                    status: DeploymentStatus::Failed,
                },
                "failed its smoke test",
            );
            format!(
                "version {version} failed its smoke test ({}); no config it replaced can be read to go back to: the newest Approved version replaces it at the next reconcile",
                smoke.run.failure.as_deref().unwrap_or_default()
            )
        }
    };
    Some(
        Decision::new(Outcome::SmokeFailed, reason)
            .with_package(Some(d.package_arn.clone()))
            .with_plan(plan),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        actions, arn, config_serving, endpoint, in_flight, live, observed, smoke_run, target,
    };
    use super::super::{Smoke, WayBack, decide};
    use super::*;
    use lifecycle::deploy::config_name;
    use lifecycle::endpoints::EndpointStatus;
    use lifecycle::plan::ActionKind;

    /// Version 3 has just gone live on its own config, and its smoke test was answered `status`.
    fn live_on_v3(
        t: &lifecycle::targets::DeploymentTarget,
        status: u16,
        back: bool,
    ) -> Observed<'_> {
        let mut cfg = config_serving(3);
        cfg.name = config_name(t, &arn(3), 3);
        Observed {
            endpoint: Some(endpoint(EndpointStatus::InService, &cfg.name, 6_000)),
            live_config: Some(cfg),
            served: Some(arn(3)),
            candidates: vec![live(3)],
            in_flight: Some(in_flight(t, 5_000)),
            smoke: Some(Smoke {
                run: smoke_run(status, None),
                back: back.then(|| WayBack {
                    config: "cfg-v2".into(),
                    package_arn: arn(2),
                    version: 2,
                }),
            }),
            ..observed(t)
        }
    }

    #[test]
    fn a_failed_smoke_test_rejects_the_version_and_brings_back_the_one_before() {
        let t = target();
        let d = decide(&live_on_v3(&t, 500, true));
        assert_eq!(d.outcome, Outcome::SmokeFailed, "{}", d.reason);
        assert_eq!(
            actions(&d),
            [
                ActionKind::RejectPackage,
                ActionKind::BeginDeployment,
                ActionKind::UpdateEndpoint,
                ActionKind::ConfirmDeployment
            ]
        );
        let Action::RejectPackage {
            package_arn,
            description,
        } = &d.plan.steps[0].action
        else {
            panic!()
        };
        assert_eq!(package_arn, &arn(3));
        for part in [
            "status 500 where 200",
            r#"{"user_id":"u-1"}"#,
            r#"{"error":"boom"}"#,
        ] {
            assert!(description.contains(part), "{part}: {description}");
        }
        let Action::UpdateEndpoint {
            config, rollout, ..
        } = &d.plan.steps[2].action
        else {
            panic!()
        };
        assert_eq!((config.as_str(), rollout.is_none()), ("cfg-v2", true));
        assert_eq!(d.evidence["smoke"]["answer"]["status"], 500);
    }

    #[test]
    fn with_nothing_to_go_back_to_the_version_is_rejected_and_its_record_closed() {
        let t = target();
        let d = decide(&live_on_v3(&t, 404, false));
        assert_eq!(d.outcome, Outcome::SmokeFailed);
        assert_eq!(
            actions(&d),
            [ActionKind::RejectPackage, ActionKind::FinishDeployment]
        );
        assert!(d.reason.contains("next reconcile"), "{}", d.reason);
    }

    #[test]
    fn a_passed_smoke_test_lets_the_verdict_stand_with_it_as_evidence() {
        let t = target();
        let d = decide(&live_on_v3(&t, 200, false));
        assert_eq!(d.outcome, Outcome::Deployed, "{}", d.reason);
        assert_eq!(actions(&d), [ActionKind::FinishDeployment]);
        assert_eq!(d.evidence["smoke"]["failure"], serde_json::Value::Null);
    }
}
