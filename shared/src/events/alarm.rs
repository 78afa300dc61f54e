//! A CloudWatch alarm's change of state, from either of the two ways CloudWatch delivers it: the
//! detail of EventBridge's "CloudWatch Alarm State Change", or the payload of a Lambda alarm action
//! (the alarm invokes the function directly).
//!
//! Both are read with aws_lambda_events' alarm types ([`CloudWatchAlarmData`], [`CloudWatchAlarm`]).
//! Written here, because those types lack them: the configuration's metrics (the crate requires a
//! `metricStat` on every entry, so metric-math alarms, whose entries may be only an `expression`,
//! would not parse), the EventBridge detail's `alarmTags` and `muteDetail`, and `time` types
//! (the suite uses the `time` crate).

use std::collections::BTreeMap;

use aws_lambda_events::event::cloudwatch_alarms::{
    CloudWatchAlarm, CloudWatchAlarmData, CloudWatchAlarmState, CloudWatchAlarmStateValue,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::Error;

/// The wire shape: aws_lambda_events' alarm data, the configuration and reason data left as JSON.
type WireAlarm = CloudWatchAlarmData<Value, Value>;

#[derive(Debug, Clone, Serialize)]
pub struct AlarmStateChange {
    pub alarm_name: String,
    /// The alarm's ARN when the event carries it (EventBridge `resources`, or `alarmArn`).
    pub alarm_arn: Option<String>,
    pub state: AlarmState,
    pub previous_state: Option<AlarmState>,
    pub configuration: AlarmConfiguration,
    /// Present when the alarm has tag propagation enabled.
    pub alarm_tags: BTreeMap<String, String>,
    /// Present when a mute rule silenced the alarm's actions; its shape is kept as sent.
    pub mute_detail: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlarmState {
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub value: String,
    pub reason: String,
    /// JSON, as a string. See [`AlarmState::reason_data`].
    pub reason_data_raw: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// Composite alarms: the alarm whose state suppressed this one's actions.
    pub actions_suppressed_by: Option<String>,
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

/// What the EventBridge detail has beyond aws_lambda_events' alarm data.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Extras {
    #[serde(default, deserialize_with = "tags")]
    alarm_tags: BTreeMap<String, String>,
    #[serde(default)]
    mute_detail: Option<Value>,
}

fn malformed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::MalformedEvent(format!("bad {what}: {e}"))
}

const DETAIL: &str = "\"CloudWatch Alarm State Change\" detail";
const ACTION: &str = "CloudWatch alarm action payload";

impl AlarmStateChange {
    /// From the detail of an EventBridge "CloudWatch Alarm State Change"; `alarm_arn` from the
    /// envelope's resources.
    pub fn parse(detail: &Value) -> Result<Self, Error> {
        let wire: WireAlarm = serde_json::from_value(normalised(detail, DETAIL)?)
            .map_err(|e| malformed(DETAIL, e))?;
        let extras: Extras =
            serde_json::from_value(detail.clone()).map_err(|e| malformed(DETAIL, e))?;
        Self::from_wire(wire, extras, None, DETAIL)
    }

    /// From the payload CloudWatch sends when an alarm's action invokes a Lambda function.
    pub fn from_alarm_action(payload: &Value) -> Result<Self, Error> {
        let mut payload = payload.clone();
        if let Some(data) = payload.get_mut("alarmData") {
            *data = normalised(data, ACTION)?;
        }
        let wire: CloudWatchAlarm<Value, Value> =
            serde_json::from_value(payload).map_err(|e| malformed(ACTION, e))?;
        Self::from_wire(wire.alarm_data, Extras::default(), wire.alarm_arn, ACTION)
    }

    fn from_wire(
        wire: WireAlarm,
        extras: Extras,
        alarm_arn: Option<String>,
        what: &str,
    ) -> Result<Self, Error> {
        if wire.alarm_name.trim().is_empty() {
            return Err(Error::MalformedEvent(format!(
                "{what} has an empty alarmName"
            )));
        }
        let state = wire
            .state
            .ok_or_else(|| Error::MalformedEvent(format!("{what} has no state")))?;
        let configuration =
            serde_json::from_value(wire.configuration).map_err(|e| malformed(what, e))?;
        Ok(Self {
            alarm_name: wire.alarm_name,
            alarm_arn,
            state: AlarmState::from_wire(state)?,
            previous_state: wire.previous_state.map(AlarmState::from_wire).transpose()?,
            configuration,
            alarm_tags: extras.alarm_tags,
            mute_detail: extras.mute_detail,
        })
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
    fn from_wire(s: CloudWatchAlarmState<Value>) -> Result<Self, Error> {
        let value = match s.value {
            CloudWatchAlarmStateValue::Alarm => "ALARM",
            CloudWatchAlarmStateValue::Ok => "OK",
            CloudWatchAlarmStateValue::InsufficientData => "INSUFFICIENT_DATA",
            other => {
                return Err(Error::MalformedEvent(format!(
                    "alarm state {other:?} is not ALARM, OK or INSUFFICIENT_DATA"
                )));
            }
        };
        let nanos = i128::from(s.timestamp.timestamp()) * 1_000_000_000
            + i128::from(s.timestamp.timestamp_subsec_nanos());
        let timestamp = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map_err(|e| Error::MalformedEvent(format!("alarm state timestamp: {e}")))?;
        Ok(Self {
            value: value.to_string(),
            reason: s.reason,
            reason_data_raw: s.reason_data.map(|v| match v {
                Value::String(raw) => raw,
                other => other.to_string(),
            }),
            timestamp,
            actions_suppressed_by: s.actions_suppressed_by,
            actions_suppressed_reason: s.actions_suppressed_reason,
        })
    }

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

/// The alarm data as aws_lambda_events reads it: an empty configuration and an empty state reason
/// where the event has none (CloudWatch always sends both; hand-made events may not). A state
/// without a value is refused here: the crate would read it as OK.
fn normalised(data: &Value, what: &str) -> Result<Value, Error> {
    let mut data = data.clone();
    let Some(o) = data.as_object_mut() else {
        return Ok(data); // the crate says what is wrong with it
    };
    o.entry("configuration")
        .or_insert_with(|| Value::Object(Default::default()));
    for key in ["state", "previousState"] {
        let Some(state) = o.get_mut(key).and_then(Value::as_object_mut) else {
            continue;
        };
        if !state.get("value").is_some_and(Value::is_string) {
            return Err(Error::MalformedEvent(format!("{what}: {key} has no value")));
        }
        state
            .entry("reason")
            .or_insert_with(|| Value::String(String::new()));
    }
    Ok(data)
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
    fn the_lambda_action_payload_parses_and_bad_states_are_refused() {
        let action = json!({"source": "aws.cloudwatch",
            "alarmArn": "arn:aws:cloudwatch:us-east-1:1:alarm:a", "accountId": "1",
            "time": "2026-03-01T06:00:00.000+0000", "region": "us-east-1",
            "alarmData": {"alarmName": "a", "state": state("ALARM"), "previousState": state("OK")}});
        let a = AlarmStateChange::from_alarm_action(&action).unwrap();
        assert!(a.entered_alarm());
        assert_eq!(
            a.alarm_arn.as_deref(),
            Some("arn:aws:cloudwatch:us-east-1:1:alarm:a")
        );
        assert_eq!(a.state.timestamp.unix_timestamp(), 1772344800);
        // An alarm-action payload is not an EventBridge detail.
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

    #[test]
    fn a_state_without_a_value_is_refused_and_one_without_a_reason_is_not() {
        let no_value = json!({"alarmName": "a", "state": {"reason": "r",
            "timestamp": "2026-03-01T06:00:00.000+0000"}});
        let err = AlarmStateChange::parse(&no_value).unwrap_err().to_string();
        assert!(err.contains("state has no value"), "{err}");
        let prev = json!({"alarmName": "a", "state": state("ALARM"),
            "previousState": {"timestamp": "2026-03-01T05:00:00.000+0000"}});
        let err = AlarmStateChange::parse(&prev).unwrap_err().to_string();
        assert!(err.contains("previousState has no value"), "{err}");
        let no_reason = json!({"alarmName": "a", "state": {"value": "ALARM",
            "timestamp": "2026-03-01T06:00:00.000+0000"}});
        assert_eq!(
            AlarmStateChange::parse(&no_reason).unwrap().state.reason,
            ""
        );
    }
}
