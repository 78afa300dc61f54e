//! Typed errors. A handler returns an error only when a retry can help (see [`Error::is_retryable`]);
//! everything else is answered, recorded and not retried.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A configuration value that failed validation at cold start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What was wrong and what was expected.
    pub problem: String,
}

impl ConfigError {
    pub fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),

    /// The event could not be understood. Nothing was called in AWS.
    #[error("malformed event: {0}")]
    MalformedEvent(String),

    /// An AWS call failed. `retryable` says whether trying again later can help.
    #[error("{operation} failed: {message}")]
    Aws {
        operation: &'static str,
        message: String,
        retryable: bool,
    },

    /// Another invocation holds the endpoint's lease; a retry will find it free.
    #[error("endpoint {0} is busy: another invocation is acting on it")]
    Busy(String),

    /// Data read from AWS or S3 that cannot be used as it is.
    #[error("invalid data: {0}")]
    InvalidData(String),
}

impl Error {
    /// Whether Lambda should retry the invocation (and the failure destination keep it if retries fail).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Aws { retryable, .. } => *retryable,
            Error::Busy(_) => true,
            Error::Config(_) | Error::MalformedEvent(_) | Error::InvalidData(_) => false,
        }
    }

    /// Wraps an SDK error, keeping the service's error code and message. Retryable: timeouts,
    /// connection failures, unreadable answers, and service errors that mean "not now": a
    /// throttling or internal-failure code, or any 5xx or 429 status whatever its code.
    pub fn aws<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: std::error::Error
            + aws_smithy_types::error::metadata::ProvideErrorMetadata
            + Send
            + Sync
            + 'static,
    {
        let retryable = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(e) => {
                is_transient(e.err().code().unwrap_or_default())
                    || is_transient_status(e.raw().status().as_u16())
            }
            _ => false,
        };
        let message = match &err {
            SdkError::ServiceError(e) => {
                format!(
                    "{}: {}",
                    e.err().code().unwrap_or("UnknownError"),
                    e.err().message().unwrap_or_default()
                )
            }
            other => DisplayErrorContext(other).to_string(),
        };
        Error::Aws {
            operation,
            message,
            retryable,
        }
    }
}

/// Service error codes that mean "not now" rather than "not this": throttling (each service
/// spells it its own way), timeouts, and the service's own failures.
pub fn is_transient(code: &str) -> bool {
    let code = code.strip_suffix("Exception").unwrap_or(code);
    code.contains("Throttl")
        || code.contains("TooManyRequests")
        || code.contains("ThroughputExceeded")
        || matches!(
            code,
            "SlowDown"
                | "RequestLimitExceeded"
                | "ServiceUnavailable"
                | "InternalFailure"
                | "InternalServerError"
                | "InternalServer"
                | "InternalError"
                | "RequestTimeout"
                | "BandwidthLimitExceeded"
                | "PriorRequestNotComplete"
        )
}

/// HTTP statuses that mean "not now", whatever the body says (a bare 500 has no code at all).
pub fn is_transient_status(status: u16) -> bool {
    status == 429 || status >= 500
}

/// The service error code of an SDK error, if the service answered with one.
pub fn error_code<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// The service error message of an SDK error, if the service answered with one.
pub fn error_message<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(e) => e.err().message(),
        _ => None,
    }
}

impl Error {
    /// A stable name for the kind of error, as Lambda reports it (`errorType`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "InvalidConfiguration",
            Error::MalformedEvent(_) => "MalformedEvent",
            Error::Aws { .. } => "AwsCallFailed",
            Error::Busy(_) => "EndpointBusy",
            Error::InvalidData(_) => "InvalidData",
        }
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(e: Error) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.kind().to_string(),
            error_message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_in_every_spelling_is_transient_and_bad_requests_are_not() {
        for code in [
            "ThrottlingException",
            "Throttling",
            "ThrottledException",
            "RequestThrottled",
            "SlowDown",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "InternalError",
            "InternalFailure",
            "InternalServerError",
            "InternalServerException",
            "ServiceUnavailable",
            "ServiceUnavailableException",
            "RequestTimeout",
            "RequestTimeoutException",
            "BandwidthLimitExceeded",
            "PriorRequestNotComplete",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "ResourceNotFound",
            "ResourceLimitExceeded",
            "ConditionalCheckFailedException",
            "",
        ] {
            assert!(!is_transient(code), "{code}");
        }
        for status in [429, 500, 502, 503, 504] {
            assert!(is_transient_status(status), "{status}");
        }
        for status in [400, 403, 404, 409] {
            assert!(!is_transient_status(status), "{status}");
        }
    }

    #[test]
    fn a_bare_5xx_timeouts_and_lost_connections_are_retryable_and_a_4xx_is_not() {
        use aws_sdk_sagemaker::operation::describe_endpoint::DescribeEndpointError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let service = |status: u16, code: Option<&str>| {
            let mut meta = ErrorMetadata::builder().message("m");
            if let Some(c) = code {
                meta = meta.code(c);
            }
            let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
            let err: SdkError<DescribeEndpointError, HttpResponse> =
                SdkError::service_error(DescribeEndpointError::generic(meta.build()), raw);
            Error::aws("DescribeEndpoint", err)
        };
        assert!(service(500, None).is_retryable(), "a bare 500");
        assert!(service(503, Some("Unknown")).is_retryable());
        assert!(service(400, Some("ThrottlingException")).is_retryable());
        assert!(!service(400, Some("ValidationException")).is_retryable());
        assert!(!service(403, None).is_retryable());
        let timeout: SdkError<DescribeEndpointError, HttpResponse> =
            SdkError::timeout_error("too slow");
        assert!(Error::aws("DescribeEndpoint", timeout).is_retryable());
        let lost: SdkError<DescribeEndpointError, HttpResponse> = SdkError::dispatch_failure(
            aws_smithy_runtime_api::client::result::ConnectorError::io("reset".into()),
        );
        assert!(Error::aws("DescribeEndpoint", lost).is_retryable());
    }
}
