//! The smoke test's InvokeEndpoint call (see [`lifecycle::smoke`] for what it declares and how an
//! answer is judged).

use std::time::Duration;

use aws_sdk_sagemakerruntime::config::retry::RetryConfig;
use aws_sdk_sagemakerruntime::config::timeout::TimeoutConfig;
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use lifecycle::smoke::{Answer, SmokeRun, SmokeTest};

/// One request's time: the deployer's invocation has 60 s for every target's reconcile.
const ATTEMPT: Duration = Duration::from_secs(10);
/// A container that answers 429 or 503 may be warming up: asked once more, this long after.
const WARM_UP: Duration = Duration::from_secs(2);

/// A SageMaker Runtime client for smoke tests: one attempt per request, [`ATTEMPT`] long (the
/// SDK's retries would spend the invocation's minute on one slow model).
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_sagemakerruntime::Client {
    let config = aws_sdk_sagemakerruntime::config::Builder::from(sdk)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT)
                .operation_timeout(ATTEMPT)
                .build(),
        )
        .build();
    aws_sdk_sagemakerruntime::Client::from_conf(config)
}

/// Sends the target's request to `endpoint` (to `variant` when given: a canary's candidate) and
/// judges the answer. Only the model's answers are judged: its 200, and its other statuses (a
/// ModelError carrying them). Anything else (access denied, throttling, a ValidationError for a
/// variant gone or a header missing, SageMaker unavailable, a model not loaded yet, no answer
/// within [`ATTEMPT`]) says nothing of the version: `Err`, with why, and nothing is rejected.
pub async fn run(
    client: &aws_sdk_sagemakerruntime::Client,
    endpoint: &str,
    variant: Option<&str>,
    test: &SmokeTest,
) -> Result<SmokeRun, String> {
    let mut answer = invoke(client, endpoint, variant, test).await?;
    if matches!(answer.0.status, 429 | 503) {
        tokio::time::sleep(WARM_UP).await;
        answer = invoke(client, endpoint, variant, test).await?;
    }
    let (answer, body) = answer;
    Ok(SmokeRun {
        endpoint: endpoint.to_string(),
        target_variant: variant.map(str::to_string),
        failure: test.judge(&answer, &body),
        request: test.clone(),
        answer,
    })
}

/// One request: the model's answer and its whole body, or why there is none.
async fn invoke(
    client: &aws_sdk_sagemakerruntime::Client,
    endpoint: &str,
    variant: Option<&str>,
    test: &SmokeTest,
) -> Result<(Answer, Vec<u8>), String> {
    let sent = client
        .invoke_endpoint()
        .endpoint_name(endpoint)
        .set_target_variant(variant.map(str::to_string))
        .content_type(&test.content_type)
        .body(Blob::new(test.body.as_bytes()))
        .send()
        .await;
    match sent {
        Ok(out) => {
            let body = out.body().map(|b| b.as_ref().to_vec()).unwrap_or_default();
            let variant = out.invoked_production_variant().map(str::to_string);
            Ok((Answer::new(200, &body, variant), body))
        }
        Err(e) => match e.as_service_error() {
            Some(InvokeEndpointError::ModelError(m)) => {
                let status = m
                    .original_status_code()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(424);
                let body = m.original_message().or(m.message()).unwrap_or_default();
                Ok((Answer::new(status, body.as_bytes(), None), body.into()))
            }
            _ => Err(lifecycle::error::Error::aws("InvokeEndpoint", e).to_string()),
        },
    }
}
