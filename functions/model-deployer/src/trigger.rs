//! What woke the deployer up. Parsing is strict: a malformed event is refused before any AWS call.

use lifecycle::Error;
use lifecycle::events::{
    self, ENDPOINT_STATE_CHANGE, EndpointStateChange, MODEL_PACKAGE_STATE_CHANGE,
    ModelPackageStateChange, SCHEDULED_EVENT,
};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// A package was approved, rejected or otherwise changed in the registry.
    PackageChanged {
        event_id: String,
        package_arn: String,
        group: String,
        status: Option<String>,
    },
    /// An endpoint changed state (for example, an update finished).
    EndpointChanged {
        event_id: String,
        endpoint: String,
        status: Option<String>,
    },
    /// The periodic reconcile that heals lost events.
    Tick { event_id: String },
}

impl Trigger {
    pub fn parse(event: &Value) -> Result<Self, Error> {
        // EventBridge Scheduler delivers the configured input, not an envelope.
        if event.get("schedule").is_some() && event.get("detail-type").is_none() {
            return Ok(Trigger::Tick {
                event_id: "scheduler".into(),
            });
        }
        let env = events::envelope(event)?;
        match env.detail_type.as_str() {
            MODEL_PACKAGE_STATE_CHANGE => {
                let d: ModelPackageStateChange = events::detail(&env)?;
                if !d.model_package_arn.starts_with("arn:") {
                    return Err(Error::MalformedEvent(format!(
                        "ModelPackageArn {:?} is not an ARN",
                        d.model_package_arn
                    )));
                }
                Ok(Trigger::PackageChanged {
                    event_id: events::event_id(&env),
                    package_arn: d.model_package_arn,
                    group: d.model_package_group_name,
                    status: d.model_approval_status,
                })
            }
            ENDPOINT_STATE_CHANGE => {
                let d: EndpointStateChange = events::detail(&env)?;
                Ok(Trigger::EndpointChanged {
                    event_id: events::event_id(&env),
                    endpoint: d.endpoint_name,
                    status: d.endpoint_status,
                })
            }
            SCHEDULED_EVENT => Ok(Trigger::Tick {
                event_id: events::event_id(&env),
            }),
            other => Err(Error::MalformedEvent(format!(
                "unsupported detail-type {other:?}; expected \"{MODEL_PACKAGE_STATE_CHANGE}\", \"{ENDPOINT_STATE_CHANGE}\" or \"{SCHEDULED_EVENT}\""
            ))),
        }
    }

    /// A short description for the ledger.
    pub fn describe(&self) -> String {
        match self {
            Trigger::PackageChanged {
                event_id,
                package_arn,
                status,
                ..
            } => {
                format!(
                    "model package state change {event_id}: {package_arn} is {}",
                    status.as_deref().unwrap_or("?")
                )
            }
            Trigger::EndpointChanged {
                event_id,
                endpoint,
                status,
            } => {
                format!(
                    "endpoint state change {event_id}: {endpoint} is {}",
                    status.as_deref().unwrap_or("?")
                )
            }
            Trigger::Tick { event_id } => format!("tick {event_id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_approval_event_names_package_and_group() {
        let t = Trigger::parse(&json!({
            "id": "e1", "detail-type": MODEL_PACKAGE_STATE_CHANGE, "source": "aws.sagemaker",
            "time": "2026-03-01T06:00:00Z",
            "detail": {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:1:model-package/recs/3",
                       "ModelPackageGroupName": "recs", "ModelPackageVersion": 3, "ModelApprovalStatus": "Approved"}
        }))
        .unwrap();
        assert!(matches!(t, Trigger::PackageChanged { ref group, .. } if group == "recs"));
    }

    #[test]
    fn endpoint_events_with_epoch_millis_parse() {
        let t = Trigger::parse(&json!({
            "id": "e2", "detail-type": ENDPOINT_STATE_CHANGE, "source": "aws.sagemaker", "time": 1772344800000_i64,
            "detail": {"EndpointName": "recs-prod", "EndpointStatus": "IN_SERVICE"}
        }))
        .unwrap();
        assert_eq!(
            t,
            Trigger::EndpointChanged {
                event_id: "e2".into(),
                endpoint: "recs-prod".into(),
                status: Some("IN_SERVICE".into())
            }
        );
    }

    #[test]
    fn both_schedule_shapes_are_ticks() {
        assert!(matches!(
            Trigger::parse(
                &json!({"detail-type": "Scheduled Event", "source": "aws.events", "id": "s", "detail": {}})
            ),
            Ok(Trigger::Tick { .. })
        ));
        assert!(matches!(
            Trigger::parse(&json!({"schedule": "reconcile"})),
            Ok(Trigger::Tick { .. })
        ));
    }

    #[test]
    fn malformed_and_foreign_events_are_refused_with_a_reason() {
        for (event, needle) in [
            (
                json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}),
                "unsupported detail-type",
            ),
            (
                json!({"detail-type": MODEL_PACKAGE_STATE_CHANGE, "source": "aws.sagemaker", "detail": {"ModelPackageGroupName": "recs"}}),
                "ModelPackageArn",
            ),
            (
                json!({"detail-type": MODEL_PACKAGE_STATE_CHANGE, "source": "aws.sagemaker", "detail": {"ModelPackageArn": "nope", "ModelPackageGroupName": "g"}}),
                "not an ARN",
            ),
            (json!("approve everything"), "a string"),
        ] {
            let err = Trigger::parse(&event).unwrap_err();
            assert!(matches!(err, Error::MalformedEvent(_)));
            assert!(err.to_string().contains(needle), "{err}");
        }
    }
}
