//! endpoint-sweeper against the local AWS, through the same handler the Lambda runs. Each test
//! has its own region: the sweeper lists every endpoint of the account.

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ServiceNamespace,
    TargetTrackingScalingPolicyConfiguration,
};
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sagemaker::types::{
    ContainerDefinition, ProductionVariant, ProductionVariantInstanceType, Tag,
};
use endpoint_sweeper::{Config, SweepSummary, Sweeper, handle};
use integration::*;
use lifecycle::Error;
use serde_json::{Value, json};

const GROUP: &str = "mangaassist-recommendation-mpg";

struct Fleet {
    fx: Fixture,
    setup: lifecycle::aws::Clients,
    region: &'static str,
    bucket: String,
}

impl Fleet {
    async fn new(id: &str, region: &'static str) -> Self {
        let fx = Fixture::in_region(id, region).await;
        let setup = fx.setup_clients().await;
        let bucket = format!("{id}-reports");
        setup
            .s3
            .create_bucket()
            .bucket(&bucket)
            .create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        Self {
            fx,
            setup,
            region,
            bucket,
        }
    }

    /// An endpoint created `age_minutes` ago, with its tags and `invocations` in the last hour.
    async fn endpoint(
        &self,
        name: &str,
        instances: i32,
        tags: &[(&str, &str)],
        invocations: f64,
        age_minutes: f64,
    ) {
        let sm = &self.setup.sagemaker;
        sm.create_model()
            .model_name(format!("{name}-model"))
            .execution_role_arn(ROLE_ARN)
            .primary_container(
                ContainerDefinition::builder()
                    .image("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-gpu")
                    .build(),
            )
            .send()
            .await
            .unwrap();
        sm.create_endpoint_config()
            .endpoint_config_name(format!("{name}-config"))
            .production_variants(
                ProductionVariant::builder()
                    .variant_name("AllTraffic")
                    .model_name(format!("{name}-model"))
                    .instance_type(ProductionVariantInstanceType::MlM5Xlarge)
                    .initial_instance_count(instances)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        sm.create_endpoint()
            .endpoint_name(name)
            .endpoint_config_name(format!("{name}-config"))
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .unwrap();
        local_aws().control(
            "age-endpoint",
            Some(json!({"endpoint": name, "minutes": age_minutes})),
        );
        if invocations > 0.0 {
            self.traffic(name, invocations).await;
        }
    }

    async fn traffic(&self, name: &str, invocations: f64) {
        let dim = |k: &str, v: &str| Dimension::builder().name(k).value(v).build();
        self.setup
            .cloudwatch
            .put_metric_data()
            .namespace("AWS/SageMaker")
            .metric_data(
                MetricDatum::builder()
                    .metric_name("Invocations")
                    .dimensions(dim("EndpointName", name))
                    .dimensions(dim("VariantName", "AllTraffic"))
                    .value(invocations)
                    .timestamp(aws_smithy_types::DateTime::from_secs(
                        time::OffsetDateTime::now_utc().unix_timestamp() - 300,
                    ))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    async fn autoscaling(&self, name: &str, min: i32, max: i32, cooldown: Option<i32>) {
        let id = format!("endpoint/{name}/variant/AllTraffic");
        let aas = &self.setup.autoscaling;
        aas.register_scalable_target()
            .service_namespace(ServiceNamespace::Sagemaker)
            .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
            .resource_id(&id)
            .min_capacity(min)
            .max_capacity(max)
            .send()
            .await
            .unwrap();
        if let Some(cooldown) = cooldown {
            aas.put_scaling_policy()
                .service_namespace(ServiceNamespace::Sagemaker)
                .scalable_dimension(ScalableDimension::SageMakerVariantDesiredInstanceCount)
                .resource_id(&id)
                .policy_name("invocations-per-instance")
                .policy_type(PolicyType::TargetTrackingScaling)
                .target_tracking_scaling_policy_configuration(
                    TargetTrackingScalingPolicyConfiguration::builder()
                        .target_value(70.0)
                        .predefined_metric_specification(
                            PredefinedMetricSpecification::builder()
                                .predefined_metric_type(
                                    MetricType::SageMakerVariantInvocationsPerInstance,
                                )
                                .build()
                                .unwrap(),
                        )
                        .scale_in_cooldown(cooldown)
                        .scale_out_cooldown(60)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .unwrap();
        }
    }

    /// The seeds' fleet: idle staging, idle protected, idle production, a stale v1, a
    /// one-instance production variant and a MinCapacity-0 target, plus the canonical endpoint.
    async fn seeds_fleet(&self) {
        let group = [("lifecycle:model-package-group", GROUP)];
        let staging = [("environment", "staging")];
        self.endpoint("recs-staging", 1, &staging, 0.0, 600.0).await;
        self.endpoint(
            "recs-sandbox",
            1,
            &[
                ("environment", "staging"),
                ("ProtectedFromAutoStop", "true"),
            ],
            0.0,
            600.0,
        )
        .await;
        self.endpoint(
            "search-prod",
            4,
            &[("environment", "production")],
            0.0,
            600.0,
        )
        .await;
        self.endpoint(
            "recs-prod",
            2,
            &[("environment", "production"), group[0]],
            9_000.0,
            600.0,
        )
        .await;
        self.endpoint(
            "recs-v1",
            2,
            &[("environment", "production"), group[0]],
            40.0,
            600.0,
        )
        .await;
        self.endpoint(
            "checkout-ranker",
            1,
            &[("environment", "production")],
            2_500.0,
            600.0,
        )
        .await;
        self.endpoint(
            "chat-intent",
            2,
            &[("environment", "production")],
            800.0,
            600.0,
        )
        .await;
        self.autoscaling("chat-intent", 0, 4, Some(60)).await;
        // Too young to judge, though idle.
        self.endpoint("fresh-experiment", 1, &staging, 0.0, 5.0)
            .await;
    }

    fn sweeper(&self, extra: &[(&'static str, &str)]) -> Sweeper {
        let targets = json!([{"model_package_group": GROUP, "endpoint": "recs-prod", "instance_type": "ml.m5.xlarge",
            "instance_count": 2, "rollback_alarms": ["recs-5xx"]}])
        .to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("DEPLOY_TARGETS", targets.as_str()),
            ("REPORT_BUCKET", self.bucket.as_str()),
            ("LEDGER_TABLE", self.fx.table.as_str()),
            ("ENVIRONMENT", "production"),
            ("GRACE_HOURS", "0"),
            ("MAX_ACTIONS_PER_RUN", "20"),
        ];
        for (k, v) in extra {
            env.retain(|(e, _)| e != k);
            env.push((k, v));
        }
        let config = Config::from_source(&env.as_slice()).unwrap();
        Sweeper::new(self.fx.clients.clone(), config)
    }

    async fn sweep(&self, sweeper: &Sweeper, request_id: &str) -> Result<SweepSummary, Error> {
        handle(
            sweeper,
            self.fx
                .event(event_file("endpoint-sweeper-schedule.json"), request_id),
        )
        .await
    }

    async fn report(&self, s: &SweepSummary) -> Value {
        let key = s
            .report_uri
            .strip_prefix(&format!("s3://{}/", self.bucket))
            .unwrap();
        let out = self
            .setup
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&out.body.collect().await.unwrap().into_bytes()).unwrap()
    }

    fn mutations(&self) -> Vec<String> {
        self.fx
            .calls()
            .into_iter()
            .filter(|c| {
                c.mutating && (c.service == "sagemaker" || c.service.contains("autoscaling"))
            })
            .map(|c| format!("{} {}", c.operation, c.resource.unwrap_or_default()))
            .collect()
    }

    async fn exists(&self, endpoint: &str) -> bool {
        self.setup
            .sagemaker
            .describe_endpoint()
            .endpoint_name(endpoint)
            .send()
            .await
            .is_ok()
    }
}

fn row<'a>(report: &'a Value, endpoint: &str) -> &'a Value {
    report["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["endpoint"] == endpoint)
        .unwrap_or_else(|| panic!("{endpoint} not in the report"))
}

fn findings(report: &Value, endpoint: &str) -> Vec<String> {
    row(report, endpoint)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["finding"].as_str().unwrap().to_string())
        .collect()
}

fn actions(report: &Value, endpoint: &str) -> Vec<String> {
    row(report, endpoint)["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seeds_fleet_is_reported_and_a_dry_run_changes_nothing() {
    let fleet = Fleet::new("sweepdry", "eu-west-1").await;
    fleet.seeds_fleet().await;
    let dry = fleet.sweeper(&[("REMEDIATE", "true")]);
    let s = fleet.sweep(&dry, "dry").await.unwrap();
    assert_eq!(
        fleet.mutations(),
        Vec::<String>::new(),
        "a dry run mutates nothing"
    );
    let r = fleet.report(&s).await;

    assert_eq!(findings(&r, "recs-staging"), ["idle"]);
    assert_eq!(actions(&r, "recs-staging"), ["tag_resource"]);
    assert_eq!(findings(&r, "recs-sandbox"), ["idle"]);
    assert!(
        row(&r, "recs-sandbox")["withheld"][0]["why"]
            .as_str()
            .unwrap()
            .contains("protected")
    );
    assert_eq!(findings(&r, "search-prod"), ["idle"]);
    assert_eq!(actions(&r, "search-prod"), ["set_instance_count"]);
    assert_eq!(findings(&r, "recs-v1"), ["stale"]);
    assert!(actions(&r, "recs-v1").is_empty());
    assert_eq!(findings(&r, "recs-prod"), Vec::<String>::new());
    assert_eq!(findings(&r, "checkout-ranker"), ["under_replicated"]);
    assert_eq!(
        actions(&r, "checkout-ranker"),
        ["copy_endpoint_config", "update_endpoint"]
    );
    assert_eq!(
        findings(&r, "chat-intent"),
        ["scale_to_zero_risk", "short_scale_in_cooldown"]
    );
    assert!(
        row(&r, "fresh-experiment")["not_judged"]
            .as_str()
            .unwrap()
            .contains("younger")
    );
    assert_eq!(
        row(&r, "recs-staging")["actions"][0]["result"],
        "tag_resource: dry run, not applied"
    );

    // Costs: ml.m5.xlarge at $0.23/h, 730 h a month.
    let t = &s.totals;
    assert_eq!(
        (t.idle, t.stale, t.under_replicated, t.scale_to_zero_risk),
        (3, 1, 1, 1)
    );
    assert_eq!(t.idle_monthly_usd, 1007.4); // 6 instances x $167.90
    assert_eq!(t.stale_monthly_usd, 335.8);
    // One GetMetricData call for every variant of the account.
    assert_eq!(fleet.fx.count("GetMetricData"), 1);

    // The same sweep for real: the same decisions, now applied.
    let real = fleet.sweeper(&[("REMEDIATE", "true"), ("DRY_RUN", "false")]);
    let s2 = fleet.sweep(&real, "real").await.unwrap();
    let r2 = fleet.report(&s2).await;
    for e in [
        "recs-staging",
        "recs-sandbox",
        "search-prod",
        "recs-v1",
        "checkout-ranker",
        "chat-intent",
    ] {
        assert_eq!(actions(&r, e), actions(&r2, e), "{e}");
        assert_eq!(findings(&r, e), findings(&r2, e), "{e}");
    }
    let m = fleet.mutations();
    assert!(
        m.contains(&"UpdateEndpointWeightsAndCapacities search-prod".to_string()),
        "{m:?}"
    );
    assert!(
        !m.iter().any(|c| c.contains("recs-sandbox")),
        "protected: {m:?}"
    );
    assert!(
        !m.iter().any(|c| c.starts_with("Delete")),
        "first sweep only marks: {m:?}"
    );
    let ep = fleet
        .setup
        .sagemaker
        .describe_endpoint()
        .endpoint_name("search-prod")
        .send()
        .await
        .unwrap();
    assert_eq!(
        ep.production_variants()[0].current_instance_count(),
        Some(2)
    );
    let policies = fleet
        .setup
        .autoscaling
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_id("endpoint/chat-intent/variant/AllTraffic")
        .send()
        .await
        .unwrap();
    let cooldown = policies.scaling_policies()[0]
        .target_tracking_scaling_policy_configuration()
        .unwrap()
        .scale_in_cooldown();
    assert_eq!(cooldown, Some(300));
    let targets = fleet
        .setup
        .autoscaling
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Sagemaker)
        .resource_ids("endpoint/chat-intent/variant/AllTraffic")
        .send()
        .await
        .unwrap();
    assert_eq!(targets.scalable_targets()[0].min_capacity(), 2);
    let ledger = fleet.fx.clients.dynamodb.clone();
    let decisions = lifecycle::ledger::Ledger::new(ledger, fleet.fx.table.clone())
        .decisions("sweep#endpoints")
        .await
        .unwrap();
    assert_eq!(decisions.len(), 2);
    assert_eq!(decisions[1]["evidence"]["report"], s2.report_uri);
    let _ = fleet.region;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_staging_is_marked_then_deleted_and_a_mark_goes_when_traffic_returns() {
    let fleet = Fleet::new("sweepidle", "eu-central-1").await;
    fleet
        .endpoint("staging-a", 1, &[("environment", "staging")], 0.0, 600.0)
        .await;
    fleet
        .endpoint("staging-b", 1, &[("environment", "staging")], 0.0, 600.0)
        .await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false")]);
    let r = fleet
        .report(&fleet.sweep(&sweeper, "one").await.unwrap())
        .await;
    assert_eq!(actions(&r, "staging-a"), ["tag_resource"]);
    assert!(fleet.exists("staging-a").await);

    fleet.traffic("staging-b", 12.0).await; // someone came back to b
    let r = fleet
        .report(&fleet.sweep(&sweeper, "two").await.unwrap())
        .await;
    assert_eq!(
        actions(&r, "staging-a"),
        ["delete_endpoint", "delete_endpoint_config"]
    );
    assert_eq!(actions(&r, "staging-b"), ["untag_resource"]);
    assert!(!fleet.exists("staging-a").await);
    assert!(fleet.exists("staging-b").await);
    // Who changed staging-a, when and why: the ledger under the endpoint, as for the deployer.
    let ledger =
        lifecycle::ledger::Ledger::new(fleet.fx.clients.dynamodb.clone(), fleet.fx.table.clone());
    let history = ledger.decisions("endpoint#staging-a").await.unwrap();
    let said: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|d| {
            (
                d["function"].as_str().unwrap(),
                d["outcome"].as_str().unwrap(),
                d["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("endpoint-sweeper", "marked_idle", "acted"),
            ("endpoint-sweeper", "deleted", "acted")
        ]
    );
    assert_eq!(history[1]["plan"][0]["action"], "delete_endpoint");
    assert!(
        history[1]["reason"]
            .as_str()
            .unwrap()
            .contains("idle since"),
        "{}",
        history[1]["reason"]
    );
    let b = ledger.decisions("endpoint#staging-b").await.unwrap();
    assert_eq!(b.last().unwrap()["outcome"], "unmarked");
    // The model stays: a rollback or a re-create needs it.
    assert!(
        fleet
            .setup
            .sagemaker
            .describe_model()
            .model_name("staging-a-model")
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_action_budget_and_the_ha_floor_hold() {
    let fleet = Fleet::new("sweepbudget", "ap-southeast-2").await;
    for i in 0..4 {
        fleet
            .endpoint(
                &format!("idle-{i}"),
                1,
                &[("environment", "development")],
                0.0,
                600.0,
            )
            .await;
    }
    fleet
        .endpoint("prod-two", 2, &[("environment", "production")], 0.0, 600.0)
        .await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false"), ("MAX_ACTIONS_PER_RUN", "3")]);
    let s = fleet.sweep(&sweeper, "budget").await.unwrap();
    let r = fleet.report(&s).await;
    assert_eq!(s.totals.actions_taken, 3);
    assert!(
        row(&r, "idle-3")["withheld"][0]["why"]
            .as_str()
            .unwrap()
            .contains("MAX_ACTIONS_PER_RUN")
    );
    assert_eq!(fleet.mutations().len(), 3);
    // Production at two instances, idle: neither deleted nor shrunk.
    assert!(actions(&r, "prod-two").is_empty());
    assert!(
        row(&r, "prod-two")["withheld"][0]["why"]
            .as_str()
            .unwrap()
            .contains("never deleted")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_metrics_mean_not_idle_and_a_failed_listing_acts_on_nothing() {
    let fleet = Fleet::new("sweepfaults", "sa-east-1").await;
    fleet
        .endpoint("dev-idle", 1, &[("environment", "development")], 0.0, 600.0)
        .await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false")]);
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["GetMetricData"], "access_key": fleet.fx.key})),
    );
    let s = fleet.sweep(&sweeper, "no-metrics").await;
    local_aws().control("faults", Some(json!({"access_key": fleet.fx.key})));
    let r = fleet.report(&s.unwrap()).await;
    assert_eq!(
        findings(&r, "dev-idle"),
        Vec::<String>::new(),
        "unreadable is not idle"
    );
    assert!(row(&r, "dev-idle")["invocations"].is_null());
    assert_eq!(fleet.mutations(), Vec::<String>::new());

    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 1.0, "operations": ["ListEndpoints"], "access_key": fleet.fx.key})),
    );
    let err = fleet.sweep(&sweeper, "no-list").await.unwrap_err();
    local_aws().control("faults", Some(json!({"access_key": fleet.fx.key})));
    assert!(err.to_string().contains("ListEndpoints"), "{err}");
    assert_eq!(fleet.mutations(), Vec::<String>::new());

    // A share of every describe throttled: the SDK's retries absorb most; whatever stays
    // unreadable is not judged, and nothing is deleted on a guess.
    local_aws().control(
        "faults",
        Some(json!({"throttle_share": 0.5, "operations": ["DescribeEndpoint", "ListTags", "DescribeEndpointConfig"],
                    "access_key": fleet.fx.key})),
    );
    let s = fleet.sweep(&sweeper, "flaky").await;
    local_aws().control("faults", Some(json!({"access_key": fleet.fx.key})));
    let r = fleet.report(&s.unwrap()).await;
    let dev = row(&r, "dev-idle");
    if dev["not_judged"].is_null() {
        assert_eq!(actions(&r, "dev-idle"), ["tag_resource"]);
    } else {
        assert!(actions(&r, "dev-idle").is_empty());
    }
    assert!(!fleet.mutations().iter().any(|m| m.starts_with("Delete")));
}

#[tokio::test(flavor = "multi_thread")]
async fn anything_but_a_schedule_is_refused_without_calls() {
    let fleet = Fleet::new("sweepbad", "ca-central-1").await;
    let sweeper = fleet.sweeper(&[]);
    let before = fleet.fx.calls().len();
    let err = handle(
        &sweeper,
        fleet.fx.event(event_file("alarm-5xx.json"), "bad"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::MalformedEvent(_)), "{err}");
    assert_eq!(fleet.fx.calls().len(), before);
}
