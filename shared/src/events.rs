//! EventBridge events the suite reacts to, typed by hand.
//!
//! aws_lambda_events has no SageMaker detail types, and its envelope parses `time` as RFC 3339
//! only, while SageMaker's endpoint events carry it as epoch milliseconds. So the envelope and the
//! details are written here, lenient where AWS varies and strict where the suite depends on a field.

pub mod alarm;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::Error;

pub const MODEL_PACKAGE_STATE_CHANGE: &str = "SageMaker Model Package State Change";
pub const ENDPOINT_STATE_CHANGE: &str = "SageMaker Endpoint State Change";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
pub use alarm::AlarmStateChange;
pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";

/// The EventBridge envelope, with the detail left as JSON until the detail type is known.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    #[serde(default)]
    pub source: String,
    #[serde(default, deserialize_with = "event_time")]
    pub time: Option<OffsetDateTime>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub detail: Value,
}

impl Envelope {
    /// Reads the envelope of a raw event, or says clearly why it is not one.
    pub fn parse(event: &Value) -> Result<Self, Error> {
        if !event.is_object() {
            return Err(Error::MalformedEvent(format!(
                "expected a JSON object, got {}",
                kind(event)
            )));
        }
        if event.get("detail-type").is_none() {
            return Err(Error::MalformedEvent(
                "no \"detail-type\": not an EventBridge event".into(),
            ));
        }
        serde_json::from_value(event.clone())
            .map_err(|e| Error::MalformedEvent(format!("bad EventBridge envelope: {e}")))
    }

    /// The detail as a typed value; errors name the detail type and the field.
    pub fn detail<T: for<'de> Deserialize<'de>>(&self) -> Result<T, Error> {
        serde_json::from_value(self.detail.clone())
            .map_err(|e| Error::MalformedEvent(format!("bad \"{}\" detail: {e}", self.detail_type)))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `time` as RFC 3339 (most events) or epoch milliseconds (SageMaker endpoint events).
fn event_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => parse_time(&s).map(Some).map_err(serde::de::Error::custom),
        Value::Number(n) => {
            let ms = n
                .as_i64()
                .ok_or_else(|| serde::de::Error::custom("time is not an integer"))?;
            OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                .map(Some)
                .map_err(serde::de::Error::custom)
        }
        Value::Null => Ok(None),
        other => Err(serde::de::Error::custom(format!(
            "time is {}",
            kind(&other)
        ))),
    }
}

/// RFC 3339, also with CloudWatch's `+0000` offsets (no colon).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    // "2026-03-01T06:00:00.000+0000" -> insert the colon RFC 3339 wants.
    let b = s.as_bytes();
    if s.len() > 5 && matches!(b[s.len() - 5], b'+' | b'-') && b[s.len() - 3] != b':' {
        let fixed = format!("{}:{}", &s[..s.len() - 2], &s[s.len() - 2..]);
        if let Ok(t) = OffsetDateTime::parse(&fixed, &Rfc3339) {
            return Ok(t);
        }
    }
    Err(format!("{s:?} is not an RFC 3339 time"))
}

/// A scheduled run: EventBridge's "Scheduled Event" envelope, or the configured input that
/// EventBridge Scheduler (SAM's ScheduleV2) delivers instead of an envelope: any JSON object
/// without a `detail-type`, such as `{"schedule": "daily"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The envelope's id, or `scheduler`.
    pub event_id: String,
}

impl Schedule {
    pub fn parse(event: &Value) -> Result<Self, Error> {
        if event.is_object() && event.get("detail-type").is_none() {
            return Ok(Self {
                event_id: "scheduler".into(),
            });
        }
        let env = Envelope::parse(event)?;
        if env.detail_type != SCHEDULED_EVENT {
            return Err(Error::MalformedEvent(format!(
                "expected a schedule (\"{SCHEDULED_EVENT}\" or a Scheduler input object), got \"{}\"",
                env.detail_type
            )));
        }
        Ok(Self { event_id: env.id })
    }
}

/// Detail of "SageMaker Model Package State Change". Carries no previous status and no
/// metadata: re-read the package with DescribeModelPackage before acting.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModelPackageStateChange {
    pub model_package_arn: String,
    pub model_package_group_name: String,
    #[serde(default)]
    pub model_package_version: Option<i64>,
    #[serde(default)]
    pub model_approval_status: Option<String>,
}

/// Detail of "SageMaker Endpoint State Change".
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointStateChange {
    pub endpoint_name: String,
    /// `IN_SERVICE`, `UPDATING`, ... in events; normalise with [`crate::endpoints::EndpointStatus::parse`].
    #[serde(default)]
    pub endpoint_status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_parse_as_rfc3339_epoch_millis_and_plus_0000() {
        let a =
            Envelope::parse(&json!({"detail-type": "x", "time": "2026-03-01T06:00:00Z"})).unwrap();
        let b = Envelope::parse(&json!({"detail-type": "x", "time": 1772344800000_i64})).unwrap();
        assert_eq!(a.time, b.time);
        let c = parse_time("2026-03-01T06:00:00.000+0000").unwrap();
        assert_eq!(Some(c), a.time);
    }

    #[test]
    fn something_that_is_not_an_eventbridge_event_says_so() {
        for (event, needle) in [
            (json!([1, 2]), "an array"),
            (json!({"hello": "world"}), "detail-type"),
            (json!({"detail-type": 7}), "bad EventBridge envelope"),
        ] {
            let err = Envelope::parse(&event).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn both_schedule_shapes_are_accepted_and_others_refused() {
        let envelope = json!({"detail-type": "Scheduled Event", "id": "abc", "source": "aws.events",
            "time": "2026-03-01T06:00:00Z", "detail": {}});
        assert_eq!(Schedule::parse(&envelope).unwrap().event_id, "abc");
        assert_eq!(
            Schedule::parse(&json!({"schedule": "daily"}))
                .unwrap()
                .event_id,
            "scheduler"
        );
        let other = json!({"detail-type": "SageMaker Endpoint State Change", "detail": {}});
        assert!(
            Schedule::parse(&other)
                .unwrap_err()
                .to_string()
                .contains("expected a schedule")
        );
        assert!(Schedule::parse(&json!("daily")).is_err());
    }

    #[test]
    fn a_detail_missing_a_field_names_the_field() {
        let env = Envelope::parse(
            &json!({"detail-type": MODEL_PACKAGE_STATE_CHANGE, "detail": {"ModelPackageArn": "a"}}),
        )
        .unwrap();
        let err = env
            .detail::<ModelPackageStateChange>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("ModelPackageGroupName"), "{err}");
    }
}
