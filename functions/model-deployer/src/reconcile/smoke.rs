//! A plain update whose version failed its smoke test: the version is rejected with the request,
//! the answer and the reason, and the version before comes back at once, as an alarm would bring
//! it (a canary's candidate is judged in [`super::canary`]).

use lifecycle::decision::Decision;
use lifecycle::deploy::{self, Deployment};
use lifecycle::deployment::DeploymentStatus;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, Plan};

use super::Observed;

/// The smoke test got no answer from the model (see [`crate::smoke::run`]): nothing is judged
/// and nothing rejected; the deployment stays open, its test is tried again at the next
/// reconcile, and a person hears why.
pub(super) fn unjudged(obs: &Observed) -> Option<Decision> {
    let Some(Err(why)) = obs.smoke.as_ref().map(|s| &s.run) else {
        return None;
    };
    let d = obs.open_deployment()?;
    let reason = format!(
        "the smoke test of version {} on {} got no answer from the model ({why}): nothing judged, nothing rejected; tried again at the next reconcile",
        d.package_version, d.endpoint
    );
    Some(Decision::new(Outcome::SmokeUnjudged, reason).with_package(Some(d.package_arn.clone())))
}

pub(super) fn failed(obs: &Observed) -> Option<Decision> {
    let smoke = obs.smoke.as_ref()?;
    let run = smoke.run.as_ref().ok().filter(|r| !r.passed())?;
    let d = obs
        .open_deployment()
        .filter(|d| d.open_canary().is_none())?;
    let ep = obs.endpoint.as_ref()?;
    let description = format!("Rejected: {}", run.describe());
    let mut plan = Plan::default();
    plan.push(
        Action::RejectPackage {
            package_arn: d.package_arn.clone(),
            description: description.clone(),
        },
        description,
    );
    let version = d.package_version;
    let failure = run.failure.as_deref().unwrap_or_default();
    let reason = match &smoke.back {
        Some(back) => {
            let why = format!(
                "version {version} failed its smoke test ({failure}): back to version {} on {}",
                back.version, back.config
            );
            go_back(obs, ep, d, back, why.clone(), &mut plan);
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
                "version {version} failed its smoke test ({failure}); the config it replaced is gone, or a canary's, or serves a version no longer Approved: the newest Approved version replaces it at the next reconcile"
            )
        }
    };
    Some(
        Decision::new(Outcome::SmokeFailed, reason)
            .with_package(Some(d.package_arn.clone()))
            .with_plan(plan),
    )
}

/// A plain update back to the config the failed one replaced. Autoscaling the update
/// deregistered stays so until the way back is live; its record restores it then.
fn go_back(
    obs: &Observed,
    ep: &lifecycle::endpoints::Endpoint,
    d: &lifecycle::deployment::DeploymentRecord,
    back: &super::WayBack,
    why: String,
    plan: &mut Plan,
) {
    let start = plan.steps.len();
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
            why,
            cause_alarm: None,
            scaling: d.scaling.is_none().then(|| obs.scaling.clone()).flatten(),
            canary: None,
            smoke_due: false,
        },
        plan,
    );
    for step in &mut plan.steps[start..] {
        if let (Action::BeginDeployment { record, .. }, Some(s)) = (&mut step.action, &d.scaling) {
            record.scaling = Some(s.clone());
        }
    }
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
                run: Ok(smoke_run(status, None)),
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
    fn a_test_the_model_did_not_answer_judges_nothing_and_a_person_hears_why() {
        let t = target();
        let mut obs = live_on_v3(&t, 200, false);
        obs.smoke.as_mut().unwrap().run = Err("InvokeEndpoint: AccessDeniedException".into());
        let d = decide(&obs);
        assert_eq!(d.outcome, Outcome::SmokeUnjudged, "{}", d.reason);
        assert!(
            d.plan.is_empty() && d.reason.contains("AccessDenied"),
            "{}",
            d.reason
        );
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
