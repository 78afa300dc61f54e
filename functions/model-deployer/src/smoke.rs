//! The smoke test's one InvokeEndpoint call (see [`lifecycle::smoke`] for what it declares and
//! how an answer is judged).

use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use lifecycle::error::{Error, Result};
use lifecycle::smoke::{Answer, SmokeRun, SmokeTest};

/// Sends the target's request to `endpoint` (to `variant` when given: a canary's candidate) and
/// judges the answer. Only the model's answers are judged: its 200, its other statuses (a
/// ModelError) and SageMaker refusing the request as declared (a ValidationError). Anything else
/// (access denied, throttling, SageMaker unavailable, a model not loaded yet) says nothing of the
/// version: an error, so the invocation is retried and a person hears of it, and nothing is
/// rejected for it.
pub async fn run(
    client: &aws_sdk_sagemakerruntime::Client,
    endpoint: &str,
    variant: Option<&str>,
    test: &SmokeTest,
) -> Result<SmokeRun> {
    let sent = client
        .invoke_endpoint()
        .endpoint_name(endpoint)
        .set_target_variant(variant.map(str::to_string))
        .content_type(&test.content_type)
        .body(Blob::new(test.body.as_bytes()))
        .send()
        .await;
    let answer = match sent {
        Ok(out) => Answer::new(
            200,
            out.body().map_or(&[][..], |b| b.as_ref()),
            out.invoked_production_variant().map(str::to_string),
        ),
        Err(e) => match e.as_service_error() {
            Some(InvokeEndpointError::ModelError(m)) => {
                let status = m.original_status_code().unwrap_or(424);
                let body = m.original_message().or(m.message()).unwrap_or_default();
                Answer::new(u16::try_from(status).unwrap_or(424), body.as_bytes(), None)
            }
            Some(InvokeEndpointError::ValidationError(v)) => {
                Answer::new(400, v.message().unwrap_or_default().as_bytes(), None)
            }
            _ => return Err(Error::aws("InvokeEndpoint", e)),
        },
    };
    Ok(SmokeRun {
        endpoint: endpoint.to_string(),
        target_variant: variant.map(str::to_string),
        failure: test.judge(&answer),
        request: test.clone(),
        answer,
    })
}
