//! Which endpoint an alarm is about, and what it asks for. Pure.
//!
//! In order: the configuration (a target's rollback, KPI and scale-up alarms), then the alarm's
//! tags (`lifecycle:endpoint`, `lifecycle:action`), then the `EndpointName` dimension of its
//! metrics. The first that answers wins; an alarm that maps to nothing is recorded and ignored.

use std::collections::BTreeMap;

use lifecycle::events::AlarmStateChange;
use lifecycle::targets::{AlarmRole, DeploymentTarget, KpiAlarm, Targets};
use serde::Serialize;

/// Tag naming the endpoint an alarm watches.
pub const TAG_ENDPOINT: &str = "lifecycle:endpoint";
/// Tag naming what to do when it fires: `rollback` (default) or `scale-up`.
pub const TAG_ACTION: &str = "lifecycle:action";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Rollback,
    ScaleUp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route<'a> {
    pub target: &'a DeploymentTarget,
    pub response: Response,
    /// For business-KPI alarms: the traffic the window needs before a rollback.
    pub kpi: Option<&'a KpiAlarm>,
    /// How the route was found, for the record.
    pub via: &'static str,
}

/// From the configuration.
pub fn by_config<'a>(targets: &'a Targets, alarm: &str) -> Option<Route<'a>> {
    let (target, role) = targets.by_alarm(alarm)?;
    let (response, kpi) = match role {
        AlarmRole::Rollback => (Response::Rollback, None),
        AlarmRole::Kpi(k) => (Response::Rollback, Some(k)),
        AlarmRole::ScaleUp => (Response::ScaleUp, None),
    };
    Some(Route {
        target,
        response,
        kpi,
        via: "configuration",
    })
}

/// From the alarm's tags. An error says why tags that name an endpoint cannot be followed.
pub fn by_tags<'a>(
    targets: &'a Targets,
    tags: &BTreeMap<String, String>,
) -> Result<Option<Route<'a>>, String> {
    let Some(endpoint) = tags.get(TAG_ENDPOINT) else {
        return Ok(None);
    };
    // A managed guardrail alarm no target declares any more (a bound removed, a variant
    // renamed) is the deployer's leftover: its tags are no instruction (a KPI would lose its
    // sample gate).
    if tags.get("lifecycle:managed").is_some_and(|v| v == "true") {
        return Err(format!(
            "a managed guardrail alarm of {endpoint} that no target's guardrails declare now; delete it"
        ));
    }
    let target = targets.by_endpoint(endpoint).ok_or_else(|| {
        format!("tag {TAG_ENDPOINT}={endpoint} names an endpoint that is not a deployment target")
    })?;
    let response = match tags.get(TAG_ACTION).map(|a| a.trim().to_ascii_lowercase()) {
        None => Response::Rollback,
        Some(a) if a == "rollback" => Response::Rollback,
        Some(a) if a == "scale-up" || a == "scaleup" || a == "scale_up" => Response::ScaleUp,
        Some(a) => {
            return Err(format!("tag {TAG_ACTION}={a} is not rollback or scale-up"));
        }
    };
    Ok(Some(Route {
        target,
        response,
        kpi: None,
        via: "alarm tags",
    }))
}

/// SageMaker endpoint metrics that mean the model is failing or slow: roll back.
const ROLLBACK_METRICS: &[&str] = &[
    "Invocation5XXErrors",
    "InvocationModelErrors",
    "ModelLatency",
];
/// SageMaker endpoint metrics that mean too little capacity: scale up.
const CAPACITY_METRICS: &[&str] = &[
    "NoCapacityInvocationFailures",
    "CPUUtilization",
    "GPUUtilization",
    "GPUMemoryUtilization",
    "MemoryUtilization",
];

/// From the `EndpointName` dimension, for the endpoint metrics whose meaning is clear: errors and
/// latency roll back, capacity scales up. Any other metric (a business KPI needs its samples
/// configured; client 4XX errors are not the model's) is refused with the reason.
pub fn by_dimension<'a>(
    targets: &'a Targets,
    alarm: &AlarmStateChange,
) -> Result<Option<Route<'a>>, String> {
    let Some(target) = alarm
        .endpoint_dimension()
        .and_then(|e| targets.by_endpoint(e))
    else {
        return Ok(None);
    };
    let has = |names: &[&str]| alarm.metrics().any(|m| names.contains(&m.name.as_str()));
    let response = if has(CAPACITY_METRICS) {
        Response::ScaleUp
    } else if has(ROLLBACK_METRICS) {
        Response::Rollback
    } else {
        let names: Vec<&str> = alarm.metrics().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "{} watches {} ({}), which has no default response; list it in the target's rollback_alarms, kpi_alarms or scale_up_alarms, or tag it {TAG_ACTION}",
            alarm.alarm_name,
            target.endpoint,
            names.join(", ")
        ));
    };
    Ok(Some(Route {
        target,
        response,
        kpi: None,
        via: "EndpointName dimension",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::testing::targets;

    fn alarm(metric: &str, endpoint: &str) -> AlarmStateChange {
        AlarmStateChange::parse(&json!({"alarmName": "x", "state": {"value": "ALARM",
            "reason": "Threshold Crossed", "timestamp": "2026-03-01T06:00:00.000+0000"},
            "configuration": {"metrics": [{"id": "m", "metricStat": {"metric": {
                "namespace": "AWS/SageMaker", "name": metric,
                "dimensions": {"EndpointName": endpoint, "VariantName": "AllTraffic"}}}}]}}))
        .unwrap()
    }

    #[test]
    fn configuration_names_the_response() {
        let t = targets();
        assert_eq!(
            by_config(&t, "recs-5xx").unwrap().response,
            Response::Rollback
        );
        assert_eq!(
            by_config(&t, "recs-503").unwrap().response,
            Response::ScaleUp
        );
        assert!(by_config(&t, "recs-ctr").unwrap().kpi.is_some());
        assert!(by_config(&t, "other").is_none());
    }

    #[test]
    fn tags_route_to_targets_only() {
        let t = targets();
        let tags = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let r = by_tags(
            &t,
            &tags(&[(TAG_ENDPOINT, "recs-prod"), (TAG_ACTION, "scale-up")]),
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.response, r.via), (Response::ScaleUp, "alarm tags"));
        assert!(by_tags(&t, &tags(&[])).unwrap().is_none());
        assert!(
            by_tags(&t, &tags(&[(TAG_ENDPOINT, "elsewhere")]))
                .unwrap_err()
                .contains("not a deployment target")
        );
        assert!(
            by_tags(
                &t,
                &tags(&[(TAG_ENDPOINT, "recs-prod"), (TAG_ACTION, "panic")])
            )
            .is_err()
        );
    }

    #[test]
    fn the_dimension_is_the_last_resort_and_only_for_clear_metrics() {
        let t = targets();
        let route = |metric: &str, ep: &str| by_dimension(&t, &alarm(metric, ep));
        let r = route("NoCapacityInvocationFailures", "recs-prod")
            .unwrap()
            .unwrap();
        assert_eq!(r.response, Response::ScaleUp);
        let r = route("ModelLatency", "recs-prod").unwrap().unwrap();
        assert_eq!(r.response, Response::Rollback);
        assert!(route("ModelLatency", "unknown-ep").unwrap().is_none());
        let err = route("Invocation4XXErrors", "recs-prod").unwrap_err();
        assert!(err.contains("no default response"), "{err}");
    }
}
