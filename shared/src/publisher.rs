//! Decisions that acted or need a person, published to EventBridge as "Lifecycle Decision"
//! events, so a team routes them to chat or paging with a rule instead of reading logs.
//!
//! Publishing is a courtesy on top of the ledger, never part of the decision: a failure is
//! logged and counted (`PublishFailures`, which an alarm watches) and the decision stands.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;

use crate::ledger::DecisionRecord;
use crate::outcome::Severity;

/// The events' source and detail type, as rules match them.
pub const SOURCE: &str = "sagemaker-lifecycle";
pub const DETAIL_TYPE: &str = "Lifecycle Decision";

/// `EVENT_BUS_NAME`, or the account's default bus.
pub fn bus_from_env() -> String {
    match std::env::var("EVENT_BUS_NAME") {
        Ok(bus) if !bus.trim().is_empty() => bus.trim().to_string(),
        _ => "default".to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct Publisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

/// An event's detail: the ledger record's summary (the record keeps plan and evidence).
#[derive(Debug, Serialize, PartialEq)]
pub struct Detail<'a> {
    pub function: &'a str,
    pub subject: &'a str,
    /// The endpoint, when the decision is about one.
    pub endpoint: Option<&'a str>,
    pub outcome: &'a str,
    pub severity: &'a str,
    pub reason: &'a str,
    pub package: Option<&'a str>,
    pub request_id: &'a str,
    pub time: String,
    pub dry_run: bool,
    pub changed: bool,
}

impl<'a> Detail<'a> {
    /// The detail to publish, or None for a routine decision (they are only in the ledger).
    pub fn of(record: &'a DecisionRecord) -> Option<Self> {
        let severity = record.outcome.severity();
        // A dry run's "acted" did not happen; what needs a person does, dry run or not.
        if severity == Severity::Routine || (record.dry_run && severity == Severity::Acted) {
            return None;
        }
        Some(Detail {
            function: record.function,
            subject: &record.subject,
            endpoint: record.subject.strip_prefix("endpoint#"),
            outcome: record.outcome.as_str(),
            severity: severity.as_str(),
            reason: &record.reason,
            package: record.package.as_deref(),
            request_id: &record.request_id,
            time: record.at.format(&Rfc3339).unwrap_or_default(),
            dry_run: record.dry_run,
            changed: record.changed,
        })
    }
}

impl Publisher {
    pub fn new(sdk: &SdkConfig, bus: &str) -> Self {
        // A slow bus must not hold the invocation: a few seconds, then it is a counted failure.
        let config = aws_sdk_eventbridge::config::Builder::from(sdk)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(1))
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(3))
                    .build(),
            )
            .build();
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(config),
            bus: bus.to_string(),
        }
    }

    pub fn to_bus(self, bus: &str) -> Self {
        Self {
            bus: bus.to_string(),
            ..self
        }
    }

    /// Publishes the record's summary when it acted or needs a person. Never fails.
    pub async fn publish(&self, record: &DecisionRecord) {
        let Some(detail) = Detail::of(record) else {
            return;
        };
        if let Err(error) = self.put(&detail).await {
            crate::metrics::publish_failure();
            tracing::warn!(subject = %record.subject, outcome = %record.outcome, bus = %self.bus,
                %error, "decision not published to EventBridge (it is in the ledger)");
        }
    }

    async fn put(&self, detail: &Detail<'_>) -> Result<(), String> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(DETAIL_TYPE)
            .detail(serde_json::to_string(detail).map_err(|e| e.to_string())?)
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| crate::error::Error::aws("PutEvents", e).to_string())?;
        // PutEvents answers 200 with per-entry failures.
        match out.failed_entry_count() {
            0 => Ok(()),
            _ => Err(out
                .entries()
                .iter()
                .find_map(|e| e.error_message().map(str::to_string))
                .unwrap_or_else(|| "an entry failed".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::plan::Plan;
    use serde_json::Value;
    use time::macros::datetime;

    fn record(outcome: Outcome) -> DecisionRecord {
        DecisionRecord {
            subject: "endpoint#recs-prod".into(),
            at: datetime!(2026-12-02 03:00 UTC),
            function: "alarm-responder",
            request_id: "req-1".into(),
            trigger: "CloudWatch Alarm State Change".into(),
            package: Some("arn:aws:sagemaker:us-east-1:1:model-package/recs/7".into()),
            outcome,
            reason: "rolled back".into(),
            plan: Plan::default(),
            results: vec![],
            evidence: Value::Null,
            dry_run: false,
            changed: true,
        }
    }

    #[test]
    fn routine_decisions_and_a_dry_runs_acts_are_not_published() {
        assert_eq!(Detail::of(&record(Outcome::Duplicate)), None);
        let dry = |o| DecisionRecord {
            dry_run: true,
            ..record(o)
        };
        assert_eq!(Detail::of(&dry(Outcome::Deploying)), None);
        assert!(Detail::of(&dry(Outcome::RollbackImpossible)).is_some());
    }

    #[test]
    fn the_detail_is_the_records_summary() {
        let r = record(Outcome::RollbackImpossible);
        let d = serde_json::to_value(Detail::of(&r).unwrap()).unwrap();
        assert_eq!(d["function"], "alarm-responder");
        assert_eq!(d["endpoint"], "recs-prod");
        assert_eq!(d["severity"], "needs_person");
        assert_eq!(d["outcome"], r.outcome.as_str());
        assert_eq!(d["time"], "2026-12-02T03:00:00Z");
        assert_eq!(d["request_id"], "req-1");
        assert_eq!(d["package"], r.package.unwrap());
    }

    #[test]
    fn the_example_in_events_has_the_fields_the_suite_publishes() {
        let example: Value =
            serde_json::from_str(include_str!("../../events/lifecycle-decision.json")).unwrap();
        assert_eq!(example["source"], SOURCE);
        assert_eq!(example["detail-type"], DETAIL_TYPE);
        let published =
            serde_json::to_value(Detail::of(&record(Outcome::RollbackImpossible))).unwrap();
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&example["detail"]), keys(&published));
    }
}
