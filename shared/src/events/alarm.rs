//! Detail of EventBridge's "CloudWatch Alarm State Change".
//!
//! Not aws_lambda_events' alarm types: those model the payload of a Lambda *alarm action*, parse
//! an EventBridge detail "successfully" with an empty alarm name, and fail on metric-math alarms.
//! This covers every shape CloudWatch sends: single metric, metric math (entries with an
//! `expression` and no `metricStat`), anomaly detection, and composite (an `alarmRule`, no
//! metrics). `reasonData` is JSON inside a string; timestamps use `+0000` offsets.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::parse_time;
use crate::error::Error;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmStateChange {
    pub alarm_name: String,
    pub state: AlarmState,
    #[serde(default)]
    pub previous_state: Option<AlarmState>,
    #[serde(default)]
    pub configuration: AlarmConfiguration,
    /// Present when the alarm has tag propagation enabled.
    #[serde(default, deserialize_with = "tags")]
    pub alarm_tags: BTreeMap<String, String>,
    /// Present when a mute rule silenced the alarm's actions; its shape is kept as sent.
    #[serde(default)]
    pub mute_detail: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmState {
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub value: String,
    #[serde(default)]
    pub reason: String,
    /// JSON, as a string. See [`AlarmState::reason_data`].
    #[serde(default, rename = "reasonData")]
    pub reason_data_raw: Option<String>,
    #[serde(with = "plus0000")]
    pub timestamp: OffsetDateTime,
    /// Composite alarms: the alarm whose state suppressed this one's actions.
    #[serde(default)]
    pub actions_suppressed_by: Option<String>,
    #[serde(default)]
    pub actions_suppressed_reason: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmConfiguration {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metrics: Vec<AlarmMetric>,
    /// Composite alarms only.
    #[serde(default)]
    pub alarm_rule: Option<String>,
}

/// One entry of the alarm's metric query: a metric (`metricStat`) or an `expression`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlarmMetric {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub metric_stat: Option<MetricStat>,
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub return_data: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricStat {
    pub metric: Metric,
    #[serde(default)]
    pub period: Option<i64>,
    #[serde(default)]
    pub stat: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Metric {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
}

/// Which of CloudWatch's alarm shapes an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    SingleMetric,
    MetricMath,
    AnomalyDetection,
    Composite,
}

impl AlarmStateChange {
    /// Parses and checks the fields the responder depends on.
    pub fn parse(detail: &Value) -> Result<Self, Error> {
        let alarm: Self = serde_json::from_value(detail.clone()).map_err(|e| {
            Error::MalformedEvent(format!("bad \"CloudWatch Alarm State Change\" detail: {e}"))
        })?;
        if alarm.alarm_name.trim().is_empty() {
            return Err(Error::MalformedEvent(
                "\"CloudWatch Alarm State Change\" detail has an empty alarmName".into(),
            ));
        }
        for s in std::iter::once(&alarm.state).chain(&alarm.previous_state) {
            if !matches!(s.value.as_str(), "ALARM" | "OK" | "INSUFFICIENT_DATA") {
                return Err(Error::MalformedEvent(format!(
                    "alarm state {:?} is not ALARM, OK or INSUFFICIENT_DATA",
                    s.value
                )));
            }
        }
        Ok(alarm)
    }

    /// A transition into ALARM (not an ALARM that stays ALARM, for example after an edit).
    pub fn entered_alarm(&self) -> bool {
        self.state.value == "ALARM"
            && self
                .previous_state
                .as_ref()
                .is_none_or(|p| p.value != "ALARM")
    }

    /// Why the alarm's actions are silenced, if they are (a mute rule, or a composite suppressor).
    pub fn silenced(&self) -> Option<String> {
        if let Some(m) = &self.mute_detail
            && !m.is_null()
        {
            return Some(format!("muted: {m}"));
        }
        self.state
            .actions_suppressed_by
            .as_ref()
            .map(|by| format!("actions suppressed by {by}"))
    }

    pub fn kind(&self) -> AlarmKind {
        let c = &self.configuration;
        if c.alarm_rule.is_some() {
            AlarmKind::Composite
        } else if c.metrics.iter().any(|m| {
            m.expression
                .as_deref()
                .is_some_and(|e| e.contains("ANOMALY_DETECTION_BAND"))
        }) {
            AlarmKind::AnomalyDetection
        } else if c.metrics.iter().any(|m| m.metric_stat.is_none()) {
            AlarmKind::MetricMath
        } else {
            AlarmKind::SingleMetric
        }
    }

    /// Every metric the alarm reads (none for composite alarms).
    pub fn metrics(&self) -> impl Iterator<Item = &Metric> {
        self.configuration
            .metrics
            .iter()
            .filter_map(|m| m.metric_stat.as_ref().map(|s| &s.metric))
    }

    /// The `EndpointName` dimension of the alarm's metrics, when they name one endpoint.
    pub fn endpoint_dimension(&self) -> Option<&str> {
        let mut names = self
            .metrics()
            .filter_map(|m| m.dimensions.get("EndpointName").map(String::as_str));
        let first = names.next()?;
        names.all(|n| n == first).then_some(first)
    }
}

impl AlarmState {
    /// `reasonData` parsed; kept as a string when it is not JSON.
    pub fn reason_data(&self) -> Value {
        match &self.reason_data_raw {
            None => Value::Null,
            Some(raw) => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone())),
        }
    }
}

/// Tag values as strings, whatever JSON type they arrive as.
fn tags<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

mod plus0000 {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        parse_time(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format(&Rfc3339).map_err(serde::ser::Error::custom)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(value: &str) -> Value {
        json!({"value": value, "reason": "Threshold Crossed", "timestamp": "2026-03-01T06:00:00.000+0000",
               "reasonData": "{\"version\":\"1.0\",\"queryDate\":\"2026-03-01T06:00:00.000+0000\",\"threshold\":7.5}"})
    }

    #[test]
    fn a_single_metric_alarm_parses_with_its_endpoint_dimension() {
        let a = AlarmStateChange::parse(&json!({
            "alarmName": "recs-5xx", "state": state("ALARM"), "previousState": state("OK"),
            "configuration": {"metrics": [{"id": "m1", "returnData": true, "metricStat": {
                "metric": {"namespace": "AWS/SageMaker", "name": "Invocation5XXErrors",
                           "dimensions": {"EndpointName": "recs-prod", "VariantName": "AllTraffic"}},
                "period": 60, "stat": "Sum"}}]}
        }))
        .unwrap();
        assert_eq!(a.kind(), AlarmKind::SingleMetric);
        assert!(a.entered_alarm());
        assert_eq!(a.endpoint_dimension(), Some("recs-prod"));
        assert_eq!(a.state.reason_data()["threshold"], 7.5);
        assert_eq!(a.state.timestamp.unix_timestamp(), 1772344800);
    }

    #[test]
    fn metric_math_anomaly_and_composite_alarms_are_told_apart() {
        let stat = |name: &str| {
            json!({"id": name, "returnData": false, "metricStat": {
            "metric": {"namespace": "Recs", "name": name, "dimensions": {"EndpointName": "recs-prod"}},
            "period": 300, "stat": "Sum"}})
        };
        let math = json!({"alarmName": "ctr", "state": state("ALARM"), "configuration": {"metrics": [
            stat("clicks"), stat("impressions"),
            {"id": "ctr", "expression": "100*clicks/impressions", "label": "CTR", "returnData": true}]}});
        let a = AlarmStateChange::parse(&math).unwrap();
        assert_eq!(a.kind(), AlarmKind::MetricMath);
        assert_eq!(a.endpoint_dimension(), Some("recs-prod"));

        let anomaly = json!({"alarmName": "lat", "state": state("ALARM"), "configuration": {"metrics": [
            stat("ModelLatency"), {"id": "ad1", "expression": "ANOMALY_DETECTION_BAND(m1, 2)"}]}});
        assert_eq!(
            AlarmStateChange::parse(&anomaly).unwrap().kind(),
            AlarmKind::AnomalyDetection
        );

        let composite = json!({"alarmName": "any", "state": state("ALARM"), "configuration": {
            "alarmRule": "ALARM(a) OR ALARM(b)"}});
        let c = AlarmStateChange::parse(&composite).unwrap();
        assert_eq!(c.kind(), AlarmKind::Composite);
        assert_eq!(c.endpoint_dimension(), None);
    }

    #[test]
    fn only_a_transition_into_alarm_counts_and_mutes_are_seen() {
        let ok = json!({"alarmName": "a", "state": state("OK"), "previousState": state("ALARM")});
        assert!(!AlarmStateChange::parse(&ok).unwrap().entered_alarm());
        let again =
            json!({"alarmName": "a", "state": state("ALARM"), "previousState": state("ALARM")});
        assert!(!AlarmStateChange::parse(&again).unwrap().entered_alarm());
        let muted = json!({"alarmName": "a", "state": state("ALARM"),
            "muteDetail": {"mutedBy": "arn:aws:cloudwatch:us-east-1:1:alarm-mute-rule:deploys"}});
        let m = AlarmStateChange::parse(&muted).unwrap();
        assert!(m.silenced().unwrap().contains("alarm-mute-rule"));
        let tagged = json!({"alarmName": "a", "state": state("ALARM"),
            "alarmTags": {"lifecycle:endpoint": "recs-prod", "n": 3}});
        let t = AlarmStateChange::parse(&tagged).unwrap();
        assert_eq!(t.alarm_tags["n"], "3");
    }

    #[test]
    fn the_lambda_action_payload_and_bad_states_are_refused() {
        // aws_lambda_events' shape: alarmData, no alarmName at the top.
        let action = json!({"alarmData": {"alarmName": "a", "state": {"value": "ALARM"}}});
        let err = AlarmStateChange::parse(&action).unwrap_err().to_string();
        assert!(err.contains("alarmName"), "{err}");
        let empty = json!({"alarmName": " ", "state": state("ALARM")});
        assert!(
            AlarmStateChange::parse(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty alarmName")
        );
        let weird = json!({"alarmName": "a", "state": state("FIRE")});
        assert!(AlarmStateChange::parse(&weird).is_err());
    }
}
