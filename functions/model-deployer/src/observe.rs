//! Reading what the decision needs from AWS. No writes here.

use lifecycle::aws::Clients;
use lifecycle::deployment::DeploymentStatus;
use lifecycle::endpoints;
use lifecycle::error::{Error, Result};
use lifecycle::ledger::{Ledger, now_ms};
use lifecycle::registry::{self, Approval, ModelPackage};
use lifecycle::targets::DeploymentTarget;
use serde_json::Value;
use time::OffsetDateTime;

use crate::gates::{self, Metrics};
use crate::reconcile::{AlarmNow, Candidate, Observed};

/// At most this many not-yet-live approved versions are evaluated per decision; older ones wait.
const MAX_CANDIDATES: usize = 5;
/// Statistics documents larger than this are not evaluation reports.
const MAX_STATISTICS_BYTES: i64 = 1 << 20;

pub async fn observe<'a>(
    clients: &Clients,
    ledger: &Ledger,
    target: &'a DeploymentTarget,
    staging: Option<&DeploymentTarget>,
    only_if_live: Option<String>,
) -> Result<Observed<'a>> {
    let sm = &clients.sagemaker;
    let endpoint = endpoints::describe(sm, &target.endpoint).await?;
    let live_config = match &endpoint {
        Some(ep) if !ep.config_name.is_empty() => {
            endpoints::describe_config(sm, &ep.config_name).await?
        }
        _ => None,
    };
    let served = match &live_config {
        Some(c) => registry::served_arn(sm, c, Some(&target.variant)).await?,
        None => None,
    };
    let in_flight = ledger.deployment(&target.endpoint).await?;
    let scaling = refused_scaling(clients, target, live_config.as_ref()).await?;

    let (candidates, approved) = candidates(clients, target, served.as_deref()).await?;
    let managed: Vec<String> = target
        .managed_alarms
        .iter()
        .map(|a| a.name.clone())
        .collect();
    let alarms = alarm_states(clients, &target.rollback_alarms, &managed).await?;
    let now = managed_now(clients, target, &managed).await?;
    let cause = cause_alarm(clients, in_flight.as_ref()).await?;
    let capacity = match (&endpoint, &target.capacity) {
        (Some(_), Some(_)) => Some(capacity_now(clients, target).await?),
        _ => None,
    };
    // Staging first: what the required target's ledger and rollback alarms say now.
    let staging = staging_now(clients, ledger, staging).await?;
    let now_ms = now_ms();
    let open = in_flight
        .as_ref()
        .filter(|d| d.status == DeploymentStatus::InProgress);
    let canary = endpoint.as_ref().and_then(|ep| {
        lifecycle::deploy::canary_now(ep, live_config.as_ref(), open, &target.model_package_group)
    });
    let kpi = match &target.kpi_gate {
        Some(gate) => canary_kpi(clients, gate, canary.as_ref(), now_ms).await?,
        None => None,
    };
    let live = Live {
        endpoint: endpoint.as_ref(),
        open,
        canary: canary.as_ref(),
        approved: &approved,
    };
    let smoke = smoke_now(clients, target, live).await?;
    Ok(Observed {
        target,
        endpoint,
        live_config,
        served,
        candidates,
        in_flight,
        alarms,
        guardrails: now.live,
        leftover_alarms: now.leftovers,
        cause,
        scaling,
        only_if_live,
        approved,
        capacity,
        staging,
        kpi,
        smoke,
        now_ms,
    })
}

/// The target's managed guardrail alarms as they are, and leftovers no bound declares. They are
/// named under the prefix (parsing sets it whenever a target has any).
async fn managed_now(
    clients: &Clients,
    target: &DeploymentTarget,
    managed: &[String],
) -> Result<lifecycle::guardrails::Managed> {
    match &target.managed_alarm_prefix {
        Some(prefix) => {
            let cw = &clients.cloudwatch;
            lifecycle::guardrails::read(cw, prefix, &target.endpoint, managed).await
        }
        None => Ok(lifecycle::guardrails::Managed::default()),
    }
}

/// The live variant's autoscaling, when SageMaker would refuse the target's next update while
/// it is registered.
async fn refused_scaling(
    clients: &Clients,
    target: &DeploymentTarget,
    live_config: Option<&lifecycle::endpoints::EndpointConfig>,
) -> Result<Option<lifecycle::scaling::Snapshot>> {
    let Some(c) = live_config else {
        return Ok(None);
    };
    let (endpoint, variant) = (&target.endpoint, &target.variant);
    let aas = &clients.autoscaling;
    lifecycle::scaling::refused_update(aas, endpoint, c, variant, &target.instance_type).await
}

/// What serves and what is in flight, as observe read them.
#[derive(Clone, Copy)]
struct Live<'l> {
    endpoint: Option<&'l lifecycle::endpoints::Endpoint>,
    open: Option<&'l lifecycle::deployment::DeploymentRecord>,
    canary: Option<&'l lifecycle::deploy::CanaryNow>,
    /// The group's Approved versions, down to the one served.
    approved: &'l [String],
}

/// The target's smoke test, when a new version has just gone live: a canary's candidate (on its
/// own variant) before its bake starts, or a plain update once it completed. Only a record made
/// to move forward asks for it (`smoke_due`): a rollback, a canary's way back or promotion, and
/// the way back from a failed test do not.
async fn smoke_now(
    clients: &Clients,
    target: &DeploymentTarget,
    live: Live<'_>,
) -> Result<Option<crate::reconcile::Smoke>> {
    use lifecycle::endpoints::EndpointStatus;
    let (Some(test), Some(ep), Some(d)) = (&target.smoke_test, live.endpoint, live.open) else {
        return Ok(None);
    };
    let live_now = ep.status == EndpointStatus::InService && ep.config_name == d.config;
    // A version rejected since (a failed test whose way back did not happen, a person) is not
    // asked again: the reconcile replaces it like any version no longer Approved.
    let approved = live.approved.contains(&d.package_arn);
    if !d.smoke_due || !live_now || d.live_at.is_some() || !approved {
        return Ok(None);
    }
    let variant = match (d.open_canary(), live.canary) {
        (Some(_), Some(c)) if c.candidate == d.package_arn => Some(c.candidate_variant.as_str()),
        (Some(_), _) => return Ok(None),
        (None, _) => None,
    };
    let client = crate::smoke::client(&clients.sdk);
    let run = crate::smoke::run(&client, &ep.name, variant, test).await;
    let failed = run.as_ref().is_ok_and(|r| !r.passed());
    let back = match (&d.previous_config, failed && variant.is_none()) {
        (Some(name), true) => way_back(clients, target, name).await?,
        _ => None,
    };
    Ok(Some(crate::reconcile::Smoke { run, back }))
}

/// The config a plain update replaced and the package it serves, when both can still be read,
/// the config is no canary's and the package is still Approved.
async fn way_back(
    clients: &Clients,
    target: &DeploymentTarget,
    config: &str,
) -> Result<Option<crate::reconcile::WayBack>> {
    let sm = &clients.sagemaker;
    // A canary's config serves a candidate beside the live version: never a way back.
    let Some(c) = endpoints::describe_config(sm, config).await?.filter(|c| {
        !c.tags
            .contains_key(lifecycle::endpoints::tags::CANARY_PACKAGE)
    }) else {
        return Ok(None);
    };
    let Some(arn) = registry::served_arn(sm, &c, Some(&target.variant)).await? else {
        return Ok(None);
    };
    // Only to a version still Approved: going back to a rejected one is no remedy.
    if !matches!(registry::describe(sm, &arn).await?, Some(p) if p.status == Approval::Approved) {
        return Ok(None);
    }
    Ok(
        registry::version_of(&arn).map(|version| crate::reconcile::WayBack {
            config: c.name,
            package_arn: arn,
            version,
        }),
    )
}

/// Staging first: what the required target's ledger and rollback alarms say now.
async fn staging_now(
    clients: &Clients,
    ledger: &Ledger,
    staging: Option<&DeploymentTarget>,
) -> Result<Option<crate::reconcile::Staging>> {
    let Some(s) = staging else {
        return Ok(None);
    };
    // Its rollback and KPI alarms: a soak is quiet on both.
    let alarms: Vec<String> = s
        .rollback_alarms
        .iter()
        .chain(s.kpi_alarms.iter().map(|k| &k.alarm))
        .cloned()
        .collect();
    Ok(Some(crate::reconcile::Staging {
        endpoint: s.endpoint.clone(),
        record: ledger.deployment(&s.endpoint).await?,
        served: ledger.served(&s.endpoint).await?,
        alarms: alarm_states(clients, &alarms, &[]).await?,
    }))
}

/// The target variant's autoscaling and the suite's schedules on it.
async fn capacity_now(
    clients: &Clients,
    target: &DeploymentTarget,
) -> Result<lifecycle::capacity::CapacityNow> {
    use lifecycle::{capacity, scaling};
    let aas = &clients.autoscaling;
    let scaling = scaling::snapshot(aas, &target.endpoint, &target.variant).await?;
    let id = scaling::resource_id(&target.endpoint, &target.variant);
    let schedules = scaling::schedules(aas, &id, capacity::SCHEDULE_PREFIX).await?;
    Ok(capacity::CapacityNow { scaling, schedules })
}

/// A canary's KPI over its bake, once the bake is over: one GetMetricData. An error (permissions,
/// a bad metric, throttling) is no evidence, read as why.
async fn canary_kpi(
    clients: &Clients,
    gate: &lifecycle::kpi_gate::KpiGate,
    canary: Option<&lifecycle::deploy::CanaryNow>,
    now_ms: i64,
) -> Result<Option<std::result::Result<[lifecycle::kpi_gate::Sample; 2], String>>> {
    let Some((canary, live_at)) = canary.and_then(|c| Some((c, c.record.as_ref()?.live_at?)))
    else {
        return Ok(None);
    };
    if now_ms < live_at + gate.bake_minutes * 60_000 {
        return Ok(None);
    }
    let variants = [
        canary.live_variant.as_str(),
        canary.candidate_variant.as_str(),
    ];
    let endpoint = &canary
        .record
        .as_ref()
        .map(|d| d.endpoint.clone())
        .unwrap_or_default();
    let (start, end) = (live_at.div_euclid(1000), now_ms.div_euclid(1000));
    match lifecycle::kpi_gate::read(&clients.cloudwatch, gate, endpoint, variants, start, end).await
    {
        Ok(samples) => Ok(Some(Ok(samples))),
        // Even a transient error: failing the invocation would also skip the alarm checks and
        // the bake's limit; read again by the next reconcile.
        Err(e) => Ok(Some(Err(e.to_string()))),
    }
}

/// Approved packages, newest first, each judged by the target's gates, down to the one served
/// (live, not judged again); at most [`MAX_CANDIDATES`] not yet live.
async fn candidates(
    clients: &Clients,
    target: &DeploymentTarget,
    served: Option<&str>,
) -> Result<(Vec<Candidate>, Vec<String>)> {
    let sm = &clients.sagemaker;
    let (mut candidates, mut approved) = (Vec::new(), Vec::new());
    for summary in registry::list(sm, &target.model_package_group, Approval::Approved).await? {
        approved.push(summary.arn.clone());
        if served == Some(summary.arn.as_str()) {
            candidates.push(Candidate {
                arn: summary.arn,
                version: summary.version,
                gates: None,
                unreadable: None,
            });
            break;
        }
        // Past the cap, newer versions wait unjudged, but the listing goes on down to the one
        // served, so whether it is still Approved is known.
        if candidates.len() >= MAX_CANDIDATES {
            continue;
        }
        let Some(package) = registry::describe(sm, &summary.arn).await? else {
            continue;
        };
        if package.status != Approval::Approved {
            continue; // changed since it was listed
        }
        let (metrics, unreadable) = metrics_of(clients, &package).await?;
        let report = gates::evaluate(&target.gates, &metrics);
        // An unreadable report matters only where a gate finds no value without it.
        let unreadable = unreadable.filter(|_| report.0.iter().any(|g| g.value.is_none()));
        candidates.push(Candidate {
            arn: package.arn,
            version: package.version,
            gates: Some(report),
            unreadable,
        });
    }
    Ok((candidates, approved))
}

/// A rollback done and not yet checked: the alarm that caused it, as it is now.
async fn cause_alarm(
    clients: &Clients,
    in_flight: Option<&lifecycle::deployment::DeploymentRecord>,
) -> Result<Option<AlarmNow>> {
    let pending = in_flight
        .filter(|d| d.status == DeploymentStatus::Succeeded && d.recovered.is_none())
        .and_then(|d| d.cause_alarm.as_ref());
    Ok(match pending {
        Some(alarm) => alarm_states(clients, std::slice::from_ref(alarm), &[])
            .await?
            .into_iter()
            .next(),
        None => None,
    })
}

/// A package's evaluation results: its metadata, and its ModelQuality statistics from S3; and why
/// the statistics could not be read, when they could not.
async fn metrics_of(
    clients: &Clients,
    package: &ModelPackage,
) -> Result<(Metrics, Option<String>)> {
    let (statistics, unreadable) = match &package.quality_statistics {
        Some(uri) => match read_statistics(&clients.s3, uri).await? {
            Ok(v) => (Some(v), None),
            Err(why) => (None, Some(format!("its evaluation report {uri} {why}"))),
        },
        None => (None, None),
    };
    Ok((
        Metrics::collect(&package.metadata, statistics.as_ref()),
        unreadable,
    ))
}

/// The statistics JSON, or why it cannot be read (access denied, a KMS error, no such object,
/// too large, not JSON): unreadable is not failing, so the caller blocks rather than rejects. A
/// transient S3 error is returned so the invocation is retried.
async fn read_statistics(s3: &aws_sdk_s3::Client, uri: &str) -> Result<Result<Value, String>> {
    let Some((bucket, key)) = uri
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
    else {
        return Ok(Err("is not an s3://bucket/key URI".into()));
    };
    let out = match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(e) => {
            let err = Error::aws("GetObject", e);
            if err.is_retryable() {
                return Err(err);
            }
            return Ok(Err(format!("cannot be read: {err}")));
        }
    };
    let size = out.content_length().unwrap_or(0);
    if size > MAX_STATISTICS_BYTES {
        return Ok(Err(format!(
            "is {size} bytes, more than the {MAX_STATISTICS_BYTES} an evaluation report may be"
        )));
    }
    let bytes = match out.body.collect().await {
        Ok(b) => b.into_bytes(),
        Err(e) => {
            return Err(Error::Aws {
                operation: "GetObject",
                message: format!("reading {uri}: {e}"),
                retryable: true,
            });
        }
    };
    Ok(serde_json::from_slice(&bytes).map_err(|e| format!("is not JSON: {e}")))
}

/// The state of each of these alarms, and since when (its last transition, so an alarm whose
/// evaluation is re-run is not "new"). An alarm that is not found counts as firing: a rollback
/// alarm that does not exist guards nothing.
/// The rollback alarms' states. A missing one holds deployments (it would guard nothing), except
/// a managed one: the plan makes it first, in INSUFFICIENT_DATA.
async fn alarm_states(
    clients: &Clients,
    alarms: &[String],
    managed: &[String],
) -> Result<Vec<AlarmNow>> {
    use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
    if alarms.is_empty() {
        return Ok(vec![]);
    }
    let out = clients
        .cloudwatch
        .describe_alarms()
        .set_alarm_names(Some(alarms.to_vec()))
        .alarm_types(AlarmType::MetricAlarm)
        .alarm_types(AlarmType::CompositeAlarm)
        .send()
        .await
        .map_err(|e| Error::aws("DescribeAlarms", e))?;
    let time = |t: Option<&aws_smithy_types::DateTime>| {
        t.and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok())
    };
    let mut found: Vec<AlarmNow> = out
        .metric_alarms()
        .iter()
        .filter_map(|a| {
            Some(AlarmNow {
                name: a.alarm_name()?.to_string(),
                in_alarm: a.state_value() == Some(&StateValue::Alarm),
                missing: false,
                since: time(a.state_transitioned_timestamp()).or(time(a.state_updated_timestamp())),
            })
        })
        .chain(out.composite_alarms().iter().filter_map(|a| {
            Some(AlarmNow {
                name: a.alarm_name()?.to_string(),
                in_alarm: a.state_value() == Some(&StateValue::Alarm),
                missing: false,
                since: time(a.state_transitioned_timestamp()).or(time(a.state_updated_timestamp())),
            })
        }))
        .collect();
    for name in alarms {
        if !found.iter().any(|a| &a.name == name) {
            found.push(AlarmNow {
                name: name.clone(),
                in_alarm: !managed.contains(name),
                missing: true,
                since: None,
            });
        }
    }
    Ok(found)
}
