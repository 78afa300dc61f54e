//! One `SdkConfig` and the clients built from it, once per cold start.

use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// Loads the SDK configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL` when set, which is how tests and the demo point at the local AWS).
///
/// Retries: the standard mode with 4 attempts, so throttling and transient errors are absorbed
/// inside one invocation. Timeouts: short per-attempt limits, so a hung call fails well inside
/// the function's timeout and the invocation can be retried as a whole.
///
/// The function's name goes into every request's user agent (`app/<function>`), so CloudTrail
/// and the local AWS's call log tell which function made a call.
pub async fn load(function: &'static str) -> SdkConfig {
    configure(aws_config::defaults(BehaviorVersion::latest()))
        .app_name(aws_config::AppName::new(function).expect("function names are valid app names"))
        .load()
        .await
}

/// Applies the suite's HTTP client, retry and timeout settings to a loader.
pub fn configure(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    // rustls with ring: no C toolchain needed for cross-compiling to arm64.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    loader
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
}

/// Every client the suite uses. Cheap to clone; built once, outside the handler.
#[derive(Clone, Debug)]
pub struct Clients {
    pub sagemaker: aws_sdk_sagemaker::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub autoscaling: aws_sdk_applicationautoscaling::Client,
    /// Where decisions that acted or need a person are published.
    pub publisher: crate::publisher::Publisher,
    /// What the clients were made from, for a client only one function needs (the deployer's
    /// SageMaker Runtime): the others do not link it.
    pub sdk: SdkConfig,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        // A custom endpoint (the local AWS) cannot serve virtual-hosted bucket names.
        let path_style = config.endpoint_url().is_some();
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build();
        Self {
            sagemaker: aws_sdk_sagemaker::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            autoscaling: aws_sdk_applicationautoscaling::Client::new(config),
            publisher: crate::publisher::Publisher::new(config, &crate::publisher::bus_from_env()),
            sdk: config.clone(),
        }
    }

    /// The same clients, publishing decisions to another bus (tests; each has its own).
    pub fn with_event_bus(mut self, bus: &str) -> Self {
        self.publisher = self.publisher.to_bus(bus);
        self
    }
}
