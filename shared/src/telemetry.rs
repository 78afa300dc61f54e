//! Structured logs. lambda_runtime's subscriber honours Lambda's log settings
//! (`AWS_LAMBDA_LOG_FORMAT=JSON`, `AWS_LAMBDA_LOG_LEVEL`).

/// Installs the log subscriber. Call once, first thing in `main`.
pub fn init_logs() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The invocation's request id; a local one when run outside Lambda (tests, the demo's driver
/// always sets one). It keys ledger records and leases.
pub fn request_id(ctx: &lambda_runtime::Context) -> String {
    match ctx.request_id.as_str() {
        "" => format!("local-{}", crate::ledger::now_ms()),
        id => id.to_string(),
    }
}
