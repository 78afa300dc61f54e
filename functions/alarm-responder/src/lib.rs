//! alarm-responder: when an alarm fires on a live endpoint after its deployment finished (the
//! guardrails are no longer watching), roll back to the previous Approved version and reject the
//! bad one with the evidence, or raise the variant's capacity at once.
//!
//! parse → triage → route → (lease) observe → decide → act → record.

pub mod decide;
mod observe;
pub mod route;

use std::collections::BTreeMap;

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::error::{Error, Result};
use lifecycle::events::{ALARM_STATE_CHANGE, AlarmStateChange, Envelope};
use lifecycle::executor::{Applied, Executor};
use lifecycle::ledger::{self, Ledger};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{error, info, warn};

pub use lifecycle::targets::TargetsConfig as Config;
pub use lifecycle::report::{Report, Summary};

use crate::decide::Decision;
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

pub async fn handle(responder: &Responder, event: LambdaEvent<Value>) -> Result<Report> {
    let request_id = lifecycle::telemetry::request_id(&event.context);
    // Everything about the event is checked before the first AWS call.
    let envelope = Envelope::parse(&event.payload)?;
    if envelope.detail_type != ALARM_STATE_CHANGE {
        return Err(Error::MalformedEvent(format!(
            "expected a \"{ALARM_STATE_CHANGE}\" event, got \"{}\"",
            envelope.detail_type
        )));
    }
    let alarm = AlarmStateChange::parse(&envelope.detail)?;
    let ctx = Context {
        responder,
        request_id: &request_id,
        trigger: format!(
            "{ALARM_STATE_CHANGE} {} -> {} ({})",
            alarm.alarm_name, alarm.state.value, envelope.id
        ),
        alarm: &alarm,
    };
    info!(trigger = %ctx.trigger, kind = ?alarm.kind(), "received");
    let targets = &responder.config.targets;

    let configured = route::by_config(targets, &alarm.alarm_name);
    if let Some((outcome, reason)) = decide::triage(&alarm) {
        return ctx.record_only(configured.as_ref(), outcome, reason).await;
    }

    let route = match configured {
        Some(r) => Some(r),
        None => match route::by_tags(targets, &alarm_tags(responder, &envelope, &alarm).await?) {
            Ok(Some(r)) => Some(r),
            Ok(None) => match route::by_dimension(targets, &alarm) {
                Ok(r) => r,
                Err(reason) => return ctx.record_only(None, "ignored", reason).await,
            },
            Err(reason) => return ctx.record_only(None, "ignored", reason).await,
        },
    };
    let Some(route) = route else {
        let reason = format!(
            "{} maps to no deployment target (not configured, no {} tag, no EndpointName dimension of a target)",
            alarm.alarm_name,
            route::TAG_ENDPOINT
        );
        return ctx.record_only(None, "ignored", reason).await;
    };

    let result = ctx.respond(route.clone()).await;
    lifecycle::metrics::flush(&request_id);
    match result {
        Ok(summary) => Ok(Report {
            decisions: vec![summary],
        }),
        // Busy and transient AWS errors are retried by Lambda; the rest is answered.
        Err(e) if e.is_retryable() => Err(e),
        Err(e) => Ok(Report {
            decisions: vec![Summary {
                endpoint: Some(route.target.endpoint.clone()),
                outcome: "failed",
                reason: e.to_string(),
                package: None,
                actions: vec![],
                results: vec![],
            }],
        }),
    }
}

/// The alarm's tags: from the event when CloudWatch propagated them, else ListTagsForResource.
/// A transient failure is returned (Lambda retries: the tags may say scale up where the dimension
/// would say roll back); tags we may not read are logged and treated as none.
async fn alarm_tags(
    responder: &Responder,
    envelope: &Envelope,
    alarm: &AlarmStateChange,
) -> Result<BTreeMap<String, String>> {
    if !alarm.alarm_tags.is_empty() {
        return Ok(alarm.alarm_tags.clone());
    }
    let Some(arn) = envelope
        .resources
        .iter()
        .find(|r| r.starts_with("arn:") && r.contains(":alarm:"))
    else {
        return Ok(BTreeMap::new());
    };
    match responder
        .clients
        .cloudwatch
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
    {
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

struct Context<'a> {
    responder: &'a Responder,
    request_id: &'a str,
    trigger: String,
    alarm: &'a AlarmStateChange,
}

impl Context<'_> {
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
        self.responder
            .ledger
            .with_lease(&endpoint, self.request_id, LEASE_SECONDS, async || {
                self.respond_leased(route).await
            })
            .await?
            .unwrap_or(Err(Error::Busy(endpoint)))
    }

    async fn respond_leased(&self, route: Route<'_>) -> Result<Summary> {
        let r = self.responder;
        let subject = ledger::endpoint_key(&route.target.endpoint);
        let endpoint = route.target.endpoint.clone();
        if r.ledger.handled(&subject, &self.occurrence()).await? {
            let reason = format!(
                "{} entering ALARM at that time was already acted on; duplicate delivery",
                self.alarm.alarm_name
            );
            return self
                .apply_and_record(
                    Some(&endpoint),
                    Decision::quiet("duplicate", reason, decide::alarm_evidence(self.alarm)),
                )
                .await;
        }
        let observed = observe::observe(
            &r.clients,
            &r.ledger,
            route,
            self.alarm,
            r.config.environment,
        )
        .await?;
        let decision = decide::decide(&observed);
        let summary = self.apply_and_record(Some(&endpoint), decision).await?;
        // Acted on (or judged): a duplicate must not act again. A note is not a judgement: the
        // alarm can still be judged once the endpoint is back in service.
        if !r.config.dry_run && !matches!(summary.outcome, "noted" | "failed") {
            r.ledger
                .mark_handled(&subject, &self.occurrence(), self.request_id)
                .await?;
        }
        Ok(summary)
    }

    /// Applies the decision's plan and keeps the decision in the ledger.
    async fn apply_and_record(
        &self,
        endpoint: Option<&String>,
        decision: Decision,
    ) -> Result<Summary> {
        let r = self.responder;
        let executor = Executor {
            clients: &r.clients,
            ledger: &r.ledger,
            execution_role_arn: &r.config.execution_role_arn,
            dry_run: r.config.dry_run,
        };
        let Applied { results, error } = executor.apply(&decision.plan).await;
        let outcome = if error.is_some() {
            "failed"
        } else {
            decision.outcome
        };
        if decision.loud {
            // Visible, never silent: a person must decide.
            error!(alarm = %self.alarm.alarm_name, outcome, reason = %decision.reason, "needs a person");
        } else if outcome == "inconclusive" {
            // Surfaced, not acted on: too little traffic to believe the KPI.
            warn!(alarm = %self.alarm.alarm_name, outcome, reason = %decision.reason, "inconclusive");
        } else {
            info!(alarm = %self.alarm.alarm_name, outcome, reason = %decision.reason, "decided");
        }
        lifecycle::metrics::decision(outcome);
        let reason = match &error {
            Some(e) => format!("{} — stopped: {e}", decision.reason),
            None => decision.reason.clone(),
        };
        let subject = match endpoint {
            Some(ep) => ledger::endpoint_key(ep),
            None => format!("alarm#{}", self.alarm.alarm_name),
        };
        r.ledger
            .record(&ledger::Decision {
                subject,
                at: OffsetDateTime::now_utc(),
                function: FUNCTION,
                request_id: self.request_id.to_string(),
                trigger: self.trigger.clone(),
                package: decision.package.clone(),
                outcome,
                reason: reason.clone(),
                plan: decision.plan.clone(),
                results: results.clone(),
                evidence: decision.evidence.clone(),
                dry_run: r.config.dry_run,
            })
            .await?;
        if let Some(e) = error {
            return Err(e);
        }
        Ok(Summary {
            endpoint: endpoint.cloned(),
            outcome,
            reason,
            package: decision.package,
            actions: decision
                .plan
                .steps
                .iter()
                .map(|s| s.action.name())
                .collect(),
            results,
        })
    }

    /// Records an alarm that asks for nothing (not into ALARM, muted, or unrouted).
    async fn record_only(
        &self,
        route: Option<&Route<'_>>,
        outcome: &'static str,
        reason: String,
    ) -> Result<Report> {
        let mut evidence = decide::alarm_evidence(self.alarm);
        if let Some(m) = &self.alarm.mute_detail {
            evidence["mute_detail"] = m.clone();
        }
        evidence["alarm_tags"] = json!(self.alarm.alarm_tags);
        let summary = self
            .apply_and_record(
                route.map(|r| &r.target.endpoint),
                Decision::quiet(outcome, reason, evidence),
            )
            .await?;
        lifecycle::metrics::flush(self.request_id);
        Ok(Report {
            decisions: vec![summary],
        })
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
