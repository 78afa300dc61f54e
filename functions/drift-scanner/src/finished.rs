//! A retraining job that ended (EventBridge's "SageMaker Training Job State Change"): Completed
//! becomes a candidate package of the adapter's group; Failed or Stopped is a person's to hear,
//! and releases the day for another attempt. The event names the job; what it says is re-read
//! from SageMaker (an event may be late, repeated or made by hand).
//!
//! event → observe (the job, the package the adapter endpoint serves, the registry) → decide
//! (pure) → the pipeline: register, record.

use std::collections::BTreeMap;

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
}

#[derive(Debug, Clone)]
pub struct Base {
    pub arn: String,
    pub group: String,
    pub inference: InferenceSpec,
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
    };
    // Another team's job is only recorded: not even described.
    if training::snapshot_of(&c.adapter, name).is_none() {
        return Ok(ended);
    }
    ended.job = training::describe_end(sm, name).await?;
    let completed = ended.job.as_ref().is_some_and(|j| j.status == "Completed");
    if !(completed && ours(c, ended.job.as_ref())) {
        return Ok(ended);
    }
    ended.base = base(scanner).await?;
    if let Some(b) = &ended.base {
        ended.registered = candidate::registered_for(sm, &b.group, name).await?;
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
    Ok(candidate::inference_of(&out).map(|inference| Base {
        arn: p.arn,
        group: p.group,
        inference,
    }))
}

/// A job the scanner started for this adapter: its name, and its adapter tag.
fn ours(c: &Config, job: Option<&JobEnd>) -> bool {
    job.is_some_and(|j| j.tags.get(tags::ADAPTER) == Some(&c.adapter))
}

/// What to do about a job that changed state. Pure.
pub fn decide(c: &Config, e: &Ended) -> Decision {
    let name = &e.name;
    let Some(job) = e.job.as_ref().filter(|_| ours(c, e.job.as_ref())) else {
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
    match job.status.as_str() {
        "Completed" => completed(c, e, job),
        "Failed" | "Stopped" => Decision::new(
            Outcome::RetrainingFailed,
            format!(
                "retraining job {name} {}: {}; no candidate; the next scan may start another (up to {} a day)",
                job.status.to_lowercase(),
                job.failure_reason.as_deref().unwrap_or("no reason given"),
                training::MAX_ATTEMPTS
            ),
        ),
        other => Decision::new(
            Outcome::Ignored,
            format!("retraining job {name} is {other}: its end is heard when it comes"),
        ),
    }
    .with_evidence(evidence)
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
    let (Some(base), Some(artifacts)) = (&e.base, &job.artifacts) else {
        let why = if job.artifacts.is_none() {
            "it has no model artifacts".to_string()
        } else {
            format!(
                "the package {} serves (its group and inference specification) cannot be read",
                c.endpoint.as_deref().unwrap_or("ENDPOINT_NAME")
            )
        };
        return Decision::new(
            Outcome::CandidateUnregistered,
            format!("retraining job {name} completed, but {why}: no candidate registered"),
        );
    };
    let package = candidate_package(c, base, job, artifacts);
    let reason = format!(
        "retraining job {name} completed: registering it as a new version of {} ({}), trained on the catalog of {}",
        base.group,
        if c.auto_approve {
            "Approved; the deployer's gates still apply"
        } else {
            "PendingManualApproval"
        },
        package
            .metadata
            .get(&c.cutoff_property)
            .map_or("?", String::as_str)
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
    Decision::new(Outcome::CandidateRegistered, reason).with_plan(plan)
}

fn candidate_package(c: &Config, base: &Base, job: &JobEnd, artifacts: &str) -> CandidatePackage {
    let tag = |k: &str| job.tags.get(k).cloned().unwrap_or_default();
    // The snapshot date under the key the scanner reads its cutoff from, once this serves.
    let metadata = BTreeMap::from([
        (c.cutoff_property.clone(), tag(tags::SNAPSHOT_DATE)),
        (TRAINING_JOB.to_string(), job.name.clone()),
        ("catalog_export_uri".to_string(), tag(tags::EXPORT_URI)),
        ("retraining_cause".to_string(), tag(tags::CAUSE)),
        ("base_package".to_string(), base.arn.clone()),
    ]);
    CandidatePackage {
        group: base.group.clone(),
        description: format!(
            "{} retrained by {} on the catalog of {} ({})",
            c.adapter,
            job.name,
            tag(tags::SNAPSHOT_DATE),
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

    fn job(status: &str) -> JobEnd {
        JobEnd {
            name: "recs-lora-catalog-20261203".into(),
            arn: "arn:aws:sagemaker:us-east-1:1:training-job/recs-lora-catalog-20261203".into(),
            status: status.into(),
            failure_reason: (status == "Failed").then(|| "AlgorithmError: CUDA OOM".into()),
            artifacts: Some("s3://training/adapters/recs-lora/out/model.tar.gz".into()),
            metrics: BTreeMap::from([("validation_loss".into(), 0.29)]),
            tags: BTreeMap::from([
                (tags::ADAPTER.into(), "recs-lora".into()),
                (tags::SNAPSHOT_DATE.into(), "2026-12-03".into()),
                (
                    tags::EXPORT_URI.into(),
                    "s3://training/snap/catalog.jsonl".into(),
                ),
                (tags::CAUSE.into(), "coverage gap 29.58% above 5%".into()),
            ]),
            ended_at: Some(1),
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
            }),
            registered: None,
        }
    }

    #[test]
    fn a_completed_job_becomes_one_candidate_with_its_lineage_and_metrics() {
        let c = config();
        let d = decide(&c, &ended("Completed"));
        assert_eq!(d.outcome, Outcome::CandidateRegistered, "{}", d.reason);
        let Action::RegisterPackage { package } = &d.plan.steps[0].action else {
            panic!("{:?}", d.plan)
        };
        assert_eq!(package.group, "recs");
        assert!(!package.approve);
        assert_eq!(
            package.inference.containers[0].model_data_url.as_deref(),
            Some("s3://training/adapters/recs-lora/out/model.tar.gz")
        );
        for (k, v) in [
            ("catalog_snapshot_date", "2026-12-03"),
            ("training_job", "recs-lora-catalog-20261203"),
            ("catalog_export_uri", "s3://training/snap/catalog.jsonl"),
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
}
