//! alarm-responder against the local AWS, through the same handler the Lambda runs, on endpoints
//! the deployer put in place.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use integration::scenario::{PASSING, Scenario};
use integration::*;
use lifecycle::Error;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::Reply;
use lifecycle::plan::ActionKind;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

async fn impressions(s: &Scenario, count: f64) {
    s.setup
        .cloudwatch
        .put_metric_data()
        .namespace("MangaAssist/Recommendations")
        .metric_data(
            MetricDatum::builder()
                .metric_name("Impressions")
                .dimensions(
                    Dimension::builder()
                        .name("EndpointName")
                        .value(&s.endpoint)
                        .build(),
                )
                .value(count)
                .timestamp(aws_smithy_types::DateTime::from_secs(
                    OffsetDateTime::now_utc().unix_timestamp(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

async fn respond(s: &Scenario, event: Value, request_id: &str) -> Reply {
    s.respond(event, request_id).await.unwrap()
}

fn status(
    pkg: &aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput,
) -> &str {
    pkg.model_approval_status().unwrap().as_str()
}

/// v1 then v2 deployed by the deployer; v2 serves.
async fn v2_live(s: &Scenario) -> (String, String) {
    let v1 = s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.make_live(&v2, "v2").await;
    (v1, v2)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ctr_drop_after_promotion_rejects_the_version_and_brings_back_the_previous_one() {
    let s = Scenario::new("ctr").await;
    let (v1, v2) = v2_live(&s).await;
    impressions(&s, 48_000.0).await;
    let before = s.fx.sagemaker_mutations().len();

    let report = respond(
        &s,
        s.alarm_event("alarm-ctr-kpi.json", &s.ctr_alarm),
        "fire",
    )
    .await;
    let d = &report.decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    // v1's config still exists (v2's replaced it): reused, no new model or config.
    assert_eq!(
        d.actions,
        [
            ActionKind::RejectPackage,
            ActionKind::BeginDeployment,
            ActionKind::UpdateEndpoint,
            ActionKind::ConfirmDeployment
        ]
    );
    let mutations = &s.fx.sagemaker_mutations()[before..];
    assert_eq!(mutations.len(), 2, "{mutations:?}");
    assert!(mutations[0].starts_with("UpdateModelPackage"));
    assert!(mutations[1].starts_with("UpdateEndpoint"));

    let pkg = s.registry().package(&v2).await;
    assert_eq!(status(&pkg), "Rejected");
    let why = pkg.approval_description().unwrap();
    assert!(why.contains(&s.ctr_alarm) && why.contains("7.1"), "{why}");
    // The rollback goes out all at once, with no auto-rollback alarms.
    let ep = s.endpoint().await;
    let dc = ep.last_deployment_config().unwrap();
    let routing = dc
        .blue_green_update_policy()
        .unwrap()
        .traffic_routing_configuration()
        .unwrap();
    assert_eq!(routing.r#type().unwrap().as_str(), "ALL_AT_ONCE");
    assert!(dc.auto_rollback_configuration().is_none());

    // Back in service: v1 serves, the deployer closes the deployment and agrees with it.
    let report = s.endpoint_settled("back").await;
    assert_eq!(report.decisions[0].outcome, Outcome::Deployed);
    assert_eq!(s.serving().await, v1);
    let tick = s
        .run(event_file("deployer-tick.json"), "tick")
        .await
        .unwrap();
    assert_eq!(tick.decisions[0].outcome, Outcome::InSync);
    let decisions = s.decisions().await;
    let rollback = decisions
        .iter()
        .find(|d| d["outcome"] == "rolled_back")
        .unwrap();
    assert_eq!(rollback["function"], "alarm-responder");
    assert_eq!(rollback["evidence"]["samples"]["seen"], 48000.0);
    assert_eq!(rollback["evidence"]["kind"], "metric_math");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_skips_rejected_versions() {
    let s = Scenario::new("skips").await;
    let (v1, v2) = v2_live(&s).await;
    let v3 = s.registry().register("Approved", PASSING).await;
    s.make_live(&v3, "v3").await;
    s.registry().set_status(&v2, "Rejected").await;
    let before = s.fx.count("UpdateEndpoint");

    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert!(d.reason.contains("version 1 brought back"), "{}", d.reason);
    assert_eq!(s.fx.count("UpdateEndpoint"), before + 1);
    s.endpoint_settled("back").await;
    assert_eq!(s.serving().await, v1);
    assert_eq!(status(&s.registry().package(&v3).await), "Rejected");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_earlier_version_means_no_mutation_and_a_loud_record() {
    let s = Scenario::new("alone").await;
    let v1 = s.with_v1_live().await;
    let before = s.fx.sagemaker_mutations().len();
    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RollbackImpossible, "{}", d.reason);
    assert!(
        d.reason.contains("no earlier Approved version"),
        "{}",
        d.reason
    );
    assert_eq!(s.fx.sagemaker_mutations().len(), before);
    assert_eq!(status(&s.registry().package(&v1).await), "Approved");
    assert!(
        s.outcomes()
            .await
            .contains(&"rollback_impossible".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_version_is_never_rolled_back() {
    let s = Scenario::new("pinned").await;
    s.with_v1_live().await;
    let mut meta = PASSING.to_vec();
    meta.push(("lifecycle:pinned", "true"));
    let v2 = s.registry().register("Approved", &meta).await;
    s.make_live(&v2, "v2").await;
    let before = s.fx.sagemaker_mutations().len();
    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RollbackRefused, "{}", d.reason);
    assert_eq!(s.fx.sagemaker_mutations().len(), before);
    assert_eq!(s.serving().await, v2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_updating_endpoint_gets_a_note_not_an_update() {
    let s = Scenario::new("busyep").await;
    s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::Deploying
    );
    let before = s.fx.sagemaker_mutations().len();

    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Noted, "{}", d.reason);
    assert_eq!(s.fx.sagemaker_mutations().len(), before);
    let record = s
        .deployer
        .ledger
        .deployment(&s.endpoint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.alarms_seen, vec![s.alarm.clone()]);
    // SageMaker did not roll back (the alarm is not in ALARM in CloudWatch): the deployer's
    // verdict carries the alarm the responder saw.
    let verdict = &s.endpoint_settled("settled").await.decisions[0];
    assert_eq!(verdict.outcome, Outcome::Deployed);
    assert!(
        verdict
            .reason
            .contains(&format!("{} fired during the shift", s.alarm)),
        "{}",
        verdict.reason
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kpi_alarm_on_too_little_traffic_is_inconclusive() {
    let s = Scenario::new("quiet").await;
    let (_, v2) = v2_live(&s).await;
    impressions(&s, 120.0).await;
    let before = s.fx.sagemaker_mutations().len();
    let d = &respond(
        &s,
        s.alarm_event("alarm-ctr-kpi.json", &s.ctr_alarm),
        "fire",
    )
    .await
    .decisions[0];
    assert_eq!(d.outcome, Outcome::Inconclusive, "{}", d.reason);
    assert!(d.reason.contains("120"), "{}", d.reason);
    assert_eq!(s.fx.sagemaker_mutations().len(), before);
    assert_eq!(status(&s.registry().package(&v2).await), "Approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_and_simultaneous_alarms_give_one_rollback() {
    let s = Scenario::new("alarmdupes").await;
    v2_live(&s).await;
    let before = s.fx.count("UpdateEndpoint");
    let fired = s.alarm_event("alarm-5xx.json", &s.alarm);
    // The latency alarm is not configured: routed by its EndpointName dimension.
    let latency = s.alarm_event("alarm-latency-anomaly.json", "alarmdupes-latency");
    let (a, b, c) = tokio::join!(
        s.respond(fired.clone(), "a"),
        s.respond(fired.clone(), "b"),
        s.respond(latency.clone(), "c")
    );
    let mut outcomes = vec![];
    for r in [a, b, c] {
        match r {
            Ok(report) => outcomes.push(report.decisions[0].outcome.to_string()),
            Err(e) => {
                assert!(matches!(e, Error::Busy(_)), "{e}");
                outcomes.push("busy".into());
            }
        }
    }
    // Lambda retries the busy ones; so do we, and late duplicates arrive too.
    for (i, e) in [fired.clone(), latency, fired].into_iter().enumerate() {
        outcomes.push(
            respond(&s, e, &format!("retry{i}")).await.decisions[0]
                .outcome
                .to_string(),
        );
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "rolled_back").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(s.fx.count("UpdateEndpoint"), before + 1, "{outcomes:?}");
    assert_eq!(s.fx.count("UpdateModelPackage"), 1, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capacity_alarm_raises_the_floor_and_the_instances() {
    let s = Scenario::new("coldstart").await;
    s.with_v1_live().await;
    let resource = format!("endpoint/{}/variant/AllTraffic", s.endpoint);
    s.setup
        .autoscaling
        .register_scalable_target()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(&resource)
        .min_capacity(1)
        .max_capacity(2)
        .send()
        .await
        .unwrap();

    // Not configured: routed by the tags CloudWatch propagated into the event.
    let event = s.alarm_event("alarm-no-capacity-scale-up.json", "coldstart-no-capacity");
    let d = &respond(&s, event.clone(), "fire").await.decisions[0];
    assert_eq!(d.outcome, Outcome::ScaledUp, "{}", d.reason);
    assert_eq!(
        d.actions,
        [ActionKind::SetScalingBounds, ActionKind::SetInstanceCount]
    );
    let ep = s.endpoint().await;
    assert_eq!(
        ep.production_variants()[0].current_instance_count(),
        Some(3)
    );
    let targets = s
        .setup
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_ids(&resource)
        .send()
        .await
        .unwrap();
    let t = &targets.scalable_targets()[0];
    assert_eq!((t.min_capacity(), t.max_capacity()), (3, 3));
    let rec = s
        .decisions()
        .await
        .into_iter()
        .find(|d| d["outcome"] == "scaled_up")
        .unwrap();
    assert_eq!(rec["evidence"]["before"]["instances"], 2);
    assert_eq!(rec["evidence"]["after"]["instances"], 3);
    assert_eq!(rec["evidence"]["route"]["via"], "alarm tags");

    // The configured capacity alarm, later: already at the floor.
    let again = s.alarm_event("alarm-no-capacity-scale-up.json", &s.capacity_alarm);
    assert_eq!(
        respond(&s, again, "again").await.decisions[0].outcome,
        Outcome::AtFloor
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ok_muted_suppressed_and_unrouted_alarms_are_recorded_and_ignored() {
    let s = Scenario::new("quietalarms").await;
    v2_live(&s).await;
    let before = s.fx.sagemaker_mutations().len();
    let cases = [
        ("alarm-ctr-ok.json", s.ctr_alarm.clone(), Outcome::Ignored),
        ("alarm-5xx-muted.json", s.alarm.clone(), Outcome::Muted),
        (
            "alarm-composite-suppressed.json",
            "quietalarms-health".to_string(),
            Outcome::Muted,
        ),
    ];
    for (file, alarm, outcome) in cases {
        let d = &respond(&s, s.alarm_event(file, &alarm), file)
            .await
            .decisions[0];
        assert_eq!(d.outcome, outcome, "{file}: {}", d.reason);
    }
    let mut elsewhere = s.alarm_event("alarm-latency-anomaly.json", "other-team-latency");
    elsewhere["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"]["EndpointName"] =
        json!("someone-elses-endpoint");
    let d = &respond(&s, elsewhere, "elsewhere").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Ignored);
    assert!(
        d.reason.contains("maps to no deployment target"),
        "{}",
        d.reason
    );
    assert_eq!(s.fx.sagemaker_mutations().len(), before);
}

/// The payload of a Lambda alarm action (the alarm invokes the function itself), from `events/`,
/// pointed at this scenario's endpoint and alarm, fired now.
fn alarm_action(s: &Scenario, alarm: &str) -> Value {
    let mut e = event_file("alarm-action-5xx.json");
    let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
    let now = now.replace('Z', "+0000");
    e["alarmArn"] = json!(format!(
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm}"
    ));
    e["time"] = json!(now);
    e["alarmData"]["alarmName"] = json!(alarm);
    e["alarmData"]["state"]["timestamp"] = json!(now);
    e["alarmData"]["configuration"]["metrics"][0]["metricStat"]["metric"]["dimensions"]["EndpointName"] =
        json!(s.endpoint);
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_action_that_invokes_the_function_directly_rolls_back_like_an_eventbridge_alarm() {
    let s = Scenario::new("alarmaction").await;
    let (v1, v2) = v2_live(&s).await;

    let payload = alarm_action(&s, &s.alarm);
    let d = &respond(&s, payload.clone(), "direct").await.decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert_eq!(d.package.as_deref(), Some(v2.as_str()));
    assert_eq!(status(&s.registry().package(&v2).await), "Rejected");
    s.fx.settle(&s.endpoint);
    assert_eq!(s.serving().await, v1);
    let ledger = s.decisions().await;
    let last = ledger.last().unwrap();
    assert!(
        last["trigger"]
            .as_str()
            .unwrap()
            .starts_with("alarm action"),
        "{last}"
    );
    // The same payload again (Lambda retries an asynchronous invocation): nothing more.
    let again = &respond(&s, payload, "again").await.decisions[0];
    assert_eq!(again.outcome, Outcome::Duplicate, "{}", again.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_is_a_clear_error_with_zero_calls() {
    let s = Scenario::new("badalarm").await;
    for (event, needle) in [
        (event_file("malformed-alarm-event.json"), "FIRING"),
        (
            json!({"detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
                   "detail": {"alarmName": "x"}}),
            "no state",
        ),
        (
            json!({"source": "aws.cloudwatch", "time": "2026-03-02T12:10:07.214+0000",
                   "alarmData": {"alarmName": "x"}}),
            "no state",
        ),
        (json!({"alarmName": "x"}), "detail-type"),
        (
            event_file("model-package-approved.json"),
            "expected a \"CloudWatch Alarm State Change\"",
        ),
    ] {
        let err = s.respond(event, "bad").await.unwrap_err();
        assert!(matches!(err, Error::MalformedEvent(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert_eq!(s.fx.calls(), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_is_routed_by_its_tags_when_the_event_carries_none() {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic, Tag};
    let s = Scenario::new("tagroute").await;
    s.with_v1_live().await;
    let alarm = "tagroute-invocations-503";
    s.setup
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(alarm)
        .namespace("AWS/SageMaker")
        .metric_name("Invocation5XXErrors")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .tags(
            Tag::builder()
                .key("lifecycle:endpoint")
                .value(&s.endpoint)
                .build(),
        )
        .tags(
            Tag::builder()
                .key("lifecycle:action")
                .value("scale-up")
                .build(),
        )
        .send()
        .await
        .unwrap();
    // A 5XX alarm on the endpoint's dimension would mean rollback; its tags say scale up.
    let event = s.alarm_event("alarm-5xx.json", alarm);
    assert!(event["detail"]["alarmTags"].is_null());
    let d = &respond(&s, event, "fire").await.decisions[0];
    assert_eq!(d.outcome, Outcome::ScaledUp, "{}", d.reason);
    assert_eq!(s.fx.count("ListTagsForResource"), 1);
    let rec = s
        .decisions()
        .await
        .into_iter()
        .find(|d| d["outcome"] == "scaled_up")
        .unwrap();
    assert_eq!(rec["evidence"]["route"]["via"], "alarm tags");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_made_by_hand_is_traced_to_its_package_through_its_model() {
    let s = Scenario::new("byhand").await;
    let v1 = s.registry().register("Approved", PASSING).await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.endpoint_by_hand(&v2).await;

    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert_eq!(d.package.as_deref(), Some(v2.as_str()));
    assert_eq!(
        d.actions,
        [
            ActionKind::RejectPackage,
            ActionKind::CreateModel,
            ActionKind::CreateEndpointConfig,
            ActionKind::BeginDeployment,
            ActionKind::UpdateEndpoint,
            ActionKind::ConfirmDeployment
        ]
    );
    assert_eq!(status(&s.registry().package(&v2).await), "Rejected");
    s.fx.settle(&s.endpoint);
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kpi_whose_samples_cannot_be_read_is_retried_not_dropped() {
    let s = Scenario::new("kpiretry").await;
    let (v1, v2) = v2_live(&s).await;
    impressions(&s, 48_000.0).await;
    let event = s.alarm_event("alarm-ctr-kpi.json", &s.ctr_alarm);

    local_aws().control(
        "faults",
        Some(
            json!({"throttle_share": 1.0, "operations": ["GetMetricData"], "access_key": s.fx.key}),
        ),
    );
    let err = s.respond(event.clone(), "unreadable").await.unwrap_err();
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("judged again on retry"), "{err}");
    assert_eq!(status(&s.registry().package(&v2).await), "Approved");
    assert_eq!(s.outcomes().await.last().unwrap(), "retrying");

    // Lambda's retry of the same event: judged, and rolled back.
    let d = &respond(&s, event, "retry").await.decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    s.fx.settle(&s.endpoint);
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_samples_of_a_kpi_count_only_since_the_live_version_went_live() {
    let s = Scenario::new("kpilive").await;
    s.with_v1_live().await;
    // Traffic served by v1, before v2 went live.
    impressions(&s, 48_000.0).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.make_live(&v2, "v2").await;

    let d = &respond(
        &s,
        s.alarm_event("alarm-ctr-kpi.json", &s.ctr_alarm),
        "fire",
    )
    .await
    .decisions[0];
    assert_eq!(d.outcome, Outcome::Inconclusive, "{}", d.reason);
    assert_eq!(status(&s.registry().package(&v2).await), "Approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_goes_back_to_what_served_and_a_late_approval_goes_forward_through_guardrails() {
    let s = Scenario::new("worked").await;
    let v1 = s.with_v1_live().await;
    // v2 and v3 approved together: the deployer takes the newest, so v2 never serves.
    let v2 = s.registry().register("Approved", PASSING).await;
    let v3 = s.registry().register("Approved", PASSING).await;
    s.make_live(&v3, "v3").await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::InSync
    );

    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert!(d.reason.contains("version 1 brought back"), "{}", d.reason);
    s.fx.settle(&s.endpoint);
    assert_eq!(s.serving().await, v1);

    // The deployer takes v2 forward as a deployment, with the target's rollout and alarms.
    let d = &s.endpoint_settled("after").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    assert_eq!(d.package.as_deref(), Some(v2.as_str()));
    let pending = s
        .deployer
        .ledger
        .deployment(&s.endpoint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        pending.rollback_alarms,
        std::slice::from_ref(&s.alarm),
        "guardrails on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_noted_during_the_update_and_still_firing_after_it_rolls_back_the_new_version() {
    let s = Scenario::new("afterupdate").await;
    let v1 = s.with_v1_live().await;
    create_alarm(&s.setup.cloudwatch, &s.ctr_alarm, &s.endpoint).await;
    let v2 = s.registry().register("Approved", PASSING).await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::Deploying
    );
    // Traffic shifts to v2; its click-through rate falls; the KPI alarm fires mid-update.
    impressions(&s, 48_000.0).await;
    set_alarm(
        &s.setup.cloudwatch,
        &s.ctr_alarm,
        aws_sdk_cloudwatch::types::StateValue::Alarm,
        "Threshold Crossed: CTR 7.1 < 7.5",
    )
    .await;
    let noted = &respond(
        &s,
        s.alarm_event("alarm-ctr-kpi.json", &s.ctr_alarm),
        "during",
    )
    .await
    .decisions[0];
    assert_eq!(noted.outcome, Outcome::Noted, "{}", noted.reason);

    // The update completes (KPI alarms are not SageMaker's rollback alarms); the endpoint's
    // state-change event reaches the responder, and the alarm is still in ALARM.
    s.fx.settle(&s.endpoint);
    let d = &respond(&s, s.in_service_event(), "in-service")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert_eq!(d.package.as_deref(), Some(v2.as_str()));
    assert_eq!(status(&s.registry().package(&v2).await), "Rejected");
    s.fx.settle(&s.endpoint);
    assert_eq!(s.serving().await, v1);

    // The same event again: nothing more.
    let again = &respond(&s, s.in_service_event(), "again").await.decisions[0];
    assert_ne!(again.outcome, Outcome::RolledBack, "{}", again.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_back_in_service_with_no_alarm_still_firing_changes_nothing() {
    let s = Scenario::new("afterquiet").await;
    v2_live(&s).await;
    let before = s.fx.sagemaker_mutations().len();
    let d = &respond(&s, s.in_service_event(), "in-service")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Ignored, "{}", d.reason);
    assert!(
        d.reason.contains("no rollback or KPI alarm was noted"),
        "{}",
        d.reason
    );
    assert_eq!(s.fx.sagemaker_mutations().len(), before);
}

/// A crash (here: a call that keeps failing) between any two steps of a rollback, then Lambda's
/// retry of the same alarm: the bad version is rejected and never serves again, and the endpoint
/// ends on the version that worked.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_cut_between_any_two_steps_completes_on_retry_and_the_rejected_version_never_serves()
 {
    for (i, op) in [
        "UpdateModelPackage",
        "CreateModel",
        "CreateEndpointConfig",
        "UpdateEndpoint",
        "UpdateItem",
    ]
    .into_iter()
    .enumerate()
    {
        let s = Scenario::new(&format!("cut{i}")).await;
        let (v1, v2) = v2_live(&s).await;
        // The config v1 had is deleted, so the rollback creates a model and a config again.
        let sm = &s.setup.sagemaker;
        let live = s
            .endpoint()
            .await
            .endpoint_config_name()
            .unwrap()
            .to_string();
        let live_arn = sm
            .describe_endpoint_config()
            .endpoint_config_name(&live)
            .send()
            .await
            .unwrap()
            .endpoint_config_arn()
            .unwrap()
            .to_string();
        let tags = sm.list_tags().resource_arn(live_arn).send().await.unwrap();
        let replaced = tags
            .tags()
            .iter()
            .find(|t| t.key() == Some(lifecycle::endpoints::tags::REPLACES))
            .and_then(|t| t.value())
            .unwrap()
            .to_string();
        sm.delete_endpoint_config()
            .endpoint_config_name(replaced)
            .send()
            .await
            .unwrap();
        let event = s.alarm_event("alarm-5xx.json", &s.alarm);
        local_aws().control(
            "faults",
            Some(json!({"throttle_share": 1.0, "operations": [op], "access_key": s.fx.key})),
        );
        let cut = s.respond(event.clone(), "cut").await;
        local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
        assert!(
            cut.is_err(),
            "{op}: a throttled step fails the invocation so Lambda retries it"
        );

        let retried = s.respond(event.clone(), "retry").await.unwrap();
        let d = &retried.decisions[0];
        s.fx.settle(&s.endpoint);
        // Whatever the cut left, the registry and the endpoint agree on v1, and v2 is Rejected.
        let settled = s.endpoint_settled("settled").await;
        assert_eq!(
            status(&s.registry().package(&v2).await),
            "Rejected",
            "{op}: {}",
            d.reason
        );
        assert_eq!(
            s.serving().await,
            v1,
            "{op}: {} / {}",
            d.reason,
            settled.decisions[0].reason
        );
        let tick = s
            .run(event_file("deployer-tick.json"), "tick")
            .await
            .unwrap();
        assert_eq!(
            tick.decisions[0].outcome,
            Outcome::InSync,
            "{op}: {}",
            tick.decisions[0].reason
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_whose_alarm_does_not_recover_in_time_tells_a_person() {
    let s = Scenario::new("recovery").await;
    let (v1, _v2) = v2_live(&s).await;
    // This deployer checks recovery at the first reconcile after the rollback is done.
    let mut config = s.deployer.config.clone();
    config.targets.0[0].recovery_minutes = 0;
    let deployer =
        model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);
    let run = |event: Value, id: &'static str| {
        let deployer = &deployer;
        let event = s.fx.event(event, id);
        async move { model_deployer::handle(deployer, event).await.unwrap() }
    };

    set_alarm(
        &s.setup.cloudwatch,
        &s.alarm,
        aws_sdk_cloudwatch::types::StateValue::Alarm,
        "Threshold Crossed: 5XX errors 14 > 1",
    )
    .await;
    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    s.fx.settle(&s.endpoint);
    assert_eq!(
        run(s.in_service_event(), "done").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v1);

    // The 5XX alarm is still in ALARM after the rollback: a person hears it, once.
    let d = &run(event_file("deployer-tick.json"), "check")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::NotRecovered, "{}", d.reason);
    assert_eq!(d.severity, lifecycle::outcome::Severity::NeedsPerson);
    let d = &run(event_file("deployer-tick.json"), "again")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::InSync, "{}", d.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_sagemaker_undid_is_never_judged_against_what_serves_after_it() {
    let s = Scenario::new("afterundone").await;
    let v1 = s.with_v1_live().await;
    create_alarm(&s.setup.cloudwatch, &s.ctr_alarm, &s.endpoint).await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.approve(&v2, "v2").await;
    // Both alarms fire during the shift; the 5XX one makes SageMaker put v1 back.
    for alarm in [&s.ctr_alarm, &s.alarm] {
        set_alarm(
            &s.setup.cloudwatch,
            alarm,
            aws_sdk_cloudwatch::types::StateValue::Alarm,
            "Threshold Crossed",
        )
        .await;
    }
    respond(
        &s,
        s.alarm_event("alarm-ctr-kpi.json", &s.ctr_alarm),
        "noted",
    )
    .await;
    s.fx.settle(&s.endpoint);
    // The deployer hears the state change first and records its verdict on v2.
    assert_eq!(
        s.endpoint_settled("verdict").await.decisions[0].outcome,
        Outcome::RolledBack
    );
    let d = &respond(&s, s.in_service_event(), "in-service")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Ignored, "{}", d.reason);
    assert_eq!(status(&s.registry().package(&v1).await), "Approved");
    assert_eq!(s.serving().await, v1);
}

/// A team's rule on the suite's bus, delivering each matching decision to a queue of its own.
async fn route_decisions(s: &Scenario, pattern: Value) -> String {
    let queue = format!("{}-routed", s.fx.id);
    let arn = local_aws().control("queue", Some(json!({ "name": queue })))["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let events = aws_sdk_eventbridge::Client::new(&s.fx.setup_sdk());
    let rule = format!("{}-to-chat", s.fx.id);
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(s.fx.event_bus())
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(s.fx.event_bus())
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    queue
}

fn routed(queue: &str) -> Vec<Value> {
    local_aws().control(&format!("messages?queue={queue}"), None)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str(m.as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_that_acted_or_need_a_person_reach_a_teams_rule_and_routine_ones_do_not() {
    let s = Scenario::new("published").await;
    let queue = route_decisions(
        &s,
        json!({"source": ["sagemaker-lifecycle"], "detail-type": ["Lifecycle Decision"]}),
    )
    .await;
    let v1 = s.with_v1_live().await;
    // A duplicate of the approval: routine, in the ledger only.
    s.approve(&v1, "again").await;
    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RollbackImpossible, "{}", d.reason);

    let events = routed(&queue);
    let severities: Vec<&str> = events
        .iter()
        .map(|e| e["detail"]["severity"].as_str().unwrap())
        .collect();
    assert!(
        severities
            .iter()
            .all(|s| *s == "acted" || *s == "needs_person"),
        "{severities:?}"
    );
    assert!(severities.contains(&"acted"), "the first deployment acted");
    let person = events
        .iter()
        .find(|e| e["detail"]["severity"] == "needs_person")
        .expect("the impossible rollback is published");
    assert_eq!(person["source"], "sagemaker-lifecycle");
    assert_eq!(person["detail-type"], "Lifecycle Decision");
    let detail = &person["detail"];
    assert_eq!(detail["function"], "alarm-responder");
    assert_eq!(detail["endpoint"], json!(s.endpoint));
    assert_eq!(detail["outcome"], "rollback_impossible");
    assert_eq!(detail["package"], json!(v1));
    assert_eq!(detail["request_id"], format!("{}-fire", s.fx.id));
    assert!(
        detail["reason"]
            .as_str()
            .unwrap()
            .contains("no earlier Approved version")
    );
    assert!(detail["time"].as_str().unwrap().ends_with('Z'));

    // The alarm fires again, later: the same situation is in the ledger again, not paged again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let d = &respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire-again")
        .await
        .decisions[0];
    assert_eq!(d.outcome, Outcome::RollbackImpossible, "{}", d.reason);
    assert!(
        routed(&queue)
            .iter()
            .all(|e| e["detail"]["severity"] != "needs_person"),
        "published once, when it began"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bus_that_refuses_the_event_never_fails_the_decision() {
    let s = Scenario::new("unpublished").await;
    let queue = route_decisions(&s, json!({"source": ["sagemaker-lifecycle"]})).await;
    s.with_v1_live().await;
    local_aws().control(
        "faults",
        Some(json!({"access_key": s.fx.key, "operations": ["PutEvents"],
                    "error": {"code": "AccessDeniedException", "status": 400}})),
    );
    let reply = respond(&s, s.alarm_event("alarm-5xx.json", &s.alarm), "fire").await;
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
    let d = &reply.decisions[0];
    assert_eq!(d.outcome, Outcome::RollbackImpossible, "{}", d.reason);
    assert!(
        s.outcomes()
            .await
            .contains(&"rollback_impossible".to_string()),
        "the ledger has it all the same"
    );
    assert!(
        routed(&queue)
            .iter()
            .all(|e| e["detail"]["outcome"] != "rollback_impossible")
    );
    assert!(s.fx.count("PutEvents") >= 1);
}
