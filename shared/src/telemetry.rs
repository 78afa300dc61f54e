//! Structured logs. lambda_runtime's subscriber honours Lambda's log settings
//! (`AWS_LAMBDA_LOG_FORMAT=JSON`, `AWS_LAMBDA_LOG_LEVEL`).

/// Installs the log subscriber. Call once, first thing in `main`.
pub fn init_logs() {
    lambda_runtime::tracing::init_default_subscriber();
}
