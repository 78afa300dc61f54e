//! The deployer's configuration, read once at cold start.

use lifecycle::config::{Environment, Source, flag, required};
use lifecycle::error::ConfigError;
use lifecycle::targets::Targets;

#[derive(Debug, Clone)]
pub struct Config {
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

impl Config {
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

    const TARGETS: &str = r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge","instance_count":2,"rollback_alarms":["a"]}]"#;

    #[test]
    fn a_complete_environment_parses() {
        let env: &[(&str, &str)] = &[
            ("DEPLOY_TARGETS", TARGETS),
            ("LEDGER_TABLE", "ledger"),
            ("ENVIRONMENT", "production"),
            ("EXECUTION_ROLE_ARN", "arn:aws:iam::123456789012:role/sm"),
        ];
        let c = Config::from_source(&env).unwrap();
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
            Config::from_source(&env).unwrap_err().var,
            "EXECUTION_ROLE_ARN"
        );
    }
}
