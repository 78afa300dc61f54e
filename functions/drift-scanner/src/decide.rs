//! What to do about a measured gap. Pure.

use lifecycle::catalog::CatalogExport;
use lifecycle::decision::Decision;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, ActionKind, Plan};
use lifecycle::training::TrainingJob;
use serde::Serialize;

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

/// `todays_job`: the status of the job for this snapshot date, if it exists; `running`: the
/// adapter's jobs in progress.
pub fn decide(
    tally: &Tally,
    threshold_pct: f64,
    todays_job: Option<(&str, &str)>,
    running: &[String],
) -> Verdict {
    if tally.items == 0 {
        return Verdict::EmptyCatalog;
    }
    if tally.gap_pct() <= threshold_pct {
        return Verdict::WithinThreshold;
    }
    if let Some((job, status)) = todays_job {
        return Verdict::AlreadyStarted {
            job: job.to_string(),
            status: status.to_string(),
        };
    }
    if !running.is_empty() {
        return Verdict::TrainingInProgress {
            jobs: running.to_vec(),
        };
    }
    Verdict::Retrain
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
        assert_eq!(decide(&tally(0, 0), 5.0, None, &[]), Verdict::EmptyCatalog);
        assert_eq!(
            decide(&tally(100, 5), 5.0, None, &[]),
            Verdict::WithinThreshold
        );
        assert_eq!(decide(&tally(100, 6), 5.0, None, &[]), Verdict::Retrain);
        assert_eq!(
            decide(&tally(100, 6), 5.0, Some(("j", "Completed")), &[]).outcome(),
            Outcome::AlreadyStarted
        );
        assert_eq!(
            decide(&tally(100, 6), 5.0, None, &["old".into()]).outcome(),
            Outcome::TrainingInProgress
        );
    }

    fn retraining() -> Retraining {
        let export = CatalogExport {
            table: "products".into(),
            segments: 8,
            page_size: None,
            bucket: "b".into(),
            key: "k/catalog.jsonl".into(),
        };
        let job = TrainingJob {
            name: "lora-catalog-20260302".into(),
            adapter: "lora".into(),
            snapshot_date: "2026-03-02".into(),
            export_uri: export.uri(),
            spec: lifecycle::training::TrainingSpec {
                image: "img".into(),
                instance_type: "ml.g5.2xlarge".into(),
                instance_count: 1,
                role_arn: "arn:aws:iam::1:role/t".into(),
                hyperparameters: Default::default(),
                output_s3: "s3://b/out/".into(),
                max_runtime_seconds: 3600,
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
