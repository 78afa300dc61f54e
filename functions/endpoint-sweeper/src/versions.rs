//! Old versions of a deployment target: the deployer's models and endpoint configs (named
//! `<endpoint>-v<version>-<fingerprint>`, see `lifecycle::deploy`) of versions older than the last
//! K the target served, used by no endpoint, older than the grace period. One version (its configs
//! and its model) is one group of steps: it fits the run's cap whole or waits.
//!
//! A rollback never needs them: the responder goes back to the previous served version (one of the
//! K kept), and recreates the model and config of an older one from its package if it must.

use std::collections::HashSet;

use lifecycle::deploy::model_name;
use lifecycle::endpoints::tags;
use lifecycle::error::{Error, Result};
use lifecycle::ledger::Served;
use lifecycle::plan::Action;
use lifecycle::registry::group_of;
use lifecycle::targets::DeploymentTarget;
use serde::Serialize;
use time::OffsetDateTime;

use crate::inventory::TagMap;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Managed {
    pub name: String,
    /// A model (else an endpoint config).
    pub model: bool,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    /// A config's `lifecycle:model-package-arn` tag (the deployer tags every config it makes).
    pub package: Option<String>,
}

/// The version in a name made for `endpoint`'s target: `<endpoint>-v<N>-<8 hex>`.
pub fn version_in_name(endpoint: &str, name: &str) -> Option<i64> {
    let rest = name.strip_prefix(endpoint)?.strip_prefix("-v")?;
    let (version, fp) = rest.split_once('-')?;
    let hex = fp.len() == 8 && fp.chars().all(|c| c.is_ascii_hexdigit());
    hex.then(|| version.parse().ok()).flatten()
}

fn created(t: Option<&aws_smithy_types::DateTime>) -> Option<OffsetDateTime> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())
}

/// The models and configs named like the deployer's for a target's endpoint (ListModels,
/// ListEndpointConfigs), configs with their package tag from the account's tags.
pub async fn managed(
    sm: &aws_sdk_sagemaker::Client,
    endpoint: &str,
    tagged: &TagMap,
) -> Result<Vec<Managed>> {
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
            let arn = c.endpoint_config_arn().unwrap_or_default().to_lowercase();
            out.push(Managed {
                name: name.to_string(),
                model: false,
                version,
                created: created(c.creation_time()),
                package: tagged
                    .get(&arn)
                    .and_then(|t| t.get(tags::PACKAGE_ARN))
                    .cloned(),
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
                package: None,
            });
        }
    }
    Ok(out)
}

/// What must stay whatever its age.
pub struct Keep<'a> {
    pub target: &'a DeploymentTarget,
    /// The versions the target served, most recent deployment first (the ledger's order).
    pub served: &'a [Served],
    /// How many of the most recently served versions stay (`KEEP_VERSIONS`).
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
///
/// Kept: the last K distinct packages served (by deployment, not by version number: a target can
/// move to another group and start again at 1), their configs and models, anything in use, and
/// anything made after the oldest kept version served (a version on its way). Deleted: only what
/// is certainly the deployer's for this target's group: a model whose name is the one the deployer
/// gives that version's package, a config tagged with a package of the group.
pub fn retire(managed: &[Managed], k: &Keep) -> Vec<Retire> {
    let mut kept: Vec<&Served> = vec![];
    for s in k.served {
        if kept.len() < k.versions && !kept.iter().any(|p| p.package_arn == s.package_arn) {
            kept.push(s);
        }
    }
    // Fewer than K served, or a served time unknown: nothing is old yet.
    let finished: Option<Vec<i64>> = kept.iter().map(|s| s.finished_at).collect();
    let (Some(finished), Some(newest)) = (finished, kept.first()) else {
        return vec![];
    };
    if kept.len() < k.versions {
        return vec![];
    }
    let oldest_kept_ms = finished.into_iter().min().unwrap_or(0);
    let t = k.target;
    let keep: HashSet<String> = kept
        .iter()
        .flat_map(|s| {
            [
                s.config.clone(),
                model_name(t, &s.package_arn, s.package_version),
            ]
        })
        .collect();
    let arn_of = |v: i64| {
        let (prefix, _) = newest.package_arn.rsplit_once('/')?;
        Some(format!("{prefix}/{v}"))
    };
    let deployers = |m: &Managed| match m.model {
        true => arn_of(m.version).is_some_and(|arn| model_name(t, &arn, m.version) == m.name),
        false => m
            .package
            .as_deref()
            .and_then(group_of)
            .is_some_and(|g| g.eq_ignore_ascii_case(&t.model_package_group)),
    };
    let old = |m: &Managed| {
        m.created.is_some_and(|c| {
            (c.unix_timestamp() * 1000) < oldest_kept_ms
                && k.now - c >= time::Duration::hours(k.grace_hours)
        })
    };
    let mut gone: Vec<&Managed> = managed
        .iter()
        .filter(|m| !keep.contains(&m.name) && deployers(m) && old(m))
        .filter(|m| !k.configs_in_use.contains(&m.name) && !k.models_in_use.contains(&m.name))
        .collect();
    gone.sort_by_key(|m| (m.version, m.model, m.name.clone()));
    let mut out: Vec<Retire> = vec![];
    for m in gone {
        let why = format!(
            "version {} of {}: served before the last {} versions, used by no endpoint",
            m.version, t.endpoint, k.versions
        );
        let action = match m.model {
            true => Action::DeleteModel {
                model: m.name.clone(),
            },
            false => Action::DeleteEndpointConfig {
                config: m.name.clone(),
            },
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
    use lifecycle::config::Environment;
    use lifecycle::plan::ActionKind;
    use lifecycle::targets::Targets;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap()
    }

    fn target() -> DeploymentTarget {
        Targets::parse(
            r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge",
                 "instance_count":2,"rollback_alarms":["a"]}]"#,
            Environment::Production,
        )
        .unwrap()
        .0
        .remove(0)
    }

    fn arn(version: i64) -> String {
        format!("arn:aws:sagemaker:us-east-1:1:model-package/recs/{version}")
    }

    fn config(version: i64) -> String {
        format!("recs-prod-v{version}-0123abcd")
    }

    /// Version `v`'s config and model, made `age_hours` ago.
    fn made(v: i64, age_hours: i64) -> [Managed; 2] {
        let created = Some(now() - time::Duration::hours(age_hours));
        [
            Managed {
                name: config(v),
                model: false,
                version: v,
                created,
                package: Some(arn(v)),
            },
            Managed {
                name: model_name(&target(), &arn(v), v),
                model: true,
                version: v,
                created,
                package: None,
            },
        ]
    }

    /// Served `hours_ago`.
    fn served(v: i64, hours_ago: i64) -> Served {
        Served {
            package_arn: arn(v),
            package_version: v,
            config: config(v),
            finished_at: Some((now() - time::Duration::hours(hours_ago)).unix_timestamp() * 1000),
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
    fn only_what_served_before_the_last_k_unused_past_the_grace_and_certainly_the_deployers_goes() {
        let t = target();
        // v1..v5 made 100 h ago, served in turn; v6 made an hour ago, on its way; v0 too young.
        let mut all: Vec<Managed> = (1..=5).flat_map(|v| made(v, 100)).collect();
        all.extend(made(6, 1));
        all.extend(made(0, 1));
        // A hand-made model that looks like the deployer's, and an untagged config.
        all.push(Managed {
            name: "recs-prod-v1-20240101".into(),
            model: true,
            version: 1,
            created: made(1, 100)[0].created,
            package: None,
        });
        all.push(Managed {
            package: None,
            name: "recs-prod-v2-feedbeef".into(),
            ..made(2, 100)[0].clone()
        });
        let history: Vec<Served> = (1..=5).rev().map(|v| served(v, 60 - v * 10)).collect();
        let in_use = HashSet::from([config(5)]);
        // An endpoint somewhere still runs version 2's model.
        let models = HashSet::from([model_name(&t, &arn(2), 2)]);
        let keep = Keep {
            target: &t,
            served: &history,
            versions: 2,
            configs_in_use: &in_use,
            models_in_use: &models,
            grace_hours: 24,
            now: now(),
        };
        let out = retire(&all, &keep);
        let versions: Vec<i64> = out.iter().map(|r| r.version).collect();
        assert_eq!(
            versions,
            [1, 2, 3],
            "4 and 5 kept, 6 on its way, 0 too young"
        );
        let kinds = |r: &Retire| r.steps.iter().map(|(a, _)| a.kind()).collect::<Vec<_>>();
        assert_eq!(
            kinds(&out[0]),
            [ActionKind::DeleteEndpointConfig, ActionKind::DeleteModel]
        );
        assert_eq!(
            kinds(&out[1]),
            [ActionKind::DeleteEndpointConfig],
            "its model is in use"
        );
        let one = [served(5, 1)];
        assert!(
            retire(
                &all,
                &Keep {
                    served: &one,
                    ..keep
                }
            )
            .is_empty(),
            "fewer than K served"
        );
    }

    #[test]
    fn a_target_that_moved_group_keeps_its_new_versions() {
        let t = target();
        // The old group's v40, v41 were served before the new group's v1, v2.
        let old = |v: i64, h: i64| Served {
            package_arn: format!("arn:aws:sagemaker:us-east-1:1:model-package/recs-old/{v}"),
            ..served(v, h)
        };
        let history = [served(2, 1), served(1, 5), old(41, 10), old(40, 20)];
        let all: Vec<Managed> = made(1, 100).into_iter().chain(made(2, 100)).collect();
        let none = HashSet::new();
        let keep = Keep {
            target: &t,
            served: &history,
            versions: 2,
            configs_in_use: &none,
            models_in_use: &none,
            grace_hours: 0,
            now: now(),
        };
        assert!(
            retire(&all, &keep).is_empty(),
            "the two kept are the new group's v2 and v1"
        );
    }
}
