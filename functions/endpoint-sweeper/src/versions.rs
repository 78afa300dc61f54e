//! Old versions of a deployment target: the deployer's models and endpoint configs (named
//! `<endpoint>-v<version>-<fingerprint>`, see `lifecycle::deploy`) of versions older than the last
//! K the target served, used by no endpoint, older than the grace period. One version (its configs
//! and its model) is one group of steps: it fits the run's cap whole or waits.
//!
//! A rollback never needs them: the responder goes back to the previous served version (one of the
//! K kept), and recreates the model and config of an older one from its package if it must.

use std::collections::HashSet;

use lifecycle::error::{Error, Result};
use lifecycle::ledger::Served;
use lifecycle::plan::Action;
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Managed {
    pub name: String,
    /// A model (else an endpoint config).
    pub model: bool,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
}

/// The version in a name the deployer made for `endpoint`'s target: `<endpoint>-v<N>-<8 hex>`.
pub fn version_in_name(endpoint: &str, name: &str) -> Option<i64> {
    let rest = name.strip_prefix(endpoint)?.strip_prefix("-v")?;
    let (version, fp) = rest.split_once('-')?;
    let hex = fp.len() == 8 && fp.chars().all(|c| c.is_ascii_hexdigit());
    hex.then(|| version.parse().ok()).flatten()
}

fn created(t: Option<&aws_smithy_types::DateTime>) -> Option<OffsetDateTime> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
}

/// The deployer's models and configs for a target's endpoint (ListModels, ListEndpointConfigs).
pub async fn managed(sm: &aws_sdk_sagemaker::Client, endpoint: &str) -> Result<Vec<Managed>> {
    let mut out = vec![];
    let mut configs = sm
        .list_endpoint_configs()
        .name_contains(endpoint)
        .max_results(100)
        .into_paginator()
        .items()
        .send();
    while let Some(c) = configs.next().await {
        let c = c.map_err(|e| Error::aws("ListEndpointConfigs", e))?;
        let name = c.endpoint_config_name().unwrap_or_default();
        if let Some(version) = version_in_name(endpoint, name) {
            out.push(Managed {
                name: name.to_string(),
                model: false,
                version,
                created: created(c.creation_time()),
            });
        }
    }
    let mut models = sm
        .list_models()
        .name_contains(endpoint)
        .max_results(100)
        .into_paginator()
        .items()
        .send();
    while let Some(m) = models.next().await {
        let m = m.map_err(|e| Error::aws("ListModels", e))?;
        let name = m.model_name().unwrap_or_default();
        if let Some(version) = version_in_name(endpoint, name) {
            out.push(Managed {
                name: name.to_string(),
                model: true,
                version,
                created: created(m.creation_time()),
            });
        }
    }
    Ok(out)
}

/// What must stay whatever its age.
pub struct Keep<'a> {
    /// The versions the target served, newest last or first (any order).
    pub served: &'a [Served],
    /// How many of the newest served versions stay (`KEEP_VERSIONS`).
    pub versions: usize,
    /// Every config and model an endpoint uses now, in any state.
    pub configs_in_use: &'a HashSet<String>,
    pub models_in_use: &'a HashSet<String>,
    pub grace_hours: i64,
    pub now: OffsetDateTime,
}

/// One version to retire: its steps (configs first: a config names its model), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Retire {
    pub version: i64,
    pub steps: Vec<(Action, String)>,
}

/// The versions of one target to retire, oldest first. Pure.
pub fn retire(endpoint: &str, managed: &[Managed], k: &Keep) -> Vec<Retire> {
    let mut served: Vec<i64> = k.served.iter().map(|s| s.package_version).collect();
    served.sort_unstable_by(|a, b| b.cmp(a));
    served.dedup();
    // Fewer than K served: nothing is old yet.
    let Some(&oldest_kept) = served.get(k.versions.saturating_sub(1)) else {
        return vec![];
    };
    let in_use: HashSet<i64> = k
        .configs_in_use
        .iter()
        .chain(k.models_in_use)
        .filter_map(|n| version_in_name(endpoint, n))
        .collect();
    let grace = time::Duration::hours(k.grace_hours);
    let mut old: Vec<&Managed> = managed
        .iter()
        .filter(|m| m.version < oldest_kept && !in_use.contains(&m.version))
        .filter(|m| m.created.is_some_and(|c| k.now - c >= grace))
        .collect();
    old.sort_by_key(|m| (m.version, m.model, m.name.clone()));
    let mut out: Vec<Retire> = vec![];
    for m in old {
        let why = format!(
            "version {} of {endpoint}: older than the last {} served (oldest kept: {oldest_kept}), used by no endpoint",
            m.version, k.versions
        );
        let action = if m.model {
            Action::DeleteModel {
                model: m.name.clone(),
            }
        } else {
            Action::DeleteEndpointConfig {
                config: m.name.clone(),
            }
        };
        match out.last_mut() {
            Some(r) if r.version == m.version => r.steps.push((action, why)),
            _ => out.push(Retire {
                version: m.version,
                steps: vec![(action, why)],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifecycle::plan::ActionKind;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap()
    }

    fn managed(version: i64, model: bool, age_hours: i64) -> Managed {
        Managed {
            name: format!("recs-prod-v{version}-0123abcd"),
            model,
            version,
            created: Some(now() - time::Duration::hours(age_hours)),
        }
    }

    fn served(version: i64) -> Served {
        Served {
            package_arn: format!("arn:aws:sagemaker:us-east-1:1:model-package/recs/{version}"),
            package_version: version,
            config: format!("recs-prod-v{version}-0123abcd"),
            finished_at: None,
        }
    }

    #[test]
    fn names_the_deployer_made_carry_their_version() {
        assert_eq!(
            version_in_name("recs-prod", "recs-prod-v12-0123abcd"),
            Some(12)
        );
        assert_eq!(version_in_name("recs-prod", "recs-prod-ha2-0123abcd"), None);
        assert_eq!(
            version_in_name("recs", "recs-v2-v3-0123abcd"),
            None,
            "another target's"
        );
        assert_eq!(version_in_name("recs-prod", "recs-prod-v3-hand-made"), None);
    }

    #[test]
    fn only_versions_older_than_the_last_k_served_unused_and_past_the_grace_go() {
        let all: Vec<Managed> = (1..=5)
            .flat_map(|v| [managed(v, false, 100), managed(v, true, 100)])
            .chain([managed(0, false, 1)])
            .collect();
        let history: Vec<Served> = (1..=5).map(served).collect();
        let in_use = HashSet::from(["recs-prod-v5-0123abcd".to_string()]);
        // An endpoint somewhere still runs version 2's model.
        let models = HashSet::from(["recs-prod-v2-0123abcd".to_string()]);
        let keep = Keep {
            served: &history,
            versions: 2,
            configs_in_use: &in_use,
            models_in_use: &models,
            grace_hours: 24,
            now: now(),
        };
        let out = retire("recs-prod", &all, &keep);
        let versions: Vec<i64> = out.iter().map(|r| r.version).collect();
        assert_eq!(versions, [1, 3], "4 and 5 kept, 2 in use, 0 too young");
        let kinds: Vec<ActionKind> = out[0].steps.iter().map(|(a, _)| a.kind()).collect();
        assert_eq!(
            kinds,
            [ActionKind::DeleteEndpointConfig, ActionKind::DeleteModel]
        );
        let one = [served(5)];
        let keep = Keep {
            served: &one,
            ..keep
        };
        assert!(
            retire("recs-prod", &all, &keep).is_empty(),
            "fewer than K served"
        );
    }
}
