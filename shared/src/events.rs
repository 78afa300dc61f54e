//! Events the suite reacts to.
//!
//! The envelope is aws_lambda_events' [`EventBridgeEvent`]. The SageMaker details are typed here:
//! aws_lambda_events has none. One normalisation comes first: SageMaker's docs show `time` in
//! epoch milliseconds on some of its events, while `EventBridgeEvent` reads RFC 3339 only.

pub mod alarm;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::Error;

pub const MODEL_PACKAGE_STATE_CHANGE: &str = "SageMaker Model Package State Change";
pub const ENDPOINT_STATE_CHANGE: &str = "SageMaker Endpoint State Change";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";
pub use alarm::AlarmStateChange;
pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";

/// The EventBridge envelope, with the detail left as JSON until the detail type is known.
pub type Envelope = EventBridgeEvent<Value>;

/// Reads the envelope of a raw event, or says clearly why it is not one.
pub fn envelope(event: &Value) -> Result<Envelope, Error> {
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
    let mut event = event.clone();
    if let Some(t) = event.get_mut("time") {
        *t = normalised_time(t)?;
    }
    serde_json::from_value(event)
        .map_err(|e| Error::MalformedEvent(format!("bad EventBridge envelope: {e}")))
}

/// The event's id, or "" when it has none (a hand-made event).
pub fn event_id(env: &Envelope) -> String {
    env.id.clone().unwrap_or_default()
}

/// The detail as a typed value; errors name the detail type and the field.
pub fn detail<T: for<'de> Deserialize<'de>>(env: &Envelope) -> Result<T, Error> {
    serde_json::from_value(env.detail.clone())
        .map_err(|e| Error::MalformedEvent(format!("bad \"{}\" detail: {e}", env.detail_type)))
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

/// `time` as RFC 3339, from RFC 3339 or epoch milliseconds (a number or a string of digits).
fn normalised_time(t: &Value) -> Result<Value, Error> {
    use time::format_description::well_known::Rfc3339;
    let millis = match t {
        Value::Number(n) => n.as_i64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        Value::String(_) | Value::Null => return Ok(t.clone()),
        other => {
            return Err(Error::MalformedEvent(format!(
                "bad EventBridge envelope: time is {}",
                kind(other)
            )));
        }
    };
    let at = millis
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| Error::MalformedEvent(format!("bad EventBridge envelope: time {t}")))?;
    Ok(Value::String(at))
}

/// RFC 3339, also with CloudWatch's `+0000` offsets (no colon).
pub fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    // "2026-03-01T06:00:00.000+0000" -> insert the colon RFC 3339 wants. ASCII only: anything
    // else is not a time, and slicing it could split a character.
    let b = s.as_bytes();
    if s.is_ascii()
        && s.len() > 5
        && matches!(b[s.len() - 5], b'+' | b'-')
        && b[s.len() - 3] != b':'
    {
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
        let env = envelope(event)?;
        if env.detail_type != SCHEDULED_EVENT {
            return Err(Error::MalformedEvent(format!(
                "expected a schedule (\"{SCHEDULED_EVENT}\" or a Scheduler input object), got \"{}\"",
                env.detail_type
            )));
        }
        Ok(Self {
            event_id: event_id(&env),
        })
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
        let at = |time: Value| {
            envelope(&json!({"detail-type": "x", "source": "s", "time": time, "detail": {}}))
                .unwrap()
                .time
                .unwrap()
                .timestamp()
        };
        let rfc = at(json!("2026-03-01T06:00:00Z"));
        assert_eq!(rfc, at(json!(1772344800000_i64)));
        assert_eq!(rfc, at(json!("1772344800000")));
        let c = parse_time("2026-03-01T06:00:00.000+0000").unwrap();
        assert_eq!(c.unix_timestamp(), rfc);
    }

    #[test]
    fn something_that_is_not_an_eventbridge_event_says_so() {
        for (event, needle) in [
            (json!([1, 2]), "an array"),
            (json!({"hello": "world"}), "detail-type"),
            (json!({"detail-type": 7}), "bad EventBridge envelope"),
        ] {
            let err = envelope(&event).unwrap_err().to_string();
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
        let other = json!({"detail-type": "SageMaker Endpoint State Change", "source": "aws.sagemaker", "detail": {}});
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
        let env = envelope(&json!({"detail-type": MODEL_PACKAGE_STATE_CHANGE,
            "source": "aws.sagemaker", "detail": {"ModelPackageArn": "a"}}))
        .unwrap();
        let err = detail::<ModelPackageStateChange>(&env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ModelPackageGroupName"), "{err}");
    }
}
