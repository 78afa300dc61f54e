//! The drift scanner's configuration, read once at cold start.

use std::collections::BTreeMap;

use lifecycle::catalog::{DEFAULT_TEMPLATE, Template};
use lifecycle::config::{Environment, Source, flag, parsed, required};
use lifecycle::error::ConfigError;
use lifecycle::targets::is_sagemaker_name;
use lifecycle::training::TrainingSpec;
use time::OffsetDateTime;

use crate::dates::parse_cutoff;

#[derive(Debug, Clone)]
pub struct Config {
    /// `ADAPTER_NAME`: the fine-tuned adapter; names its training jobs and export keys.
    pub adapter: String,
    /// `PRODUCTS_TABLE`: the catalog (DynamoDB).
    pub products_table: String,
    /// `CREATED_AT_ATTRIBUTE` (default `created_at`): when an item entered the catalog
    /// (ISO 8601 date or time, or epoch seconds or milliseconds).
    pub created_attribute: String,
    /// `TITLE_ATTRIBUTE` (default `title`): shown in the sample of missed items.
    pub title_attribute: String,
    /// `ENDPOINT_NAME`: the endpoint serving the adapter; its model package's metadata gives the
    /// training cutoff. Optional if `TRAINING_CUTOFF` is set.
    pub endpoint: Option<String>,
    /// `CUTOFF_PROPERTY` (default `catalog_snapshot_date`): that metadata key.
    pub cutoff_property: String,
    /// `TRAINING_CUTOFF`: the cutoff when no endpoint or package says (as written, and parsed).
    pub fallback_cutoff: Option<WrittenCutoff>,
    /// `DRIFT_THRESHOLD_PCT` (default 5): retrain past this share of the catalog.
    pub threshold_pct: f64,
    /// `SCAN_SEGMENTS` (default 8): parallel scan segments (1 = sequential).
    pub segments: i32,
    /// `SCAN_PAGE_SIZE` (optional): items per Scan request (DynamoDB's `Limit`), to smooth the
    /// read rate on a provisioned table. Unset: DynamoDB's 1 MB pages.
    pub page_size: Option<i32>,
    /// `TRAINING_BUCKET` and `TRAINING_PREFIX` (default `catalog-snapshots/`): where exports go.
    pub bucket: String,
    pub prefix: String,
    /// `EXPORT_TEMPLATE` (default seed 000's `Title: {title} Genre: {genre} Author: {author}
    /// Synopsis: {synopsis}`): each item's line of the training corpus, `{"text": ...}`.
    pub template: String,
    /// `RETRAIN_AFTER_DAYS` (default 14): a finished retraining blocks another for the same gap
    /// until its adapter serves, or this many days after it ended.
    pub retrain_after_days: i64,
    pub training: TrainingSpec,
    /// `AUTO_APPROVE` (default false): a retrained adapter is registered Approved instead of
    /// PendingManualApproval (the deployer's gates still judge it).
    pub auto_approve: bool,
    /// `MONITOR_ALARMS` (comma-separated, optional): Model Monitor data- or model-quality alarms
    /// that start the same export and retraining when they go to ALARM.
    pub monitor_alarms: Vec<String>,
    /// `ADAPTER_PACKAGE_GROUP` (optional; `*` is any): the only group candidates go to. The
    /// served package's group must be this one, else no candidate and a person is asked.
    pub package_group: Option<String>,
    pub ledger_table: String,
    pub environment: Environment,
    pub dry_run: bool,
}

impl Config {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let adapter = required(src, "ADAPTER_NAME", "the adapter's name")?;
        if !is_sagemaker_name(&adapter) || adapter.len() > 40 {
            return Err(ConfigError::new(
                "ADAPTER_NAME",
                format!(
                    "{adapter:?}: expected 1-40 letters, digits or hyphens (it prefixes training job names)"
                ),
            ));
        }
        let (endpoint, fallback_cutoff) = cutoff_sources(src)?;
        let threshold_pct = parsed(src, "DRIFT_THRESHOLD_PCT", 5.0, "a percentage")?;
        if !(0.0..=100.0).contains(&threshold_pct) {
            return Err(ConfigError::new(
                "DRIFT_THRESHOLD_PCT",
                format!("is {threshold_pct}, expected 0 to 100"),
            ));
        }
        let segments = parsed(src, "SCAN_SEGMENTS", 8, "a number of segments")?;
        if !(1..=64).contains(&segments) {
            return Err(ConfigError::new(
                "SCAN_SEGMENTS",
                format!("is {segments}, expected 1 to 64"),
            ));
        }
        let page_size = match src.get("SCAN_PAGE_SIZE") {
            None => None,
            Some(raw) => match raw.trim().parse::<i32>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(ConfigError::new(
                        "SCAN_PAGE_SIZE",
                        format!("expected a positive number of items, got {raw:?}"),
                    ));
                }
            },
        };
        let bucket = required(src, "TRAINING_BUCKET", "an S3 bucket name")?;
        let training = training_spec(src, &bucket, &adapter)?;
        let mut prefix = src
            .get("TRAINING_PREFIX")
            .unwrap_or_else(|| "catalog-snapshots/".into());
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        export_uri_taggable(&bucket, &prefix, &adapter)?;
        let (template, retrain_after_days) = retraining(src)?;
        Ok(Self {
            template,
            retrain_after_days,
            adapter,
            products_table: required(src, "PRODUCTS_TABLE", "a DynamoDB table name")?,
            created_attribute: src
                .get("CREATED_AT_ATTRIBUTE")
                .unwrap_or_else(|| "created_at".into()),
            title_attribute: src.get("TITLE_ATTRIBUTE").unwrap_or_else(|| "title".into()),
            endpoint,
            cutoff_property: cutoff_property(src)?,
            fallback_cutoff,
            threshold_pct,
            segments,
            page_size,
            bucket,
            prefix,
            training,
            auto_approve: flag(src, "AUTO_APPROVE", false)?,
            monitor_alarms: monitor_alarms(src),
            package_group: src
                .get("ADAPTER_PACKAGE_GROUP")
                .map(|g| g.trim().to_string())
                .filter(|g| !g.is_empty() && g != "*"),
            ledger_table: required(src, "LEDGER_TABLE", "a DynamoDB table name")?,
            environment: Environment::from_source(src)?,
            dry_run: flag(src, "DRY_RUN", false)?,
        })
    }
}

/// The export's URI is a tag of each job and metadata of each candidate, exactly: in SageMaker's
/// alphabet and at most 256 characters, or every CreateTrainingJob would be refused.
fn export_uri_taggable(bucket: &str, prefix: &str, adapter: &str) -> Result<(), ConfigError> {
    let uri = format!("s3://{bucket}/{prefix}{adapter}/snapshot=2026-01-01/catalog-00000000.jsonl");
    if lifecycle::names::is_sagemaker_text(&uri) && uri.chars().count() <= 256 {
        return Ok(());
    }
    Err(ConfigError::new(
        "TRAINING_PREFIX",
        format!(
            "{prefix:?}: with TRAINING_BUCKET, the export URIs must be at most 256 characters of letters, digits and _ . : / = + - @"
        ),
    ))
}

/// `CUTOFF_PROPERTY`: a metadata key the scanner also writes on its candidates.
fn cutoff_property(src: &impl Source) -> Result<String, ConfigError> {
    let key = src
        .get("CUTOFF_PROPERTY")
        .unwrap_or_else(|| "catalog_snapshot_date".into());
    let ok = (1..=128).contains(&key.chars().count()) && lifecycle::names::is_sagemaker_text(&key);
    ok.then_some(key).ok_or_else(|| {
        ConfigError::new(
            "CUTOFF_PROPERTY",
            "1-128 letters, digits, spaces or _ . : / = + - @ (a model package metadata key)",
        )
    })
}

/// `MONITOR_ALARMS`: alarm names, comma-separated, blanks dropped.
fn monitor_alarms(src: &impl Source) -> Vec<String> {
    let raw = src.get("MONITOR_ALARMS").unwrap_or_default();
    raw.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

/// The corpus line (`EXPORT_TEMPLATE`) and how long a finished job stands for its gap
/// (`RETRAIN_AFTER_DAYS`).
fn retraining(src: &impl Source) -> Result<(String, i64), ConfigError> {
    let template = src
        .get("EXPORT_TEMPLATE")
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string());
    Template::parse(&template).map_err(|e| ConfigError::new("EXPORT_TEMPLATE", e))?;
    let days = parsed(src, "RETRAIN_AFTER_DAYS", 14, "days")?;
    if !(1..=365).contains(&days) {
        return Err(ConfigError::new(
            "RETRAIN_AFTER_DAYS",
            format!("is {days}, expected 1 to 365"),
        ));
    }
    Ok((template, days))
}

/// The retraining job's settings (`TRAINING_*`).
fn training_spec(
    src: &impl Source,
    bucket: &str,
    adapter: &str,
) -> Result<TrainingSpec, ConfigError> {
    let hyperparameters = match src.get("TRAINING_HYPERPARAMETERS") {
        None => BTreeMap::new(),
        Some(raw) => serde_json::from_str(&raw).map_err(|e| {
            ConfigError::new(
                "TRAINING_HYPERPARAMETERS",
                format!("expected a JSON object of strings: {e}"),
            )
        })?,
    };
    let instance_count = parsed(src, "TRAINING_INSTANCE_COUNT", 1, "a number of instances")?;
    if !(1..=16).contains(&instance_count) {
        return Err(ConfigError::new(
            "TRAINING_INSTANCE_COUNT",
            format!("is {instance_count}, expected 1 to 16"),
        ));
    }
    let role_arn = required(src, "TRAINING_ROLE_ARN", "an IAM role ARN")?;
    if !role_arn.contains(":role/") {
        return Err(ConfigError::new(
            "TRAINING_ROLE_ARN",
            format!("expected an IAM role ARN, got {role_arn:?}"),
        ));
    }
    let instance_type = src
        .get("TRAINING_INSTANCE_TYPE")
        .unwrap_or_else(|| "ml.g5.2xlarge".into());
    if !instance_type.starts_with("ml.") {
        return Err(ConfigError::new(
            "TRAINING_INSTANCE_TYPE",
            format!("{instance_type:?} is not a SageMaker instance type (ml.*)"),
        ));
    }
    Ok(TrainingSpec {
        image: required(src, "TRAINING_IMAGE", "a training image URI")?,
        instance_type,
        instance_count,
        role_arn,
        hyperparameters,
        output_s3: src
            .get("TRAINING_OUTPUT_S3")
            .unwrap_or_else(|| format!("s3://{bucket}/adapters/{adapter}/")),
        max_runtime_seconds: parsed(src, "TRAINING_MAX_RUNTIME_SECONDS", 86_400, "seconds")?,
        metric_definitions: metric_definitions(src)?,
    })
}

/// `TRAINING_METRIC_DEFINITIONS`: `{"<metric>": "<regex with one group>"}`, as SageMaker takes
/// them (at most 40; names up to 255 characters, regexes up to 500).
fn metric_definitions(src: &impl Source) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "TRAINING_METRIC_DEFINITIONS";
    let Some(raw) = src.get(key).filter(|r| !r.trim().is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let defs: BTreeMap<String, String> = serde_json::from_str(&raw).map_err(|e| {
        ConfigError::new(
            key,
            format!("expected a JSON object of metric name to regex: {e}"),
        )
    })?;
    let bad = defs.iter().find(|(name, regex)| {
        !(1..=255).contains(&name.chars().count()) || !(1..=500).contains(&regex.chars().count())
    });
    if defs.len() > 40 || bad.is_some() {
        return Err(ConfigError::new(
            key,
            "at most 40 metrics, names of 1-255 characters, regexes of 1-500",
        ));
    }
    Ok(defs)
}

/// A cutoff as written, and as the instant it means.
type WrittenCutoff = (String, OffsetDateTime);

/// Where the cutoff comes from: `ENDPOINT_NAME`'s package, else `TRAINING_CUTOFF`; one is needed.
fn cutoff_sources(
    src: &impl Source,
) -> Result<(Option<String>, Option<WrittenCutoff>), ConfigError> {
    let fallback_cutoff = match src.get("TRAINING_CUTOFF") {
        None => None,
        Some(raw) => Some((
            raw.trim().to_string(),
            parse_cutoff(&raw).map_err(|e| ConfigError::new("TRAINING_CUTOFF", e))?,
        )),
    };
    let endpoint = src.get("ENDPOINT_NAME");
    if endpoint.is_none() && fallback_cutoff.is_none() {
        return Err(ConfigError::new(
            "ENDPOINT_NAME",
            "is not set, and neither is TRAINING_CUTOFF: one of them must give the training cutoff",
        ));
    }
    Ok((endpoint, fallback_cutoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ADAPTER_NAME", "mangaassist-recs-lora"),
            ("PRODUCTS_TABLE", "products"),
            ("ENDPOINT_NAME", "recs"),
            ("TRAINING_BUCKET", "training"),
            ("TRAINING_IMAGE", "img:1"),
            ("TRAINING_ROLE_ARN", "arn:aws:iam::123456789012:role/train"),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "production"),
        ]
    }

    #[test]
    fn defaults_are_sensible() {
        let c = Config::from_source(&base().as_slice()).unwrap();
        assert_eq!(c.threshold_pct, 5.0);
        assert_eq!(c.segments, 8);
        assert_eq!(c.created_attribute, "created_at");
        assert_eq!(c.prefix, "catalog-snapshots/");
        assert!(!c.auto_approve && c.monitor_alarms.is_empty());
        assert!(c.package_group.is_none() && c.training.metric_definitions.is_empty());
        let mut env = base();
        env.push(("MONITOR_ALARMS", " recs-data-quality , recs-model-quality,"));
        let c = Config::from_source(&env.as_slice()).unwrap();
        assert_eq!(
            c.monitor_alarms,
            ["recs-data-quality", "recs-model-quality"]
        );
        assert_eq!(
            c.training.output_s3,
            "s3://training/adapters/mangaassist-recs-lora/"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("DRIFT_THRESHOLD_PCT", "150"),
            ("SCAN_SEGMENTS", "0"),
            ("TRAINING_HYPERPARAMETERS", "[1]"),
            ("TRAINING_CUTOFF", "last spring"),
            ("ADAPTER_NAME", "bad name"),
            ("EXPORT_TEMPLATE", "Title: {title"),
            ("RETRAIN_AFTER_DAYS", "0"),
            ("TRAINING_PREFIX", "snapshots~(2026)/"),
            ("CUTOFF_PROPERTY", "cutoff%"),
            ("TRAINING_METRIC_DEFINITIONS", "[\"validation_loss\"]"),
            ("TRAINING_METRIC_DEFINITIONS", "{\"validation_loss\": \"\"}"),
        ] {
            let mut env = base();
            env.retain(|(k, _)| *k != var);
            env.push((var, value));
            assert_eq!(Config::from_source(&env.as_slice()).unwrap_err().var, var);
        }
        let mut env = base();
        env.retain(|(k, _)| *k != "ENDPOINT_NAME");
        assert!(
            Config::from_source(&env.as_slice())
                .unwrap_err()
                .problem
                .contains("TRAINING_CUTOFF")
        );
    }
}
