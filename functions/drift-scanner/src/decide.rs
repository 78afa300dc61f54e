//! What to do about a measured gap. Pure.

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
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::EmptyCatalog => "empty_catalog",
            Verdict::WithinThreshold => "within_threshold",
            Verdict::AlreadyStarted { .. } => "already_started",
            Verdict::TrainingInProgress { .. } => "training_in_progress",
            Verdict::Retrain => "retraining",
        }
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
            "already_started"
        );
        assert_eq!(
            decide(&tally(100, 6), 5.0, None, &["old".into()]).outcome(),
            "training_in_progress"
        );
    }
}
