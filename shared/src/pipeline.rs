//! The road every invocation walks once it has decided: apply the plan through the executor
//! (dry-run honoured), record one ledger decision, count it, log it, publish it when it acted or
//! needs a person, and answer with its summary.
//!
//! A function supplies its observe and decide steps; it never writes a ledger decision, emits a
//! decision metric or calls a mutating AWS API outside this module. So dry-run, the ledger and
//! the metrics behave the same in all four functions.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{error, info};

use crate::decision::{Decision, Subject};
use crate::error::{Error, Result};
use crate::executor::{Applied, Executor, StepStatus};
use crate::ledger::{DecisionRecord, Failure};
use crate::outcome::{Outcome, Severity};
use crate::plan::{ActionKind, Plan};

/// One invocation's pipeline: who is deciding, why, and the executor that applies plans.
pub struct Pipeline<'a> {
    pub function: &'static str,
    pub request_id: &'a str,
    /// What caused the invocation: the event's detail type and id, or "tick".
    pub trigger: String,
    pub executor: Executor<'a>,
}

/// One decision, as the handler answers it. The full record is in the ledger.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub subject: Subject,
    pub outcome: Outcome,
    pub severity: Severity,
    pub reason: String,
    pub package: Option<String>,
    pub actions: Vec<ActionKind>,
    pub results: Vec<String>,
    pub dry_run: bool,
    /// The error that stopped the plan (or the decision before it), for the handler to decide
    /// whether the invocation should fail so Lambda retries it.
    #[serde(skip)]
    pub error: Option<Error>,
}

impl Summary {
    /// A decision that could not be recorded (the ledger itself failed): answered all the same,
    /// so the handler can still tell Lambda whether to retry.
    pub fn unrecorded(subject: Subject, dry_run: bool, error: Error) -> Self {
        let outcome = Outcome::of_error(&error);
        Summary {
            subject,
            outcome,
            severity: outcome.severity(),
            reason: format!("not recorded: {error}"),
            package: None,
            actions: vec![],
            results: vec![],
            dry_run,
            error: Some(error),
        }
    }
}

/// What a handler answers: one summary per decision.
#[derive(Debug, Default, Serialize)]
pub struct Reply {
    pub decisions: Vec<Summary>,
}

impl Reply {
    pub fn one(summary: Summary) -> Self {
        Self {
            decisions: vec![summary],
        }
    }

    /// The reply, or the first error a retry can help when `retry` allows Lambda to retry (an
    /// event; a scheduled tick is retried by the next tick instead).
    pub fn or_retryable_error(self, retry: bool) -> Result<Self> {
        let retryable = self
            .decisions
            .iter()
            .filter_map(|d| d.error.as_ref())
            .find(|e| e.is_retryable());
        match retryable {
            Some(e) if retry => Err(e.clone()),
            _ => Ok(self),
        }
    }
}

impl Pipeline<'_> {
    /// Applies the decision's plan, records it, counts it, logs it. The summary carries the error
    /// that stopped the plan, if any; `Err` only when the decision could not be recorded.
    pub async fn run(&self, subject: Subject, decision: Decision) -> Result<Summary> {
        // The same plan that failed for good a moment ago is not tried (nor a person paged) again
        // on every tick: it waits, and the wait is recorded as such.
        let fingerprint = fingerprint(&decision);
        let remembered = match decision.plan.is_empty() || self.executor.dry_run {
            true => None,
            false => self.executor.ledger.failure(&subject.key()).await?,
        };
        let now = crate::ledger::now_ms();
        if let Some(f) = remembered.as_ref().filter(|f| f.fingerprint == fingerprint)
            && now < f.last_at + retry_after(f.count)
        {
            return self.backing_off(subject, decision, f).await;
        }
        let applied = self.executor.apply(&decision.plan).await;
        let outcome = match (&applied.error, decision.if_already_done) {
            (Some(e), _) => Outcome::of_error(e),
            (None, Some((kind, instead))) if applied.already_done(kind) => instead,
            (None, _) => decision.outcome,
        };
        let changed = applied.results.iter().any(|r| r.status == StepStatus::Done);
        let Applied { results, error } = applied;
        let starts_deployment = decision.plan.has(ActionKind::UpdateEndpoint)
            || decision.plan.has(ActionKind::CreateEndpoint);
        let reason = match &error {
            Some(e) => format!("{} — stopped: {e}", decision.reason),
            None => decision.reason,
        };
        let record = DecisionRecord {
            package: decision.package,
            plan: decision.plan,
            results: results.iter().map(ToString::to_string).collect(),
            evidence: decision.evidence,
            changed,
            ..self.record(&subject, outcome, reason)
        };
        let key = subject.key();
        let summary = self.conclude(subject, record, error.clone()).await?;
        // After the record: a failure to remember never loses the record of what was done.
        let resolves = |f: &Failure| f.fingerprint == fingerprint || starts_deployment;
        let remembered = remembered.filter(|f| error.is_some() || resolves(f));
        if let Err(e) = self
            .remember(&key, outcome, fingerprint, remembered, &error, now)
            .await
        {
            tracing::warn!(subject = %key, error = %e, "failure memory not updated");
        }
        Ok(summary)
    }

    /// Keeps a permanent failure (counting repeats of the same plan), or forgets it once the
    /// subject's plan succeeds or changes.
    async fn remember(
        &self,
        subject: &str,
        outcome: Outcome,
        fingerprint: String,
        remembered: Option<Failure>,
        error: &Option<Error>,
        now: i64,
    ) -> Result<()> {
        let ledger = self.executor.ledger;
        match (outcome, error) {
            (Outcome::Failed, Some(e)) => {
                // The same plan again, within a day of its last failure, counts as a repeat.
                let again = remembered
                    .filter(|f| f.fingerprint == fingerprint && now - f.last_at < 24 * 3_600_000);
                let failure = Failure {
                    fingerprint,
                    error: e.to_string(),
                    first_at: again.as_ref().map_or(now, |f| f.first_at),
                    last_at: now,
                    count: again.as_ref().map_or(1, |f| f.count + 1),
                };
                ledger.put_failure(subject, &failure).await
            }
            (_, None) if remembered.is_some() => ledger.clear_failure(subject).await,
            _ => Ok(()),
        }
    }

    /// The same plan failed for good recently: recorded, not applied.
    async fn backing_off(
        &self,
        subject: Subject,
        decision: Decision,
        f: &Failure,
    ) -> Result<Summary> {
        let next = crate::ledger::millis_rfc3339(f.last_at + retry_after(f.count));
        let reason = format!(
            "{} — not tried: the same plan failed {} time(s) since {} (last: {}); next try after {next}",
            decision.reason,
            f.count,
            crate::ledger::millis_rfc3339(f.first_at),
            f.error
        );
        let record = DecisionRecord {
            package: decision.package,
            plan: decision.plan,
            evidence: decision.evidence,
            dry_run: false,
            ..self.record(&subject, Outcome::BackingOff, reason)
        };
        self.conclude(subject, record, None).await
    }

    /// Records a decision that could not be made or applied: the lease was taken, a read failed.
    pub async fn fail(
        &self,
        subject: Subject,
        package: Option<String>,
        error: Error,
    ) -> Result<Summary> {
        let record = DecisionRecord {
            package,
            ..self.record(&subject, Outcome::of_error(&error), error.to_string())
        };
        match self.conclude(subject, record, Some(error.clone())).await {
            Ok(summary) => Ok(summary),
            // The ledger itself may be what failed: the original error says more.
            Err(_) => Err(error),
        }
    }

    /// Writes a run's report object to S3, as part of its record (dry runs too: a report is a
    /// record, not an action). Returns its URI.
    pub async fn put_report(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<String> {
        self.executor
            .clients
            .s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(body.into())
            .send()
            .await
            .map_err(|e| Error::aws("PutObject", e))?;
        Ok(format!("s3://{bucket}/{key}"))
    }

    /// A record of this invocation's decision about `subject`, with no plan or evidence yet.
    fn record(&self, subject: &Subject, outcome: Outcome, reason: String) -> DecisionRecord {
        DecisionRecord {
            subject: subject.key(),
            at: OffsetDateTime::now_utc(),
            function: self.function,
            request_id: self.request_id.to_string(),
            trigger: self.trigger.clone(),
            package: None,
            outcome,
            reason,
            plan: Plan::default(),
            results: vec![],
            evidence: Value::Null,
            dry_run: self.executor.dry_run,
            changed: false,
        }
    }

    async fn conclude(
        &self,
        subject: Subject,
        record: DecisionRecord,
        error: Option<Error>,
    ) -> Result<Summary> {
        let outcome = record.outcome;
        let severity = outcome.severity();
        match severity {
            Severity::NeedsPerson => {
                error!(subject = %subject, %outcome, reason = %record.reason, "needs a person")
            }
            _ => info!(subject = %subject, %outcome, %severity, reason = %record.reason, "decided"),
        }
        crate::metrics::decision(outcome, record.dry_run);
        let repeat = self.repeats_a_person_call(&record).await;
        self.executor.ledger.record(&record).await?;
        // After the record: what is published is always in the ledger too. A situation that
        // needs a person is published when it begins, not again on every reconcile it lasts.
        if !repeat {
            self.executor.clients.publisher.publish(&record).await;
        }
        Ok(Summary {
            subject,
            outcome,
            severity,
            reason: record.reason,
            package: record.package,
            actions: record.plan.kinds(),
            results: record.results,
            dry_run: record.dry_run,
            error,
        })
    }
}

impl Pipeline<'_> {
    /// Whether a decision that needs a person repeats the subject's latest one (same outcome,
    /// same package). A read that fails counts as new: better twice than never.
    async fn repeats_a_person_call(&self, record: &DecisionRecord) -> bool {
        if record.outcome.severity() != Severity::NeedsPerson {
            return false;
        }
        match self.executor.ledger.latest_outcome(&record.subject).await {
            Ok(Some((outcome, package))) => {
                outcome == record.outcome.as_str() && package == record.package
            }
            _ => false,
        }
    }
}

/// What a plan is, for telling a repeat of a failed one: its actions with their data, but not
/// the times that change on every try (a request time, the record it expects). A plan that differs
/// in anything else (a person fixed the instance type, a new version) is not a repeat.
fn fingerprint(decision: &Decision) -> String {
    fn timeless(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !matches!(k.as_str(), "requested_at" | "expected" | "reason"));
                m.values_mut().for_each(timeless);
            }
            Value::Array(a) => a.iter_mut().for_each(timeless),
            _ => {}
        }
    }
    let mut plan = serde_json::to_value(&decision.plan).unwrap_or_default();
    timeless(&mut plan);
    let kinds: Vec<&str> = decision.plan.kinds().iter().map(|k| k.as_str()).collect();
    format!(
        "{}|{}|{}",
        kinds.join(","),
        decision.package.as_deref().unwrap_or(""),
        crate::names::fingerprint(&[&plan.to_string()])
    )
}

/// How long a plan that failed for good `count` times waits before it is tried again: 15 minutes,
/// doubling, at most a day.
fn retry_after(count: i64) -> i64 {
    let minutes = 15i64 << (count - 1).clamp(0, 7);
    minutes.min(24 * 60) * 60_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(error: Option<Error>) -> Summary {
        let e = error.clone().unwrap_or(Error::InvalidData("x".into()));
        Summary {
            error,
            ..Summary::unrecorded(Subject::Sweep, false, e)
        }
    }

    #[test]
    fn only_a_retryable_error_fails_the_invocation_and_only_when_retrying_is_allowed() {
        let busy = || Some(Error::Busy("e".into()));
        let denied = || {
            Some(Error::Aws {
                operation: "UpdateEndpoint",
                message: "AccessDeniedException: no".into(),
                retryable: false,
            })
        };
        let reply = |errors: Vec<Option<Error>>| Reply {
            decisions: errors.into_iter().map(summary).collect(),
        };
        assert!(matches!(
            reply(vec![None, busy()]).or_retryable_error(true),
            Err(Error::Busy(_))
        ));
        assert!(reply(vec![busy()]).or_retryable_error(false).is_ok());
        let answered = reply(vec![denied()]).or_retryable_error(true).unwrap();
        assert_eq!(answered.decisions[0].outcome, Outcome::Failed);
        assert_eq!(answered.decisions[0].severity, Severity::NeedsPerson);
    }

    #[test]
    fn a_failed_plan_waits_longer_each_time_and_at_most_a_day() {
        assert_eq!(retry_after(1), 15 * 60_000);
        assert_eq!(retry_after(2), 30 * 60_000);
        assert_eq!(retry_after(20), 24 * 3_600_000);
    }

    #[test]
    fn a_retry_of_the_same_plan_is_a_repeat_and_a_changed_plan_is_not() {
        use crate::plan::Action;
        let plan = |requested_at: i64, config: &str| {
            let mut p = Plan::default();
            p.push(
                Action::ConfirmDeployment {
                    endpoint: "e".into(),
                    requested_at,
                },
                "why",
            );
            p.push(
                Action::UpdateEndpoint {
                    endpoint: "e".into(),
                    config: config.into(),
                    rollout: None,
                },
                format!("try at {requested_at}"),
            );
            Decision::new(Outcome::Deploying, "d").with_plan(p)
        };
        assert_eq!(fingerprint(&plan(1, "c1")), fingerprint(&plan(2, "c1")));
        assert_ne!(fingerprint(&plan(1, "c1")), fingerprint(&plan(1, "c2")));
    }
}
