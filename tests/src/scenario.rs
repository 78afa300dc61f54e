//! A deployment target on the local AWS: its group, endpoint and alarms, the deployer and the
//! alarm responder configured for it, and helpers to drive and inspect them.

use alarm_responder::Responder;
use lifecycle::Error;
use lifecycle::aws::Clients;
use lifecycle::config::Environment;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::Reply;
use lifecycle::targets::Targets;
use model_deployer::{Config, Deployer};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::*;

pub const PASSING: &[(&str, &str)] = &[("validation_loss", "0.31"), ("offline_ctr", "0.084")];

pub struct Scenario {
    pub fx: Fixture,
    pub setup: Clients,
    pub group: String,
    pub endpoint: String,
    /// The target's rollback alarm (5XX errors).
    pub alarm: String,
    /// Its business-KPI alarm (click-through rate; needs 1000 impressions in the hour).
    pub ctr_alarm: String,
    /// Its capacity alarm (scale-up).
    pub capacity_alarm: String,
    pub deployer: Deployer,
    pub responder: Responder,
}

impl Scenario {
    pub async fn new(id: &str) -> Self {
        Self::with(id, false).await
    }

    pub async fn with(id: &str, dry_run: bool) -> Self {
        let fx = Fixture::new(id).await;
        let setup = fx.setup_clients().await;
        let (group, endpoint, alarm) =
            (format!("{id}-mpg"), format!("{id}-ep"), format!("{id}-5xx"));
        let (ctr_alarm, capacity_alarm) = (format!("{id}-ctr"), format!("{id}-503"));
        Registry::create(&setup.sagemaker, &group).await;
        create_alarm(&setup.cloudwatch, &alarm, &endpoint).await;
        let targets = json!([{
            "model_package_group": group,
            "endpoint": endpoint,
            "instance_type": "ml.m5.xlarge",
            "instance_count": 2,
            "strategy": {"type": "linear", "step_percent": 25, "wait_seconds": 60},
            "bake_seconds": 600,
            "rollback_alarms": [alarm],
            "gates": [{"metric": "validation_loss", "max": 0.35}, {"metric": "offline_ctr", "min": 0.075}],
            "kpi_alarms": [{"alarm": ctr_alarm, "min_samples": 1000, "window_minutes": 60,
                "samples": {"namespace": "MangaAssist/Recommendations", "metric": "Impressions",
                            "dimensions": {"EndpointName": endpoint}}}],
            "scale_up_alarms": [capacity_alarm],
            "scale_up_floor": 3
        }]);
        let config = Config {
            targets: Targets::parse(&targets.to_string(), Environment::Production).unwrap(),
            ledger_table: fx.table.clone(),
            environment: Environment::Production,
            execution_role_arn: ROLE_ARN.into(),
            dry_run,
        };
        let deployer = Deployer::new(fx.clients_for(model_deployer::FUNCTION), config.clone());
        let responder = Responder::new(fx.clients_for(alarm_responder::FUNCTION), config);
        Self {
            fx,
            setup,
            group,
            endpoint,
            alarm,
            ctr_alarm,
            capacity_alarm,
            deployer,
            responder,
        }
    }

    pub fn registry(&self) -> Registry<'_> {
        Registry {
            sm: &self.setup.sagemaker,
            group: self.group.clone(),
        }
    }

    pub fn package_event(&self, file: &str, arn: &str) -> Value {
        let mut e = event_file(file);
        e["detail"]["ModelPackageArn"] = json!(arn);
        e["detail"]["ModelPackageGroupName"] = json!(self.group);
        e["detail"]["ModelPackageVersion"] = json!(lifecycle::registry::version_of(arn));
        e["resources"] = json!([arn]);
        e
    }

    pub fn in_service_event(&self) -> Value {
        let mut e = event_file("endpoint-in-service.json");
        e["detail"]["EndpointName"] = json!(self.endpoint);
        e
    }

    /// The target's endpoint as a person makes it: a model from `package`, a config (with a KMS
    /// volume key) and an endpoint without any of the suite's tags.
    pub async fn endpoint_by_hand(&self, package: &str) {
        use aws_sdk_sagemaker::types::{
            ContainerDefinition, ProductionVariant, ProductionVariantInstanceType,
        };
        let sm = &self.setup.sagemaker;
        let (model, config) = (
            format!("{}-model", self.endpoint),
            format!("{}-config", self.endpoint),
        );
        sm.create_model()
            .model_name(&model)
            .execution_role_arn(ROLE_ARN)
            .primary_container(
                ContainerDefinition::builder()
                    .model_package_name(package)
                    .build(),
            )
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
            // Its volumes encrypted with the stack's key, as many accounts require.
            .kms_key_id(kms_key(&self.fx))
            .send()
            .await
            .unwrap();
        sm.create_endpoint()
            .endpoint_name(&self.endpoint)
            .endpoint_config_name(&config)
            .send()
            .await
            .unwrap();
    }

    /// An alarm event from `events/`, pointed at this scenario's endpoint and alarm, fired now (after
    /// the endpoint's last change, as a real regression is).
    pub fn alarm_event(&self, file: &str, alarm: &str) -> Value {
        let mut e = event_file(file);
        let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap();
        let now = now.replace('Z', "+0000");
        e["detail"]["alarmName"] = json!(alarm);
        e["detail"]["state"]["timestamp"] = json!(now);
        e["resources"] = json!([format!(
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm}"
        )]);
        let metrics = e
            .pointer_mut("/detail/configuration/metrics")
            .and_then(Value::as_array_mut);
        if let Some(metrics) = metrics {
            for m in metrics {
                let dims = m
                    .pointer_mut("/metricStat/metric/dimensions")
                    .and_then(Value::as_object_mut);
                if let Some(dims) = dims {
                    dims.insert("EndpointName".into(), json!(self.endpoint));
                }
            }
        }
        if e["detail"]["alarmTags"].is_object() {
            e["detail"]["alarmTags"]["lifecycle:endpoint"] = json!(self.endpoint);
        }
        e
    }

    /// The deployer's handler.
    pub async fn run(&self, event: Value, request_id: &str) -> Result<Reply, Error> {
        model_deployer::handle(&self.deployer, self.fx.event(event, request_id)).await
    }

    /// The alarm responder's handler.
    pub async fn respond(&self, event: Value, request_id: &str) -> Result<Reply, Error> {
        alarm_responder::handle(&self.responder, self.fx.event(event, request_id)).await
    }

    pub async fn approve(&self, arn: &str, request_id: &str) -> Reply {
        self.run(
            self.package_event("model-package-approved.json", arn),
            request_id,
        )
        .await
        .unwrap()
    }

    pub async fn endpoint_settled(&self, request_id: &str) -> Reply {
        self.fx.settle(&self.endpoint);
        self.run(self.in_service_event(), request_id).await.unwrap()
    }

    /// Approves `arn` and lets its deployment finish; asserts it went live.
    pub async fn make_live(&self, arn: &str, request_id: &str) {
        let report = self.approve(arn, request_id).await;
        assert_eq!(
            report.decisions[0].outcome,
            Outcome::Deploying,
            "{}",
            report.decisions[0].reason
        );
        let report = self.endpoint_settled(&format!("{request_id}-live")).await;
        assert_eq!(report.decisions[0].outcome, Outcome::Deployed);
        assert_eq!(self.serving().await, arn);
    }

    /// Version 1 approved and live, as after a first deployment.
    pub async fn with_v1_live(&self) -> String {
        let v1 = self.registry().register("Approved", PASSING).await;
        assert_eq!(
            self.approve(&v1, "v1").await.decisions[0].outcome,
            Outcome::Deploying
        );
        assert_eq!(
            self.endpoint_settled("v1-live").await.decisions[0].outcome,
            Outcome::Deployed
        );
        v1
    }

    pub async fn endpoint(
        &self,
    ) -> aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointOutput {
        self.setup
            .sagemaker
            .describe_endpoint()
            .endpoint_name(&self.endpoint)
            .send()
            .await
            .unwrap()
    }

    pub async fn config_package(&self, config: &str) -> String {
        let arn = self
            .setup
            .sagemaker
            .describe_endpoint_config()
            .endpoint_config_name(config)
            .send()
            .await
            .unwrap()
            .endpoint_config_arn()
            .unwrap()
            .to_string();
        let tags = self
            .setup
            .sagemaker
            .list_tags()
            .resource_arn(arn)
            .send()
            .await
            .unwrap();
        tags.tags()
            .iter()
            .find(|t| t.key() == Some("lifecycle:model-package-arn"))
            .and_then(|t| t.value())
            .unwrap()
            .to_string()
    }

    pub async fn serving(&self) -> String {
        let ep = self.endpoint().await;
        self.config_package(ep.endpoint_config_name().unwrap())
            .await
    }

    pub async fn decisions(&self) -> Vec<Value> {
        self.deployer
            .ledger
            .decisions(&format!("endpoint#{}", self.endpoint))
            .await
            .unwrap()
    }

    pub async fn outcomes(&self) -> Vec<String> {
        self.decisions()
            .await
            .iter()
            .map(|d| d["outcome"].as_str().unwrap().to_string())
            .collect()
    }
}
