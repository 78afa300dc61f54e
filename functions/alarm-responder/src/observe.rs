//! Reading what the decision needs from AWS. No writes here.

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use lifecycle::aws::Clients;
use lifecycle::config::Environment;
use lifecycle::deployment::{DeploymentRecord, DeploymentStatus};
use lifecycle::endpoints::{self, EndpointConfig, tags};
use lifecycle::error::{Error, Result};
use lifecycle::events::AlarmStateChange;
use lifecycle::ledger::{Ledger, Served, now_ms};
use lifecycle::registry::{self, Approval, ModelPackage};
use lifecycle::scaling;
use lifecycle::targets::{DeploymentTarget, KpiAlarm};
use time::OffsetDateTime;

use crate::decide::Observed;
use crate::route::{Response, Route};

/// How far below the live version a rollback looks for an Approved one.
const MAX_OLDER: usize = 20;

pub async fn observe<'a>(
    clients: &Clients,
    ledger: &Ledger,
    route: Route<'a>,
    alarm: &'a AlarmStateChange,
    environment: Environment,
    after_update: bool,
) -> Result<Observed<'a>> {
    let sm = &clients.sagemaker;
    let target = route.target;
    let endpoint = endpoints::describe(sm, &target.endpoint).await?;
    let mut obs = Observed {
        route,
        alarm,
        after_update,
        environment,
        endpoint: None,
        live_config: None,
        in_flight: ledger.deployment(&target.endpoint).await?,
        served: None,
        older: vec![],
        worked: vec![],
        history_known: false,
        candidate_config: None,
        went_live: None,
        rollback_scaling: None,
        samples: None,
        scaling: None,
        now_ms: now_ms(),
    };
    // Nothing more is needed to decide about a missing or changing endpoint.
    let Some(ep) = endpoint else {
        return Ok(obs);
    };
    if ep.status.is_transitioning() {
        obs.endpoint = Some(ep);
        return Ok(obs);
    }
    match obs.route.response {
        Response::ScaleUp => {
            obs.scaling =
                scaling::describe(&clients.autoscaling, &target.endpoint, &target.variant).await?;
        }
        Response::Rollback => rollback_facts(clients, ledger, &mut obs, &ep).await?,
    }
    obs.endpoint = Some(ep);
    Ok(obs)
}

/// The versions that served this endpoint successfully before the live one (the ledger's
/// record), described, most recent first; each once.
async fn worked(
    sm: &aws_sdk_sagemaker::Client,
    history: &[Served],
    served: &ModelPackage,
) -> Result<Vec<ModelPackage>> {
    let mut seen = vec![served.arn.clone()];
    let mut out = vec![];
    for s in history {
        if seen.contains(&s.package_arn) || out.len() == MAX_OLDER {
            continue;
        }
        seen.push(s.package_arn.clone());
        if let Some(p) = registry::describe(sm, &s.package_arn).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// What a rollback needs: the live package, the versions that served before it and the older
/// ones (pins), the KPI's samples, a config to reuse, and the autoscaling in the way.
async fn rollback_facts(
    clients: &Clients,
    ledger: &Ledger,
    obs: &mut Observed<'_>,
    ep: &endpoints::Endpoint,
) -> Result<()> {
    let sm = &clients.sagemaker;
    let (target, alarm) = (obs.route.target, obs.alarm);
    let live_config = endpoints::describe_config(sm, &ep.config_name).await?;
    obs.served = match &live_config {
        Some(c) => registry::served_by(sm, c, Some(&target.variant)).await?,
        None => None,
    };
    if let Some(served) = &obs.served {
        let history = ledger.served(&target.endpoint).await?;
        obs.went_live = went_live(&history, obs.in_flight.as_ref(), &served.arn, ep);
        obs.worked = worked(sm, &history, served).await?;
        obs.history_known = !obs.worked.is_empty();
        let down_to = obs
            .worked
            .iter()
            .find(|p| p.status == Approval::Approved)
            .map(|p| p.version);
        obs.older = older_versions(sm, served, down_to).await?;
        if let Some(kpi) = obs.route.kpi {
            let since = live_since(obs.in_flight.as_ref(), &served.arn, ep, alarm);
            obs.samples = samples(clients, kpi, alarm, since).await?;
        }
    }
    let candidate = obs
        .worked
        .iter()
        .chain(&obs.older)
        .find(|p| p.status == Approval::Approved)
        .map(|p| p.arn.clone());
    let reused = match (candidate, &live_config) {
        (Some(arn), Some(live)) => reusable_config(sm, live, &arn).await?,
        _ => None,
    };
    if let Some(live) = &live_config {
        obs.rollback_scaling =
            rollback_refused_while_scaled(clients, target, live, reused.as_ref()).await?;
    }
    obs.candidate_config = reused.map(|c| c.name);
    obs.live_config = live_config;
    Ok(())
}

/// Versions below the served one, newest first, described, down to the first Approved or
/// pinned one at or below `down_to` (the decision needs nothing older: a rollback never passes a
/// pinned version).
async fn older_versions(
    sm: &aws_sdk_sagemaker::Client,
    served: &ModelPackage,
    down_to: Option<i64>,
) -> Result<Vec<ModelPackage>> {
    let mut out = Vec::new();
    let listed = registry::list_all(sm, &served.group).await?;
    for summary in listed
        .into_iter()
        .filter(|p| p.version < served.version)
        .take(MAX_OLDER)
    {
        let Some(p) = registry::describe(sm, &summary.arn).await? else {
            continue;
        };
        let last = (p.status == Approval::Approved || p.is_pinned())
            && down_to.is_none_or(|v| p.version <= v);
        out.push(p);
        if last {
            break;
        }
    }
    Ok(out)
}

/// The live variant's autoscaling, when SageMaker would refuse the rollback's update while it is
/// registered: the reused config (or the target's sizing) changes the variant's instance type.
async fn rollback_refused_while_scaled(
    clients: &Clients,
    target: &DeploymentTarget,
    live: &EndpointConfig,
    reused: Option<&EndpointConfig>,
) -> Result<Option<lifecycle::scaling::Snapshot>> {
    let instance_type = reused
        .and_then(|c| c.variant(&target.variant))
        .and_then(|v| v.instance_type())
        .map_or(target.instance_type.as_str(), |t| t.as_str());
    let aas = &clients.autoscaling;
    lifecycle::scaling::refused_update(aas, &target.endpoint, live, &target.variant, instance_type)
        .await
}

/// The config the live one replaced, if it still exists and serves `arn`: a rollback reuses it
/// (and its model) instead of making new ones.
async fn reusable_config(
    sm: &aws_sdk_sagemaker::Client,
    live: &EndpointConfig,
    arn: &str,
) -> Result<Option<EndpointConfig>> {
    let Some(previous) = live.tags.get(tags::REPLACES) else {
        return Ok(None);
    };
    Ok(endpoints::describe_config(sm, previous)
        .await?
        .filter(|c| c.package_arn() == Some(arn)))
}

/// When the served version went live: its most recent success in the ledger's history, else its
/// deployment's verdict, else (an endpoint the ledger has no history of) the endpoint's last
/// change, later than the truth: the window is then generous.
fn went_live(
    history: &[Served],
    last: Option<&DeploymentRecord>,
    served: &str,
    ep: &lifecycle::endpoints::Endpoint,
) -> Option<OffsetDateTime> {
    let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    let recorded = history
        .iter()
        .find(|s| s.package_arn == served)
        .and_then(|s| s.finished_at)
        .or_else(|| {
            last.filter(|d| d.package_arn == served && d.status == DeploymentStatus::Succeeded)
                .and_then(|d| d.finished_at)
        });
    match recorded {
        Some(ms) => at(ms),
        None if history.is_empty() => ep.last_modified,
        None => None,
    }
}

/// When the served version went live: the samples of a KPI count from then, so the version
/// before it is never judged as this one. The endpoint's own change time when the ledger's record
/// is this version's (its verdict may not be recorded yet); nothing known, the whole window.
fn live_since(
    last: Option<&DeploymentRecord>,
    served: &str,
    ep: &lifecycle::endpoints::Endpoint,
    alarm: &AlarmStateChange,
) -> Option<OffsetDateTime> {
    let d = last.filter(|d| d.package_arn == served && d.config == ep.config_name)?;
    if !matches!(
        d.status,
        DeploymentStatus::InProgress | DeploymentStatus::Succeeded
    ) {
        return None;
    }
    // An alarm that fired while traffic shifted judges the shift: count from its start.
    let started =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(d.requested_at) * 1_000_000).ok();
    match ep.last_modified {
        Some(done) if alarm.state.timestamp < done => started,
        other => other,
    }
}

/// Samples of a KPI alarm's window, ending when the alarm fired and starting no earlier than when
/// the live version went live. A transient failure to read them is returned, so Lambda's retry
/// judges the alarm again; a permanent one (access denied) reads as `None`: inconclusive, for a
/// person.
async fn samples(
    clients: &Clients,
    kpi: &KpiAlarm,
    alarm: &AlarmStateChange,
    live_since: Option<OffsetDateTime>,
) -> Result<Option<f64>> {
    let end = alarm.state.timestamp;
    let window = i64::from(kpi.window_minutes) * 60;
    let start = (end - time::Duration::seconds(window))
        .max(live_since.unwrap_or(OffsetDateTime::UNIX_EPOCH));
    if start >= end {
        // The version went live after the alarm fired: none of the window's traffic was its.
        return Ok(Some(0.0));
    }
    let period = ((end - start).whole_seconds().max(60) + 59) / 60 * 60;
    let dims = kpi
        .samples
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    let query = MetricDataQuery::builder()
        .id("samples")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(&kpi.samples.namespace)
                        .metric_name(&kpi.samples.metric)
                        .set_dimensions(Some(dims))
                        .build(),
                )
                .period(period as i32)
                .stat(&kpi.samples.stat)
                .build(),
        )
        .build();
    let ts = |t: OffsetDateTime| aws_smithy_types::DateTime::from_secs(t.unix_timestamp());
    let out = clients
        .cloudwatch
        .get_metric_data()
        .metric_data_queries(query)
        .start_time(ts(start))
        .end_time(ts(end + time::Duration::seconds(1)))
        .send()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let e = Error::aws("GetMetricData", e);
            if !e.is_retryable() {
                tracing::error!(error = %e, "KPI samples unreadable: inconclusive");
                return Ok(None);
            }
            return Err(match e {
                Error::Aws {
                    operation,
                    message,
                    retryable,
                } => Error::Aws {
                    operation,
                    message: format!(
                        "{message} (the KPI's samples; the alarm is judged again on retry)"
                    ),
                    retryable,
                },
                other => other,
            });
        }
    };
    Ok(Some(
        out.metric_data_results()
            .iter()
            .flat_map(|r| r.values())
            .sum(),
    ))
}
