//! The ledger: one DynamoDB table that answers "who changed this endpoint, when, and why".
//!
//! Items (partition key `pk`, sort key `sk`, both strings):
//! - `<subject>` / `decision#<time>#<request id>`: every decision, its trigger, plan, outcome,
//!   severity and evidence. Those that changed nothing and need nobody expire after 30 days
//!   (`expires_at`, a TTL attribute).
//! - `endpoint#<name>` / `deployment`: the deployment in flight (or the last one) on the endpoint.
//! - `endpoint#<name>` / `served#<requested at>`: each version that served the endpoint
//!   successfully; a rollback goes back to the most recent one still Approved.
//! - `endpoint#<name>` / `lease`: who may mutate the endpoint right now. The deployer and the
//!   alarm responder take it before acting, so they never change one endpoint at the same time.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::deployment::{DeploymentRecord, DeploymentStatus};
use crate::error::{Error, Result, error_code};
use crate::outcome::{Outcome, Severity};
use crate::plan::Plan;

const ROUTINE_RETENTION_SECONDS: i64 = 30 * 24 * 3600;

/// One decision, as recorded. Built only by [`crate::pipeline`].
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// What the decision is about (`endpoint#<name>`, `group#<name>`, ...): the partition key.
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub function: &'static str,
    pub request_id: String,
    /// What caused it: the event's detail type and id, or "tick".
    pub trigger: String,
    pub package: Option<String>,
    pub outcome: Outcome,
    pub reason: String,
    pub plan: Plan,
    /// What each step of the plan did (or "dry run").
    pub results: Vec<String>,
    pub evidence: Value,
    pub dry_run: bool,
    /// Whether a step of the plan changed something (a partial plan that stopped counts).
    pub changed: bool,
}

impl DecisionRecord {
    /// Decisions that changed nothing and need nobody expire: routine ones, dry runs, plans
    /// that found their work done. What changed something, even half-way, or needs a person is
    /// kept.
    pub fn expires(&self) -> bool {
        !self.changed && self.outcome.severity() != Severity::NeedsPerson
    }
}

/// A version that served an endpoint successfully (its deployment's verdict was Succeeded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Served {
    pub package_arn: String,
    pub package_version: i64,
    pub config: String,
    /// When its deployment's verdict was recorded (epoch milliseconds).
    pub finished_at: Option<i64>,
}

/// A plan that failed with an error a retry cannot help, remembered so the same plan is not tried
/// (and a person paged) again on every tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// What failed: the plan's action kinds, its package, the step that stopped it.
    pub fingerprint: String,
    pub error: String,
    /// Epoch milliseconds.
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
}

/// A held lease on one endpoint.
#[derive(Debug, Clone)]
pub struct Lease {
    pub endpoint: String,
    pub owner: String,
}

#[derive(Clone, Debug)]
pub struct Ledger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn get_s(item: &HashMap<String, AttributeValue>, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}
fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<i64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

fn string_set(item: &HashMap<String, AttributeValue>, k: &str) -> Vec<String> {
    item.get(k)
        .and_then(|v| v.as_ss().ok())
        .cloned()
        .unwrap_or_default()
}

pub fn endpoint_key(endpoint: &str) -> String {
    format!("endpoint#{endpoint}")
}

/// Epoch milliseconds as RFC 3339.
pub fn millis_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Ledger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Keeps one decision.
    pub async fn record(&self, d: &DecisionRecord) -> Result<()> {
        let at = d.at.format(&Rfc3339).unwrap_or_default();
        let mut item = HashMap::from([
            ("pk".to_string(), s(&d.subject)),
            (
                "sk".to_string(),
                s(format!("decision#{at}#{}", d.request_id)),
            ),
            ("at".to_string(), s(&at)),
            ("function".to_string(), s(d.function)),
            ("request_id".to_string(), s(&d.request_id)),
            ("trigger".to_string(), s(&d.trigger)),
            ("outcome".to_string(), s(d.outcome.as_str())),
            ("severity".to_string(), s(d.outcome.severity().as_str())),
            ("reason".to_string(), s(&d.reason)),
            (
                "plan".to_string(),
                s(serde_json::to_string(&d.plan).unwrap_or_default()),
            ),
            (
                "results".to_string(),
                s(serde_json::to_string(&d.results).unwrap_or_default()),
            ),
            ("evidence".to_string(), s(d.evidence.to_string())),
            ("dry_run".to_string(), AttributeValue::Bool(d.dry_run)),
            ("changed".to_string(), AttributeValue::Bool(d.changed)),
        ]);
        if let Some(p) = &d.package {
            item.insert("package".into(), s(p));
        }
        if d.expires() {
            item.insert(
                "expires_at".into(),
                n(d.at.unix_timestamp() + ROUTINE_RETENTION_SECONDS),
            );
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| Error::aws("PutItem", e))?;
        Ok(())
    }

    /// The query of a subject's decisions, oldest first.
    fn decisions_query(
        &self,
        subject: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
            .expression_attribute_values(":pk", s(subject))
            .expression_attribute_values(":d", s("decision#"))
    }

    /// The outcome and package of the subject's latest decision, if any (one item read).
    pub async fn latest_outcome(&self, subject: &str) -> Result<Option<(String, Option<String>)>> {
        let out = self
            .decisions_query(subject)
            .scan_index_forward(false)
            .limit(1)
            .send()
            .await
            .map_err(|e| Error::aws("Query", e))?;
        Ok(out.items().first().map(|item| {
            (
                get_s(item, "outcome").unwrap_or_default(),
                get_s(item, "package"),
            )
        }))
    }

    /// Every decision about a subject, oldest first, as JSON (for people and tests).
    pub async fn decisions(&self, subject: &str) -> Result<Vec<Value>> {
        let mut pages = self
            .decisions_query(subject)
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|e| Error::aws("Query", e))?;
            let json = |k: &str| {
                get_s(&item, k)
                    .and_then(|v| serde_json::from_str(&v).ok())
                    .unwrap_or(Value::Null)
            };
            out.push(serde_json::json!({
                "at": get_s(&item, "at"),
                "function": get_s(&item, "function"),
                "trigger": get_s(&item, "trigger"),
                "package": get_s(&item, "package"),
                "outcome": get_s(&item, "outcome"),
                "severity": get_s(&item, "severity"),
                "reason": get_s(&item, "reason"),
                "plan": json("plan"),
                "results": json("results"),
                "evidence": json("evidence"),
                "dry_run": item.get("dry_run").and_then(|v| v.as_bool().ok()).copied(),
                "expires_at": get_n(&item, "expires_at"),
            }));
        }
        Ok(out)
    }

    /// Takes the endpoint's lease for `seconds`, unless someone else holds an unexpired one.
    pub async fn acquire(
        &self,
        endpoint: &str,
        owner: &str,
        seconds: i64,
    ) -> Result<Option<Lease>> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(endpoint_key(endpoint)))
            .item("sk", s("lease"))
            .item("owner", s(owner))
            .item("until", n(now + seconds))
            .condition_expression("attribute_not_exists(pk) OR #until < :now OR #owner = :me")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":me", s(owner))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Some(Lease {
                endpoint: endpoint.to_string(),
                owner: owner.to_string(),
            })),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(Error::aws("PutItem", e)),
        }
    }

    /// Runs `work` holding the endpoint's lease; `Ok(None)` when another invocation holds it.
    /// The lease is given back afterwards; if that fails it expires by itself.
    pub async fn with_lease<T>(
        &self,
        endpoint: &str,
        owner: &str,
        seconds: i64,
        work: impl AsyncFnOnce() -> T,
    ) -> Result<Option<T>> {
        let Some(lease) = self.acquire(endpoint, owner, seconds).await? else {
            return Ok(None);
        };
        let out = work().await;
        if let Err(e) = self.release(lease).await {
            tracing::error!(endpoint, error = %e, "lease not released; it expires by itself");
        }
        Ok(Some(out))
    }

    /// Gives the lease back (only if still ours).
    pub async fn release(&self, lease: Lease) -> Result<()> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(endpoint_key(&lease.endpoint)))
            .key("sk", s("lease"))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", s(&lease.owner))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(Error::aws("DeleteItem", e)),
        }
    }

    /// The endpoint's current (or last) deployment.
    pub async fn deployment(&self, endpoint: &str) -> Result<Option<DeploymentRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(endpoint_key(endpoint)))
            .key("sk", s("deployment"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::aws("GetItem", e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        Ok(Some(DeploymentRecord {
            endpoint: endpoint.to_string(),
            config: get_s(item, "config").unwrap_or_default(),
            package_arn: get_s(item, "package_arn").unwrap_or_default(),
            package_version: get_n(item, "package_version").unwrap_or_default(),
            previous_config: get_s(item, "previous_config"),
            requested_at: get_n(item, "requested_at").unwrap_or_default(),
            finished_at: get_n(item, "finished_at"),
            status: DeploymentStatus::parse(&get_s(item, "status").unwrap_or_default()),
            rollback_alarms: string_set(item, "rollback_alarms"),
            alarms_seen: string_set(item, "alarms_seen"),
            confirmed: item
                .get("confirmed")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            cause_alarm: get_s(item, "cause_alarm"),
            scaling: get_s(item, "scaling").and_then(|j| serde_json::from_str(&j).ok()),
            canary: get_s(item, "canary").and_then(|j| serde_json::from_str(&j).ok()),
            inconclusive: get_s(item, "inconclusive"),
            live_at: get_n(item, "live_at"),
            smoke_due: item
                .get("smoke_due")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            recovered: item
                .get("recovered")
                .and_then(|v| v.as_bool().ok())
                .copied(),
        }))
    }

    /// Writes a new in-flight deployment. Fails with [`Error::Busy`] if another one started since
    /// this invocation read the record (`expected` is the `requested_at` it read, if any).
    pub async fn begin_deployment(
        &self,
        r: &DeploymentRecord,
        expected: Option<i64>,
    ) -> Result<()> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(endpoint_key(&r.endpoint)))
            .item("sk", s("deployment"))
            .item("config", s(&r.config))
            .item("package_arn", s(&r.package_arn))
            .item("package_version", n(r.package_version))
            .item("requested_at", n(r.requested_at))
            .item("status", s(r.status.as_str()))
            .item("confirmed", AttributeValue::Bool(false))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":open", s(DeploymentStatus::InProgress.as_str()));
        if let Some(prev) = &r.previous_config {
            req = req.item("previous_config", s(prev));
        }
        if let Some(alarm) = &r.cause_alarm {
            req = req.item("cause_alarm", s(alarm));
        }
        if let Some(snapshot) = &r.scaling {
            let json = serde_json::to_string(snapshot).unwrap_or_default();
            req = req.item("scaling", s(json));
        }
        if let Some(arn) = &r.inconclusive {
            req = req.item("inconclusive", s(arn));
        }
        if r.smoke_due {
            req = req.item("smoke_due", AttributeValue::Bool(true));
        }
        if let Some(canary) = &r.canary {
            let json = serde_json::to_string(canary).unwrap_or_default();
            req = req.item("canary", s(json));
        }
        if !r.rollback_alarms.is_empty() {
            req = req.item(
                "rollback_alarms",
                AttributeValue::Ss(r.rollback_alarms.clone()),
            );
        }
        req = match expected {
            Some(t) => req
                .condition_expression(
                    "attribute_not_exists(pk) OR #status <> :open OR requested_at = :seen",
                )
                .expression_attribute_values(":seen", n(t)),
            None => req.condition_expression("attribute_not_exists(pk) OR #status <> :open"),
        };
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                Err(Error::Busy(r.endpoint.clone()))
            }
            Err(e) => Err(Error::aws("PutItem", e)),
        }
    }

    /// Keeps whether a rollback's cause alarm recovered in time (checked once).
    pub async fn record_recovery(
        &self,
        endpoint: &str,
        requested_at: i64,
        recovered: bool,
    ) -> Result<()> {
        let values = [(":r", AttributeValue::Bool(recovered))];
        self.update_deployment(endpoint, requested_at, "SET recovered = :r", &values)
            .await
    }

    /// Keeps when the endpoint was first seen InService on the deployment's config (the first
    /// sighting stands: a later or repeated mark changes nothing).
    pub async fn mark_live(&self, endpoint: &str, requested_at: i64, at: i64) -> Result<()> {
        let values = [(":t", n(at))];
        let set = "SET live_at = if_not_exists(live_at, :t)";
        self.update_deployment(endpoint, requested_at, set, &values)
            .await
    }

    /// Marks the deployment requested at `requested_at` as started: its call answered success.
    pub async fn confirm_deployment(&self, endpoint: &str, requested_at: i64) -> Result<()> {
        let values = [(":yes", AttributeValue::Bool(true))];
        self.update_deployment(endpoint, requested_at, "SET confirmed = :yes", &values)
            .await
    }

    /// Sets attributes of the deployment requested at `requested_at`: `Busy` when another has
    /// replaced it since (the caller decided on a picture that is gone).
    async fn update_deployment(
        &self,
        endpoint: &str,
        requested_at: i64,
        set: &str,
        values: &[(&str, AttributeValue)],
    ) -> Result<()> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(endpoint_key(endpoint)))
            .key("sk", s("deployment"))
            .update_expression(set)
            .condition_expression("requested_at = :seen")
            .expression_attribute_values(":seen", n(requested_at));
        if set.contains("#status") {
            req = req.expression_attribute_names("#status", "status");
        }
        for (k, v) in values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => {
                Err(Error::Busy(endpoint.to_string()))
            }
            Err(e) => Err(Error::aws("UpdateItem", e)),
        }
    }

    /// Closes the deployment that was requested at `requested_at` with its verdict.
    pub async fn finish_deployment(
        &self,
        endpoint: &str,
        requested_at: i64,
        status: DeploymentStatus,
    ) -> Result<()> {
        // What served is kept first (its key is the deployment's, so a retry writes it again):
        // the verdict is never recorded without it.
        if status == DeploymentStatus::Succeeded
            && let Some(d) = self.deployment(endpoint).await?
            && d.requested_at == requested_at
        {
            self.record_served(&d).await?;
        }
        let values = [(":status", s(status.as_str())), (":now", n(now_ms()))];
        let set = "SET #status = :status, finished_at = :now";
        self.update_deployment(endpoint, requested_at, set, &values)
            .await
    }

    /// Keeps that a version served this endpoint successfully: a rollback goes back to what
    /// worked, not merely to the next lower number. Keyed by the deployment, so a retry writes
    /// the same item.
    async fn record_served(&self, d: &DeploymentRecord) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(endpoint_key(&d.endpoint)))
            .item("sk", s(format!("served#{:015}", d.requested_at)))
            .item("package_arn", s(&d.package_arn))
            .item("package_version", n(d.package_version))
            .item("config", s(&d.config))
            .item("finished_at", n(now_ms()))
            .send()
            .await
            .map_err(|e| Error::aws("PutItem", e))?;
        Ok(())
    }

    /// The versions that served this endpoint successfully, the most recent deployment first.
    pub async fn served(&self, endpoint: &str) -> Result<Vec<Served>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
            .expression_attribute_values(":pk", s(endpoint_key(endpoint)))
            .expression_attribute_values(":s", s("served#"))
            .scan_index_forward(false)
            .limit(50)
            .send()
            .await
            .map_err(|e| Error::aws("Query", e))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| {
                Some(Served {
                    package_arn: get_s(i, "package_arn")?,
                    package_version: get_n(i, "package_version").unwrap_or_default(),
                    config: get_s(i, "config").unwrap_or_default(),
                    finished_at: get_n(i, "finished_at"),
                })
            })
            .collect())
    }

    /// Adds an alarm to the in-flight deployment's evidence, so the deployer's verdict carries it.
    /// `Ok(false)` when no deployment is in progress on the endpoint.
    pub async fn note_alarm(&self, endpoint: &str, alarm: &str) -> Result<bool> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(endpoint_key(endpoint)))
            .key("sk", s("deployment"))
            .update_expression("ADD alarms_seen :a")
            .condition_expression("#status = :open")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":a", AttributeValue::Ss(vec![alarm.to_string()]))
            .expression_attribute_values(":open", s(DeploymentStatus::InProgress.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e) == Some("ConditionalCheckFailedException") => Ok(false),
            Err(e) => Err(Error::aws("UpdateItem", e)),
        }
    }

    /// Whether an occurrence (for example an alarm firing, keyed by alarm and state time) was
    /// already acted on. Checked under the endpoint's lease, written after acting, so a retry of
    /// a failed attempt still acts and a duplicate of a finished one does not.
    pub async fn handled(&self, subject: &str, occurrence: &str) -> Result<bool> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(subject))
            .key("sk", s(format!("handled#{occurrence}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::aws("GetItem", e))?;
        Ok(out.item().is_some())
    }

    pub async fn mark_handled(
        &self,
        subject: &str,
        occurrence: &str,
        request_id: &str,
    ) -> Result<()> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(subject))
            .item("sk", s(format!("handled#{occurrence}")))
            .item("request_id", s(request_id))
            .item("expires_at", n(now + ROUTINE_RETENTION_SECONDS))
            .send()
            .await
            .map_err(|e| Error::aws("PutItem", e))?;
        Ok(())
    }

    /// The failure remembered for a subject, if any.
    pub async fn failure(&self, subject: &str) -> Result<Option<Failure>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(subject))
            .key("sk", s("failure"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| Error::aws("GetItem", e))?;
        Ok(out.item().map(|i| Failure {
            fingerprint: get_s(i, "fingerprint").unwrap_or_default(),
            error: get_s(i, "error").unwrap_or_default(),
            first_at: get_n(i, "first_at").unwrap_or_default(),
            last_at: get_n(i, "last_at").unwrap_or_default(),
            count: get_n(i, "count").unwrap_or(1),
        }))
    }

    pub async fn put_failure(&self, subject: &str, f: &Failure) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(subject))
            .item("sk", s("failure"))
            .item("fingerprint", s(&f.fingerprint))
            .item("error", s(&f.error))
            .item("first_at", n(f.first_at))
            .item("last_at", n(f.last_at))
            .item("count", n(f.count))
            .send()
            .await
            .map_err(|e| Error::aws("PutItem", e))?;
        Ok(())
    }

    pub async fn clear_failure(&self, subject: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(subject))
            .key("sk", s("failure"))
            .send()
            .await
            .map_err(|e| Error::aws("DeleteItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome, changed: bool) -> DecisionRecord {
        DecisionRecord {
            subject: "endpoint#e".into(),
            at: OffsetDateTime::now_utc(),
            function: "f",
            request_id: "r".into(),
            trigger: "t".into(),
            package: None,
            outcome,
            reason: "why".into(),
            plan: Plan::default(),
            results: vec![],
            evidence: Value::Null,
            dry_run: false,
            changed,
        }
    }

    #[test]
    fn what_changed_something_or_needs_a_person_is_kept() {
        assert!(record(Outcome::InSync, false).expires());
        assert!(
            record(Outcome::Deleted, false).expires(),
            "a dry run changed nothing"
        );
        // A plan that stopped half-way on a throttle: the rejection it made stays on record.
        assert!(!record(Outcome::Retrying, true).expires());
        assert!(!record(Outcome::Noted, true).expires());
        assert!(!record(Outcome::RollbackImpossible, false).expires());
    }
}
