//! What to do about a measured gap. Pure.

use lifecycle::catalog::CatalogExport;
use lifecycle::decision::Decision;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, ActionKind, Plan};
use lifecycle::training::{Finished, TrainingJob};
use serde::Serialize;
use time::OffsetDateTime;

use crate::coverage::Tally;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No items: nothing to measure, nothing to train on.
    EmptyCatalog,
    /// The gap is within the threshold.
    WithinThreshold,
    /// Today's job exists already (a second run the same day changes nothing).
    AlreadyStarted { job: String, status: String },
    /// Another job for the adapter is still running: never two at once.
    TrainingInProgress { jobs: Vec<String> },
    /// A completed job trained on a catalog newer than the served adapter's cutoff: its adapter
    /// is on its way (evaluation, approval, deployment); no second job for the same gap.
    AwaitingAdapter { job: String, snapshot_date: String },
    /// Export the catalog and start the job.
    Retrain,
}

impl Verdict {
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::EmptyCatalog => Outcome::EmptyCatalog,
            Verdict::WithinThreshold => Outcome::WithinThreshold,
            Verdict::AlreadyStarted { .. } => Outcome::AlreadyStarted,
            Verdict::TrainingInProgress { .. } => Outcome::TrainingInProgress,
            Verdict::AwaitingAdapter { .. } => Outcome::AwaitingAdapter,
            Verdict::Retrain => Outcome::Retraining,
        }
    }
}

/// What a retraining would do: export the catalog, then start the job on the export.
#[derive(Debug, Clone, PartialEq)]
pub struct Retraining {
    pub export: CatalogExport,
    pub job: TrainingJob,
}

/// The decision for a verdict: its reason in words (`measured` says what the scan found,
/// `caveat` what it could not count), and for a retrain the export and the job as the plan.
pub fn decision(
    verdict: &Verdict,
    measured: &str,
    caveat: &str,
    retraining: Retraining,
) -> Decision {
    let Retraining { export, job } = retraining;
    let reason = match verdict {
        Verdict::EmptyCatalog => {
            format!("{} is empty: nothing to measure or train on", export.table)
        }
        Verdict::WithinThreshold => format!("{measured}: no retraining"),
        Verdict::AlreadyStarted { job, status } => {
            format!("{measured}; {job} for today's snapshot already exists ({status}): nothing new")
        }
        Verdict::TrainingInProgress { jobs } => format!(
            "{measured}; {} still running: never two at once",
            jobs.join(", ")
        ),
        Verdict::AwaitingAdapter { job, snapshot_date } => format!(
            "{measured}; {job} already trained on the catalog of {snapshot_date}: waiting for its adapter to serve, not retraining for the same gap"
        ),
        Verdict::Retrain => format!(
            "{measured}: exporting the catalog and starting {}",
            job.name
        ),
    };
    let decision = Decision::new(verdict.outcome(), format!("{reason}{caveat}"));
    if *verdict != Verdict::Retrain {
        return decision;
    }
    let mut plan = Plan::default();
    plan.push(
        Action::ExportCatalog {
            export: export.clone(),
        },
        format!("the catalog as of today, the training data of {}", job.name),
    );
    plan.push(
        Action::StartTrainingJob { job: Box::new(job) },
        format!("retrain on {}", export.uri()),
    );
    Decision {
        // Two scans at once race to one job name; the one that finds it made says so.
        if_already_done: Some((ActionKind::StartTrainingJob, Outcome::AlreadyStarted)),
        ..decision.with_plan(plan)
    }
}

/// The adapter's jobs, as far as a decision needs them.
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    /// The status of the job for this snapshot date, if it exists.
    pub todays: Option<(String, String)>,
    /// The adapter's jobs in progress.
    pub running: Vec<String>,
    /// The most recent completed job, if it trained on a catalog newer than the served cutoff
    /// and ended less than `RETRAIN_AFTER_DAYS` ago.
    pub awaited: Option<Finished>,
}

pub fn decide(tally: &Tally, threshold_pct: f64, jobs: &Jobs) -> Verdict {
    if tally.items == 0 {
        return Verdict::EmptyCatalog;
    }
    if tally.gap_pct() <= threshold_pct {
        return Verdict::WithinThreshold;
    }
    if let Some((job, status)) = &jobs.todays {
        return Verdict::AlreadyStarted {
            job: job.clone(),
            status: status.clone(),
        };
    }
    if !jobs.running.is_empty() {
        return Verdict::TrainingInProgress {
            jobs: jobs.running.clone(),
        };
    }
    if let Some(f) = &jobs.awaited {
        return Verdict::AwaitingAdapter {
            job: f.name.clone(),
            snapshot_date: f.snapshot_date.clone(),
        };
    }
    Verdict::Retrain
}

/// Whether a completed job still stands for the gap: it trained on a catalog newer than the
/// served cutoff (so its adapter is not serving yet) and ended less than `days` ago.
pub fn awaited(
    finished: &Finished,
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
    days: i64,
) -> bool {
    // Days, not instants: a cutoff written as the export's time that day is that day's snapshot.
    let cutoff_day = cutoff.to_offset(time::UtcOffset::UTC).date();
    let newer =
        crate::dates::parse_cutoff(&finished.snapshot_date).is_ok_and(|s| s.date() > cutoff_day);
    let recent = OffsetDateTime::from_unix_timestamp(finished.ended_at)
        .is_ok_and(|ended| now - ended < time::Duration::days(days));
    newer && recent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(items: u64, after: u64) -> Tally {
        Tally {
            items,
            after_cutoff: after,
            ..Tally::default()
        }
    }

    #[test]
    fn past_the_threshold_and_nothing_running_means_retrain() {
        let none = Jobs::default();
        assert_eq!(decide(&tally(0, 0), 5.0, &none), Verdict::EmptyCatalog);
        assert_eq!(decide(&tally(100, 5), 5.0, &none), Verdict::WithinThreshold);
        assert_eq!(decide(&tally(100, 6), 5.0, &none), Verdict::Retrain);
        let todays = Jobs {
            todays: Some(("j".into(), "Completed".into())),
            ..Jobs::default()
        };
        assert_eq!(
            decide(&tally(100, 6), 5.0, &todays).outcome(),
            Outcome::AlreadyStarted
        );
        let running = Jobs {
            running: vec!["old".into()],
            ..Jobs::default()
        };
        assert_eq!(
            decide(&tally(100, 6), 5.0, &running).outcome(),
            Outcome::TrainingInProgress
        );
    }

    #[test]
    fn a_finished_job_stands_for_its_gap_until_its_adapter_serves_or_days_pass() {
        let cutoff = crate::dates::parse_cutoff("2025-09-01").unwrap();
        let now = crate::dates::parse_cutoff("2026-03-10").unwrap();
        let job = |snapshot: &str, days_ago: i64| Finished {
            name: format!("lora-catalog-{}", snapshot.replace('-', "")),
            snapshot_date: snapshot.into(),
            ended_at: (now - time::Duration::days(days_ago)).unix_timestamp(),
        };
        assert!(awaited(&job("2026-03-02", 7), cutoff, now, 14));
        assert!(
            !awaited(&job("2026-03-02", 15), cutoff, now, 14),
            "its adapter never came"
        );
        assert!(
            !awaited(&job("2025-08-01", 1), cutoff, now, 14),
            "the served adapter is newer"
        );
        // Its own adapter serves, its cutoff written as the export's time that day.
        let its_own = crate::dates::parse_cutoff("2026-03-02T03:10:00Z").unwrap();
        assert!(!awaited(&job("2026-03-02", 7), its_own, now, 14));
        let waiting = Jobs {
            awaited: Some(job("2026-03-02", 7)),
            ..Jobs::default()
        };
        assert_eq!(
            decide(&tally(100, 6), 5.0, &waiting).outcome(),
            Outcome::AwaitingAdapter
        );
    }

    fn retraining() -> Retraining {
        let export = CatalogExport {
            table: "products".into(),
            segments: 8,
            page_size: None,
            bucket: "b".into(),
            key: "k/catalog.jsonl".into(),
            template: lifecycle::catalog::DEFAULT_TEMPLATE.into(),
        };
        let job = TrainingJob {
            name: "lora-catalog-20260302".into(),
            adapter: "lora".into(),
            snapshot_date: "2026-03-02".into(),
            export_uri: export.uri(),
            cause: "coverage gap".into(),
            spec: lifecycle::training::TrainingSpec {
                image: "img".into(),
                instance_type: "ml.g5.2xlarge".into(),
                instance_count: 1,
                role_arn: "arn:aws:iam::1:role/t".into(),
                hyperparameters: Default::default(),
                output_s3: "s3://b/out/".into(),
                max_runtime_seconds: 3600,
                metric_definitions: Default::default(),
            },
        };
        Retraining { export, job }
    }

    #[test]
    fn a_retrain_plans_the_export_then_the_job_on_it() {
        let d = decision(&Verdict::Retrain, "6 of 100", "", retraining());
        assert_eq!(d.outcome, Outcome::Retraining);
        assert_eq!(
            d.plan.kinds(),
            [ActionKind::ExportCatalog, ActionKind::StartTrainingJob]
        );
        let Action::StartTrainingJob { job } = &d.plan.steps[1].action else {
            panic!()
        };
        assert_eq!(job.export_uri, "s3://b/k/catalog.jsonl");
        assert!(
            d.reason.contains("starting lora-catalog-20260302"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn anything_but_a_retrain_plans_nothing() {
        for v in [
            Verdict::EmptyCatalog,
            Verdict::WithinThreshold,
            Verdict::TrainingInProgress {
                jobs: vec!["old".into()],
            },
        ] {
            let d = decision(&v, "m", "; 3 items have no date", retraining());
            assert!(d.plan.is_empty(), "{v:?}");
            assert_eq!(d.outcome, v.outcome());
        }
    }
}
