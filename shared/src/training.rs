//! The adapter's retraining job: one per catalog snapshot date, never two at once.

use std::collections::BTreeMap;

use aws_sdk_sagemaker::types::{
    AlgorithmSpecification, Channel, DataSource, MetricDefinition, OutputDataConfig,
    ResourceConfig, S3DataDistribution, S3DataSource, S3DataType, StoppingCondition, Tag,
    TrainingInputMode, TrainingInstanceType, TrainingJobStatus,
};
use serde::Serialize;

use crate::error::{Error, Result, error_message};
use crate::names::sagemaker_name;

/// The retraining job, as configured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingSpec {
    pub image: String,
    pub instance_type: String,
    pub instance_count: i32,
    pub role_arn: String,
    pub hyperparameters: BTreeMap<String, String>,
    pub output_s3: String,
    pub max_runtime_seconds: i32,
    /// Metric name -> the regex that finds it in the job's logs. A training image of one's own
    /// reports final metrics only through these; without them a candidate has none to be gated on.
    pub metric_definitions: BTreeMap<String, String>,
}

/// One job to start: a plan action ([`crate::plan::Action::StartTrainingJob`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainingJob {
    pub name: String,
    pub adapter: String,
    pub snapshot_date: String,
    /// The exported catalog: the job's `train` channel.
    pub export_uri: String,
    /// Why: the coverage gap, or the Model Monitor alarm (a tag, and the candidate's lineage).
    pub cause: String,
    pub spec: TrainingSpec,
}

pub mod tags {
    pub const ADAPTER: &str = "lifecycle:adapter";
    pub const SNAPSHOT_DATE: &str = "lifecycle:catalog-snapshot-date";
    pub const EXPORT_URI: &str = "lifecycle:catalog-export-uri";
    /// Why it was started: the coverage gap, or the Model Monitor alarm.
    pub const CAUSE: &str = "lifecycle:cause";
}

/// A day's attempts: a job that failed or stopped releases the day, once or twice more.
pub const MAX_ATTEMPTS: u32 = 3;

/// The name of a day's `attempt` (1: the day's name itself; then `-2`, `-3`).
pub fn attempt_name(day: &str, attempt: u32) -> String {
    match attempt {
        0 | 1 => day.to_string(),
        n => format!("{day}-{n}"),
    }
}

/// The training job of an adapter for a snapshot date: deterministic, so a second run the same
/// day finds it (and SageMaker refuses to create it twice).
pub fn job_name(adapter: &str, snapshot_date: &str) -> String {
    sagemaker_name(
        adapter,
        &format!("catalog-{}", snapshot_date.replace('-', "")),
    )
}

fn is_adapter_job(adapter: &str, name: &str) -> bool {
    name.starts_with(&format!("{adapter}-catalog-"))
}

/// DescribeTrainingJob; `None` when there is no such job.
async fn describe(
    sm: &aws_sdk_sagemaker::Client,
    name: &str,
) -> Result<Option<aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput>>
{
    match sm
        .describe_training_job()
        .training_job_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(Some(out)),
        Err(e)
            if error_message(&e)
                .is_some_and(|m| m.contains("not found") || m.contains("Could not find")) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::aws("DescribeTrainingJob", e)),
    }
}

/// The job's status, if it exists.
pub async fn status(sm: &aws_sdk_sagemaker::Client, name: &str) -> Result<Option<String>> {
    Ok(describe(sm, name).await?.map(|out| {
        out.training_job_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default()
    }))
}

/// The adapter's training jobs that are running now.
pub async fn running(sm: &aws_sdk_sagemaker::Client, adapter: &str) -> Result<Vec<String>> {
    let mut pages = sm
        .list_training_jobs()
        .name_contains(adapter)
        .status_equals(TrainingJobStatus::InProgress)
        .into_paginator()
        .items()
        .send();
    let mut out = vec![];
    while let Some(job) = pages.next().await {
        let job = job.map_err(|e| Error::aws("ListTrainingJobs", e))?;
        let name = job.training_job_name().unwrap_or_default();
        if is_adapter_job(adapter, name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// A retraining job of the adapter that completed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finished {
    pub name: String,
    /// The catalog snapshot it trained on (`YYYY-MM-DD`, from its name).
    pub snapshot_date: String,
    /// When it ended (epoch seconds).
    pub ended_at: i64,
}

/// The snapshot date in a job name this suite made: `<adapter>-catalog-YYYYMMDD`.
pub fn snapshot_of(adapter: &str, name: &str) -> Option<String> {
    let rest = name.strip_prefix(&format!("{adapter}-catalog-"))?;
    // A later attempt of the day: `-2`, `-3`.
    let digits = match rest.split_once('-') {
        Some((d, n))
            if n.parse::<u32>()
                .is_ok_and(|n| (2..=MAX_ATTEMPTS).contains(&n)) =>
        {
            d
        }
        Some(_) => return None,
        None => rest,
    };
    let ok = digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| format!("{}-{}-{}", &digits[..4], &digits[4..6], &digits[6..]))
}

/// Which attempt of its day a job is: 1, or the `-N` of a later one.
pub fn attempt_of(name: &str) -> u32 {
    name.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .filter(|n| (2..=MAX_ATTEMPTS).contains(n))
        .unwrap_or(1)
}

/// The adapter's most recent completed retraining job, if any.
pub async fn latest_completed(
    sm: &aws_sdk_sagemaker::Client,
    adapter: &str,
) -> Result<Option<Finished>> {
    let out = sm
        .list_training_jobs()
        .name_contains(adapter)
        .status_equals(TrainingJobStatus::Completed)
        .sort_by(aws_sdk_sagemaker::types::SortBy::CreationTime)
        .sort_order(aws_sdk_sagemaker::types::SortOrder::Descending)
        .max_results(50)
        .send()
        .await
        .map_err(|e| Error::aws("ListTrainingJobs", e))?;
    Ok(out.training_job_summaries().iter().find_map(|j| {
        let name = j.training_job_name().unwrap_or_default();
        let ended = j
            .training_end_time()
            .or(j.last_modified_time())
            .or(j.creation_time());
        Some(Finished {
            snapshot_date: snapshot_of(adapter, name)?,
            name: name.to_string(),
            ended_at: ended.map(|t| t.secs()).unwrap_or_default(),
        })
    }))
}

/// CreateTrainingJob. `Ok(false)` when a job of that name already exists.
pub async fn start(sm: &aws_sdk_sagemaker::Client, s: &TrainingJob) -> Result<bool> {
    // Tag values in SageMaker's alphabet: the cause is free text ("29.58%", an alarm's reason).
    let cause = crate::names::sagemaker_text(&s.cause, 256);
    let tags = BTreeMap::from([
        (tags::ADAPTER, s.adapter.as_str()),
        (tags::SNAPSHOT_DATE, s.snapshot_date.as_str()),
        (tags::EXPORT_URI, s.export_uri.as_str()),
        (tags::CAUSE, cause.as_str()),
    ]);
    // MetricDefinition's builder cannot fail (its members are optional in the SDK's model).
    let metric_definitions: Vec<MetricDefinition> = s
        .spec
        .metric_definitions
        .iter()
        .map(|(name, regex)| MetricDefinition::builder().name(name).regex(regex).build())
        .collect();
    let res = sm
        .create_training_job()
        .training_job_name(&s.name)
        .algorithm_specification(
            AlgorithmSpecification::builder()
                .training_image(&s.spec.image)
                .training_input_mode(TrainingInputMode::File)
                .set_metric_definitions(Some(metric_definitions).filter(|m| !m.is_empty()))
                .build(),
        )
        .role_arn(&s.spec.role_arn)
        .input_data_config(
            Channel::builder()
                .channel_name("train")
                .content_type("application/jsonlines")
                .data_source(
                    DataSource::builder()
                        .s3_data_source(
                            S3DataSource::builder()
                                .s3_data_type(S3DataType::S3Prefix)
                                .s3_uri(&s.export_uri)
                                .s3_data_distribution_type(S3DataDistribution::FullyReplicated)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .output_data_config(
            OutputDataConfig::builder()
                .s3_output_path(&s.spec.output_s3)
                .build(),
        )
        .resource_config(
            ResourceConfig::builder()
                .instance_type(TrainingInstanceType::from(s.spec.instance_type.as_str()))
                .instance_count(s.spec.instance_count)
                .volume_size_in_gb(50)
                .build(),
        )
        .stopping_condition(
            StoppingCondition::builder()
                .max_runtime_in_seconds(s.spec.max_runtime_seconds)
                .build(),
        )
        .set_hyper_parameters(Some(s.spec.hyperparameters.clone().into_iter().collect()))
        .set_tags(Some(
            tags.into_iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .send()
        .await;
    match res {
        Ok(_) => Ok(true),
        Err(e) if error_message(&e).is_some_and(|m| m.contains("already exists")) => Ok(false),
        Err(e) => Err(Error::aws("CreateTrainingJob", e)),
    }
}

/// A retraining job as it ended (or is now), read from SageMaker, not from its event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEnd {
    pub name: String,
    pub arn: String,
    /// `Completed`, `Failed`, `Stopped`, or still `InProgress` / `Stopping`.
    pub status: String,
    pub failure_reason: Option<String>,
    /// The trained adapter: the model data of the candidate package.
    pub artifacts: Option<String>,
    /// Its final metrics (FinalMetricDataList), by name.
    pub metrics: BTreeMap<String, f64>,
    /// The suite's tags on it (adapter, snapshot date, export, cause).
    pub tags: BTreeMap<String, String>,
    /// When it ended (epoch seconds), once it has.
    pub ended_at: Option<i64>,
    /// When it was made (epoch seconds): no package of it can be older.
    pub created_at: Option<i64>,
    /// What it ran as, and what its `train` channel read: the facts that make it the scanner's.
    pub role_arn: Option<String>,
    pub trained_on: Option<String>,
    /// `MaxRuntimeExceeded`, `Stopped`, ...: why a Stopped job stopped.
    pub secondary_status: Option<String>,
    /// What it ran: with the role, data and output, what makes it the scanner's own training.
    pub image: Option<String>,
    pub hyperparameters: BTreeMap<String, String>,
}

/// DescribeTrainingJob and its tags; `None` when there is no such job.
pub async fn describe_end(sm: &aws_sdk_sagemaker::Client, name: &str) -> Result<Option<JobEnd>> {
    let Some(job) = describe(sm, name).await? else {
        return Ok(None);
    };
    let arn = job.training_job_arn().unwrap_or_default().to_string();
    let listed = sm
        .list_tags()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(|e| Error::aws("ListTags", e))?;
    let tags = listed
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
        .collect();
    let metrics = job
        .final_metric_data_list()
        .iter()
        // SageMaker keeps metrics as 32-bit floats: their shortest text (0.29, not
        // 0.28999999165534973) is what the job logged and what a gate's bound is written against.
        .filter_map(|m| {
            Some((
                m.metric_name()?.to_string(),
                m.value()?.to_string().parse().ok()?,
            ))
        })
        .collect();
    Ok(Some(JobEnd {
        name: name.to_string(),
        arn,
        status: job
            .training_job_status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        failure_reason: job.failure_reason().map(str::to_string),
        artifacts: job
            .model_artifacts()
            .and_then(|a| a.s3_model_artifacts())
            .map(str::to_string),
        metrics,
        tags,
        ended_at: job.training_end_time().map(|t| t.secs()),
        created_at: job.creation_time().map(|t| t.secs()),
        role_arn: job.role_arn().map(str::to_string),
        trained_on: job
            .input_data_config()
            .iter()
            .find(|c| c.channel_name() == Some("train"))
            .and_then(|c| c.data_source()?.s3_data_source())
            .and_then(|s| s.s3_uri())
            .map(str::to_string),
        secondary_status: job.secondary_status().map(|s| s.as_str().to_string()),
        image: job
            .algorithm_specification()
            .and_then(|a| a.training_image())
            .map(str::to_string),
        hyperparameters: job
            .hyper_parameters()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_days_later_attempts_keep_its_snapshot_date() {
        let day = job_name("recs-lora", "2026-03-02");
        assert_eq!(attempt_name(&day, 1), day);
        let second = attempt_name(&day, 2);
        assert_eq!(second, "recs-lora-catalog-20260302-2");
        assert_eq!(
            snapshot_of("recs-lora", &second).as_deref(),
            Some("2026-03-02")
        );
        assert_eq!(snapshot_of("recs-lora", &format!("{day}-9")), None);
        assert_eq!((attempt_of(&day), attempt_of(&second)), (1, 2));
        assert_eq!(snapshot_of("recs-lora", &format!("{day}-x")), None);
    }

    #[test]
    fn a_jobs_snapshot_date_is_in_its_name() {
        let name = job_name("mangaassist-recs-lora", "2026-03-02");
        assert_eq!(
            snapshot_of("mangaassist-recs-lora", &name).as_deref(),
            Some("2026-03-02")
        );
        assert_eq!(
            snapshot_of("mangaassist-recs-lora", "someone-elses-job"),
            None
        );
        assert_eq!(snapshot_of("a", "a-catalog-2026030"), None);
    }

    #[test]
    fn job_names_are_per_adapter_and_day() {
        let name = job_name("mangaassist-recs-lora", "2026-03-02");
        assert_eq!(name, "mangaassist-recs-lora-catalog-20260302");
        assert!(is_adapter_job("mangaassist-recs-lora", &name));
        assert!(!is_adapter_job(
            "mangaassist-recs-lora",
            "mangaassist-recs-lora-v2-catalog-20260302"
        ));
    }
}
