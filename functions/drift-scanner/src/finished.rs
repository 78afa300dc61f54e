//! A retraining job that ended (EventBridge's "SageMaker Training Job State Change"): Completed
//! becomes a candidate package of the adapter's group, once it is shown to be the scanner's own;
//! Failed is a person's to hear and releases the day for another attempt; Stopped does not. The
//! event names the job; what it says is re-read from SageMaker (an event may be late, repeated or
//! made by hand).
//!
//! event → observe (the job, the package the adapter endpoint serves, the registry) → decide
//! (pure) → the pipeline: register, record.

use lifecycle::candidate::{self, CandidatePackage, InferenceSpec, TRAINING_JOB};
use lifecycle::decision::Decision;
use lifecycle::error::{Error, Result};
use lifecycle::events::Envelope;
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, Plan};
use lifecycle::training::{self, JobEnd, tags};
use lifecycle::{endpoints, registry};
use serde::Deserialize;
use serde_json::json;

use crate::{Config, Scanner};

pub const TRAINING_JOB_STATE_CHANGE: &str = "SageMaker Training Job State Change";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Detail {
    training_job_name: String,
}

/// What the decision needs, read from SageMaker.
#[derive(Debug, Clone)]
pub struct Ended {
    pub name: String,
    /// The job as SageMaker has it now; `None`: there is no such job.
    pub job: Option<JobEnd>,
    /// The package the adapter endpoint serves, its group and its inference specification.
    pub base: Option<Base>,
    /// A package already registered from this job.
    pub registered: Option<String>,
    /// Versions registered since the job was made, from other jobs: (ARN, catalog cutoff).
    pub newer: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Base {
    pub arn: String,
    pub group: String,
    pub inference: InferenceSpec,
    /// Its `CUTOFF_PROPERTY`: a job trained on an older catalog is superseded.
    pub cutoff: Option<String>,
}

/// The job's name from the event; a clear error (and no call) when the event is not one.
pub fn job_name(env: &Envelope) -> Result<String> {
    let d: Detail = lifecycle::events::detail(env)?;
    if d.training_job_name.trim().is_empty() {
        return Err(Error::MalformedEvent("TrainingJobName is empty".into()));
    }
    Ok(d.training_job_name)
}

pub async fn observe(scanner: &Scanner, name: &str) -> Result<Ended> {
    let (sm, c) = (&scanner.clients.sagemaker, &scanner.config);
    let mut ended = Ended {
        name: name.to_string(),
        job: None,
        base: None,
        registered: None,
        newer: vec![],
    };
    // Another team's job is only recorded: not even described.
    if training::snapshot_of(&c.adapter, name).is_none() {
        return Ok(ended);
    }
    ended.job = training::describe_end(sm, name).await?;
    let Some(job) = ended
        .job
        .as_ref()
        .filter(|j| j.status == "Completed" && ours(c, j))
    else {
        return Ok(ended);
    };
    let since = job.created_at;
    ended.base = base(scanner).await?;
    if let Some(b) = &ended.base {
        for p in candidate::registered_since(sm, &b.group, since).await? {
            match (
                p.metadata.get(TRAINING_JOB),
                p.metadata.get(&c.cutoff_property),
            ) {
                (Some(job), _) if job == name => ended.registered = Some(p.arn),
                (_, Some(cutoff)) => ended.newer.push((p.arn, cutoff.clone())),
                _ => {}
            }
        }
    }
    Ok(ended)
}

/// The package the adapter endpoint serves: the new version's group and specification.
async fn base(scanner: &Scanner) -> Result<Option<Base>> {
    let sm = &scanner.clients.sagemaker;
    let Some(ep) = &scanner.config.endpoint else {
        return Ok(None);
    };
    let Some(e) = endpoints::describe(sm, ep).await? else {
        return Ok(None);
    };
    let Some(config) = endpoints::describe_config(sm, &e.config_name).await? else {
        return Ok(None);
    };
    let Some(arn) = registry::served_arn(sm, &config, None).await? else {
        return Ok(None);
    };
    // One DescribeModelPackage for both its group and its specification.
    let Some(out) = registry::describe_output(sm, &arn).await? else {
        return Ok(None);
    };
    let p = registry::package_of(&out, &arn);
    let cutoff = p.metadata.get(&scanner.config.cutoff_property).cloned();
    Ok(candidate::inference_of(&out).map(|inference| Base {
        arn: p.arn,
        group: p.group,
        inference,
        cutoff,
    }))
}

/// A job named and tagged as one of this adapter's retrainings. Names and tags are anyone's to
/// set: [`provenance`] checks the rest before anything is registered.
fn ours(c: &Config, job: &JobEnd) -> bool {
    job.tags.get(tags::ADAPTER) == Some(&c.adapter)
}

/// Whether a completed job is one the scanner started: the snapshot day its name says (and its
/// tag agrees), the training role (only who may pass it can use it), the configured image and
/// hyperparameters (with a framework image, the code it runs is a hyperparameter), the day's
/// export as its `train` channel, its model where SageMaker writes this job's. Its snapshot day,
/// or why not. A job started before a change of TRAINING_* is refused too: a person decides.
fn provenance(c: &Config, job: &JobEnd) -> Result<String, String> {
    let snapshot = training::snapshot_of(&c.adapter, &job.name)
        .ok_or_else(|| "its name is not a retraining's".to_string())?;
    let tagged = job.tags.get(tags::SNAPSHOT_DATE).map(String::as_str);
    if tagged != Some(snapshot.as_str()) {
        let tag = tags::SNAPSHOT_DATE;
        return Err(format!(
            "its {tag} tag is {tagged:?}, its name says {snapshot}"
        ));
    }
    if job.role_arn.as_deref() != Some(c.training.role_arn.as_str()) {
        return Err(format!(
            "it ran as {:?}, not TRAINING_ROLE_ARN",
            job.role_arn
        ));
    }
    if job.image.as_deref() != Some(c.training.image.as_str()) {
        return Err(format!(
            "it ran the image {:?}, not TRAINING_IMAGE",
            job.image
        ));
    }
    if job.hyperparameters != c.training.hyperparameters {
        return Err("its hyperparameters are not TRAINING_HYPERPARAMETERS".into());
    }
    let export = format!(
        "s3://{}/{}{}/snapshot={snapshot}/",
        c.bucket, c.prefix, c.adapter
    );
    if !job
        .trained_on
        .as_deref()
        .is_some_and(|u| u.starts_with(&export))
    {
        let on = &job.trained_on;
        return Err(format!(
            "it trained on {on:?}, not the export under {export}"
        ));
    }
    let output = c.training.output_s3.trim_end_matches('/');
    let model = format!("{output}/{}/output/model.tar.gz", job.name);
    if job.artifacts.as_deref() != Some(model.as_str()) {
        let artifacts = &job.artifacts;
        return Err(format!(
            "its model artifacts are {artifacts:?}, not {model}"
        ));
    }
    Ok(snapshot)
}

/// What to do about a job that changed state. Pure.
pub fn decide(c: &Config, e: &Ended) -> Decision {
    let name = &e.name;
    let Some(job) = e.job.as_ref().filter(|j| ours(c, j)) else {
        return Decision::new(
            Outcome::Ignored,
            format!(
                "training job {name} is not a retraining job of {} (its name or its {} tag): recorded, nothing done",
                c.adapter,
                tags::ADAPTER
            ),
        );
    };
    let evidence = json!({"job": job});
    let timed_out = job.secondary_status.as_deref() == Some("MaxRuntimeExceeded");
    match job.status.as_str() {
        "Completed" => completed(c, e, job),
        "Failed" => Decision::new(
            Outcome::RetrainingFailed,
            format!(
                "retraining job {name} failed: {}; no candidate; {}",
                job.failure_reason.as_deref().unwrap_or("no reason given"),
                attempts_left(name)
            ),
        ),
        // A day's run again would run as long: not released either.
        "Stopped" if timed_out => Decision::new(
            Outcome::RetrainingFailed,
            format!(
                "retraining job {name} ran past TRAINING_MAX_RUNTIME_SECONDS ({}s) and was stopped; no candidate, no other attempt today",
                c.training.max_runtime_seconds
            ),
        ),
        "Stopped" => Decision::new(
            Outcome::RetrainingStopped,
            format!("retraining job {name} was stopped: no candidate, and no other attempt today"),
        ),
        other => Decision::new(
            Outcome::Ignored,
            format!("retraining job {name} is {other}: its end is heard when it comes"),
        ),
    }
    .with_evidence(evidence)
}

/// What may come after a failed attempt: the day's snapshot is released for another (a Model
/// Monitor alarm or a run by hand that same UTC day), else the next day's scan starts its own.
fn attempts_left(name: &str) -> String {
    let (n, max) = (training::attempt_of(name), training::MAX_ATTEMPTS);
    if n < max {
        format!(
            "a run the same UTC day (an alarm, by hand) may start attempt {} of {max}, else the next scheduled scan starts the next day's",
            n + 1
        )
    } else {
        format!(
            "it was the day's last attempt ({max}): the next scheduled scan starts the next day's"
        )
    }
}

/// A completed job of which no candidate is made: a person hears why.
fn unregistered(name: &str, why: &str) -> Decision {
    Decision::new(
        Outcome::CandidateUnregistered,
        format!("retraining job {name} completed, but {why}: no candidate registered"),
    )
}

fn completed(c: &Config, e: &Ended, job: &JobEnd) -> Decision {
    let name = &e.name;
    if let Some(arn) = &e.registered {
        return Decision::new(
            Outcome::Duplicate,
            format!("{name} is registered already, as {arn}: nothing new"),
        )
        .with_package(Some(arn.clone()));
    }
    let unregistered = |why: String| unregistered(name, &why);
    if job.artifacts.is_none() {
        return unregistered("it has no model artifacts".into());
    }
    let snapshot = match provenance(c, job) {
        Ok(s) => s,
        Err(why) => return unregistered(format!("it is not one the scanner started ({why})")),
    };
    let (Some(base), Some(artifacts)) = (&e.base, &job.artifacts) else {
        return unregistered(format!(
            "the package {} serves (its group and inference specification) cannot be read",
            c.endpoint.as_deref().unwrap_or("ENDPOINT_NAME")
        ));
    };
    if let Some(why) = refused(c, e, base, job, &snapshot) {
        return why;
    }
    let package = candidate_package(c, base, job, artifacts, &snapshot);
    let (outcome, status) = if c.auto_approve {
        (
            Outcome::CandidateRegistered,
            "Approved; the deployer's gates still apply",
        )
    } else {
        (
            Outcome::CandidateAwaitsApproval,
            "PendingManualApproval: a person approves or rejects it",
        )
    };
    let reason = format!(
        "retraining job {name} completed: registering it as a new version of {} ({status}), trained on the catalog of {snapshot}",
        base.group,
    );
    let mut plan = Plan::default();
    plan.push(
        Action::RegisterPackage {
            package: Box::new(package),
        },
        format!(
            "{name}'s adapter, with the inference specification of {}",
            base.arn
        ),
    );
    Decision::new(outcome, reason).with_plan(plan)
}

/// A completed job of ours that is still not registered: another group than the one configured,
/// no metrics to be gated on, or a catalog no newer than the one the served adapter, or a version
/// registered since, knows (a late or redriven event never puts an older adapter ahead).
fn refused(c: &Config, e: &Ended, base: &Base, job: &JobEnd, snapshot: &str) -> Option<Decision> {
    let name = &job.name;
    let unregistered = |why: String| unregistered(name, &why);
    if let Some(group) = c.package_group.as_ref().filter(|g| **g != base.group) {
        return Some(unregistered(format!(
            "the adapter endpoint serves a version of {}, not of ADAPTER_PACKAGE_GROUP {group}",
            base.group
        )));
    }
    if job.metrics.is_empty() {
        return Some(unregistered(
            "it reported no final metrics (TRAINING_METRIC_DEFINITIONS tells SageMaker how to read them from its logs); a version without them would fail every gate".into(),
        ));
    }
    // By day, as the scan compares: a cutoff written as a time that day covers the day too.
    let day = |d: &str| {
        crate::dates::parse_cutoff(d)
            .ok()
            .map(|t| t.to_offset(time::UtcOffset::UTC).date())
    };
    let covered = |cut: &str| matches!((day(snapshot), day(cut)), (Some(s), Some(c)) if s <= c);
    let served = base.cutoff.iter().map(|cut| (&base.arn, cut));
    let since = e.newer.iter().map(|(arn, cut)| (arn, cut));
    let (arn, cutoff) = served.chain(since).find(|(_, cut)| covered(cut))?;
    Some(Decision::new(
        Outcome::Superseded,
        format!(
            "retraining job {name} trained on the catalog of {snapshot}; {arn} knows the catalog of {cutoff} already: not registered"
        ),
    ))
}

fn candidate_package(
    c: &Config,
    base: &Base,
    job: &JobEnd,
    artifacts: &str,
    snapshot: &str,
) -> CandidatePackage {
    let tag = |k: &str| job.tags.get(k).cloned().unwrap_or_default();
    // The snapshot date under the key the scanner reads its cutoff from, once this serves. Values
    // in SageMaker's alphabet, and none empty (SageMaker refuses both).
    let metadata = [
        (c.cutoff_property.clone(), snapshot.to_string()),
        (TRAINING_JOB.to_string(), job.name.clone()),
        (
            "catalog_export_uri".to_string(),
            job.trained_on.clone().unwrap_or_default(),
        ),
        ("retraining_cause".to_string(), tag(tags::CAUSE)),
        ("base_package".to_string(), base.arn.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k, lifecycle::names::sagemaker_text(&v, 256)))
    .filter(|(_, v)| !v.is_empty())
    .collect();
    CandidatePackage {
        group: base.group.clone(),
        description: format!(
            "{} retrained by {} on the catalog of {snapshot} ({})",
            c.adapter,
            job.name,
            tag(tags::CAUSE)
        ),
        inference: base.inference.with_model_data(artifacts),
        metadata,
        statistics: candidate::statistics(&job.metrics),
        statistics_uri: format!(
            "s3://{}/{}{}/evaluations/{}/model-quality.json",
            c.bucket, c.prefix, c.adapter, job.name
        ),
        approve: c.auto_approve,
        client_token: format!(
            "lc-{}",
            lifecycle::names::fingerprint(&[&base.group, &job.name])
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::candidate::Container;
    use lifecycle::plan::ActionKind;
    use std::collections::BTreeMap;

    fn config() -> Config {
        let env = [
            ("ADAPTER_NAME", "recs-lora"),
            ("PRODUCTS_TABLE", "products"),
            ("ENDPOINT_NAME", "recs"),
            ("TRAINING_BUCKET", "training"),
            ("TRAINING_IMAGE", "img:1"),
            ("TRAINING_ROLE_ARN", "arn:aws:iam::123456789012:role/train"),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "production"),
        ];
        Config::from_source(&env.as_slice()).unwrap()
    }

    const MODEL: &str =
        "s3://training/adapters/recs-lora/recs-lora-catalog-20261203/output/model.tar.gz";
    const EXPORT: &str =
        "s3://training/catalog-snapshots/recs-lora/snapshot=2026-12-03/catalog-1.jsonl";

    fn job(status: &str) -> JobEnd {
        JobEnd {
            name: "recs-lora-catalog-20261203".into(),
            arn: "arn:aws:sagemaker:us-east-1:1:training-job/recs-lora-catalog-20261203".into(),
            status: status.into(),
            failure_reason: (status == "Failed").then(|| "AlgorithmError: CUDA OOM".into()),
            artifacts: Some(MODEL.into()),
            metrics: BTreeMap::from([("validation_loss".into(), 0.29)]),
            tags: BTreeMap::from([
                (tags::ADAPTER.into(), "recs-lora".into()),
                (tags::SNAPSHOT_DATE.into(), "2026-12-03".into()),
                (
                    tags::EXPORT_URI.into(),
                    "s3://training/snap/catalog.jsonl".into(),
                ),
                (
                    tags::CAUSE.into(),
                    "coverage gap 29.58 pct above 5 pct".into(),
                ),
            ]),
            ended_at: Some(1),
            created_at: Some(0),
            role_arn: Some("arn:aws:iam::123456789012:role/train".into()),
            trained_on: Some(EXPORT.into()),
            secondary_status: Some(status.into()),
            image: Some("img:1".into()),
            hyperparameters: BTreeMap::new(),
        }
    }

    fn ended(status: &str) -> Ended {
        Ended {
            name: "recs-lora-catalog-20261203".into(),
            job: Some(job(status)),
            base: Some(Base {
                arn: "arn:aws:sagemaker:us-east-1:1:model-package/recs/3".into(),
                group: "recs".into(),
                inference: InferenceSpec {
                    containers: vec![Container {
                        image: "img".into(),
                        model_data_url: Some("s3://old".into()),
                        environment: BTreeMap::new(),
                    }],
                    content_types: vec!["application/json".into()],
                    response_types: vec![],
                    realtime_instance_types: vec![],
                },
                cutoff: Some("2025-09-01".into()),
            }),
            registered: None,
            newer: vec![],
        }
    }

    #[test]
    fn a_completed_job_becomes_one_candidate_with_its_lineage_and_metrics() {
        let c = config();
        let d = decide(&c, &ended("Completed"));
        assert_eq!(d.outcome, Outcome::CandidateAwaitsApproval, "{}", d.reason);
        let Action::RegisterPackage { package } = &d.plan.steps[0].action else {
            panic!("{:?}", d.plan)
        };
        assert_eq!(package.group, "recs");
        assert!(!package.approve);
        assert_eq!(
            package.inference.containers[0].model_data_url.as_deref(),
            Some(MODEL)
        );
        for (k, v) in [
            ("catalog_snapshot_date", "2026-12-03"),
            ("training_job", "recs-lora-catalog-20261203"),
            ("catalog_export_uri", EXPORT),
            ("retraining_cause", "coverage gap 29.58 pct above 5 pct"),
        ] {
            assert_eq!(package.metadata.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(
            package.statistics["training_metrics"]["validation_loss"]["value"],
            0.29
        );
        // The same job, registered already: nothing new.
        let mut again = ended("Completed");
        again.registered = Some("arn:aws:sagemaker:us-east-1:1:model-package/recs/4".into());
        let d = decide(&c, &again);
        assert_eq!((d.outcome, d.plan.is_empty()), (Outcome::Duplicate, true));
    }

    #[test]
    fn a_failed_job_asks_a_person_and_others_jobs_are_only_recorded() {
        let c = config();
        let d = decide(&c, &ended("Failed"));
        assert_eq!(d.outcome, Outcome::RetrainingFailed);
        assert!(
            d.reason.contains("CUDA OOM") && d.plan.is_empty(),
            "{}",
            d.reason
        );
        let mut foreign = ended("Completed");
        foreign.job.as_mut().unwrap().tags.remove(tags::ADAPTER);
        assert_eq!(decide(&c, &foreign).outcome, Outcome::Ignored);
        assert_eq!(decide(&c, &ended("InProgress")).outcome, Outcome::Ignored);
        let mut unread = ended("Completed");
        unread.base = None;
        let d = decide(&c, &unread);
        assert_eq!(d.outcome, Outcome::CandidateUnregistered);
        assert!(!d.plan.has(ActionKind::RegisterPackage));
    }

    #[test]
    fn a_job_not_started_by_the_scanner_is_never_registered() {
        let c = config();
        type Forge = fn(&mut JobEnd);
        let cases: [(&str, Forge); 6] = [
            ("not TRAINING_IMAGE", |j| {
                j.image = Some("evil:latest".into())
            }),
            ("not TRAINING_HYPERPARAMETERS", |j| {
                j.hyperparameters.insert(
                    "sagemaker_submit_directory".into(),
                    "s3://evil/code.tgz".into(),
                );
            }),
            ("tag is", |j| {
                j.tags
                    .insert(tags::SNAPSHOT_DATE.into(), "2099-01-01".into());
            }),
            ("not TRAINING_ROLE_ARN", |j| {
                j.role_arn = Some("arn:aws:iam::123456789012:role/someone".into())
            }),
            ("not the export", |j| {
                j.trained_on = Some("s3://elsewhere/data.jsonl".into())
            }),
            ("its model artifacts are", |j| {
                j.artifacts = Some("s3://training/adapters/recs-lora/other/model.tar.gz".into())
            }),
        ];
        for (why, forge) in cases {
            let mut e = ended("Completed");
            forge(e.job.as_mut().unwrap());
            let d = decide(&c, &e);
            assert_eq!(d.outcome, Outcome::CandidateUnregistered, "{why}");
            assert!(
                d.reason.contains(why) && d.plan.is_empty(),
                "{why}: {}",
                d.reason
            );
        }
    }

    #[test]
    fn an_older_catalog_no_metrics_or_another_group_registers_nothing() {
        let mut c = config();
        let mut old = ended("Completed");
        old.base.as_mut().unwrap().cutoff = Some("2026-12-03".into());
        let d = decide(&c, &old);
        assert_eq!(
            (d.outcome, d.plan.is_empty()),
            (Outcome::Superseded, true),
            "{}",
            d.reason
        );
        // A newer version registered since (not serving yet), its cutoff written as a time.
        let mut late = ended("Completed");
        late.newer = vec![(
            "arn:aws:sagemaker:us-east-1:1:model-package/recs/5".into(),
            "2026-12-03T03:10:00Z".into(),
        )];
        let d = decide(&c, &late);
        assert_eq!(d.outcome, Outcome::Superseded, "{}", d.reason);
        assert!(d.reason.contains("recs/5"), "{}", d.reason);

        let mut silent = ended("Completed");
        silent.job.as_mut().unwrap().metrics.clear();
        let d = decide(&c, &silent);
        assert_eq!(d.outcome, Outcome::CandidateUnregistered);
        assert!(
            d.reason.contains("TRAINING_METRIC_DEFINITIONS"),
            "{}",
            d.reason
        );

        c.package_group = Some("recs-adapters".into());
        let d = decide(&c, &ended("Completed"));
        assert_eq!(d.outcome, Outcome::CandidateUnregistered);
        assert!(
            d.reason.contains("not of ADAPTER_PACKAGE_GROUP"),
            "{}",
            d.reason
        );

        c.package_group = Some("recs".into());
        c.auto_approve = true;
        let d = decide(&c, &ended("Completed"));
        assert_eq!(d.outcome, Outcome::CandidateRegistered, "{}", d.reason);
    }

    #[test]
    fn a_stopped_job_is_a_persons_and_a_timed_out_one_is_told() {
        let c = config();
        let d = decide(&c, &ended("Stopped"));
        assert_eq!(d.outcome, Outcome::RetrainingStopped, "{}", d.reason);
        let mut timed_out = ended("Stopped");
        timed_out.job.as_mut().unwrap().secondary_status = Some("MaxRuntimeExceeded".into());
        let d = decide(&c, &timed_out);
        assert_eq!(d.outcome, Outcome::RetrainingFailed);
        assert!(
            d.reason.contains("TRAINING_MAX_RUNTIME_SECONDS"),
            "{}",
            d.reason
        );
        let mut last = ended("Failed");
        last.name = "recs-lora-catalog-20261203-3".into();
        last.job.as_mut().unwrap().name = last.name.clone();
        let d = decide(&c, &last);
        assert!(d.reason.contains("last attempt"), "{}", d.reason);
        assert!(
            decide(&c, &ended("Failed"))
                .reason
                .contains("may start attempt 2 of 3")
        );
    }
}
