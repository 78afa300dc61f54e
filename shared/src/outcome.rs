//! Outcomes: the short verdict of every decision, and what it means for an operator.
//!
//! One enum for the whole suite, so a typo does not compile and the README can be checked against
//! the code. Serialised as the same snake_case string in the ledger, the logs, the metrics and the
//! handlers' answers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a decision means for the people who run the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing changed: in sync, waiting, ignored, measured. Recorded; such records expire.
    Routine,
    /// Something changed in AWS: deployed, rolled back, rejected, deleted, retraining started.
    Acted,
    /// A person must look: a rollback that cannot happen, a permanent error, a fact that cannot
    /// be read. Logged as an error and counted.
    NeedsPerson,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Routine => "routine",
            Severity::Acted => "acted",
            Severity::NeedsPerson => "needs_person",
        }
    }
}

macro_rules! outcomes {
    ($($(#[$meta:meta])* $variant:ident => $text:literal, $severity:ident;)*) => {
        /// The verdict of one decision.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Outcome {
            $($(#[$meta])* $variant,)*
        }

        impl Outcome {
            /// Every outcome, for the README check and for alarms that list them.
            pub const ALL: &[Outcome] = &[$(Outcome::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $text,)*
                }
            }

            pub fn severity(self) -> Severity {
                match self {
                    $(Outcome::$variant => Severity::$severity,)*
                }
            }
        }
    };
}

outcomes! {
    // Every function.
    Ignored => "ignored", Routine;
    /// A step failed with an error a retry can help (throttling, a busy endpoint): retried.
    Retrying => "retrying", Routine;
    /// A step failed with an error a retry cannot help.
    Failed => "failed", NeedsPerson;
    /// The same plan failed for good a moment ago: not tried again until its wait is over.
    BackingOff => "backing_off", Routine;

    // model-deployer
    Deploying => "deploying", Acted;
    Deployed => "deployed", Acted;
    RolledBack => "rolled_back", Acted;
    Rejected => "rejected", Acted;
    Waiting => "waiting", Routine;
    InSync => "in_sync", Routine;
    /// The target's managed guardrail alarms were made or put back; nothing else to do.
    GuardrailsSet => "guardrails_set", Acted;
    /// The target's declared capacity registered or put back after a hand change.
    CapacitySet => "capacity_set", Acted;
    NothingApproved => "nothing_approved", Routine;
    Blocked => "blocked", NeedsPerson;
    /// SageMaker ran an update that ended on the old config with no alarm to explain it.
    UpdateFailed => "update_failed", NeedsPerson;
    /// A target that promotes after another: the version has not soaked there yet.
    WaitingForStaging => "waiting_for_staging", Routine;
    /// ... while the version this target serves is no longer Approved: a person chooses.
    RemedyWaitsForStaging => "remedy_waits_for_staging", NeedsPerson;
    /// A new version failed the target's smoke test: rejected, and the version before brought
    /// back.
    SmokeFailed => "smoke_failed", Acted;
    /// The smoke test got no answer from the model (access denied, throttled, no answer in
    /// time): nothing judged, tried again at the next reconcile.
    SmokeUnjudged => "smoke_unjudged", NeedsPerson;
    /// A rollback alarm is in ALARM: the deployment waits for it to be OK.
    HeldByAlarm => "held_by_alarm", Routine;
    /// ... for longer than the target allows.
    HeldByAlarmTooLong => "held_by_alarm_too_long", NeedsPerson;
    /// The newest approved package's evaluation report cannot be read: nothing deployed.
    GateUnreadable => "gate_unreadable", NeedsPerson;
    /// A new version serves a share of the traffic beside the live one (a target's `kpi_gate`).
    CanaryStarted => "canary_started", Acted;
    /// The canary bakes: not judged yet, or not enough evidence yet.
    CanaryBaking => "canary_baking", Routine;
    /// Its KPI held: it is promoted to all the traffic.
    CanaryPassed => "canary_passed", Acted;
    /// Its KPI fell, or an alarm fired: rejected with the evidence, the live version alone again.
    CanaryFailed => "canary_failed", Acted;
    /// Still too few samples after `max_bake_minutes`: stopped, a person decides.
    CanaryInconclusive => "canary_inconclusive", NeedsPerson;
    /// Stopped without a verdict (the candidate was rejected meanwhile, its record is lost, the
    /// gate was removed): the live version alone again.
    CanaryStopped => "canary_stopped", Acted;

    // alarm-responder (also `rolled_back`)
    RollbackImpossible => "rollback_impossible", NeedsPerson;
    RollbackRefused => "rollback_refused", NeedsPerson;
    /// The live version has served longer than the target's automatic-rollback window.
    RollbackTooLate => "rollback_too_late", NeedsPerson;
    /// The alarm that caused a rollback was not OK again in the target's `recovery_minutes`.
    NotRecovered => "not_recovered", NeedsPerson;
    Inconclusive => "inconclusive", NeedsPerson;
    ScaledUp => "scaled_up", Acted;
    ScaleUpImpossible => "scale_up_impossible", NeedsPerson;
    AtFloor => "at_floor", Routine;
    Noted => "noted", Routine;
    Superseded => "superseded", Routine;
    Duplicate => "duplicate", Routine;
    Muted => "muted", Routine;

    // drift-scanner
    Retraining => "retraining", Acted;
    AlreadyStarted => "already_started", Routine;
    TrainingInProgress => "training_in_progress", Routine;
    WithinThreshold => "within_threshold", Routine;
    EmptyCatalog => "empty_catalog", Routine;
    NoCutoff => "no_cutoff", NeedsPerson;
    /// A finished retraining's adapter does not serve yet: no second job for the same gap.
    AwaitingAdapter => "awaiting_adapter", Routine;
    /// A retraining job completed: its adapter is registered as a candidate version, Approved
    /// (`AUTO_APPROVE`) for the deployer to judge.
    CandidateRegistered => "candidate_registered", Acted;
    /// ... registered PendingManualApproval: a person approves or rejects it.
    CandidateAwaitsApproval => "candidate_awaits_approval", NeedsPerson;
    /// ... but no candidate could be made of it (no artifacts, the served package unreadable).
    CandidateUnregistered => "candidate_unregistered", NeedsPerson;
    /// A retraining job failed (the day is released for another attempt) or ran out of time.
    RetrainingFailed => "retraining_failed", NeedsPerson;
    /// A retraining job stopped by a person: no candidate, no other attempt that day.
    RetrainingStopped => "retraining_stopped", Routine;

    // endpoint-sweeper: one decision per endpoint it changes, one per sweep
    MarkedIdle => "marked_idle", Acted;
    Unmarked => "unmarked", Acted;
    Deleted => "deleted", Acted;
    ScaledDown => "scaled_down", Acted;
    Remediated => "remediated", Acted;
    /// Models and configs of a target's versions older than the last K it served: deleted.
    VersionsRetired => "versions_retired", Acted;
    Swept => "swept", Routine;
    /// The sweep acted but its report could not be written to S3.
    ReportUnwritten => "report_unwritten", NeedsPerson;
}

impl Outcome {
    /// The outcome of a decision whose plan stopped on `error`.
    pub fn of_error(error: &crate::Error) -> Self {
        if error.is_retryable() {
            Outcome::Retrying
        } else {
            Outcome::Failed
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_outcome_serialises_as_its_text_and_the_texts_are_unique() {
        let mut seen = HashSet::new();
        for o in Outcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
            assert!(seen.insert(o.as_str()), "{o} twice");
            let back: Outcome = serde_json::from_value(o.as_str().into()).unwrap();
            assert_eq!(back, *o);
        }
    }

    #[test]
    fn what_cannot_be_undone_or_decided_alone_needs_a_person() {
        use Outcome::*;
        for o in [RollbackImpossible, Failed, Blocked, NoCutoff, Inconclusive] {
            assert_eq!(o.severity(), Severity::NeedsPerson, "{o}");
        }
        for o in [
            Deploying, RolledBack, Rejected, Deleted, Retraining, ScaledUp,
        ] {
            assert_eq!(o.severity(), Severity::Acted, "{o}");
        }
        for o in [InSync, Waiting, Ignored, Duplicate, Retrying, Swept] {
            assert_eq!(o.severity(), Severity::Routine, "{o}");
        }
    }

    /// The README's outcome tables name every outcome, and only outcomes that exist.
    #[test]
    fn the_readme_documents_every_outcome_and_no_other() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Outcomes")
            .nth(1)
            .expect("the README has an \"## Outcomes\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let documented: HashSet<&str> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        let existing: HashSet<&str> = Outcome::ALL.iter().map(|o| o.as_str()).collect();
        let missing: Vec<_> = existing.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&existing).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "README outcomes: missing {missing:?}, documented but gone {stale:?}"
        );
        // Each row states the severity the code gives the outcome.
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let name = line.split('`').nth(1).unwrap();
            let o = Outcome::ALL.iter().find(|o| o.as_str() == name).unwrap();
            assert!(
                line.contains(&format!("| {} |", o.severity())),
                "README row for {name} must say its severity ({}): {line}",
                o.severity()
            );
        }
    }
}
