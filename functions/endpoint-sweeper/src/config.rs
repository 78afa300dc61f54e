//! The sweeper's configuration, read once at cold start.

use lifecycle::config::{Environment, Source, flag, parsed, required};
use lifecycle::error::ConfigError;
use lifecycle::targets::Targets;

#[derive(Debug, Clone)]
pub struct Config {
    /// `DEPLOY_TARGETS` (optional; unset, empty or `[]` for an account without any): the
    /// canonical endpoint of each model package group. Other endpoints serving a target's group
    /// are stale duplicates; a target's endpoint is never deleted (the deployer would recreate it).
    pub targets: Targets,
    /// `PROTECTION_TAG_KEY` (default `ProtectedFromAutoStop`): `=true` exempts an endpoint from
    /// every action.
    pub protection_tag: String,
    /// `ENVIRONMENT_TAG_KEY` (default `environment`): `production` or `prod` marks a production
    /// endpoint, any other value a non-production one. An endpoint without the tag is in the
    /// stack's `ENVIRONMENT`: a production install never deletes it.
    pub environment_tag: String,
    /// `IDLE_WINDOW_MINUTES` (default 60).
    pub window_minutes: i64,
    /// `GRACE_HOURS` (default 24): how long an idle non-production endpoint stays marked before
    /// it is deleted.
    pub grace_hours: i64,
    /// `STALE_INVOCATIONS_THRESHOLD` (default 100 per hour).
    pub stale_threshold: f64,
    /// `STALE_WINDOW_HOURS` (default 168): how long a stale duplicate of a target stays marked,
    /// with no invocation at all, before it is retired.
    pub stale_hours: i64,
    /// `KEEP_VERSIONS` (default 2): the deployer's models and configs of the last this many
    /// versions a target served are kept; older unused ones are deleted after `GRACE_HOURS`.
    pub keep_versions: usize,
    /// `MAX_ACTIONS_PER_RUN` (default 10): mutations per run, at most.
    pub max_actions: usize,
    /// `REMEDIATE` (default false): fix under-replicated, scale-to-zero and cooldown findings.
    pub remediate: bool,
    /// `SWEEP_CONCURRENCY` (default 16): describe calls in flight at once.
    pub concurrency: usize,
    /// `REPORT_BUCKET`, `REPORT_PREFIX` (default `sweeps/`).
    pub report_bucket: String,
    pub report_prefix: String,
    pub ledger_table: String,
    pub environment: Environment,
    /// `DRY_RUN` (default true): a new install reports before it acts.
    pub dry_run: bool,
}

impl Config {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let environment = Environment::from_source(src)?;
        // The seeds' hourly idle sweep runs in accounts without deployment targets.
        let targets = match src.get("DEPLOY_TARGETS") {
            Some(raw) if !matches!(raw.trim(), "" | "[]") => {
                Targets::from_source(src, environment)?
            }
            _ => Targets::default(),
        };
        let keep_versions = parsed(src, "KEEP_VERSIONS", 2, "a number of versions")?;
        if !(1..=50).contains(&keep_versions) {
            return Err(ConfigError::new(
                "KEEP_VERSIONS",
                format!("is {keep_versions}, expected 1 to 50"),
            ));
        }
        let window_minutes = parsed(src, "IDLE_WINDOW_MINUTES", 60, "minutes")?;
        if !(5..=10_080).contains(&window_minutes) {
            return Err(ConfigError::new(
                "IDLE_WINDOW_MINUTES",
                format!("is {window_minutes}, expected 5 to 10080"),
            ));
        }
        let concurrency = parsed(src, "SWEEP_CONCURRENCY", 16, "a number")?;
        if !(1..=64).contains(&concurrency) {
            return Err(ConfigError::new(
                "SWEEP_CONCURRENCY",
                format!("is {concurrency}, expected 1 to 64"),
            ));
        }
        let mut report_prefix = src.get("REPORT_PREFIX").unwrap_or_else(|| "sweeps/".into());
        if !report_prefix.is_empty() && !report_prefix.ends_with('/') {
            report_prefix.push('/');
        }
        Ok(Self {
            targets,
            protection_tag: src
                .get("PROTECTION_TAG_KEY")
                .unwrap_or_else(|| "ProtectedFromAutoStop".into()),
            environment_tag: src
                .get("ENVIRONMENT_TAG_KEY")
                .unwrap_or_else(|| "environment".into()),
            window_minutes,
            grace_hours: parsed(src, "GRACE_HOURS", 24, "hours")?,
            stale_threshold: parsed(
                src,
                "STALE_INVOCATIONS_THRESHOLD",
                100.0,
                "invocations per hour",
            )?,
            stale_hours: parsed(src, "STALE_WINDOW_HOURS", 168, "hours")?,
            keep_versions,
            max_actions: parsed(src, "MAX_ACTIONS_PER_RUN", 10, "a number of actions")?,
            remediate: flag(src, "REMEDIATE", false)?,
            concurrency,
            report_bucket: required(src, "REPORT_BUCKET", "an S3 bucket name")?,
            report_prefix,
            ledger_table: required(src, "LEDGER_TABLE", "a DynamoDB table name")?,
            environment,
            dry_run: flag(src, "DRY_RUN", true)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_install_is_a_dry_run_and_bad_values_are_named() {
        let env: &[(&str, &str)] = &[
            ("REPORT_BUCKET", "reports"),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "production"),
        ];
        let c = Config::from_source(&env).unwrap();
        assert!(c.dry_run);
        assert_eq!(
            (c.window_minutes, c.grace_hours, c.max_actions),
            (60, 24, 10)
        );
        let bad: &[(&str, &str)] = &[
            ("REPORT_BUCKET", "reports"),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "production"),
            ("IDLE_WINDOW_MINUTES", "1"),
        ];
        assert_eq!(
            Config::from_source(&bad).unwrap_err().var,
            "IDLE_WINDOW_MINUTES"
        );
    }

    #[test]
    fn it_stands_alone_without_deployment_targets() {
        for targets in ["", " ", "[]"] {
            let env: &[(&str, &str)] = &[
                ("REPORT_BUCKET", "reports"),
                ("LEDGER_TABLE", "ledger"),
                ("ENVIRONMENT", "staging"),
                ("DEPLOY_TARGETS", targets),
            ];
            let c = Config::from_source(&env).unwrap();
            assert!(c.targets.0.is_empty());
            assert_eq!((c.stale_hours, c.keep_versions), (168, 2));
        }
    }
}
