//! Typed errors. A handler returns an error only when a retry can help (see [`Error::is_retryable`]);
//! everything else is answered, recorded and not retried.

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

    /// Wraps an SDK error, keeping the service's error code and message.
    pub fn aws<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: std::error::Error
            + aws_smithy_types::error::metadata::ProvideErrorMetadata
            + Send
            + Sync
            + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let retryable = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(e) => is_transient(e.err().code().unwrap_or_default()),
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
/// spells it its own way) and the service's own failures.
pub fn is_transient(code: &str) -> bool {
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
                | "InternalError"
        )
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
            "SlowDown",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "TooManyRequestsException",
            "InternalError",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in [
            "ValidationException",
            "AccessDeniedException",
            "ResourceNotFound",
        ] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
