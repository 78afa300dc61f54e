//! Metrics as CloudWatch Embedded Metric Format lines on stdout: no API calls, no extra latency.
//! Written by `metrics_cloudwatch_embedded` behind the `metrics` facade.

use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

use crate::outcome::{Outcome, Severity};
use crate::plan::ActionKind;

/// The CloudWatch namespace every function publishes into.
pub const NAMESPACE: &str = "SageMakerLifecycle";

static COLLECTOR: OnceLock<Option<&'static Collector>> = OnceLock::new();

/// Installs the EMF recorder with a `Function` dimension. Safe to call more than once.
pub fn init(function: &'static str) {
    COLLECTOR.get_or_init(|| {
        metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(NAMESPACE)
            .with_dimension("Function", function)
            .init()
            .ok()
    });
}

/// Writes what was recorded during this invocation as one EMF document on stdout.
pub fn flush(request_id: &str) {
    if let Some(Some(collector)) = COLLECTOR.get() {
        let _ = collector
            .set_property("RequestId", request_id.to_string())
            .flush(std::io::stdout());
    }
}

/// Counts one decision by its outcome (a dry run's in `DryRunDecisions`, so alarms on
/// `Decisions` see only what happened); those that need a person also in `NeedsPerson`, the
/// metric one alarm can watch for every function, dry run or not.
pub fn decision(outcome: Outcome, dry_run: bool) {
    let name = if dry_run {
        "DryRunDecisions"
    } else {
        "Decisions"
    };
    metrics::counter!(name, "Outcome" => outcome.as_str()).increment(1);
    if outcome.severity() == Severity::NeedsPerson {
        metrics::counter!("NeedsPerson").increment(1);
    }
}

/// Counts one decision that could not be published to EventBridge.
pub fn publish_failure() {
    metrics::counter!("PublishFailures").increment(1);
}

/// Counts one mutation made in AWS, by action.
pub fn mutation(action: ActionKind) {
    metrics::counter!("Mutations", "Action" => action.as_str()).increment(1);
}
