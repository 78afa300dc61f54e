//! The harness the integration tests share: the local AWS (started once per test binary on a
//! free loopback port), a per-test fixture with its own credentials and resource names, and the
//! realistic events from `events/`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sagemaker::config::Credentials;
use aws_sdk_sagemaker::types::{
    InferenceSpecification, ModelApprovalStatus, ModelPackageContainerDefinition,
};
use lambda_runtime::{Context, LambdaEvent};
use lifecycle::aws::Clients;
use serde_json::Value;

pub mod scenario;

pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sagemaker-execution";

/// Read when the tests run (cargo sets it for them), not when they were built: a build shared by
/// clones in other places (a CI cache) would point at a clone that is gone.
pub fn workspace_root() -> PathBuf {
    let manifest =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    PathBuf::from(manifest).parent().unwrap().to_path_buf()
}

/// The local AWS server. Its stdin is a pipe held by this process: when the test binary exits,
/// the pipe closes and the server stops with it.
pub struct LocalAws {
    pub url: String,
    addr: String,
    _child: Mutex<Child>,
}

static LOCAL_AWS: OnceLock<LocalAws> = OnceLock::new();

pub fn local_aws() -> &'static LocalAws {
    LOCAL_AWS.get_or_init(|| {
        let root = workspace_root();
        let python = std::env::var("LOCALAWS_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join(".venv/bin/python"));
        let mut command = Command::new(&python);
        command.arg(root.join("tests/localaws/localaws.py")).args([
            "--port",
            "0",
            "--exit-with-stdin",
            "--update-seconds",
            "3600",
        ]);
        // `make integration` collects every call the functions make, for the IAM check.
        if let Ok(dir) = std::env::var("LOCALAWS_CALL_LOG_DIR") {
            let exe = std::env::current_exe().unwrap();
            let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
            command
                .arg("--call-log")
                .arg(PathBuf::from(dir).join(format!("{stem}-{}.jsonl", std::process::id())));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the local AWS with {}: {e}. The integration tests need it: run \
                     `make test` (it installs moto into .venv), or `make tools` and then \
                     `cargo test -p integration`. A bare `cargo test` runs only the unit tests.",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("local AWS did not start: {line:?}"))
            .to_string();
        let addr = url.trim_start_matches("http://").to_string();
        LocalAws {
            url,
            addr,
            _child: Mutex::new(child),
        }
    })
}

impl LocalAws {
    /// A call to the layer's control API (`/_localaws/...`).
    pub fn control(&self, path: &str, body: Option<Value>) -> Value {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let method = if body.is_empty() { "GET" } else { "POST" };
        write!(
            stream,
            "{method} /_localaws/{path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, json) = response.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(json).unwrap()
    }
}

/// One AWS call as the local AWS saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub service: String,
    pub operation: String,
    pub resource: Option<String>,
    pub mutating: bool,
}

/// One test's view of the local AWS: its own access key (so its calls can be counted) and its
/// own ledger table and resource names (so tests run in parallel).
pub struct Fixture {
    pub id: String,
    pub key: String,
    pub sdk: SdkConfig,
    pub clients: Clients,
    pub table: String,
}

impl Fixture {
    pub async fn new(id: &str) -> Self {
        Self::in_region(id, "us-east-1").await
    }

    /// A fixture in its own region: for tests of account-wide listings (the sweeper), which
    /// would otherwise see each other's resources.
    pub async fn in_region(id: &str, region: &'static str) -> Self {
        let aws = local_aws();
        let key = format!("test-{id}");
        let sdk = lifecycle::aws::configure(aws_config::defaults(BehaviorVersion::latest()))
            .endpoint_url(&aws.url)
            .region(Region::new(region))
            .credentials_provider(Credentials::new(
                &key,
                "secret",
                None,
                None,
                "integration-tests",
            ))
            .load()
            .await;
        let clients = Clients::new(&sdk);
        let table = format!("{id}-ledger");
        let fixture = Self {
            id: id.to_string(),
            key,
            sdk,
            clients,
            table,
        };
        create_ledger_table(&fixture.setup_clients().await.dynamodb, &fixture.table).await;
        aws_sdk_eventbridge::Client::new(&fixture.setup_sdk())
            .create_event_bus()
            .name(fixture.event_bus())
            .send()
            .await
            .unwrap();
        fixture
    }

    /// The SDK configuration a function runs with: this fixture's key, and the function's name in
    /// the user agent (as `lifecycle::aws::load` sets it), so the local AWS's call log tells which
    /// function made each call (the IAM check in `tests/iam/` reads it).
    pub fn sdk_for(&self, function: &'static str) -> SdkConfig {
        self.sdk
            .to_builder()
            .app_name(aws_config::AppName::new(function).unwrap())
            .build()
    }

    /// A function's clients, publishing its decisions to this fixture's own bus.
    pub fn clients_for(&self, function: &'static str) -> Clients {
        Clients::new(&self.sdk_for(function)).with_event_bus(&self.event_bus())
    }

    /// This fixture's EventBridge bus (created with the fixture).
    pub fn event_bus(&self) -> String {
        format!("{}-decisions", self.id)
    }

    /// Clients with their own access key: what they do is not counted as this fixture's calls.
    pub async fn setup_clients(&self) -> Clients {
        Clients::new(&self.setup_sdk())
    }

    pub fn setup_sdk(&self) -> SdkConfig {
        self.sdk
            .to_builder()
            .credentials_provider(aws_sdk_sagemaker::config::SharedCredentialsProvider::new(
                Credentials::new(
                    format!("setup-{}", self.id),
                    "secret",
                    None,
                    None,
                    "integration-tests",
                ),
            ))
            .build()
    }

    /// Every call made with this fixture's key.
    pub fn calls(&self) -> Vec<Call> {
        let out = local_aws().control(&format!("calls?access_key={}", self.key), None);
        out["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Call {
                service: c["service"].as_str().unwrap().to_string(),
                operation: c["operation"].as_str().unwrap().to_string(),
                resource: c["resource"].as_str().map(str::to_string),
                mutating: c["mutating"].as_bool().unwrap(),
            })
            .collect()
    }

    /// SageMaker calls that change something, as `Operation resource`.
    pub fn sagemaker_mutations(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.service == "sagemaker" && c.mutating)
            .map(|c| format!("{} {}", c.operation, c.resource.unwrap_or_default()))
            .collect()
    }

    pub fn count(&self, operation: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.operation == operation)
            .count()
    }

    /// Finishes the endpoint's pending update now (SageMaker would take minutes).
    pub fn settle(&self, endpoint: &str) -> Value {
        local_aws().control("settle", Some(serde_json::json!({ "endpoint": endpoint })))
    }

    pub fn context(&self, request_id: &str) -> Context {
        let mut ctx = Context::default();
        ctx.request_id = format!("{}-{request_id}", self.id);
        ctx
    }

    pub fn event(&self, payload: Value, request_id: &str) -> LambdaEvent<Value> {
        LambdaEvent::new(payload, self.context(request_id))
    }
}

pub async fn create_ledger_table(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    ddb.create_table()
        .table_name(table)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
}

/// The KMS key a test's stack names in KmsKeyArns (tests/iam/check.py derives the same).
pub fn kms_key(fx: &Fixture) -> String {
    format!(
        "arn:aws:kms:{}:123456789012:key/{}-key",
        fx.sdk.region().unwrap(),
        fx.id
    )
}

/// Default encryption with the test's KMS key, as an account that encrypts its buckets has.
pub async fn encrypt_bucket(fx: &Fixture, s3: &aws_sdk_s3::Client, bucket: &str) {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    let by_default = ServerSideEncryptionByDefault::builder()
        .sse_algorithm(ServerSideEncryption::AwsKms)
        .kms_master_key_id(kms_key(fx))
        .build()
        .unwrap();
    s3.put_bucket_encryption()
        .bucket(bucket)
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

/// A realistic event from `events/`.
pub fn event_file(name: &str) -> Value {
    let path = workspace_root().join("events").join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// A model package group and its registry, seen by the tests' setup clients.
pub struct Registry<'a> {
    pub sm: &'a aws_sdk_sagemaker::Client,
    pub group: String,
}

impl Registry<'_> {
    pub async fn create<'c>(sm: &'c aws_sdk_sagemaker::Client, group: &str) -> Registry<'c> {
        sm.create_model_package_group()
            .model_package_group_name(group)
            .send()
            .await
            .unwrap();
        Registry {
            sm,
            group: group.to_string(),
        }
    }

    /// Registers the next version with its evaluation metrics as customer metadata.
    pub async fn register(&self, status: &str, metadata: &[(&str, &str)]) -> String {
        self.register_with(status, metadata, None).await
    }

    pub async fn register_with(
        &self,
        status: &str,
        metadata: &[(&str, &str)],
        statistics_uri: Option<&str>,
    ) -> String {
        let meta: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut req = self
            .sm
            .create_model_package()
            .model_package_group_name(&self.group)
            .model_approval_status(ModelApprovalStatus::from(status))
            .set_customer_metadata_properties(Some(meta))
            .inference_specification(
                InferenceSpecification::builder()
                    .containers(
                        ModelPackageContainerDefinition::builder()
                            .image("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-gpu")
                            .model_data_url(format!("s3://models/{}/model.tar.gz", self.group))
                            .build(),
                    )
                    .supported_content_types("application/json")
                    .supported_response_mime_types("application/json")
                    .build(),
            );
        if let Some(uri) = statistics_uri {
            use aws_sdk_sagemaker::types::{MetricsSource, ModelMetrics, ModelQuality};
            req = req.model_metrics(
                ModelMetrics::builder()
                    .model_quality(
                        ModelQuality::builder()
                            .statistics(
                                MetricsSource::builder()
                                    .content_type("application/json")
                                    .s3_uri(uri)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            );
        }
        req.send()
            .await
            .unwrap()
            .model_package_arn()
            .unwrap()
            .to_string()
    }

    pub async fn set_status(&self, arn: &str, status: &str) {
        self.sm
            .update_model_package()
            .model_package_arn(arn)
            .model_approval_status(ModelApprovalStatus::from(status))
            .send()
            .await
            .unwrap();
    }

    pub async fn package(
        &self,
        arn: &str,
    ) -> aws_sdk_sagemaker::operation::describe_model_package::DescribeModelPackageOutput {
        self.sm
            .describe_model_package()
            .model_package_name(arn)
            .send()
            .await
            .unwrap()
    }
}

/// A metric alarm on an endpoint's 5XX errors.
pub async fn create_alarm(cw: &aws_sdk_cloudwatch::Client, name: &str, endpoint: &str) {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
    cw.put_metric_alarm()
        .alarm_name(name)
        .namespace("AWS/SageMaker")
        .metric_name("Invocation5XXErrors")
        .dimensions(
            Dimension::builder()
                .name("EndpointName")
                .value(endpoint)
                .build(),
        )
        .dimensions(
            Dimension::builder()
                .name("VariantName")
                .value("AllTraffic")
                .build(),
        )
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .unwrap();
}

pub async fn set_alarm(
    cw: &aws_sdk_cloudwatch::Client,
    name: &str,
    state: aws_sdk_cloudwatch::types::StateValue,
    reason: &str,
) {
    cw.set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason(reason)
        .send()
        .await
        .unwrap();
}
