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
        encrypt_bucket(&fx, &setup.s3, &bucket).await;
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
            Some(json!({"endpoint": name, "minutes": age_minutes, "region": self.region})),
        );
        if invocations > 0.0 {
            self.traffic(name, invocations).await;
        }
    }

    async fn traffic(&self, name: &str, invocations: f64) {
        self.traffic_at(name, invocations, 300).await
    }

    /// Invocations `seconds_ago`.
    async fn traffic_at(&self, name: &str, invocations: f64, seconds_ago: i64) {
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
                        time::OffsetDateTime::now_utc().unix_timestamp() - seconds_ago,
                    ))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    /// The sweeper's idle mark, as a run `hours_ago` would have left it.
    async fn mark(&self, name: &str, hours_ago: i64) {
        let at = time::OffsetDateTime::now_utc() - time::Duration::hours(hours_ago);
        let arn = self.arn(name).await;
        self.setup
            .sagemaker
            .add_tags()
            .resource_arn(arn)
            .tags(
                Tag::builder()
                    .key("lifecycle:idle-since")
                    .value(
                        at.format(&time::format_description::well_known::Rfc3339)
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }

    async fn arn(&self, endpoint: &str) -> String {
        let out = self
            .setup
            .sagemaker
            .describe_endpoint()
            .endpoint_name(endpoint)
            .send()
            .await;
        out.unwrap().endpoint_arn().unwrap().to_string()
    }

    /// An endpoint on a config that exists already.
    async fn endpoint_on(&self, name: &str, config: &str, tags: &[(&str, &str)]) {
        self.setup
            .sagemaker
            .create_endpoint()
            .endpoint_name(name)
            .endpoint_config_name(config)
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
            Some(json!({"endpoint": name, "minutes": 600, "region": self.region})),
        );
    }

    /// A version the deployer recorded as served on a target's endpoint.
    async fn served(&self, endpoint: &str, version: i64, config: &str) {
        use aws_sdk_dynamodb::types::AttributeValue as A;
        self.setup
            .dynamodb
            .put_item()
            .table_name(&self.fx.table)
            .item("pk", A::S(format!("endpoint#{endpoint}")))
            .item("sk", A::S(format!("served#{:015}", version * 1000)))
            .item(
                "package_arn",
                A::S(format!(
                    "arn:aws:sagemaker:{}:123456789012:model-package/{GROUP}/{version}",
                    self.region
                )),
            )
            .item("package_version", A::N(version.to_string()))
            .item("config", A::S(config.to_string()))
            .item("finished_at", A::N(lifecycle::ledger::now_ms().to_string()))
            .send()
            .await
            .unwrap();
    }

    async fn decisions(&self, subject: &str) -> Vec<Value> {
        let ledger =
            lifecycle::ledger::Ledger::new(self.fx.clients.dynamodb.clone(), self.fx.table.clone());
        ledger.decisions(subject).await.unwrap()
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
        let mut sweeper = Sweeper::new(&self.fx.sdk_for(endpoint_sweeper::FUNCTION), config);
        sweeper.clients = sweeper.clients.with_event_bus(&self.fx.event_bus());
        sweeper
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
        "{m:?} {}",
        row(&r2, "search-prod")
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
        ["delete_endpoint", "delete_endpoint_config"],
        "{}",
        row(&r, "staging-a")
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
            .contains("no invocation since it was marked idle"),
        "{}",
        history[1]["reason"]
    );
    // Audit records outlive the month: what changed something carries no expiry.
    assert!(
        history.iter().all(|d| d["expires_at"].is_null()),
        "{history:?}"
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

#[tokio::test(flavor = "multi_thread")]
async fn a_marked_endpoint_invoked_since_its_mark_is_kept_and_unmarked() {
    // Idle over the last hour, both marked 30 h ago; one had traffic 10 h ago.
    let fleet = Fleet::new("sweepsince", "us-west-1").await;
    let staging = [("environment", "staging")];
    fleet.endpoint("quiet", 1, &staging, 0.0, 3000.0).await;
    fleet
        .endpoint("busy-yesterday", 1, &staging, 0.0, 3000.0)
        .await;
    fleet.mark("quiet", 30).await;
    fleet.mark("busy-yesterday", 30).await;
    fleet.traffic_at("busy-yesterday", 7.0, 10 * 3600).await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false"), ("GRACE_HOURS", "24")]);
    let r = fleet
        .report(&fleet.sweep(&sweeper, "since").await.unwrap())
        .await;
    assert_eq!(
        findings(&r, "busy-yesterday"),
        ["idle"],
        "idle over the window"
    );
    assert_eq!(actions(&r, "busy-yesterday"), ["untag_resource"]);
    assert_eq!(
        actions(&r, "quiet"),
        ["delete_endpoint", "delete_endpoint_config"]
    );
    assert!(fleet.exists("busy-yesterday").await && !fleet.exists("quiet").await);
    let said = fleet.decisions("endpoint#busy-yesterday").await;
    assert_eq!(said[0]["outcome"], "unmarked");
    assert!(
        said[0]["reason"]
            .as_str()
            .unwrap()
            .contains("7 invocations since it was marked idle"),
        "{}",
        said[0]["reason"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_used_by_an_endpoint_in_any_state_or_kept_for_a_rollback_is_not_deleted() {
    let fleet = Fleet::new("sweepinuse", "us-west-2").await;
    let staging = [("environment", "staging")];
    fleet.endpoint("idle-a", 1, &staging, 0.0, 600.0).await;
    // A Failed endpoint runs on idle-a's config: not described before, so its config looked free.
    fleet
        .endpoint_on("broken-b", "idle-a-config", &staging)
        .await;
    local_aws().control(
        "endpoint-status",
        Some(json!({"endpoint": "broken-b", "status": "Failed", "region": fleet.region})),
    );
    // An idle endpoint on a config the target recorded as served: a rollback may need it.
    fleet
        .endpoint(
            "recs-prod",
            2,
            &[("environment", "production")],
            50.0,
            600.0,
        )
        .await;
    fleet.endpoint("recs-copy", 1, &staging, 0.0, 600.0).await;
    fleet.served("recs-prod", 1, "recs-copy-config").await;
    fleet.served("recs-prod", 2, "recs-prod-config").await;
    fleet.mark("idle-a", 1).await;
    fleet.mark("recs-copy", 1).await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false")]);
    let r = fleet
        .report(&fleet.sweep(&sweeper, "in-use").await.unwrap())
        .await;
    assert_eq!(actions(&r, "idle-a"), ["delete_endpoint"]);
    let why = |e: &str| row(&r, e)["withheld"].to_string();
    assert!(
        why("idle-a").contains("also used by another endpoint"),
        "{}",
        why("idle-a")
    );
    assert_eq!(actions(&r, "recs-copy"), ["delete_endpoint"]);
    assert!(
        why("recs-copy").contains("may roll back to it"),
        "{}",
        why("recs-copy")
    );
    let configs = fleet
        .setup
        .sagemaker
        .list_endpoint_configs()
        .send()
        .await
        .unwrap();
    let names: Vec<_> = configs
        .endpoint_configs()
        .iter()
        .filter_map(|c| c.endpoint_config_name())
        .collect();
    assert!(
        names.contains(&"idle-a-config") && names.contains(&"recs-copy-config"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn untagged_endpoints_take_the_stacks_environment_and_protection_always_wins() {
    for (region, environment, deleted) in [
        ("eu-west-2", "staging", true),
        ("eu-west-3", "production", false),
    ] {
        let fleet = Fleet::new(&format!("sweepenv{environment}"), region).await;
        fleet.endpoint("untagged", 1, &[], 0.0, 600.0).await;
        fleet
            .endpoint(
                "untagged-protected",
                1,
                &[("ProtectedFromAutoStop", "true")],
                0.0,
                600.0,
            )
            .await;
        fleet
            .endpoint(
                "tagged-staging",
                1,
                &[("environment", "staging")],
                0.0,
                600.0,
            )
            .await;
        let sweeper = fleet.sweeper(&[
            ("DRY_RUN", "false"),
            ("ENVIRONMENT", environment),
            ("DEPLOY_TARGETS", "[]"),
        ]);
        fleet.sweep(&sweeper, "mark").await.unwrap();
        let r = fleet
            .report(&fleet.sweep(&sweeper, "delete").await.unwrap())
            .await;
        assert_eq!(
            fleet.exists("untagged").await,
            !deleted,
            "{environment} install"
        );
        assert!(
            !fleet.exists("tagged-staging").await,
            "the endpoint's own tag wins"
        );
        assert!(fleet.exists("untagged-protected").await);
        assert_eq!(row(&r, "untagged")["production"], !deleted);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_forgotten_v1_is_found_through_its_model_and_retired_once_quiet() {
    // Seed 000, scenario 5: mangaassist-recommendation-v1, untagged, still serving 40% of users.
    let fleet = Fleet::new("sweepv1", "eu-north-1").await;
    let sm = &fleet.setup.sagemaker;
    let registry = Registry::create(sm, GROUP).await;
    let v1 = registry.register("Approved", &[]).await;
    let v2 = registry.register("Approved", &[]).await;
    fleet
        .endpoint(
            "recs-prod",
            2,
            &[("environment", "production")],
            9_000.0,
            600.0,
        )
        .await;
    // The deployer's config names what it serves.
    let config = sm
        .describe_endpoint_config()
        .endpoint_config_name("recs-prod-config")
        .send()
        .await
        .unwrap();
    sm.add_tags()
        .resource_arn(config.endpoint_config_arn().unwrap())
        .tags(
            Tag::builder()
                .key("lifecycle:model-package-arn")
                .value(&v2)
                .build(),
        )
        .send()
        .await
        .unwrap();
    sm.create_model()
        .model_name("recs-v1-model")
        .execution_role_arn(ROLE_ARN)
        .primary_container(
            ContainerDefinition::builder()
                .model_package_name(&v1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    sm.create_endpoint_config()
        .endpoint_config_name("recs-v1-config")
        .production_variants(
            ProductionVariant::builder()
                .variant_name("AllTraffic")
                .model_name("recs-v1-model")
                .instance_type(ProductionVariantInstanceType::MlG4DnXlarge)
                .initial_instance_count(1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    fleet
        .endpoint_on("mangaassist-recommendation-v1", "recs-v1-config", &[])
        .await;
    fleet
        .traffic_at("mangaassist-recommendation-v1", 4_000.0, 2 * 3600)
        .await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false"), ("IDLE_WINDOW_MINUTES", "180")]);
    let r = fleet
        .report(&fleet.sweep(&sweeper, "found").await.unwrap())
        .await;
    let v1_row = row(&r, "mangaassist-recommendation-v1");
    let finding = &v1_row["findings"][0];
    assert_eq!(finding["finding"], "stale_with_traffic", "{v1_row}");
    assert_eq!(
        (
            finding["version"].as_i64(),
            finding["canonical_version"].as_i64()
        ),
        (Some(1), Some(2))
    );
    assert!(finding["per_hour"].as_f64().unwrap() > 1_000.0, "{finding}");
    assert!(v1_row["monthly_usd"].as_f64().unwrap() > 0.0);
    assert!(
        actions(&r, "mangaassist-recommendation-v1").is_empty(),
        "users are on it"
    );
    assert!(v1_row["withheld"].to_string().contains("move its users"));

    // The users moved: no traffic for the stale window, then it goes, production or not.
    fleet.mark("mangaassist-recommendation-v1", 1).await;
    let later = fleet.sweeper(&[
        ("DRY_RUN", "false"),
        ("STALE_WINDOW_HOURS", "1"),
        ("IDLE_WINDOW_MINUTES", "10"),
    ]);
    let r = fleet
        .report(&fleet.sweep(&later, "retired").await.unwrap())
        .await;
    assert_eq!(
        actions(&r, "mangaassist-recommendation-v1"),
        ["delete_endpoint", "delete_endpoint_config"],
        "{}",
        row(&r, "mangaassist-recommendation-v1")
    );
    assert!(fleet.exists("recs-prod").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_copied_config_keeps_every_field_but_the_instance_count() {
    use aws_sdk_sagemaker::types::{
        AsyncInferenceConfig, AsyncInferenceOutputConfig, CaptureMode, CaptureOption,
        DataCaptureConfig, ProductionVariantManagedInstanceScaling, ProductionVariantRoutingConfig,
        RoutingStrategy, VpcConfig,
    };
    let fleet = Fleet::new("sweepcopy", "ap-northeast-1").await;
    let sm = &fleet.setup.sagemaker;
    fleet
        .endpoint("full", 1, &[("environment", "production")], 900.0, 600.0)
        .await;
    let variant = |name: &str, count: i32| {
        ProductionVariant::builder()
            .variant_name(name)
            .model_name("full-model")
            .instance_type(ProductionVariantInstanceType::MlM5Xlarge)
            .initial_instance_count(count)
            .initial_variant_weight(1.0)
            .volume_size_in_gb(64)
            .model_data_download_timeout_in_seconds(1200)
            .container_startup_health_check_timeout_in_seconds(600)
            .enable_ssm_access(true)
            .routing_config(
                ProductionVariantRoutingConfig::builder()
                    .routing_strategy(RoutingStrategy::LeastOutstandingRequests)
                    .build(),
            )
            .managed_instance_scaling(
                ProductionVariantManagedInstanceScaling::builder()
                    .min_instance_count(1)
                    .max_instance_count(4)
                    .build(),
            )
            .build()
    };
    sm.create_endpoint_config()
        .endpoint_config_name("full-everything")
        .production_variants(variant("AllTraffic", 1))
        .shadow_production_variants(variant("Shadow", 1))
        .data_capture_config(
            DataCaptureConfig::builder()
                .enable_capture(true)
                .initial_sampling_percentage(20)
                .destination_s3_uri("s3://capture/full/")
                .kms_key_id("arn:aws:kms:ap-northeast-1:123456789012:key/capture")
                .capture_options(
                    CaptureOption::builder()
                        .capture_mode(CaptureMode::Input)
                        .build(),
                )
                .build(),
        )
        .kms_key_id(kms_key(&fleet.fx))
        .async_inference_config(
            AsyncInferenceConfig::builder()
                .output_config(
                    AsyncInferenceOutputConfig::builder()
                        .s3_output_path("s3://async/out/")
                        .build(),
                )
                .build(),
        )
        .execution_role_arn(ROLE_ARN)
        .vpc_config(
            VpcConfig::builder()
                .security_group_ids("sg-1")
                .subnets("subnet-1")
                .build(),
        )
        .enable_network_isolation(true)
        .send()
        .await
        .unwrap();
    sm.update_endpoint()
        .endpoint_name("full")
        .endpoint_config_name("full-everything")
        .send()
        .await
        .unwrap();
    fleet.fx.settle("full");
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false"), ("REMEDIATE", "true")]);
    let r = fleet
        .report(&fleet.sweep(&sweeper, "copy").await.unwrap())
        .await;
    assert_eq!(
        actions(&r, "full"),
        ["copy_endpoint_config", "update_endpoint"],
        "{}",
        row(&r, "full")
    );
    let copy = fleet
        .setup
        .sagemaker
        .describe_endpoint()
        .endpoint_name("full")
        .send()
        .await
        .unwrap();
    let copy = copy
        .pending_deployment_summary()
        .and_then(|p| p.endpoint_config_name())
        .map(str::to_string)
        .unwrap_or_else(|| copy.endpoint_config_name().unwrap().to_string());
    assert_ne!(copy, "full-everything");
    let describe = |name: String| async move {
        let mut d = sm
            .describe_endpoint_config()
            .endpoint_config_name(name)
            .send()
            .await
            .unwrap();
        d.endpoint_config_name = None;
        d.endpoint_config_arn = None;
        d.creation_time = None;
        d
    };
    let (before, mut after) = (
        describe("full-everything".into()).await,
        describe(copy).await,
    );
    assert_eq!(
        after.production_variants()[0].initial_instance_count,
        Some(2)
    );
    assert_eq!(
        after.shadow_production_variants()[0].initial_instance_count,
        Some(1),
        "shadows are not production"
    );
    for v in after.production_variants.iter_mut().flatten() {
        v.initial_instance_count = Some(1);
    }
    // Everything but the request id of the answer.
    let shown = |d: &aws_sdk_sagemaker::operation::describe_endpoint_config::DescribeEndpointConfigOutput| {
        let s = format!("{d:?}");
        s[..s.find("_request_id").unwrap_or(s.len())].to_string()
    };
    assert_eq!(
        shown(&before),
        shown(&after),
        "only the instance count differs"
    );
    assert!(before.vpc_config.is_some() && before.async_inference_config.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn old_versions_of_a_target_are_retired_within_the_cap_and_what_is_in_use_stays() {
    let fleet = Fleet::new("sweepversions", "ap-northeast-2").await;
    let sm = &fleet.setup.sagemaker;
    let target = fleet.sweeper(&[]).config.targets.0.remove(0);
    let arn = |v: i64| {
        format!(
            "arn:aws:sagemaker:{}:123456789012:model-package/{GROUP}/{v}",
            fleet.region
        )
    };
    let names = |v: i64| {
        (
            lifecycle::deploy::model_name(&target, &arn(v), v),
            lifecycle::deploy::config_name(&target, &arn(v), v),
        )
    };
    for v in 1..=4 {
        let (model, config) = names(v);
        sm.create_model()
            .model_name(&model)
            .execution_role_arn(ROLE_ARN)
            .primary_container(ContainerDefinition::builder().image("img").build())
            .send()
            .await
            .unwrap();
        sm.create_endpoint_config()
            .endpoint_config_name(&config)
            .production_variants(
                ProductionVariant::builder()
                    .variant_name("AllTraffic")
                    .model_name(&model)
                    .instance_type(ProductionVariantInstanceType::MlM5Xlarge)
                    .initial_instance_count(2)
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("lifecycle:model-package-arn")
                    .value(arn(v))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    // Served in turn, a second apart (the ledger keeps milliseconds; moto's creation times are
    // seconds).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for v in 1..=4 {
        fleet.served("recs-prod", v, &names(v).1).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    fleet
        .endpoint_on("recs-prod", &names(4).1, &[("environment", "production")])
        .await;
    fleet.traffic("recs-prod", 500.0).await;
    // Someone's experiment still runs on version 1's config.
    fleet
        .endpoint_on("experiment", &names(1).1, &[("environment", "staging")])
        .await;
    fleet.traffic("experiment", 5.0).await;
    let sweeper = fleet.sweeper(&[
        ("DRY_RUN", "false"),
        ("MAX_ACTIONS_PER_RUN", "2"),
        ("KEEP_VERSIONS", "2"),
    ]);
    let s = fleet.sweep(&sweeper, "retire").await.unwrap();
    let r = fleet.report(&s).await;
    // Versions 3 and 4 kept (the last two served), 1 in use: 2 goes, its config before its model.
    assert_eq!(
        actions(&r, "recs-prod"),
        ["delete_endpoint_config", "delete_model"],
        "{}",
        row(&r, "recs-prod")
    );
    assert_eq!(s.totals.versions_retired, 1, "{}", row(&r, "recs-prod"));
    let exists = |name: String| async move {
        sm.describe_endpoint_config()
            .endpoint_config_name(name)
            .send()
            .await
            .is_ok()
    };
    assert!(!exists(names(2).1).await);
    assert!(exists(names(1).1).await && exists(names(3).1).await && exists(names(4).1).await);
    let said = fleet.decisions("endpoint#recs-prod").await;
    assert_eq!(said.last().unwrap()["outcome"], "versions_retired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_that_cannot_be_written_after_acting_is_recorded_as_such() {
    let fleet = Fleet::new("sweepnoreport", "ap-south-1").await;
    fleet
        .endpoint("dev-idle", 1, &[("environment", "development")], 0.0, 600.0)
        .await;
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false")]);
    local_aws().control(
        "faults",
        Some(
            json!({"throttle_share": 1.0, "operations": ["PutObject"], "access_key": fleet.fx.key}),
        ),
    );
    let err = fleet.sweep(&sweeper, "lost").await;
    local_aws().control("faults", Some(json!({"access_key": fleet.fx.key})));
    assert!(err.is_err());
    let sweeps = fleet.decisions("sweep#endpoints").await;
    assert_eq!(
        sweeps.last().unwrap()["outcome"],
        "report_unwritten",
        "{sweeps:?}"
    );
    assert_eq!(sweeps.last().unwrap()["severity"], "needs_person");
    // What it did is on record under the endpoint.
    assert_eq!(
        fleet.decisions("endpoint#dev-idle").await[0]["outcome"],
        "marked_idle"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_does_not_act_while_another_function_holds_the_endpoint() {
    let fleet = Fleet::new("sweeplease", "ap-southeast-1").await;
    fleet
        .endpoint("dev-idle", 1, &[("environment", "development")], 0.0, 600.0)
        .await;
    let ledger =
        lifecycle::ledger::Ledger::new(fleet.setup.dynamodb.clone(), fleet.fx.table.clone());
    let lease = ledger
        .acquire("dev-idle", "model-deployer", 60)
        .await
        .unwrap()
        .unwrap();
    let sweeper = fleet.sweeper(&[("DRY_RUN", "false")]);
    let r = fleet
        .report(&fleet.sweep(&sweeper, "held").await.unwrap())
        .await;
    assert!(
        row(&r, "dev-idle")["actions"][0]["result"]
            .as_str()
            .unwrap()
            .contains("another function holds")
    );
    assert_eq!(fleet.mutations(), Vec::<String>::new());
    ledger.release(lease).await.unwrap();
    let r = fleet
        .report(&fleet.sweep(&sweeper, "free").await.unwrap())
        .await;
    assert_eq!(actions(&r, "dev-idle"), ["tag_resource"]);
    // What was acted on was read again under the lease, tags included.
    assert!(fleet.fx.calls().iter().any(|c| c.operation == "ListTags"));
}
