//! drift-scanner: how much of the product catalog is newer than the fine-tuned adapter's training
//! cutoff? Past a threshold, export the catalog to S3 as JSON Lines and start one retraining job.
//!
//! schedule → cutoff → scan (parallel) → decide → export + train → record.

pub mod config;
pub mod coverage;
pub mod dates;
pub mod decide;
pub mod export;
pub mod training;

use lambda_runtime::LambdaEvent;
use lifecycle::aws::Clients;
use lifecycle::endpoints;
use lifecycle::error::{Error, Result};
use lifecycle::events::Schedule;
use lifecycle::ledger::{self, Ledger};
use lifecycle::registry;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::{error, info};

pub use config::Config;
use decide::Verdict;

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
}

/// The handler's answer (also kept in the ledger, under `adapter#<name>`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub outcome: &'static str,
    pub reason: String,
    pub cutoff: String,
    pub cutoff_source: String,
    pub items: u64,
    pub after_cutoff: u64,
    pub gap_pct: f64,
    pub missing_date: u64,
    pub bad_date: u64,
    pub sample: Vec<String>,
    pub export: Option<export::Export>,
    pub training_job: Option<String>,
    pub scan_seconds: f64,
    pub dry_run: bool,
}

/// The training cutoff, as written (a date covers its whole day) and as an instant.
pub struct Cutoff {
    pub raw: String,
    pub at: OffsetDateTime,
    pub source: String,
}

pub async fn handle(scanner: &Scanner, event: LambdaEvent<Value>) -> Result<Report> {
    let schedule = Schedule::parse(&event.payload)?;
    let request_id = lifecycle::telemetry::request_id(&event.context);
    let result = scan_and_decide(scanner, &request_id, &schedule).await;
    lifecycle::metrics::flush(&request_id);
    result
}

async fn scan_and_decide(
    scanner: &Scanner,
    request_id: &str,
    schedule: &Schedule,
) -> Result<Report> {
    let c = &scanner.config;
    let trigger = format!("schedule {}", schedule.event_id);
    let Some(cutoff) = cutoff(scanner).await? else {
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
        record(
            scanner,
            request_id,
            &trigger,
            "no_cutoff",
            &reason,
            json!({}),
        )
        .await?;
        error!(%reason, "drift scan impossible");
        return Err(Error::InvalidData(reason));
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
    let scan_seconds = started.elapsed().as_secs_f64();
    let gap = tally.gap_pct();
    metrics::gauge!("CatalogCoverageGapPct").set(gap);
    metrics::gauge!("CatalogItems").set(tally.items as f64);
    metrics::gauge!("CatalogItemsAfterCutoff").set(tally.after_cutoff as f64);
    metrics::gauge!("CatalogItemsWithoutDate").set((tally.missing_date + tally.bad_date) as f64);

    let now = OffsetDateTime::now_utc();
    let snapshot = dates::snapshot_date(now);
    let job = training::job_name(&c.adapter, &snapshot);
    // Only past the threshold is SageMaker asked about jobs.
    let (todays, running) = if tally.items > 0 && gap > c.threshold_pct {
        let sm = &scanner.clients.sagemaker;
        (
            training::status(sm, &job).await?,
            training::running(sm, &c.adapter).await?,
        )
    } else {
        (None, vec![])
    };
    let verdict = decide::decide(
        &tally,
        c.threshold_pct,
        todays.as_deref().map(|s| (job.as_str(), s)),
        &running,
    );

    let cutoff_text = cutoff.raw.clone();
    let mut report = Report {
        outcome: verdict.outcome(),
        reason: String::new(),
        cutoff: cutoff_text.clone(),
        cutoff_source: cutoff.source.clone(),
        items: tally.items,
        after_cutoff: tally.after_cutoff,
        gap_pct: (gap * 100.0).round() / 100.0,
        missing_date: tally.missing_date,
        bad_date: tally.bad_date,
        sample: tally.sample(),
        export: None,
        training_job: None,
        scan_seconds,
        dry_run: c.dry_run,
    };
    let measured = format!(
        "{} of {} catalog items ({:.2}%) are newer than the adapter's cutoff {cutoff_text}; threshold {}%",
        tally.after_cutoff, tally.items, gap, c.threshold_pct
    );
    report.reason = match &verdict {
        Verdict::EmptyCatalog => format!(
            "{} is empty: nothing to measure or train on",
            c.products_table
        ),
        Verdict::WithinThreshold => format!("{measured}: no retraining"),
        Verdict::AlreadyStarted { job, status } => {
            format!("{measured}; {job} for today's snapshot already exists ({status}): nothing new")
        }
        Verdict::TrainingInProgress { jobs } => {
            format!(
                "{measured}; {} still running: never two at once",
                jobs.join(", ")
            )
        }
        Verdict::Retrain => format!("{measured}: exporting the catalog and starting {job}"),
    };
    if verdict == Verdict::Retrain {
        if c.dry_run {
            report.outcome = "would_retrain";
        } else {
            retrain(scanner, &mut report, &job, &snapshot).await?;
        }
    }
    if tally.missing_date + tally.bad_date > 0 {
        report.reason.push_str(&format!(
            "; {} items have no {} and {} an unreadable one (counted, not new)",
            tally.missing_date, c.created_attribute, tally.bad_date
        ));
    }
    info!(outcome = report.outcome, reason = %report.reason, "decided");
    lifecycle::metrics::decision(report.outcome);
    let evidence = serde_json::to_value(&report).unwrap_or_default();
    record(
        scanner,
        request_id,
        &trigger,
        report.outcome,
        &report.reason,
        evidence,
    )
    .await?;
    Ok(report)
}

async fn retrain(scanner: &Scanner, report: &mut Report, job: &str, snapshot: &str) -> Result<()> {
    let c = &scanner.config;
    let key = format!(
        "{}{}/snapshot={snapshot}/catalog.jsonl",
        c.prefix, c.adapter
    );
    let exported = export::export(
        &scanner.clients.dynamodb,
        &scanner.clients.s3,
        &c.products_table,
        c.segments,
        c.page_size,
        &c.bucket,
        &key,
    )
    .await?;
    lifecycle::metrics::mutation("ExportCatalog");
    let created = training::start(
        &scanner.clients.sagemaker,
        training::Start {
            spec: &c.training,
            name: job,
            adapter: &c.adapter,
            snapshot_date: snapshot,
            export_uri: &exported.uri,
        },
    )
    .await?;
    if created {
        lifecycle::metrics::mutation("CreateTrainingJob");
    } else {
        // A concurrent run won the race: same name, same day.
        report.outcome = "already_started";
    }
    report.export = Some(exported);
    report.training_job = Some(job.to_string());
    Ok(())
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

async fn record(
    scanner: &Scanner,
    request_id: &str,
    trigger: &str,
    outcome: &'static str,
    reason: &str,
    evidence: Value,
) -> Result<()> {
    let decision = ledger::Decision::unplanned(
        format!("adapter#{}", scanner.config.adapter),
        FUNCTION,
        request_id,
        trigger.to_string(),
        outcome,
        reason.to_string(),
    );
    scanner
        .ledger
        .record(&ledger::Decision {
            evidence,
            dry_run: scanner.config.dry_run,
            ..decision
        })
        .await
}
