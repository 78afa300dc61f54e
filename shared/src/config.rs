//! Reading typed configuration from the environment, once, at cold start.
//!
//! Every reader takes a lookup function instead of touching `std::env` so tests can hand in a map.
//! Errors name the variable and what it expected.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::targets::Targets;

/// Where configuration values come from: `std::env` in Lambda, a map in tests.
pub trait Source {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<S: Source + ?Sized> Source for &S {
    fn get(&self, var: &str) -> Option<String> {
        (**self).get(var)
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn get(&self, var: &str) -> Option<String> {
        self.get(var).cloned()
    }
}

impl Source for [(&str, &str)] {
    fn get(&self, var: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == var)
            .map(|(_, v)| v.to_string())
    }
}

/// A required value.
pub fn required(
    src: &impl Source,
    var: &'static str,
    expected: &str,
) -> Result<String, ConfigError> {
    src.get(var)
        .ok_or_else(|| ConfigError::new(var, format!("is not set; expected {expected}")))
}

/// An optional value parsed with `FromStr`, or `default` when unset.
pub fn parsed<T: FromStr>(
    src: &impl Source,
    var: &'static str,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    match src.get(var) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|_| ConfigError::new(var, format!("expected {expected}, got {raw:?}"))),
    }
}

/// A boolean flag: `true`/`false` (also `1`/`0`, `yes`/`no`).
pub fn flag(src: &impl Source, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match src.get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Ok(true),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
        Some(v) => Err(ConfigError::new(
            var,
            format!("expected true or false, got {v:?}"),
        )),
    }
}

/// The stage an installation runs in. Production turns on the stricter rails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Staging,
    Development,
}

impl Environment {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let raw = required(src, "ENVIRONMENT", "production, staging or development")?;
        raw.parse().map_err(|_| {
            ConfigError::new(
                "ENVIRONMENT",
                format!("expected production, staging or development, got {raw:?}"),
            )
        })
    }

    pub fn is_production(self) -> bool {
        self == Environment::Production
    }
}

impl FromStr for Environment {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "production" | "prod" => Ok(Environment::Production),
            "staging" => Ok(Environment::Staging),
            "development" | "dev" => Ok(Environment::Development),
            _ => Err(()),
        }
    }
}

/// What the deployer and the alarm responder both read: the deployment targets and where to
/// record decisions. Both act on the same endpoints, so they must agree on this.
#[derive(Debug, Clone)]
pub struct TargetsConfig {
    /// `DEPLOY_TARGETS`: which group feeds which endpoint, and how (see the README).
    pub targets: Targets,
    /// `LEDGER_TABLE`: the DynamoDB table decisions are recorded in.
    pub ledger_table: String,
    /// `ENVIRONMENT`: production, staging or development.
    pub environment: Environment,
    /// `EXECUTION_ROLE_ARN`: the role SageMaker models run as.
    pub execution_role_arn: String,
    /// `DRY_RUN`: decide and record, but change nothing.
    pub dry_run: bool,
}

impl TargetsConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let environment = Environment::from_source(src)?;
        let targets = Targets::parse(
            &required(src, "DEPLOY_TARGETS", "a JSON list of deployment targets")?,
            environment,
        )?;
        let execution_role_arn = required(src, "EXECUTION_ROLE_ARN", "an IAM role ARN")?;
        if !(execution_role_arn.starts_with("arn:aws") && execution_role_arn.contains(":role/")) {
            return Err(ConfigError::new(
                "EXECUTION_ROLE_ARN",
                format!(
                    "expected an IAM role ARN (arn:aws:iam::<account>:role/<name>), got {execution_role_arn:?}"
                ),
            ));
        }
        Ok(Self {
            targets,
            ledger_table: required(src, "LEDGER_TABLE", "a DynamoDB table name")?,
            environment,
            execution_role_arn,
            dry_run: flag(src, "DRY_RUN", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_required_variable_is_named_in_the_error() {
        let env: &[(&str, &str)] = &[];
        let err = required(&env, "LEDGER_TABLE", "a DynamoDB table name").unwrap_err();
        assert_eq!(err.var, "LEDGER_TABLE");
        assert!(err.to_string().contains("a DynamoDB table name"));
    }

    #[test]
    fn flags_accept_the_usual_spellings_and_refuse_the_rest() {
        let env: &[(&str, &str)] = &[("A", "TRUE"), ("B", "0"), ("C", "maybe")];
        assert!(flag(&env, "A", false).unwrap());
        assert!(!flag(&env, "B", true).unwrap());
        assert!(flag(&env, "D", true).unwrap());
        assert!(
            flag(&env, "C", false)
                .unwrap_err()
                .to_string()
                .contains("maybe")
        );
    }

    #[test]
    fn the_environment_must_be_one_of_three() {
        let env: &[(&str, &str)] = &[("ENVIRONMENT", "qa")];
        assert!(
            Environment::from_source(&env)
                .unwrap_err()
                .to_string()
                .contains("\"qa\"")
        );
        let env: &[(&str, &str)] = &[("ENVIRONMENT", "Production")];
        assert_eq!(
            Environment::from_source(&env).unwrap(),
            Environment::Production
        );
    }

    const TARGETS: &str = r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge","instance_count":2,"rollback_alarms":["a"]}]"#;

    #[test]
    fn a_complete_targets_environment_parses() {
        let env: &[(&str, &str)] = &[
            ("DEPLOY_TARGETS", TARGETS),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "production"),
            ("EXECUTION_ROLE_ARN", "arn:aws:iam::123456789012:role/sm"),
        ];
        let c = TargetsConfig::from_source(&env).unwrap();
        assert!(!c.dry_run);
        assert_eq!(c.targets.0.len(), 1);
    }

    #[test]
    fn a_bad_role_names_the_variable() {
        let env: &[(&str, &str)] = &[
            ("DEPLOY_TARGETS", TARGETS),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "staging"),
            ("EXECUTION_ROLE_ARN", "sm-role"),
        ];
        assert_eq!(
            TargetsConfig::from_source(&env).unwrap_err().var,
            "EXECUTION_ROLE_ARN"
        );
    }
}
