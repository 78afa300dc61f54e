//! Reading typed configuration from the environment, once, at cold start.
//!
//! Every reader takes a lookup function instead of touching `std::env` so tests can hand in a map.
//! Errors name the variable and what it expected.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

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

    /// Standalone upper-case string literals of a source file: the variable names it reads.
    fn variables(source: &str) -> Vec<&str> {
        let code = source.split("#[cfg(test)]").next().unwrap_or(source);
        code.split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.len() > 2
                    && s.starts_with(|c: char| c.is_ascii_uppercase())
                    && s.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .collect()
    }

    /// The README's configuration reference names every variable a config module reads.
    #[test]
    fn the_readme_documents_every_variable_the_code_reads() {
        let readme = include_str!("../../README.md");
        let reference = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("the README has a \"## Configuration\" section");
        let sources = [
            include_str!("config.rs"),
            include_str!("targets.rs"),
            include_str!("../../functions/drift-scanner/src/config.rs"),
            include_str!("../../functions/endpoint-sweeper/src/config.rs"),
        ];
        let read: Vec<&str> = sources.iter().flat_map(|s| variables(s)).collect();
        assert!(read.contains(&"SCAN_PAGE_SIZE") && read.contains(&"DEPLOY_TARGETS"));
        let missing: Vec<_> = read
            .iter()
            .filter(|v| !reference.contains(&format!("`{v}`")))
            .collect();
        assert!(missing.is_empty(), "not in the README: {missing:?}");
    }
}
