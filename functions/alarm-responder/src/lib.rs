//! alarm-responder: when an alarm fires on a live endpoint after its deployment finished (the
//! guardrails are no longer watching), roll back to the previous Approved version and reject the
//! bad one with the evidence, or raise the variant's capacity at once.
//!
//! parse → triage → route → (lease) observe → decide → act → record.

mod after_update;
pub mod decide;
mod observe;
pub mod route;

use std::collections::BTreeMap;

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::decision::{Decision, Subject};
use lifecycle::error::{Error, Result};
use lifecycle::events::{self, ALARM_STATE_CHANGE, AlarmStateChange};
use lifecycle::executor::Executor;
use lifecycle::ledger::Ledger;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::{Pipeline, Summary};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use tracing::{info, warn};

pub use lifecycle::pipeline::Reply;
pub use lifecycle::targets::TargetsConfig as Config;

use crate::route::Route;

pub const FUNCTION: &str = "alarm-responder";
/// How long one invocation may hold an endpoint; longer than the function's timeout.
const LEASE_SECONDS: i64 = 120;

/// What the handler needs, built once at cold start.
pub struct Responder {
    pub clients: Clients,
    pub ledger: Ledger,
    pub config: Config,
}

impl Responder {
    pub fn new(clients: Clients, config: Config) -> Self {
        let ledger = Ledger::new(clients.dynamodb.clone(), config.ledger_table.clone());
        Self {
            clients,
            ledger,
            config,
        }
    }
}

/// The alarm, from either delivery: EventBridge (an envelope with the state change as detail), or
/// an alarm action that invokes the function directly (`alarmData`, no envelope). Everything about
/// the event is checked before the first AWS call.
pub fn parse(payload: &Value) -> Result<(AlarmStateChange, String)> {
    if payload.is_object()
        && payload.get("detail-type").is_none()
        && payload.get("alarmData").is_none()
    {
        return Err(Error::MalformedEvent(
            "neither an EventBridge event (no \"detail-type\") nor an alarm action payload (no \"alarmData\")".into(),
        ));
    }
    if payload.get("detail-type").is_none() && payload.get("alarmData").is_some() {
        let alarm = AlarmStateChange::from_alarm_action(payload)?;
        let trigger = format!("alarm action {} -> {}", alarm.alarm_name, alarm.state.value);
        return Ok((alarm, trigger));
    }
    let envelope = events::envelope(payload)?;
    if envelope.detail_type != ALARM_STATE_CHANGE {
        return Err(Error::MalformedEvent(format!(
            "expected a \"{ALARM_STATE_CHANGE}\" event or an alarm action payload, got \"{}\"",
            envelope.detail_type
        )));
    }
    let mut alarm = AlarmStateChange::parse(&envelope.detail)?;
    alarm.alarm_arn = envelope
        .resources
        .iter()
        .flatten()
        .find(|r| r.starts_with("arn:") && r.contains(":alarm:"))
        .cloned();
    let trigger = format!(
        "{ALARM_STATE_CHANGE} {} -> {} ({})",
        alarm.alarm_name,
        alarm.state.value,
        events::event_id(&envelope)
    );
    Ok((alarm, trigger))
}

pub async fn handle(responder: &Responder, event: LambdaEvent<Value>) -> Result<Reply> {
    let request_id = lifecycle::telemetry::request_id(&event.context);
    if let Some(endpoint) = back_in_service(&event.payload)? {
        let summary = after_update::judge(responder, &request_id, &endpoint).await;
        lifecycle::metrics::flush(&request_id);
        return Reply::one(summary).or_retryable_error(true);
    }
    let (alarm, trigger) = parse(&event.payload)?;
    info!(%trigger, kind = ?alarm.kind(), "received");
    let summary = respond_to(responder, &request_id, &alarm, trigger, false).await;
    lifecycle::metrics::flush(&request_id);
    // Busy and transient AWS errors are retried by Lambda; the rest is answered.
    Reply::one(summary).or_retryable_error(true)
}

/// One alarm, from triage to the pipeline; a failure to record is answered all the same.
async fn respond_to(
    responder: &Responder,
    request_id: &str,
    alarm: &AlarmStateChange,
    trigger: String,
    after_update: bool,
) -> Summary {
    let ctx = Context {
        responder,
        alarm,
        pipeline: Pipeline {
            function: FUNCTION,
            request_id,
            trigger,
            executor: Executor {
                clients: &responder.clients,
                ledger: &responder.ledger,
                execution_role_arn: &responder.config.execution_role_arn,
                dry_run: responder.config.dry_run,
            },
        },
        after_update,
    };
    ctx.triage_and_respond().await.unwrap_or_else(|e| {
        let subject = Subject::Alarm(alarm.alarm_name.clone());
        Summary::unrecorded(subject, responder.config.dry_run, e)
    })
}

/// The endpoint of a "SageMaker Endpoint State Change" event into service, if the payload is one.
fn back_in_service(payload: &Value) -> Result<Option<String>> {
    if payload.get("detail-type").and_then(Value::as_str) != Some(events::ENDPOINT_STATE_CHANGE) {
        return Ok(None);
    }
    let envelope = events::envelope(payload)?;
    let d: events::EndpointStateChange = events::detail(&envelope)?;
    let status = d.endpoint_status.as_deref().unwrap_or_default();
    let in_service = lifecycle::endpoints::EndpointStatus::parse(status)
        == lifecycle::endpoints::EndpointStatus::InService;
    Ok(in_service.then_some(d.endpoint_name))
}

struct Context<'a> {
    responder: &'a Responder,
    alarm: &'a AlarmStateChange,
    pipeline: Pipeline<'a>,
    /// The alarm was noted during an update and is judged now that the update is done.
    after_update: bool,
}

impl Context<'_> {
    async fn triage_and_respond(&self) -> Result<Summary> {
        let targets = &self.responder.config.targets;
        let configured = route::by_config(targets, &self.alarm.alarm_name);
        if let Some((outcome, reason)) = decide::triage(self.alarm) {
            return self.record_only(configured.as_ref(), outcome, reason).await;
        }
        let route = match configured {
            Some(r) => Some(r),
            None => match route::by_tags(targets, &self.alarm_tags().await?) {
                Ok(Some(r)) => Some(r),
                Ok(None) => match route::by_dimension(targets, self.alarm) {
                    Ok(r) => r,
                    Err(reason) => return self.record_only(None, Outcome::Ignored, reason).await,
                },
                Err(reason) => return self.record_only(None, Outcome::Ignored, reason).await,
            },
        };
        let Some(route) = route else {
            let reason = format!(
                "{} maps to no deployment target (not configured, no {} tag, no EndpointName dimension of a target)",
                self.alarm.alarm_name,
                route::TAG_ENDPOINT
            );
            return self.record_only(None, Outcome::Ignored, reason).await;
        };
        self.respond(route).await
    }

    /// The alarm's tags: from the event when CloudWatch propagated them, else
    /// ListTagsForResource. A transient failure is returned (Lambda retries: the tags may say
    /// scale up where the dimension would say roll back); tags we may not read count as none.
    async fn alarm_tags(&self) -> Result<BTreeMap<String, String>> {
        if !self.alarm.alarm_tags.is_empty() {
            return Ok(self.alarm.alarm_tags.clone());
        }
        let Some(arn) = &self.alarm.alarm_arn else {
            return Ok(BTreeMap::new());
        };
        let listed = self
            .responder
            .clients
            .cloudwatch
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await;
        match listed {
            Ok(out) => Ok(out
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                .collect()),
            Err(e) => {
                let e = Error::aws("ListTagsForResource", e);
                if e.is_retryable() {
                    return Err(e);
                }
                warn!(error = %e, "alarm tags unreadable; routing by the EndpointName dimension");
                Ok(BTreeMap::new())
            }
        }
    }

    /// An alarm occurrence: one alarm entering ALARM at one time.
    fn occurrence(&self) -> String {
        format!(
            "alarm#{}#{}",
            self.alarm.alarm_name,
            self.alarm
                .state
                .timestamp
                .format(&Rfc3339)
                .unwrap_or_default()
        )
    }

    /// Under the endpoint's lease: the deployer and the responder never act on one endpoint at
    /// the same time, and a duplicate of an occurrence already acted on changes nothing.
    async fn respond(&self, route: Route<'_>) -> Result<Summary> {
        let endpoint = route.target.endpoint.clone();
        let subject = Subject::Endpoint(endpoint.clone());
        let p = &self.pipeline;
        let leased = self
            .responder
            .ledger
            .with_lease(&endpoint, p.request_id, LEASE_SECONDS, async || match self
                .respond_leased(route)
                .await
            {
                Ok(summary) => Ok(summary),
                Err(e) => p.fail(subject.clone(), None, e).await,
            })
            .await;
        match leased {
            Ok(Some(summary)) => summary,
            Ok(None) => p.fail(subject, None, Error::Busy(endpoint)).await,
            Err(e) => p.fail(subject, None, e).await,
        }
    }

    async fn respond_leased(&self, route: Route<'_>) -> Result<Summary> {
        let r = self.responder;
        let subject = Subject::Endpoint(route.target.endpoint.clone());
        if r.ledger.handled(&subject.key(), &self.occurrence()).await? {
            let reason = format!(
                "{} entering ALARM at that time was already acted on; duplicate delivery",
                self.alarm.alarm_name
            );
            let decision = Decision::new(Outcome::Duplicate, reason)
                .with_evidence(decide::alarm_evidence(self.alarm));
            return self.pipeline.run(subject, decision).await;
        }
        let observed = observe::observe(
            &r.clients,
            &r.ledger,
            route,
            self.alarm,
            r.config.environment,
            self.after_update,
        )
        .await?;
        let mut summary = self
            .pipeline
            .run(subject.clone(), decide::decide(&observed))
            .await?;
        // Acted on (or judged): a duplicate must not act again. A note is not a judgement: the
        // alarm can still be judged once the endpoint is back in service.
        let judged = !matches!(
            summary.outcome,
            Outcome::Noted | Outcome::Failed | Outcome::Retrying | Outcome::BackingOff
        );
        if !r.config.dry_run && judged {
            let marked = r
                .ledger
                .mark_handled(&subject.key(), &self.occurrence(), self.pipeline.request_id)
                .await;
            // The decision is recorded; only the mark is missing. A retry finds the endpoint
            // changing or changed since the alarm (noted, superseded), never acts twice.
            if let Err(e) = marked {
                summary.error = Some(e);
            }
        }
        Ok(summary)
    }

    /// Records an alarm that asks for nothing (not into ALARM, muted, or unrouted).
    async fn record_only(
        &self,
        route: Option<&Route<'_>>,
        outcome: Outcome,
        reason: String,
    ) -> Result<Summary> {
        let mut evidence = decide::alarm_evidence(self.alarm);
        if let Some(m) = &self.alarm.mute_detail {
            evidence["mute_detail"] = m.clone();
        }
        evidence["alarm_tags"] = json!(self.alarm.alarm_tags);
        let subject = match route {
            Some(r) => Subject::Endpoint(r.target.endpoint.clone()),
            None => Subject::Alarm(self.alarm.alarm_name.clone()),
        };
        let decision = Decision::new(outcome, reason).with_evidence(evidence);
        self.pipeline.run(subject, decision).await
    }
}

/// The target every unit test routes to.
#[cfg(test)]
pub(crate) mod testing {
    use lifecycle::config::Environment;
    use lifecycle::targets::Targets;

    pub fn targets() -> Targets {
        Targets::parse(
            &serde_json::json!([{"model_package_group": "recs", "endpoint": "recs-prod",
                "instance_type": "ml.m5.xlarge", "instance_count": 2,
                "rollback_alarms": ["recs-5xx"], "scale_up_alarms": ["recs-503"],
                "kpi_alarms": [{"alarm": "recs-ctr", "min_samples": 1000,
                    "samples": {"namespace": "Recs", "metric": "Impressions"}}]}])
            .to_string(),
            Environment::Production,
        )
        .unwrap()
    }
}
