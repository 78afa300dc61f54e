//! drift-scanner: how much of the product catalog is newer than the fine-tuned adapter's training
//! cutoff? Past a threshold, export the catalog to S3 as JSON Lines and start one retraining job.
//!
//! schedule → cutoff → scan (parallel) → decide (pure) → the pipeline: export + train, record.

pub mod config;
pub mod coverage;
pub mod dates;
pub mod decide;
pub mod finished;

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::catalog::CatalogExport;
use lifecycle::decision::{Decision, Subject};
use lifecycle::endpoints;
use lifecycle::error::{Error, Result};
use lifecycle::events::Schedule;
use lifecycle::executor::Executor;
use lifecycle::ledger::Ledger;
use lifecycle::outcome::Outcome;
use lifecycle::pipeline::Pipeline;
use lifecycle::registry;
use lifecycle::training::{self, TrainingJob};
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

pub use config::Config;
use coverage::Tally;
use decide::Retraining;

pub const FUNCTION: &str = "drift-scanner";

pub struct Scanner {
    pub clients: Clients,
    pub ledger: Ledger,
    pub config: Config,
}

impl Scanner {
    pub fn new(clients: Clients, config: Config) -> Self {
        let ledger = Ledger::new(clients.dynamodb.clone(), config.ledger_table.clone());
        Self {
            clients,
            ledger,
            config,
        }
    }

    fn subject(&self) -> Subject {
        Subject::Adapter(self.config.adapter.clone())
    }
}

/// What the scan measured: the decision's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub cutoff: String,
    pub cutoff_source: String,
    pub items: u64,
    pub after_cutoff: u64,
    pub gap_pct: f64,
    pub missing_date: u64,
    pub bad_date: u64,
    pub sample: Vec<String>,
    pub scan_seconds: f64,
}

/// The handler's answer (the decision is kept in the ledger, under `adapter#<name>`).
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub outcome: Outcome,
    pub reason: String,
    #[serde(flatten)]
    pub measurement: Measurement,
    /// Where the catalog was (or, in a dry run, would have been) exported, when retraining.
    pub export_uri: Option<String>,
    pub training_job: Option<String>,
    /// What each step of the plan did.
    pub results: Vec<String>,
    pub dry_run: bool,
}

/// The training cutoff, as written (a date covers its whole day) and as an instant.
pub struct Cutoff {
    pub raw: String,
    pub at: OffsetDateTime,
    pub source: String,
}

/// The handler's answer: a scan's report, or the decision about a training job's end.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Scan(ScanReport),
    Job(lifecycle::pipeline::Summary),
}

impl Reply {
    pub fn scan(self) -> Option<ScanReport> {
        match self {
            Reply::Scan(r) => Some(r),
            Reply::Job(_) => None,
        }
    }

    pub fn job(self) -> Option<lifecycle::pipeline::Summary> {
        match self {
            Reply::Job(s) => Some(s),
            Reply::Scan(_) => None,
        }
    }
}

/// What started this invocation.
enum Trigger {
    /// The daily schedule: retrain past the threshold.
    Schedule(String),
    /// A configured Model Monitor alarm in ALARM: retrain, whatever the gap.
    Monitor(Box<lifecycle::events::AlarmStateChange>),
    /// A training job changed state.
    JobEnded(String),
}

impl Trigger {
    fn parse(c: &Config, payload: &Value) -> Result<Self> {
        use lifecycle::events::{self, ALARM_STATE_CHANGE, AlarmStateChange};
        let detail_type = payload.get("detail-type").and_then(Value::as_str);
        match detail_type {
            Some(finished::TRAINING_JOB_STATE_CHANGE) => {
                let env = events::envelope(payload)?;
                Ok(Trigger::JobEnded(finished::job_name(&env)?))
            }
            Some(ALARM_STATE_CHANGE) => {
                let env = events::envelope(payload)?;
                let alarm = AlarmStateChange::parse(&env.detail)?;
                if !c.monitor_alarms.contains(&alarm.alarm_name) {
                    return Err(Error::MalformedEvent(format!(
                        "alarm {} is not one of MONITOR_ALARMS",
                        alarm.alarm_name
                    )));
                }
                Ok(Trigger::Monitor(Box::new(alarm)))
            }
            _ => Ok(Trigger::Schedule(Schedule::parse(payload)?.event_id)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Trigger::Schedule(id) => format!("schedule {id}"),
            Trigger::Monitor(a) => format!("alarm {} {}", a.alarm_name, a.state.value),
            Trigger::JobEnded(name) => format!("training job {name}"),
        }
    }
}

pub async fn handle(scanner: &Scanner, event: LambdaEvent<Value>) -> Result<Reply> {
    let trigger = Trigger::parse(&scanner.config, &event.payload)?;
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let pipeline = Pipeline {
        function: FUNCTION,
        request_id: &request_id,
        trigger: trigger.describe(),
        executor: Executor {
            clients: &scanner.clients,
            ledger: &scanner.ledger,
            execution_role_arn: "",
            dry_run: scanner.config.dry_run,
        },
    };
    let result = match trigger {
        Trigger::Schedule(_) => scan(scanner, &pipeline, None).await.map(Reply::Scan),
        Trigger::Monitor(alarm) => monitor(scanner, &pipeline, *alarm).await,
        Trigger::JobEnded(name) => job_ended(scanner, &pipeline, &name).await.map(Reply::Job),
    };
    lifecycle::metrics::flush(&request_id);
    result
}

/// A Model Monitor alarm: in ALARM, the same export and retraining under the same one-job guard,
/// with the alarm as the reason; back to OK, recorded only.
async fn monitor(
    scanner: &Scanner,
    pipeline: &Pipeline<'_>,
    alarm: lifecycle::events::AlarmStateChange,
) -> Result<Reply> {
    if alarm.state.value != "ALARM" {
        let reason = format!(
            "Model Monitor alarm {} is {}: nothing to retrain for",
            alarm.alarm_name, alarm.state.value
        );
        let decision = Decision::new(Outcome::Ignored, reason);
        return Ok(Reply::Job(pipeline.run(scanner.subject(), decision).await?));
    }
    let cause = format!(
        "Model Monitor alarm {} in ALARM: {}",
        alarm.alarm_name, alarm.state.reason
    );
    scan(scanner, pipeline, Some(cause)).await.map(Reply::Scan)
}

async fn job_ended(
    scanner: &Scanner,
    pipeline: &Pipeline<'_>,
    name: &str,
) -> Result<lifecycle::pipeline::Summary> {
    let ended = match finished::observe(scanner, name).await {
        Ok(e) => e,
        Err(e) => {
            let _ = pipeline.fail(scanner.subject(), None, e.clone()).await;
            return Err(e);
        }
    };
    let summary = pipeline
        .run(scanner.subject(), finished::decide(&scanner.config, &ended))
        .await?;
    match summary.error.clone() {
        Some(e) => Err(e),
        // A retry of a registration that failed for good: the event ends in the failed-
        // invocations queue, to be redriven once a person has fixed the cause.
        None if summary.outcome == Outcome::BackingOff => {
            Err(Error::InvalidData(format!("{name}: {}", summary.reason)))
        }
        None => Ok(summary),
    }
}

/// `forced`: a Model Monitor alarm's reason, which starts a retraining whatever the gap.
async fn scan(
    scanner: &Scanner,
    pipeline: &Pipeline<'_>,
    forced: Option<String>,
) -> Result<ScanReport> {
    let seen = match observe(scanner, forced.as_deref()).await {
        Ok(Some(seen)) => seen,
        Ok(None) => return Err(no_cutoff(scanner, pipeline).await),
        // A read that failed before anything was decided: recorded like any other failure.
        Err(e) => {
            let _ = pipeline.fail(scanner.subject(), None, e.clone()).await;
            return Err(e);
        }
    };
    let c = &scanner.config;
    let Seen {
        cutoff,
        tally,
        measurement,
        retraining,
        verdict,
    } = seen;
    let measured = format!(
        "{} of {} catalog items ({:.2}%) are newer than the adapter's cutoff {}; threshold {}%",
        tally.after_cutoff,
        tally.items,
        tally.gap_pct(),
        cutoff.raw,
        c.threshold_pct
    );
    let caveat = if tally.missing_date + tally.bad_date > 0 {
        format!(
            "; {} items have no {} and {} an unreadable one (counted, not new)",
            tally.missing_date, c.created_attribute, tally.bad_date
        )
    } else {
        String::new()
    };
    let retrain = verdict == decide::Verdict::Retrain;
    let (export_uri, job) = (retraining.export.uri(), retraining.job.name.clone());
    let measured = match &forced {
        Some(cause) => format!("{cause}; {measured}"),
        None => measured,
    };
    let decision = decide::decision(&verdict, &measured, &caveat, retraining)
        .with_evidence(json!(measurement));
    let summary = pipeline.run(scanner.subject(), decision).await?;
    if let Some(e) = summary.error {
        return Err(e);
    }
    Ok(ScanReport {
        outcome: summary.outcome,
        reason: summary.reason,
        measurement,
        export_uri: retrain.then_some(export_uri),
        training_job: retrain.then_some(job),
        results: summary.results,
        dry_run: summary.dry_run,
    })
}

/// What the scan read and concluded before anything is done.
struct Seen {
    cutoff: Cutoff,
    tally: Tally,
    measurement: Measurement,
    retraining: Retraining,
    verdict: decide::Verdict,
}

/// The cutoff, the catalog against it, and (past the threshold) the adapter's jobs. `None`: no
/// cutoff to measure against.
async fn observe(scanner: &Scanner, forced: Option<&str>) -> Result<Option<Seen>> {
    let c = &scanner.config;
    let Some(cutoff) = cutoff(scanner).await? else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let tally = coverage::scan(
        &scanner.clients.dynamodb,
        &c.products_table,
        &c.created_attribute,
        &c.title_attribute,
        c.segments,
        c.page_size,
        cutoff.at,
    )
    .await?;
    let measurement = measure(&tally, &cutoff, started.elapsed().as_secs_f64());
    publish(&tally);
    let cause = match forced {
        Some(cause) => cause.to_string(),
        None => format!(
            "coverage gap {:.2}% of {} items above {}%",
            tally.gap_pct(),
            tally.items,
            c.threshold_pct
        ),
    };
    let mut retraining = retraining(c, &dates::snapshot_date(OffsetDateTime::now_utc()), cause);
    // Only past the threshold (or asked by an alarm) is SageMaker asked about jobs.
    let past = tally.gap_pct() > c.threshold_pct || forced.is_some();
    let jobs = if tally.items > 0 && past {
        let (jobs, name) = jobs(scanner, &retraining.job.name, cutoff.at).await?;
        retraining.job.name = name;
        jobs
    } else {
        decide::Jobs::default()
    };
    // An alarm asks whatever the gap: no gap is within a threshold below zero.
    let threshold = if forced.is_some() {
        -1.0
    } else {
        c.threshold_pct
    };
    let verdict = decide::decide(&tally, threshold, &jobs);
    Ok(Some(Seen {
        cutoff,
        tally,
        measurement,
        retraining,
        verdict,
    }))
}

/// No cutoff to measure against: recorded for a person, and a clear error.
async fn no_cutoff(scanner: &Scanner, pipeline: &Pipeline<'_>) -> Error {
    let c = &scanner.config;
    let reason = format!(
        "no training cutoff: {} and TRAINING_CUTOFF is not set; nothing scanned, nothing started",
        match &c.endpoint {
            Some(ep) => format!(
                "the package {ep} serves has no {} property",
                c.cutoff_property
            ),
            None => "no ENDPOINT_NAME".to_string(),
        }
    );
    let decision = Decision::new(Outcome::NoCutoff, reason.clone());
    match pipeline.run(scanner.subject(), decision).await {
        Ok(_) => Error::InvalidData(reason),
        Err(e) => e,
    }
}

/// Today's job's status, if it exists, the adapter's jobs in progress, and its last completed
/// job if that one still stands for the gap.
async fn jobs(
    scanner: &Scanner,
    day: &str,
    cutoff: OffsetDateTime,
) -> Result<(decide::Jobs, String)> {
    let (sm, c) = (&scanner.clients.sagemaker, &scanner.config);
    let now = OffsetDateTime::now_utc();
    // Running before completed: a job only goes from one to the other, so one that finishes
    // between the two reads is seen in one of them, never in neither.
    let running = training::running(sm, &c.adapter).await?;
    let (todays, name) = todays_attempt(sm, day).await?;
    let awaited = training::latest_completed(sm, &c.adapter)
        .await?
        .filter(|f| decide::awaited(f, cutoff, now, c.retrain_after_days));
    let jobs = decide::Jobs {
        todays,
        running,
        awaited,
    };
    Ok((jobs, name))
}

/// The day's latest attempt and its status, and the name a new job of the day takes. A job that
/// failed releases the day for the next attempt, up to [`training::MAX_ATTEMPTS`]; one stopped (by
/// a person, or out of time) does not: the same run would stop the same way.
async fn todays_attempt(
    sm: &aws_sdk_sagemaker::Client,
    day: &str,
) -> Result<(Option<(String, String)>, String)> {
    for attempt in 1..=training::MAX_ATTEMPTS {
        let name = training::attempt_name(day, attempt);
        let Some(status) = training::status(sm, &name).await? else {
            return Ok((None, name));
        };
        let released = status == "Failed";
        if !released || attempt == training::MAX_ATTEMPTS {
            return Ok((Some((name.clone(), status)), name));
        }
    }
    unreachable!("MAX_ATTEMPTS is at least 1")
}

fn measure(tally: &Tally, cutoff: &Cutoff, scan_seconds: f64) -> Measurement {
    Measurement {
        cutoff: cutoff.raw.clone(),
        cutoff_source: cutoff.source.clone(),
        items: tally.items,
        after_cutoff: tally.after_cutoff,
        gap_pct: (tally.gap_pct() * 100.0).round() / 100.0,
        missing_date: tally.missing_date,
        bad_date: tally.bad_date,
        sample: tally.sample(),
        scan_seconds,
    }
}

fn publish(tally: &Tally) {
    metrics::gauge!("CatalogCoverageGapPct").set(tally.gap_pct());
    metrics::gauge!("CatalogItems").set(tally.items as f64);
    metrics::gauge!("CatalogItemsAfterCutoff").set(tally.after_cutoff as f64);
    metrics::gauge!("CatalogItemsWithoutDate").set((tally.missing_date + tally.bad_date) as f64);
}

/// Today's export and job: one key and one job name per snapshot date.
fn retraining(c: &Config, snapshot: &str, cause: String) -> Retraining {
    let export = CatalogExport {
        table: c.products_table.clone(),
        segments: c.segments,
        page_size: c.page_size,
        bucket: c.bucket.clone(),
        key: format!(
            // The corpus format is in the name: a day's export in another format is not reused.
            "{}{}/snapshot={snapshot}/catalog-{}.jsonl",
            c.prefix,
            c.adapter,
            lifecycle::names::fingerprint(&[&c.template])
        ),
        template: c.template.clone(),
    };
    let job = TrainingJob {
        name: training::job_name(&c.adapter, snapshot),
        adapter: c.adapter.clone(),
        snapshot_date: snapshot.to_string(),
        export_uri: export.uri(),
        cause,
        spec: c.training.clone(),
    };
    Retraining { export, job }
}

/// The cutoff: the metadata of the package the endpoint serves, else the configured one.
async fn cutoff(scanner: &Scanner) -> Result<Option<Cutoff>> {
    let c = &scanner.config;
    if let Some(ep) = &c.endpoint {
        let sm = &scanner.clients.sagemaker;
        let config = match endpoints::describe(sm, ep).await? {
            Some(e) => endpoints::describe_config(sm, &e.config_name).await?,
            None => None,
        };
        let package = match &config {
            Some(config) => registry::served_by(sm, config, None).await?,
            None => None,
        };
        if let Some(p) = package
            && let Some(raw) = p.metadata.get(&c.cutoff_property)
        {
            let arn = &p.arn;
            let at = dates::parse_cutoff(raw)
                .map_err(|e| Error::InvalidData(format!("{arn}: {} {e}", c.cutoff_property)))?;
            return Ok(Some(Cutoff {
                raw: raw.trim().to_string(),
                at,
                source: format!("{} of {arn} (served by {ep})", c.cutoff_property),
            }));
        }
    }
    Ok(c.fallback_cutoff.clone().map(|(raw, at)| Cutoff {
        raw,
        at,
        source: "TRAINING_CUTOFF".into(),
    }))
}
