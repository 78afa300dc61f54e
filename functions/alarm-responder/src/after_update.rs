//! After an update. An alarm that fires while SageMaker updates the endpoint is only noted (the
//! guardrails own the endpoint then), and CloudWatch sends no second event while it stays in
//! ALARM. So when the endpoint is back in service (its state-change event), a rollback or KPI alarm
//! noted during that update, still in ALARM, and fired after the update began, judges the version
//! that went live: it is handled as if it fired now, through the same route, decision and pipeline.

use aws_sdk_cloudwatch::types::StateValue;
use lifecycle::decision::{Decision, Subject};
use lifecycle::error::{Error, Result};
use lifecycle::events::ENDPOINT_STATE_CHANGE;
use lifecycle::events::alarm::{AlarmConfiguration, AlarmState, AlarmStateChange};
use lifecycle::executor::Executor;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::{Pipeline, Summary};
use time::OffsetDateTime;

use crate::route::{self, Response};
use crate::{FUNCTION, Responder, respond_to};

pub async fn judge(responder: &Responder, request_id: &str, endpoint: &str) -> Summary {
    let trigger = format!("{ENDPOINT_STATE_CHANGE} {endpoint} -> InService");
    let pipeline = Pipeline {
        function: FUNCTION,
        request_id,
        trigger: trigger.clone(),
        executor: Executor {
            clients: &responder.clients,
            ledger: &responder.ledger,
            execution_role_arn: &responder.config.execution_role_arn,
            dry_run: responder.config.dry_run,
        },
    };
    let subject = Subject::Endpoint(endpoint.to_string());
    let recorded = match still_firing(responder, endpoint).await {
        Ok(Ok(alarm)) => {
            let trigger = format!(
                "{trigger}: {} noted during the update, still in ALARM",
                alarm.alarm_name
            );
            return respond_to(responder, request_id, &alarm, trigger, true).await;
        }
        Ok(Err(reason)) => {
            let decision = Decision::new(Outcome::Ignored, reason);
            pipeline.run(subject.clone(), decision).await
        }
        Err(e) => pipeline.fail(subject.clone(), None, e).await,
    };
    recorded.unwrap_or_else(|e| Summary::unrecorded(subject, responder.config.dry_run, e))
}

/// The alarm to judge the live version by, or why there is none.
async fn still_firing(
    responder: &Responder,
    endpoint: &str,
) -> Result<Result<AlarmStateChange, String>> {
    let targets = &responder.config.targets;
    if targets.by_endpoint(endpoint).is_none() {
        return Ok(Err(format!(
            "{endpoint} is not an endpoint of any deployment target"
        )));
    }
    let Some(d) = responder.ledger.deployment(endpoint).await? else {
        return Ok(Err(format!("no deployment of {endpoint} is recorded")));
    };
    // Only an update that put its own version live is judged here: a rollback's own update is the
    // recovery check's (the deployer's), and an update SageMaker undid or that failed is the
    // deployer's verdict, never a reason to reject what serves now.
    let live = lifecycle::endpoints::describe(&responder.clients.sagemaker, endpoint).await?;
    let went_live = live.as_ref().is_some_and(|ep| ep.config_name == d.config);
    let judged = matches!(
        d.status,
        lifecycle::deployment::DeploymentStatus::InProgress
            | lifecycle::deployment::DeploymentStatus::Succeeded
    );
    if !went_live || !judged || d.cause_alarm.is_some() {
        return Ok(Err(format!(
            "{endpoint} is not serving a new version from its last update (version {}, {:?}{}): nothing to judge",
            d.package_version,
            d.status,
            if d.cause_alarm.is_some() {
                ", a rollback"
            } else {
                ""
            }
        )));
    }
    let noted: Vec<String> = d
        .alarms_seen
        .iter()
        .filter(|a| route::by_config(targets, a).is_some_and(|r| r.response == Response::Rollback))
        .cloned()
        .collect();
    if noted.is_empty() {
        return Ok(Err(format!(
            "no rollback or KPI alarm was noted during the update of {endpoint} to version {}",
            d.package_version
        )));
    }
    let began = OffsetDateTime::from_unix_timestamp_nanos(i128::from(d.requested_at) * 1_000_000)
        .map_err(|e| Error::InvalidData(format!("deployment time: {e}")))?;
    let firing = firing_since(&responder.clients.cloudwatch, &noted, began).await?;
    Ok(firing.ok_or_else(|| {
        format!(
            "the alarms noted during the update of {endpoint} ({}) are no longer in ALARM",
            noted.join(", ")
        )
    }))
}

/// The first of these alarms in ALARM whose state changed at or after `began`, as an alarm event.
async fn firing_since(
    cw: &aws_sdk_cloudwatch::Client,
    noted: &[String],
    began: OffsetDateTime,
) -> Result<Option<AlarmStateChange>> {
    let out = cw
        .describe_alarms()
        .set_alarm_names(Some(noted.to_vec()))
        .alarm_types(aws_sdk_cloudwatch::types::AlarmType::MetricAlarm)
        .alarm_types(aws_sdk_cloudwatch::types::AlarmType::CompositeAlarm)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeAlarms", e))?;
    let time = |t: Option<&aws_smithy_types::DateTime>| {
        t.and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok())
    };
    let states = out
        .metric_alarms()
        .iter()
        .map(|a| {
            let since =
                time(a.state_transitioned_timestamp()).or(time(a.state_updated_timestamp()));
            (
                a.alarm_name(),
                a.alarm_arn(),
                a.state_value(),
                a.state_reason(),
                a.state_reason_data(),
                since,
            )
        })
        .chain(out.composite_alarms().iter().map(|a| {
            let since =
                time(a.state_transitioned_timestamp()).or(time(a.state_updated_timestamp()));
            (
                a.alarm_name(),
                a.alarm_arn(),
                a.state_value(),
                a.state_reason(),
                a.state_reason_data(),
                since,
            )
        }));
    let firing = states
        .filter_map(|(name, arn, state, reason, data, since)| {
            let since = since?;
            // To the second, as the deployer reads alarm times.
            let after = since.unix_timestamp() >= began.unix_timestamp();
            (state == Some(&StateValue::Alarm) && after).then(|| AlarmStateChange {
                alarm_name: name.unwrap_or_default().to_string(),
                alarm_arn: arn.map(str::to_string),
                state: AlarmState {
                    value: "ALARM".into(),
                    reason: reason.unwrap_or_default().to_string(),
                    reason_data_raw: data.map(str::to_string),
                    timestamp: since,
                    actions_suppressed_by: None,
                    actions_suppressed_reason: None,
                },
                previous_state: None,
                configuration: AlarmConfiguration::default(),
                alarm_tags: Default::default(),
                mute_detail: None,
            })
        })
        .next();
    Ok(firing)
}
