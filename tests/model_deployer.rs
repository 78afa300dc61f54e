//! model-deployer against the local AWS, through the same handler the Lambda runs.

use aws_sdk_cloudwatch::types::StateValue;
use integration::scenario::{PASSING, Scenario};
use integration::*;
use lifecycle::Error;
use lifecycle::outcome::Outcome;
use lifecycle::plan::ActionKind;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_first_approval_creates_the_endpoint() {
    let s = Scenario::new("first").await;
    let v1 = s.registry().register("Approved", PASSING).await;
    let report = s.approve(&v1, "a").await;
    assert_eq!(
        report.decisions[0].outcome,
        Outcome::Deploying,
        "{:?}",
        report.decisions[0].reason
    );
    let mutations = s.fx.sagemaker_mutations();
    assert_eq!(mutations.len(), 3, "{mutations:?}");
    assert!(mutations[0].starts_with("CreateModel first-ep-v1"));
    assert!(mutations[1].starts_with("CreateEndpointConfig first-ep-v1-"));
    assert_eq!(mutations[2], "CreateEndpoint first-ep");
    assert_eq!(s.serving().await, v1);

    let report = s.endpoint_settled("b").await;
    assert_eq!(report.decisions[0].outcome, Outcome::Deployed);
    assert_eq!(s.outcomes().await, ["deploying", "deployed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_approval_is_deployed_with_the_configured_strategy_and_alarms() {
    let s = Scenario::new("rollout").await;
    let v1 = s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;

    let report = s.approve(&v2, "v2").await;
    assert_eq!(
        report.decisions[0].actions,
        [
            ActionKind::CreateModel,
            ActionKind::CreateEndpointConfig,
            ActionKind::BeginDeployment,
            ActionKind::UpdateEndpoint,
            ActionKind::ConfirmDeployment
        ]
    );
    let ep = s.endpoint().await;
    assert_eq!(ep.endpoint_status().unwrap().as_str(), "Updating");
    let pending = ep
        .pending_deployment_summary()
        .unwrap()
        .endpoint_config_name()
        .unwrap()
        .to_string();
    assert_eq!(s.config_package(&pending).await, v2);
    let dc = ep.last_deployment_config().expect("LastDeploymentConfig");
    let routing = dc
        .blue_green_update_policy()
        .unwrap()
        .traffic_routing_configuration()
        .unwrap();
    assert_eq!(routing.r#type().unwrap().as_str(), "LINEAR");
    assert_eq!(routing.linear_step_size().unwrap().value(), Some(25));
    assert_eq!(routing.wait_interval_in_seconds(), Some(60));
    assert_eq!(
        dc.blue_green_update_policy()
            .unwrap()
            .termination_wait_in_seconds(),
        Some(600)
    );
    let alarms: Vec<_> = dc
        .auto_rollback_configuration()
        .unwrap()
        .alarms()
        .iter()
        .filter_map(|a| a.alarm_name())
        .collect();
    assert_eq!(alarms, [s.alarm.as_str()]);

    // The new config replaces the old one and keeps its instance count.
    let cfg = s
        .setup
        .sagemaker
        .describe_endpoint_config()
        .endpoint_config_name(&pending)
        .send()
        .await
        .unwrap();
    assert_eq!(
        cfg.production_variants()[0].initial_instance_count(),
        Some(2)
    );
    assert_eq!(
        cfg.production_variants()[0].variant_name(),
        Some("AllTraffic")
    );

    assert_eq!(
        s.endpoint_settled("done").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v2);
    assert_ne!(v1, v2);
    assert_eq!(s.fx.count("UpdateEndpoint"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_gate_rejects_the_package_with_the_reason_and_deploys_nothing() {
    let s = Scenario::new("gatefail").await;
    let v1 = s.with_v1_live().await;
    let v2 = s
        .registry()
        .register(
            "Approved",
            &[("validation_loss", "0.41"), ("offline_ctr", "0.084")],
        )
        .await;
    let before = s.fx.sagemaker_mutations().len();

    let report = s.approve(&v2, "v2").await;
    assert_eq!(report.decisions[0].outcome, Outcome::Rejected);
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Rejected");
    assert!(
        pkg.approval_description()
            .unwrap()
            .contains("validation_loss = 0.41 is above max 0.35"),
        "{:?}",
        pkg.approval_description()
    );
    let after = s.fx.sagemaker_mutations();
    assert_eq!(
        after[before..],
        [format!("UpdateModelPackage {v2}")],
        "only the rejection"
    );
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_metric_fails_closed() {
    let s = Scenario::new("gatemissing").await;
    let v1 = s.with_v1_live().await;
    let v2 = s
        .registry()
        .register("Approved", &[("validation_loss", "0.30")])
        .await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::Rejected
    );
    let pkg = s.registry().package(&v2).await;
    assert!(
        pkg.approval_description()
            .unwrap()
            .contains("offline_ctr is missing (fails closed)")
    );
    assert_eq!(s.fx.count("UpdateEndpoint"), 0);
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn gates_read_the_model_quality_statistics_in_s3() {
    let s = Scenario::new("gates3").await;
    s.with_v1_live().await;
    let bucket = "gates3-evaluations";
    s.setup
        .s3
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let stats = json!({"recommendation_metrics": {"validation_loss": {"value": 0.29}, "offline_ctr": {"value": 0.091}}});
    s.setup
        .s3
        .put_object()
        .bucket(bucket)
        .key("v2/statistics.json")
        .body(stats.to_string().into_bytes().into())
        // Encrypted with the stack's key (KmsKeyArns): the deployer reads it through S3.
        .server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms)
        .ssekms_key_id(kms_key(&s.fx))
        .send()
        .await
        .unwrap();
    let v2 = s
        .registry()
        .register_with(
            "Approved",
            &[],
            Some(&format!("s3://{bucket}/v2/statistics.json")),
        )
        .await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::Deploying
    );
    assert_eq!(s.fx.count("UpdateEndpoint"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_alarm_during_the_shift_keeps_the_old_config_and_rejects_the_package() {
    let s = Scenario::new("guardrail").await;
    let v1 = s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.approve(&v2, "v2").await;
    set_alarm(
        &s.setup.cloudwatch,
        &s.alarm,
        StateValue::Alarm,
        "Threshold Crossed: 5XX errors 14 > 1",
    )
    .await;

    let report = s.endpoint_settled("verdict").await;
    assert_eq!(report.decisions[0].outcome, Outcome::RolledBack);
    let ep = s.endpoint().await;
    assert_eq!(ep.endpoint_status().unwrap().as_str(), "InService");
    assert_eq!(s.serving().await, v1, "SageMaker kept the old config");
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Rejected");
    let why = pkg.approval_description().unwrap();
    assert!(
        why.contains("guardrails") && why.contains(&s.alarm),
        "{why}"
    );
    assert_eq!(
        s.outcomes().await,
        ["deploying", "deployed", "deploying", "rolled_back"]
    );
    assert_eq!(
        s.fx.count("UpdateEndpoint"),
        1,
        "nothing is deployed after the rollback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_deliveries_lead_to_one_update() {
    let s = Scenario::new("dupes").await;
    s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    let event = s.package_event("model-package-approved.json", &v2);
    let mut outcomes = vec![];
    for i in 0..3 {
        outcomes.push(
            s.run(event.clone(), &format!("dup{i}"))
                .await
                .unwrap()
                .decisions[0]
                .outcome,
        );
    }
    outcomes.push(
        s.run(event_file("deployer-tick.json"), "tick")
            .await
            .unwrap()
            .decisions[0]
            .outcome,
    );
    assert_eq!(
        outcomes,
        [
            Outcome::Deploying,
            Outcome::Waiting,
            Outcome::Waiting,
            Outcome::Waiting
        ]
    );
    s.endpoint_settled("settled").await;
    // Late duplicates after the deployment finished change nothing either.
    assert_eq!(
        s.run(event, "late").await.unwrap().decisions[0].outcome,
        Outcome::InSync
    );
    assert_eq!(s.fx.count("UpdateEndpoint"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deliveries_lead_to_one_update() {
    let s = Scenario::new("race").await;
    s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    let event = s.package_event("model-package-approved.json", &v2);
    let (a, b) = tokio::join!(s.run(event.clone(), "a"), s.run(event.clone(), "b"));
    let outcomes: Vec<String> = [a, b]
        .into_iter()
        .map(|r| match r {
            Ok(report) => report.decisions[0].outcome.to_string(),
            Err(e) => {
                assert!(matches!(e, Error::Busy(_)), "{e}");
                "busy".into()
            }
        })
        .collect();
    assert!(outcomes.contains(&"deploying".to_string()), "{outcomes:?}");
    assert_eq!(s.fx.count("UpdateEndpoint"), 1, "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_while_updating_is_deployed_once_the_endpoint_is_back_in_service() {
    let s = Scenario::new("queued").await;
    s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.approve(&v2, "v2").await;
    let v3 = s.registry().register("Approved", PASSING).await;
    let report = s.approve(&v3, "v3").await;
    assert_eq!(report.decisions[0].outcome, Outcome::Waiting);
    assert_eq!(
        s.fx.count("UpdateEndpoint"),
        1,
        "never touched while Updating"
    );

    let report = s.endpoint_settled("v2-done").await;
    let d = &report.decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying);
    assert_eq!(
        d.actions[0],
        ActionKind::FinishDeployment,
        "v2's verdict is recorded first"
    );
    assert_eq!(d.package.as_deref(), Some(v3.as_str()));
    assert_eq!(
        s.endpoint_settled("v3-done").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v3);
    assert_eq!(s.fx.count("UpdateEndpoint"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejecting_the_live_version_brings_back_the_previous_one_and_other_rejections_change_nothing()
 {
    let s = Scenario::new("unpublish").await;
    let v1 = s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.approve(&v2, "v2").await;
    s.endpoint_settled("v2-live").await;
    let v3 = s
        .registry()
        .register("PendingManualApproval", PASSING)
        .await;

    s.registry().set_status(&v3, "Rejected").await;
    let report = s
        .run(s.package_event("model-package-rejected.json", &v3), "r3")
        .await
        .unwrap();
    assert_eq!(report.decisions[0].outcome, Outcome::Ignored);
    assert_eq!(s.fx.count("UpdateEndpoint"), 1);

    s.registry().set_status(&v2, "Rejected").await;
    let report = s
        .run(s.package_event("model-package-rejected.json", &v2), "r2")
        .await
        .unwrap();
    assert_eq!(report.decisions[0].outcome, Outcome::Deploying);
    assert_eq!(report.decisions[0].package.as_deref(), Some(v1.as_str()));
    s.endpoint_settled("v1-back").await;
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_event_gets_a_clear_error_and_makes_no_aws_call() {
    let s = Scenario::new("malformed").await;
    for event in [
        event_file("malformed-model-package-event.json"),
        json!({"hello": "world"}),
        json!([]),
    ] {
        let err = s.run(event, "bad").await.unwrap_err();
        assert!(matches!(err, Error::MalformedEvent(_)), "{err}");
        assert!(!err.is_retryable());
    }
    let err = s
        .run(event_file("malformed-model-package-event.json"), "bad")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ModelPackageArn"), "{err}");
    assert_eq!(s.fx.calls(), vec![], "not a single AWS call");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_for_unknown_groups_and_endpoints_are_recorded_and_change_nothing() {
    let s = Scenario::new("unknown").await;
    let report = s
        .run(
            event_file("model-package-approved-unknown-group.json"),
            "u1",
        )
        .await
        .unwrap();
    assert_eq!(report.decisions[0].outcome, Outcome::Ignored);
    let report = s
        .run(event_file("endpoint-in-service.json"), "u2")
        .await
        .unwrap();
    assert_eq!(report.decisions[0].outcome, Outcome::Ignored);
    assert_eq!(s.fx.sagemaker_mutations(), Vec::<String>::new());
    let kept = s
        .deployer
        .ledger
        .decisions("group#fraud-scoring-mpg")
        .await
        .unwrap();
    assert_eq!(
        kept[0]["reason"],
        "no deployment target for model package group fraud-scoring-mpg"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_decides_and_records_but_changes_nothing() {
    let s = Scenario::with("dryrun", true).await;
    let v1 = s.registry().register("Approved", PASSING).await;
    let report = s.approve(&v1, "a").await;
    assert_eq!(report.decisions[0].outcome, Outcome::Deploying);
    assert!(
        report.decisions[0]
            .results
            .iter()
            .all(|r| r.ends_with("dry run, not applied"))
    );
    assert_eq!(s.fx.sagemaker_mutations(), Vec::<String>::new());
    let kept = s.decisions().await;
    assert_eq!(kept[0]["dry_run"], true);
    assert_eq!(kept[0]["plan"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tick_heals_a_lost_approval_event() {
    let s = Scenario::new("healing").await;
    s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await; // its event is lost
    let report = s
        .run(event_file("deployer-tick.json"), "tick")
        .await
        .unwrap();
    assert_eq!(report.decisions[0].outcome, Outcome::Deploying);
    assert_eq!(report.decisions[0].package.as_deref(), Some(v2.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tick_answers_for_every_target_even_when_the_ledger_cannot_be_written() {
    let s = Scenario::new("ledgerdown").await;
    let mut second = s.deployer.config.targets.0[0].clone();
    second.model_package_group = "ledgerdown-other-mpg".into();
    second.endpoint = "ledgerdown-other-ep".into();
    let mut config = s.deployer.config.clone();
    config.targets.0.push(second);
    let deployer =
        model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);

    // Every write to the ledger is throttled, beyond the SDK's retries.
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["PutItem"], "access_key": s.fx.key})),
    );
    let tick = s.fx.event(event_file("deployer-tick.json"), "tick");
    let reply = model_deployer::handle(&deployer, tick).await;
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));

    let reply = reply.expect("a tick is retried by the next tick, not by Lambda");
    let outcomes: Vec<_> = reply.decisions.iter().map(|d| d.outcome).collect();
    assert_eq!(outcomes, [Outcome::Retrying, Outcome::Retrying]);
    for d in &reply.decisions {
        assert!(d.reason.contains("PutItem"), "{}", d.reason);
    }
    assert_eq!(
        s.fx.count("CreateEndpoint"),
        0,
        "nothing acted without its lease"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_made_by_hand_that_serves_the_newest_version_is_adopted_in_sync() {
    let s = Scenario::new("adopt").await;
    let _v1 = s.registry().register("Approved", PASSING).await;
    let v2 = s.registry().register("Approved", PASSING).await;
    s.endpoint_by_hand(&v2).await;

    let tick = s
        .run(event_file("deployer-tick.json"), "tick")
        .await
        .unwrap();
    let d = &tick.decisions[0];
    assert_eq!(d.outcome, Outcome::InSync, "{}", d.reason);
    assert_eq!(d.package.as_deref(), Some(v2.as_str()));
    assert_eq!(
        s.fx.count("UpdateEndpoint"),
        0,
        "the version it serves is not deployed again"
    );
    assert_eq!(s.fx.count("CreateModel"), 0);

    // A newer approval goes forward through gates and guardrails as usual.
    let v3 = s.registry().register("Approved", PASSING).await;
    assert_eq!(
        s.approve(&v3, "v3").await.decisions[0].outcome,
        Outcome::Deploying
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_evaluation_report_blocks_the_deployment_and_rejects_nothing() {
    let s = Scenario::new("gatesgone").await;
    let v1 = s.with_v1_live().await;
    let bucket = "gatesgone-evaluations";
    let s3 = &s.setup.s3;
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let uri = format!("s3://{bucket}/v2/statistics.json");
    let v2 = s
        .registry()
        .register_with("Approved", &[], Some(&uri))
        .await;

    // Missing object, then not JSON: cannot be judged, so not judged.
    let d = &s.approve(&v2, "missing").await.decisions[0];
    assert_eq!(d.outcome, Outcome::GateUnreadable, "{}", d.reason);
    assert!(d.reason.contains(&uri), "{}", d.reason);
    let put = |body: String| {
        s3.put_object()
            .bucket(bucket)
            .key("v2/statistics.json")
            .body(body.into_bytes().into())
            .send()
    };
    put("{not json".into()).await.unwrap();
    let d = &s
        .run(event_file("deployer-tick.json"), "garbled")
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::GateUnreadable, "{}", d.reason);
    assert!(d.reason.contains("not JSON"), "{}", d.reason);
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Approved");
    assert_eq!(s.fx.count("UpdateEndpoint"), 0);
    assert_eq!(s.serving().await, v1);

    // Readable, and passing: the next reconcile deploys it.
    let stats = json!({"recommendation_metrics": {"validation_loss": {"value": 0.29}, "offline_ctr": {"value": 0.091}}});
    put(stats.to_string()).await.unwrap();
    let d = &s
        .run(event_file("deployer-tick.json"), "readable")
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_is_loud_once_and_the_same_plan_backs_off() {
    let s = Scenario::new("denied").await;
    s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    local_aws().control(
        "faults",
        Some(
            json!({"operations": ["UpdateEndpoint"], "access_key": s.fx.key,
                    "error": {"code": "ValidationException", "status": 400,
                              "message": "The instance type is not supported in this region"}}),
        ),
    );
    let first = s.approve(&v2, "denied").await;
    let again = s.run(event_file("deployer-tick.json"), "tick").await;
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));

    let d = &first.decisions[0];
    assert_eq!(d.outcome, Outcome::Failed, "{}", d.reason);
    assert_eq!(d.severity, lifecycle::outcome::Severity::NeedsPerson);
    assert!(d.reason.contains("ValidationException"), "{}", d.reason);
    let d = &again.unwrap().decisions[0];
    assert_eq!(d.outcome, Outcome::BackingOff, "{}", d.reason);
    assert!(d.reason.contains("failed 1 time(s)"), "{}", d.reason);
    assert_eq!(
        s.fx.count("UpdateEndpoint"),
        1,
        "the failed call, and no second one"
    );
    let failure = s
        .deployer
        .ledger
        .failure(&format!("endpoint#{}", s.endpoint))
        .await
        .unwrap();
    assert_eq!(failure.unwrap().count, 1);

    // A different plan (a newer version) is tried at once; its success forgets the failure.
    let v3 = s.registry().register("Approved", PASSING).await;
    assert_eq!(
        s.approve(&v3, "v3").await.decisions[0].outcome,
        Outcome::Deploying
    );
    let failure = s
        .deployer
        .ledger
        .failure(&format!("endpoint#{}", s.endpoint))
        .await
        .unwrap();
    assert!(failure.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_update_call_then_autoscaling_is_not_read_as_a_guardrail_rollback() {
    use aws_sdk_sagemaker::types::DesiredWeightAndCapacity;
    let s = Scenario::new("notrollback").await;
    let v1 = s.with_v1_live().await;
    let v2 = s.registry().register("Approved", PASSING).await;
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["UpdateEndpoint"], "access_key": s.fx.key})),
    );
    let err = s
        .run(
            s.package_event("model-package-approved.json", &v2),
            "throttled",
        )
        .await;
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
    assert!(
        err.unwrap_err().is_retryable(),
        "the approval is retried by Lambda"
    );
    assert_eq!(s.serving().await, v1);

    // Autoscaling moves the instance count: the endpoint changed since the (failed) request.
    s.setup
        .sagemaker
        .update_endpoint_weights_and_capacities()
        .endpoint_name(&s.endpoint)
        .desired_weights_and_capacities(
            DesiredWeightAndCapacity::builder()
                .variant_name("AllTraffic")
                .desired_instance_count(3)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let d = &s
        .run(event_file("deployer-tick.json"), "tick")
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    assert!(d.reason.contains("never confirmed"), "{}", d.reason);
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Approved");
    assert_eq!(
        s.endpoint_settled("live").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v2);
}

/// A guardrail verdict cut between its two steps (reject, record), then retried: never a verdict
/// recorded for a package still Approved, never the rolled-back package deployed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_guardrail_verdict_cut_between_its_steps_completes_on_retry() {
    for (i, op) in ["UpdateModelPackage", "UpdateItem"].into_iter().enumerate() {
        let s = Scenario::new(&format!("verdictcut{i}")).await;
        let v1 = s.with_v1_live().await;
        let v2 = s.registry().register("Approved", PASSING).await;
        s.approve(&v2, "v2").await;
        set_alarm(
            &s.setup.cloudwatch,
            &s.alarm,
            StateValue::Alarm,
            "5XX errors 14 > 1",
        )
        .await;
        s.fx.settle(&s.endpoint);
        local_aws().control(
            "faults",
            Some(json!({"throttle_share": 1.0, "operations": [op], "access_key": s.fx.key})),
        );
        let cut = s.run(s.in_service_event(), "cut").await;
        local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
        assert!(cut.is_err(), "{op}");
        let pkg = s.registry().package(&v2).await;
        let record = s
            .deployer
            .ledger
            .deployment(&s.endpoint)
            .await
            .unwrap()
            .unwrap();
        assert!(
            pkg.model_approval_status().unwrap().as_str() == "Rejected"
                || record.status == lifecycle::deployment::DeploymentStatus::InProgress,
            "{op}: a verdict was recorded for a package still Approved"
        );

        let d = &s
            .run(s.in_service_event(), "retry")
            .await
            .unwrap()
            .decisions[0];
        assert_eq!(d.outcome, Outcome::RolledBack, "{op}: {}", d.reason);
        let pkg = s.registry().package(&v2).await;
        assert_eq!(
            pkg.model_approval_status().unwrap().as_str(),
            "Rejected",
            "{op}"
        );
        set_alarm(&s.setup.cloudwatch, &s.alarm, StateValue::Ok, "recovered").await;
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
        assert_eq!(s.serving().await, v1, "{op}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_package_tag_that_contradicts_the_model_is_not_believed() {
    use aws_sdk_sagemaker::types::Tag;
    let s = Scenario::new("forged").await;
    let v1 = s.registry().register("Approved", PASSING).await;
    let v2 = s.registry().register("Approved", PASSING).await;
    // A config made by hand from v1's model, tagged as if it served v2.
    s.endpoint_by_hand(&v1).await;
    let sm = &s.setup.sagemaker;
    let config = s
        .endpoint()
        .await
        .endpoint_config_name()
        .unwrap()
        .to_string();
    let arn = sm
        .describe_endpoint_config()
        .endpoint_config_name(&config)
        .send()
        .await
        .unwrap()
        .endpoint_config_arn()
        .unwrap()
        .to_string();
    sm.add_tags()
        .resource_arn(arn)
        .tags(
            Tag::builder()
                .key(lifecycle::endpoints::tags::PACKAGE_ARN)
                .value(&v2)
                .build(),
        )
        .send()
        .await
        .unwrap();

    let d = &s
        .run(event_file("deployer-tick.json"), "tick")
        .await
        .unwrap()
        .decisions[0];
    assert_ne!(
        d.outcome,
        Outcome::InSync,
        "the tag says v2, the model serves v1: {}",
        d.reason
    );
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    assert_eq!(d.package.as_deref(), Some(v2.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscaling_is_deregistered_for_an_instance_type_change_and_restored_after_it() {
    use aws_sdk_applicationautoscaling::types::{
        MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
        TargetTrackingScalingPolicyConfiguration,
    };
    let s = Scenario::new("resize").await;
    s.with_v1_live().await;
    let aas = &s.setup.autoscaling;
    let resource = format!("endpoint/{}/variant/AllTraffic", s.endpoint);
    aas.register_scalable_target()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(&resource)
        .min_capacity(2)
        .max_capacity(6)
        .send()
        .await
        .unwrap();
    aas.put_scaling_policy()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(&resource)
        .policy_name("invocations")
        .policy_type(PolicyType::TargetTrackingScaling)
        .target_tracking_scaling_policy_configuration(
            TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(70.0)
                .predefined_metric_specification(
                    PredefinedMetricSpecification::builder()
                        .predefined_metric_type(MetricType::SageMakerVariantInvocationsPerInstance)
                        .build()
                        .unwrap(),
                )
                .scale_in_cooldown(600)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // The target moves to a larger instance type: SageMaker refuses that update while the
    // variant is registered for autoscaling.
    let mut config = s.deployer.config.clone();
    config.targets.0[0].instance_type = "ml.m5.2xlarge".into();
    let deployer =
        model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);
    let v2 = s.registry().register("Approved", PASSING).await;
    let approval = s.package_event("model-package-approved.json", &v2);
    let bounds = || async {
        let out = aas
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_ids(&resource)
            .send()
            .await
            .unwrap();
        out.scalable_targets()
            .first()
            .map(|t| (t.min_capacity(), t.max_capacity()))
    };

    // The update fails after the deregister: the executor puts autoscaling back at once.
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["UpdateEndpoint"], "access_key": s.fx.key})),
    );
    let failed = model_deployer::handle(&deployer, s.fx.event(approval.clone(), "cut")).await;
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
    assert!(failed.unwrap_err().is_retryable());
    assert_eq!(
        bounds().await,
        Some((2, 6)),
        "restored after the failed update"
    );

    let event = s.fx.event(approval, "v2");
    let d = &model_deployer::handle(&deployer, event)
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    assert!(
        d.actions.contains(&ActionKind::DeregisterScaling),
        "{:?}",
        d.actions
    );
    assert_eq!(bounds().await, None, "deregistered for the update");

    s.fx.settle(&s.endpoint);
    let event = s.fx.event(s.in_service_event(), "live");
    let d = &model_deployer::handle(&deployer, event)
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::Deployed, "{}", d.reason);
    assert_eq!(
        d.actions,
        [ActionKind::RestoreScaling, ActionKind::FinishDeployment]
    );
    assert_eq!(s.serving().await, v2);
    let targets = aas
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_ids(&resource)
        .send()
        .await
        .unwrap();
    let t = &targets.scalable_targets()[0];
    assert_eq!((t.min_capacity(), t.max_capacity()), (2, 6));
    let policies = aas
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_id(&resource)
        .send()
        .await
        .unwrap();
    let p = &policies.scaling_policies()[0];
    let c = p.target_tracking_scaling_policy_configuration().unwrap();
    assert_eq!(
        (p.policy_name(), c.target_value(), c.scale_in_cooldown()),
        ("invocations", 70.0, Some(600))
    );

    // An alarm on v2: the responder's rollback goes back to v1's config, on the old instance
    // type, so it too deregisters first; the deployer restores autoscaling once v1 is back.
    let alarm = {
        let mut e = event_file("alarm-5xx.json");
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
            .replace('Z', "+0000");
        e["detail"]["alarmName"] = json!(s.alarm);
        e["detail"]["state"]["timestamp"] = json!(now);
        e
    };
    let d = &s.respond(alarm, "fire").await.unwrap().decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    assert!(
        d.actions.contains(&ActionKind::DeregisterScaling),
        "{:?}",
        d.actions
    );
    s.fx.settle(&s.endpoint);
    let event = s.fx.event(s.in_service_event(), "back");
    let d = &model_deployer::handle(&deployer, event)
        .await
        .unwrap()
        .decisions[0];
    assert!(
        d.actions.contains(&ActionKind::RestoreScaling),
        "{:?} {}",
        d.actions,
        d.reason
    );
    assert_eq!(
        bounds().await,
        Some((2, 6)),
        "autoscaling back after the rollback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_guardrail_alarms_are_made_before_the_first_deployment_and_put_back_after_a_hand_change()
 {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    let mut s = Scenario::new("managed").await;
    let prefix = format!("{}-", s.fx.id);
    let mut target = serde_json::to_value(&s.deployer.config.targets.0[0]).unwrap();
    target["rollback_alarms"] = json!([]);
    target["guardrails"] = json!({"error_rate_pct": 1, "p99_latency_ms": 800});
    let targets = lifecycle::targets::Targets::parse_with(
        &json!([target]).to_string(),
        lifecycle::config::Environment::Production,
        Some(&prefix),
    )
    .unwrap();
    let mut targets = targets;
    let queue = format!("{prefix}on-call");
    let topic = local_aws().control(
        "topic",
        Some(json!({"name": format!("{prefix}alerts"), "queue": queue})),
    )["arn"]
        .as_str()
        .unwrap()
        .to_string();
    targets.alert_to(&topic);
    let mut config = s.deployer.config.clone();
    config.targets = targets;
    s.deployer =
        model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config.clone());
    s.responder =
        alarm_responder::Responder::new(s.fx.clients_for(alarm_responder::FUNCTION), config);
    let (errors, latency) = (
        format!("{prefix}managed-{}-AllTraffic-5xx-rate", s.endpoint),
        format!("{prefix}managed-{}-AllTraffic-p99-latency", s.endpoint),
    );

    let v1 = s.registry().register("Approved", PASSING).await;
    let d = &s.approve(&v1, "v1").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    assert_eq!(
        &d.actions[..2],
        [ActionKind::PutAlarm, ActionKind::PutAlarm]
    );
    let cw = &s.setup.cloudwatch;
    let made = cw
        .describe_alarms()
        .alarm_names(&errors)
        .alarm_names(&latency)
        .send()
        .await
        .unwrap();
    assert_eq!(made.metric_alarms().len(), 2);
    let p99 = made
        .metric_alarms()
        .iter()
        .find(|a| a.alarm_name() == Some(latency.as_str()))
        .unwrap();
    assert_eq!(p99.extended_statistic(), Some("p99"));
    assert_eq!(p99.threshold(), Some(800_000.0));
    let tags = cw
        .list_tags_for_resource()
        .resource_arn(p99.alarm_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags().iter().any(
            |t| t.key() == Some("lifecycle:endpoint") && t.value() == Some(s.endpoint.as_str())
        )
    );
    s.endpoint_settled("v1-live").await;
    // The next version's blue/green update rolls back on them.
    let v2 = s.registry().register("Approved", PASSING).await;
    let d = &s.approve(&v2, "v2").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    let deployments = local_aws().control("deployments", None);
    let ours = deployments["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["endpoint"] == json!(s.endpoint))
        .unwrap()
        .clone();
    let rollback = ours["deployment_config"]["AutoRollbackConfiguration"]["Alarms"].to_string();
    assert!(
        rollback.contains(&errors) && rollback.contains(&latency),
        "{rollback}"
    );
    s.endpoint_settled("v2-live").await;

    // Someone loosens the latency alarm by hand: the next reconcile puts it back, and says so.
    cw.put_metric_alarm()
        .alarm_name(&latency)
        .namespace("AWS/SageMaker")
        .metric_name("ModelLatency")
        .statistic(Statistic::Average)
        .period(60)
        .evaluation_periods(1)
        .threshold(5_000_000.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
    let d = &s
        .run(event_file("deployer-tick.json"), "tick")
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::GuardrailsSet, "{}", d.reason);
    assert_eq!(d.actions, [ActionKind::PutAlarm]);
    let again = cw
        .describe_alarms()
        .alarm_names(&latency)
        .send()
        .await
        .unwrap();
    assert_eq!(again.metric_alarms()[0].threshold(), Some(800_000.0));
    let d = &s
        .run(event_file("deployer-tick.json"), "tick-2")
        .await
        .unwrap()
        .decisions[0];
    assert_eq!(d.outcome, Outcome::InSync, "{}", d.reason);

    // The responder hears a managed alarm as the target's rollback alarm.
    set_alarm(cw, &errors, StateValue::Alarm, "5XX above 1%").await;
    let mut event = event_file("alarm-5xx.json");
    event["detail"]["alarmName"] = json!(errors);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    event["detail"]["state"]["timestamp"] = json!(now.replace('Z', "+0000"));
    event["resources"] = json!([format!(
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:{errors}"
    )]);
    let d = &s.respond(event, "fire").await.unwrap().decisions[0];
    assert_eq!(d.outcome, Outcome::RolledBack, "{}", d.reason);
    // ... and the on-call engineer heard the alarm itself.
    let heard = local_aws().control(&format!("messages?queue={queue}"), None);
    assert!(heard.to_string().contains(&errors), "{heard}");

    // The latency bound is dropped from the target: its alarm goes, the other stays.
    let mut target = serde_json::to_value(&s.deployer.config.targets.0[0]).unwrap();
    target["rollback_alarms"] = json!([]);
    target["guardrails"] = json!({"error_rate_pct": 1});
    let mut config = s.deployer.config.clone();
    config.targets = lifecycle::targets::Targets::parse_with(
        &json!([target]).to_string(),
        lifecycle::config::Environment::Production,
        Some(&prefix),
    )
    .unwrap();
    let deployer =
        model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);
    s.fx.settle(&s.endpoint);
    let tick = s.fx.event(event_file("deployer-tick.json"), "dropped");
    let reply = model_deployer::handle(&deployer, tick).await.unwrap();
    let d = &reply.decisions[0];
    assert!(
        d.actions.contains(&ActionKind::DeleteAlarm),
        "{:?} {}",
        d.actions,
        d.reason
    );
    let left = cw
        .describe_alarms()
        .alarm_name_prefix(&prefix)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = left
        .metric_alarms()
        .iter()
        .filter_map(|a| a.alarm_name())
        .collect();
    assert!(
        names.contains(&errors.as_str()) && !names.contains(&latency.as_str()),
        "{names:?}"
    );
}

/// A scenario whose target has a live KPI canary on click-through rate, judged as soon as it is
/// live (bake 0) and stopped at once if it cannot be judged (max bake 0). Version 1 is live.
async fn kpi_canary(id: &str) -> (Scenario, String) {
    let mut s = Scenario::new(id).await;
    let v1 = s.with_v1_live().await;
    let mut gate: lifecycle::kpi_gate::KpiGate = serde_json::from_value(json!({
        "metric": {"namespace": "MangaAssist/Recommendations", "name": "ClickThroughRate", "stat": "Average"},
        "samples": {"namespace": "MangaAssist/Recommendations", "name": "Impressions", "stat": "Sum"},
        "min_samples": 1000, "min_value": 0.075
    }))
    .unwrap();
    gate.validate().unwrap();
    (gate.bake_minutes, gate.max_bake_minutes) = (0, Some(0));
    let mut config = s.deployer.config.clone();
    config.targets.0[0].kpi_gate = Some(gate);
    s.deployer = model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);
    (s, v1)
}

/// What the application publishes for one variant: its click-through rate and impressions.
async fn publish_kpi(s: &Scenario, variant: &str, ctr: f64, impressions: f64) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
    let dims = [
        ("EndpointName", s.endpoint.as_str()),
        ("VariantName", variant),
    ]
    .map(|(k, v)| Dimension::builder().name(k).value(v).build());
    let now =
        aws_smithy_types::DateTime::from_secs(time::OffsetDateTime::now_utc().unix_timestamp());
    let datum = |name: &str, value: f64| {
        MetricDatum::builder()
            .metric_name(name)
            .set_dimensions(Some(dims.to_vec()))
            .value(value)
            .timestamp(now)
            .build()
    };
    s.setup
        .cloudwatch
        .put_metric_data()
        .namespace("MangaAssist/Recommendations")
        .metric_data(datum("ClickThroughRate", ctr))
        .metric_data(datum("Impressions", impressions))
        .send()
        .await
        .unwrap();
}

/// Approves version 2 and lets its canary go live: it serves 10% beside version 1.
async fn canary_live(s: &Scenario) -> (String, String) {
    let v2 = s.registry().register("Approved", PASSING).await;
    let d = &s.approve(&v2, "v2").await.decisions[0];
    assert_eq!(d.outcome, Outcome::CanaryStarted, "{}", d.reason);
    let ep = s.endpoint().await;
    let canary_config = ep
        .pending_deployment_summary()
        .unwrap()
        .endpoint_config_name()
        .unwrap()
        .to_string();
    let d = &s.endpoint_settled("canary-live").await.decisions[0];
    assert_eq!(
        (d.outcome, d.actions.as_slice()),
        (Outcome::CanaryBaking, [ActionKind::MarkLive].as_slice()),
        "{}",
        d.reason
    );
    (v2, canary_config)
}

async fn tick(s: &Scenario, id: &str) -> lifecycle::pipeline::Summary {
    let mut reply = s.run(event_file("deployer-tick.json"), id).await.unwrap();
    reply.decisions.remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_ctr_regression_is_rejected_on_ten_percent_of_the_traffic() {
    let (s, v1) = kpi_canary("canaryfail").await;
    let v1_config = s
        .endpoint()
        .await
        .endpoint_config_name()
        .unwrap()
        .to_string();
    let (v2, canary_config) = canary_live(&s).await;

    // The canary's config: version 1 as it ran, version 2 beside it on a tenth of the traffic.
    let cfg = s
        .setup
        .sagemaker
        .describe_endpoint_config()
        .endpoint_config_name(&canary_config)
        .send()
        .await
        .unwrap();
    let variants: Vec<_> = cfg
        .production_variants()
        .iter()
        .map(|v| {
            (
                v.variant_name().unwrap(),
                v.initial_variant_weight().unwrap(),
                v.initial_instance_count().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        variants,
        [("AllTraffic", 0.9, 2), ("AllTraffic-canary", 0.1, 1)]
    );
    assert_eq!(s.serving().await, v1, "readers still see version 1 serve");

    publish_kpi(&s, "AllTraffic", 0.084, 20_000.0).await;
    publish_kpi(&s, "AllTraffic-canary", 0.071, 2_000.0).await;
    let d = tick(&s, "judged").await;
    assert_eq!(d.outcome, Outcome::CanaryFailed, "{}", d.reason);
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Rejected");
    let description = pkg.approval_description().unwrap();
    for part in ["live KPI canary", "0.084", "0.071", "2000", "p-value"] {
        assert!(description.contains(part), "{part} in {description}");
    }
    // Back to version 1's own config, nothing new made for it.
    let ep = s.endpoint().await;
    assert_eq!(
        ep.pending_deployment_summary()
            .unwrap()
            .endpoint_config_name(),
        Some(v1_config.as_str())
    );
    assert_eq!(
        s.endpoint_settled("back").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(
        s.endpoint().await.endpoint_config_name(),
        Some(v1_config.as_str())
    );
    assert_eq!(tick(&s, "after").await.outcome, Outcome::InSync);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_that_holds_its_ctr_is_promoted_alone() {
    let (s, _v1) = kpi_canary("canarypass").await;
    let (v2, _) = canary_live(&s).await;
    publish_kpi(&s, "AllTraffic", 0.084, 20_000.0).await;
    publish_kpi(&s, "AllTraffic-canary", 0.085, 20_000.0).await;
    let d = tick(&s, "judged").await;
    assert_eq!(d.outcome, Outcome::CanaryPassed, "{}", d.reason);
    let recorded = s.decisions().await;
    let judged = recorded
        .iter()
        .find(|d| d["outcome"] == "canary_passed")
        .unwrap();
    assert_eq!(
        judged["evidence"]["kpi"]["verdict"]["verdict"],
        json!("pass"),
        "{judged}"
    );
    assert_eq!(
        s.endpoint_settled("promoted").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v2);
    let ep = s.endpoint().await;
    let names: Vec<_> = ep
        .production_variants()
        .iter()
        .filter_map(|v| v.variant_name())
        .collect();
    assert_eq!(
        names,
        ["AllTraffic"],
        "the candidate alone, in the target's variant"
    );
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Approved");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quiet_canary_ends_inconclusive_and_is_not_tried_again() {
    let (s, v1) = kpi_canary("canaryquiet").await;
    let (v2, _) = canary_live(&s).await;
    publish_kpi(&s, "AllTraffic", 0.084, 20_000.0).await;
    publish_kpi(&s, "AllTraffic-canary", 0.09, 40.0).await;
    let d = tick(&s, "judged").await;
    assert_eq!(d.outcome, Outcome::CanaryInconclusive, "{}", d.reason);
    assert!(d.reason.contains("40 of 1000 samples"), "{}", d.reason);
    assert_eq!(
        s.endpoint_settled("back").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v1);
    let d = tick(&s, "again").await;
    assert_eq!(d.outcome, Outcome::BackingOff, "{}", d.reason);
    let pkg = s.registry().package(&v2).await;
    assert_eq!(
        pkg.model_approval_status().unwrap().as_str(),
        "Approved",
        "inconclusive is no rejection"
    );
    assert_eq!(
        s.fx.count("UpdateEndpoint"),
        2,
        "the canary and the way back, nothing more"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alarm_during_a_canary_makes_the_responder_reject_the_candidate_not_the_live_version() {
    let (s, v1) = kpi_canary("canaryalarm").await;
    let (v2, _) = canary_live(&s).await;
    set_alarm(
        &s.setup.cloudwatch,
        &s.alarm,
        StateValue::Alarm,
        "Threshold Crossed: 5XX errors 14 > 1",
    )
    .await;
    let event = s.alarm_event("alarm-5xx.json", &s.alarm);
    let d = &s.respond(event, "alarm").await.unwrap().decisions[0];
    assert_eq!(d.outcome, Outcome::CanaryFailed, "{}", d.reason);
    assert_eq!(
        s.registry()
            .package(&v2)
            .await
            .model_approval_status()
            .unwrap()
            .as_str(),
        "Rejected"
    );
    assert_eq!(
        s.registry()
            .package(&v1)
            .await
            .model_approval_status()
            .unwrap()
            .as_str(),
        "Approved"
    );
    s.fx.settle(&s.endpoint);
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_capacity_is_applied_and_put_back_after_a_hand_change() {
    use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
    let mut s = Scenario::new("capacity").await;
    s.with_v1_live().await;
    let capacity: lifecycle::capacity::Capacity = serde_json::from_value(json!({
        "min": 3, "max": 10, "target_invocations": 70.0, "scale_in_cooldown": 600,
        "schedules": [
            {"name": "business-hours", "cron": "cron(0 8 ? * MON-FRI *)", "timezone": "Asia/Tokyo", "min": 3, "max": 10},
            {"name": "evenings", "cron": "cron(0 20 ? * * *)", "timezone": "Asia/Tokyo", "min": 3, "max": 4}
        ]
    }))
    .unwrap();
    capacity
        .validate(lifecycle::config::Environment::Production)
        .unwrap();
    let mut config = s.deployer.config.clone();
    config.targets.0[0].capacity = Some(capacity);
    s.deployer = model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);

    let d = tick(&s, "first").await;
    assert_eq!(d.outcome, Outcome::CapacitySet, "{}", d.reason);
    let aas = &s.setup.autoscaling;
    let id = format!("endpoint/{}/variant/AllTraffic", s.endpoint);
    let dim = ScalableDimension::SageMakerVariantDesiredInstanceCount;
    let read = || async {
        let targets = aas
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_ids(&id)
            .send()
            .await
            .unwrap();
        let t = &targets.scalable_targets()[0];
        let policies = aas
            .describe_scaling_policies()
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_id(&id)
            .send()
            .await
            .unwrap();
        let cooldown = policies.scaling_policies()[0]
            .target_tracking_scaling_policy_configuration()
            .and_then(|c| c.scale_in_cooldown());
        let schedules = aas
            .describe_scheduled_actions()
            .service_namespace(ServiceNamespace::Sagemaker)
            .resource_id(&id)
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = schedules
            .scheduled_actions()
            .iter()
            .map(|a| format!("{} {:?}", a.scheduled_action_name(), a.timezone()))
            .collect();
        names.sort();
        ((t.min_capacity(), t.max_capacity()), cooldown, names)
    };
    let applied = read().await;
    assert_eq!(applied.0, (3, 10));
    assert_eq!(applied.1, Some(600));
    assert_eq!(
        applied.2,
        [
            "lifecycle-business-hours Some(\"Asia/Tokyo\")",
            "lifecycle-evenings Some(\"Asia/Tokyo\")"
        ]
    );
    assert_eq!(tick(&s, "again").await.outcome, Outcome::InSync);

    // A person shortens the scale-in cooldown and deletes the evening schedule.
    lifecycle::scaling::set_scale_in_cooldown(aas, &id, lifecycle::capacity::POLICY, 60)
        .await
        .unwrap();
    aas.delete_scheduled_action()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(dim)
        .resource_id(&id)
        .scheduled_action_name("lifecycle-evenings")
        .send()
        .await
        .unwrap();
    // And adds one under the suite's prefix that the target does not declare.
    aas.put_scheduled_action()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(&id)
        .scheduled_action_name("lifecycle-weekend")
        .schedule("cron(0 0 ? * SAT *)")
        .send()
        .await
        .unwrap();
    let d = tick(&s, "after-hand").await;
    assert_eq!(d.outcome, Outcome::CapacitySet, "{}", d.reason);
    assert!(
        d.reason.contains("lifecycle-weekend is no longer declared"),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("Some(60) -> Some(600)"), "{}", d.reason);
    assert!(
        d.reason.contains("lifecycle-evenings missing"),
        "{}",
        d.reason
    );
    assert_eq!(read().await, applied);

    // A bound set by hand that no schedule explains: the variant let scale in to one instance.
    aas.register_scalable_target()
        .service_namespace(ServiceNamespace::Sagemaker)
        .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
        .resource_id(&id)
        .min_capacity(1)
        .max_capacity(10)
        .send()
        .await
        .unwrap();
    let d = tick(&s, "min-by-hand").await;
    assert_eq!(d.outcome, Outcome::CapacitySet, "{}", d.reason);
    assert!(d.reason.contains("bounds 1-10 -> 3-10"), "{}", d.reason);
    assert_eq!(read().await, applied);
    assert_eq!(tick(&s, "settled").await.outcome, Outcome::InSync);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_approval_flows_through_staging_then_production() {
    let mut s = Scenario::new("staged").await;
    let staging_endpoint = format!("{}-staging", s.fx.id);
    let staging_alarm = format!("{}-staging-5xx", s.fx.id);
    create_alarm(&s.setup.cloudwatch, &staging_alarm, &staging_endpoint).await;
    let production = s.deployer.config.targets.0[0].clone();
    let mut staging = production.clone();
    (staging.endpoint, staging.rollback_alarms) = (staging_endpoint.clone(), vec![staging_alarm]);
    (staging.kpi_alarms, staging.scale_up_alarms) = (vec![], vec![]);
    let mut production = production;
    production.promote_after = Some(lifecycle::targets::PromoteAfter {
        target: staging_endpoint.clone(),
        soak_minutes: 0,
    });
    let mut config = s.deployer.config.clone();
    config.targets = lifecycle::targets::Targets(vec![staging, production]);
    s.deployer = model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);

    let v1 = s.registry().register("Approved", PASSING).await;
    let reply = s
        .run(
            s.package_event("model-package-approved.json", &v1),
            "approved",
        )
        .await
        .unwrap();
    let outcomes: Vec<_> = reply
        .decisions
        .iter()
        .map(|d| (d.outcome, d.reason.clone()))
        .collect();
    assert_eq!(outcomes[0].0, Outcome::Deploying, "{outcomes:?}");
    assert_eq!(outcomes[1].0, Outcome::WaitingForStaging, "{outcomes:?}");
    assert!(
        outcomes[1].1.contains("is InProgress, not Succeeded"),
        "{outcomes:?}"
    );
    assert!(
        s.fx.sagemaker_mutations()
            .iter()
            .all(|m| !m.contains(&format!(" {}", s.endpoint))),
        "production untouched"
    );

    s.fx.settle(&staging_endpoint);
    let mut served = s.in_service_event();
    served["detail"]["EndpointName"] = json!(staging_endpoint);
    assert_eq!(
        s.run(served, "staging-live").await.unwrap().decisions[0].outcome,
        Outcome::Deployed
    );

    let reply = s
        .run(event_file("deployer-tick.json"), "soaked")
        .await
        .unwrap();
    let outcomes: Vec<_> = reply.decisions.iter().map(|d| d.outcome).collect();
    assert_eq!(
        outcomes,
        [Outcome::InSync, Outcome::Deploying],
        "{:?}",
        reply.decisions
    );
    assert_eq!(
        s.endpoint_settled("production-live").await.decisions[0].outcome,
        Outcome::Deployed
    );
    assert_eq!(s.serving().await, v1);
}

/// The target's smoke test: one recommendation request that must answer 200 with recommendations.
fn with_smoke_test(s: &mut Scenario) {
    let smoke = serde_json::from_value(json!({
        "body": r#"{"user_id": "u-42", "k": 5}"#,
        "required_fields": ["recommendations"]
    }))
    .unwrap();
    let mut config = s.deployer.config.clone();
    config.targets.0[0].smoke_test = Some(smoke);
    s.deployer = model_deployer::Deployer::new(s.fx.clients_for(model_deployer::FUNCTION), config);
}

/// What the endpoint (one variant of it, or any when `None`) answers InvokeEndpoint with.
fn answers(s: &Scenario, variant: Option<&str>, status: u16, body: &str) {
    local_aws().control(
        "invocations",
        Some(json!({"endpoint": s.endpoint, "variant": variant, "status": status, "body": body})),
    );
}

/// What one version answers, wherever it serves.
fn version_answers(package: &str, status: u16, body: &str) {
    local_aws().control(
        "invocations",
        Some(json!({"package": package, "status": status, "body": body})),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_that_fails_its_smoke_test_is_rejected_and_the_one_before_serves_again() {
    let mut s = Scenario::new("smokefail").await;
    with_smoke_test(&mut s);
    // Version 1 answers as declared; it is smoke-tested once, and never again on the way back.
    answers(&s, None, 200, r#"{"recommendations": ["a", "b"]}"#);
    let v1 = s.with_v1_live().await;
    assert_eq!(s.fx.count("InvokeEndpoint"), 1);

    answers(&s, None, 500, "CUDA out of memory");
    let v2 = s.registry().register("Approved", PASSING).await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::Deploying
    );
    let d = &s.endpoint_settled("v2-live").await.decisions[0];
    assert_eq!(d.outcome, Outcome::SmokeFailed, "{}", d.reason);
    assert_eq!(s.fx.count("InvokeEndpoint"), 2);

    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Rejected");
    let why = pkg.approval_description().unwrap();
    for part in ["status 500 where 200", "u-42", "CUDA out of memory"] {
        assert!(why.contains(part), "{part}: {why}");
    }
    // The way back is a plain update to version 1's config, judged like any deployment.
    let d = &s.endpoint_settled("v1-back").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Deployed, "{}", d.reason);
    assert_eq!(s.serving().await, v1);
    assert_eq!(
        s.fx.count("InvokeEndpoint"),
        2,
        "version 1 served before: not tested again"
    );
    assert_eq!(
        s.outcomes().await,
        [
            "deploying",
            "deployed",
            "deploying",
            "smoke_failed",
            "deployed"
        ]
    );
}

/// The rejection lands and the update back fails: the rejected version is not tested again, and
/// the next reconcile brings back version 1 as it would for any version no longer Approved.
#[tokio::test(flavor = "multi_thread")]
async fn a_smoke_failure_whose_way_back_failed_is_not_tested_again() {
    let mut s = Scenario::new("smokehalf").await;
    with_smoke_test(&mut s);
    let v1 = s.registry().register("Approved", PASSING).await;
    version_answers(&v1, 200, r#"{"recommendations": ["a"]}"#);
    s.make_live(&v1, "v1").await;
    let v2 = s.registry().register("Approved", PASSING).await;
    version_answers(&v2, 500, "CUDA out of memory");
    s.approve(&v2, "v2").await;
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["UpdateEndpoint"], "access_key": s.fx.key})),
    );
    s.fx.settle(&s.endpoint);
    let half = s.run(s.in_service_event(), "v2-live").await;
    local_aws().control("faults", Some(json!({"access_key": s.fx.key})));
    assert!(half.is_err(), "the way back failed: {half:?}");
    assert_eq!(
        s.registry()
            .package(&v2)
            .await
            .model_approval_status()
            .unwrap()
            .as_str(),
        "Rejected"
    );
    assert_eq!(s.fx.count("InvokeEndpoint"), 2);

    let d = tick(&s, "next").await;
    assert_eq!(
        s.fx.count("InvokeEndpoint"),
        2,
        "v2 not asked again: {}",
        d.reason
    );
    assert_eq!(d.outcome, Outcome::Deploying, "{}", d.reason);
    // Version 1 comes back as any newest Approved version does, and is tested as one: it passes.
    let d = &s.endpoint_settled("v1-back").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Deployed, "{}", d.reason);
    assert_eq!(s.serving().await, v1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canarys_candidate_is_smoke_tested_on_its_own_variant_before_it_bakes() {
    let (mut s, _) = kpi_canary("smokecanary").await;
    with_smoke_test(&mut s);
    // Only the candidate's variant answers as declared: a pass shows the request reached it.
    answers(&s, Some("AllTraffic"), 503, "live variant: wrong target");
    answers(
        &s,
        Some("AllTraffic-canary"),
        200,
        r#"{"recommendations": []}"#,
    );
    let (v2, _) = canary_live(&s).await;
    assert_eq!(s.fx.count("InvokeEndpoint"), 1);
    let pkg = s.registry().package(&v2).await;
    assert_eq!(pkg.model_approval_status().unwrap().as_str(), "Approved");

    // A candidate that answers without the field fails before any bake.
    let (mut s, v1) = kpi_canary("smokecanaryfail").await;
    with_smoke_test(&mut s);
    answers(&s, Some("AllTraffic-canary"), 200, r#"{"items": []}"#);
    let v2 = s.registry().register("Approved", PASSING).await;
    assert_eq!(
        s.approve(&v2, "v2").await.decisions[0].outcome,
        Outcome::CanaryStarted
    );
    let d = &s.endpoint_settled("canary-live").await.decisions[0];
    assert_eq!(d.outcome, Outcome::SmokeFailed, "{}", d.reason);
    let why = s
        .registry()
        .package(&v2)
        .await
        .approval_description()
        .unwrap()
        .to_string();
    assert!(
        why.contains("lacks recommendations") && why.contains("AllTraffic-canary"),
        "{why}"
    );
    let d = &s.endpoint_settled("back").await.decisions[0];
    assert_eq!(d.outcome, Outcome::Deployed, "{}", d.reason);
    assert_eq!(s.serving().await, v1);
}
