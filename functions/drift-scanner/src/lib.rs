//! drift-scanner: how much of the product catalog is newer than the fine-tuned adapter's training
//! cutoff? Past a threshold, export the catalog to S3 as JSON Lines and start one retraining job.
//!
//! schedule → cutoff → scan (parallel) → decide (pure) → the pipeline: export + train, record.

pub mod config;
pub mod coverage;
pub mod dates;
pub mod decide;

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

pub async fn handle(scanner: &Scanner, event: LambdaEvent<Value>) -> Result<ScanReport> {
    let schedule = Schedule::parse(&event.payload)?;
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let pipeline = Pipeline {
        function: FUNCTION,
        request_id: &request_id,
        trigger: format!("schedule {}", schedule.event_id),
        executor: Executor {
            clients: &scanner.clients,
            ledger: &scanner.ledger,
            execution_role_arn: "",
            dry_run: scanner.config.dry_run,
        },
    };
    let result = scan(scanner, &pipeline).await;
    lifecycle::metrics::flush(&request_id);
    result
}

async fn scan(scanner: &Scanner, pipeline: &Pipeline<'_>) -> Result<ScanReport> {
    let seen = match observe(scanner).await {
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
async fn observe(scanner: &Scanner) -> Result<Option<Seen>> {
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
    let retraining = retraining(c, &dates::snapshot_date(OffsetDateTime::now_utc()));
    // Only past the threshold is SageMaker asked about jobs.
    let jobs = if tally.items > 0 && tally.gap_pct() > c.threshold_pct {
        jobs(scanner, &retraining.job.name, cutoff.at).await?
    } else {
        decide::Jobs::default()
    };
    let verdict = decide::decide(&tally, c.threshold_pct, &jobs);
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
async fn jobs(scanner: &Scanner, todays: &str, cutoff: OffsetDateTime) -> Result<decide::Jobs> {
    let (sm, c) = (&scanner.clients.sagemaker, &scanner.config);
    let now = OffsetDateTime::now_utc();
    // Running before completed: a job only goes from one to the other, so one that finishes
    // between the two reads is seen in one of them, never in neither.
    let running = training::running(sm, &c.adapter).await?;
    let todays = training::status(sm, todays)
        .await?
        .map(|status| (todays.to_string(), status));
    let awaited = training::latest_completed(sm, &c.adapter)
        .await?
        .filter(|f| decide::awaited(f, cutoff, now, c.retrain_after_days));
    Ok(decide::Jobs {
        todays,
        running,
        awaited,
    })
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
fn retraining(c: &Config, snapshot: &str) -> Retraining {
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
