//! What is wrong with an endpoint, judged from the inventory. Pure.

use std::collections::HashMap;

use lifecycle::config::Environment;
use lifecycle::endpoints::EndpointStatus;
use lifecycle::registry::version_of;
use lifecycle::scaling::resource_id;
use lifecycle::targets::Targets;
use serde::Serialize;
use time::OffsetDateTime;

use crate::inventory::{EndpointFacts, Scaling};
use crate::prices;
use crate::traffic::Invocations;

/// Production variants need at least this many instances: one is a single point of failure.
pub const HA_FLOOR: i32 = 2;
/// Shorter scale-in cooldowns remove capacity between two bursts of traffic.
pub const MIN_SCALE_IN_COOLDOWN: i32 = 300;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Zero invocations on every variant over the window.
    Idle,
    /// Serves a deployment target's group but is not its endpoint, with little traffic.
    Stale {
        group: String,
        canonical: String,
        per_hour: f64,
        /// The version it serves, and the one the target's endpoint serves, when known.
        version: Option<i64>,
        canonical_version: Option<i64>,
    },
    /// Serves a deployment target's group but is not its endpoint, and people still use it.
    StaleWithTraffic {
        group: String,
        canonical: String,
        per_hour: f64,
        version: Option<i64>,
        canonical_version: Option<i64>,
    },
    UnderReplicated {
        variant: String,
        instances: i32,
    },
    /// MinCapacity 0 on a standard endpoint: it cannot scale to zero, and when it does reach
    /// its floor, users wait for cold starts.
    ScaleToZeroRisk {
        variant: String,
    },
    ShortScaleInCooldown {
        variant: String,
        policy: String,
        seconds: i32,
    },
}

/// One endpoint, judged.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    pub endpoint: String,
    pub production: bool,
    pub protected: bool,
    /// Why the endpoint was not judged (not InService, too young, unreadable), if so.
    pub not_judged: Option<String>,
    pub findings: Vec<Finding>,
    /// Invocations over the window, all variants; `None` when any could not be read.
    pub invocations: Option<f64>,
    pub monthly_usd: Option<f64>,
    /// When the sweeper marked it idle (its tag), if it did.
    #[serde(with = "time::serde::rfc3339::option")]
    pub idle_since: Option<OffsetDateTime>,
    /// Invocations since the mark, all variants, when the mark is old enough to delete on;
    /// `None` when not read or unreadable.
    pub since_mark: Option<f64>,
}

impl Judgement {
    pub fn has(&self, f: fn(&Finding) -> bool) -> bool {
        self.findings.iter().any(f)
    }
    pub fn idle(&self) -> bool {
        self.has(|f| matches!(f, Finding::Idle))
    }
    pub fn stale(&self) -> bool {
        self.has(|f| matches!(f, Finding::Stale { .. } | Finding::StaleWithTraffic { .. }))
    }
}

/// The tag the sweeper marks idle endpoints with (an RFC 3339 time).
pub const IDLE_TAG: &str = "lifecycle:idle-since";

pub struct Rules<'a> {
    pub targets: &'a Targets,
    pub protection_tag: &'a str,
    pub environment_tag: &'a str,
    /// The stack's environment: the environment of an endpoint without the tag.
    pub environment: Environment,
    /// The package version each endpoint serves, where known (for stale duplicates).
    pub versions: &'a HashMap<String, i64>,
    /// Invocations since the idle mark, per variant (read only for marks past the grace).
    pub since_mark: &'a Invocations,
    pub window_minutes: i64,
    pub stale_threshold: f64,
    pub now: OffsetDateTime,
}

/// Environment tag values that mean "not production". Anything else a tag says (`prd`, `live`,
/// `Production-EU`) is not known to be safe: production, whatever the stack.
const NON_PRODUCTION: &[&str] = &[
    "staging",
    "stage",
    "development",
    "dev",
    "test",
    "qa",
    "sandbox",
];

/// The endpoint's own environment tag wins; without one it is in the stack's environment
/// (seed 002: a staging install sweeps its untagged idle endpoints, a production one never
/// deletes them). Only a known non-production value makes an endpoint non-production; any other
/// value is production; if several keys match (`environment`, `Environment`), all must say
/// non-production.
pub fn is_production(e: &EndpointFacts, environment_tag: &str, stack: Environment) -> bool {
    let values: Vec<String> = e
        .tags
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(environment_tag))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .collect();
    if values.is_empty() {
        return stack.is_production();
    }
    !values.iter().all(|v| NON_PRODUCTION.contains(&v.as_str()))
}

pub fn judge(
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    invocations: &Invocations,
    r: &Rules,
) -> Judgement {
    let production = is_production(e, r.environment_tag, r.environment);
    let protected = e
        .tags
        .get(r.protection_tag)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let monthly_usd = e
        .variants
        .iter()
        .map(|v| prices::monthly(v.instance_type.as_deref()?, v.instances?))
        .sum::<Option<f64>>()
        .map(|m| (m * 100.0).round() / 100.0);
    let idle_since = e
        .tags
        .get(IDLE_TAG)
        .and_then(|t| lifecycle::events::parse_time(t).ok());
    let mut j = Judgement {
        endpoint: e.name.clone(),
        production,
        protected,
        not_judged: None,
        findings: vec![],
        invocations: None,
        monthly_usd,
        idle_since,
        since_mark: None,
    };
    j.not_judged = not_judged(e, r);
    if j.not_judged.is_some() {
        return j;
    }
    // No metric says anything about this one's traffic: never idle (nor stale) on a zero.
    if e.traffic_unmeasured.is_some() {
        j.findings.extend(risks(e, scaling, production));
        return j;
    }
    j.invocations = e
        .variants
        .iter()
        .map(|v| {
            invocations
                .get(&(e.name.clone(), v.name.clone()))
                .copied()
                .flatten()
        })
        .sum::<Option<f64>>();
    if j.invocations == Some(0.0) && !e.variants.is_empty() {
        j.findings.push(Finding::Idle);
    }
    j.since_mark = e
        .variants
        .iter()
        .map(|v| {
            r.since_mark
                .get(&(e.name.clone(), v.name.clone()))
                .copied()
                .flatten()
        })
        .sum::<Option<f64>>()
        .filter(|_| !e.variants.is_empty());
    if let Some(stale) = stale(e, j.invocations, r) {
        j.findings.push(stale);
    }
    j.findings.extend(risks(e, scaling, production));
    j
}

/// Why an endpoint cannot be judged: unreadable, not InService, or younger than the window.
fn not_judged(e: &EndpointFacts, r: &Rules) -> Option<String> {
    if let Some(err) = &e.error {
        return Some(format!("could not be read: {err}"));
    }
    if e.status != EndpointStatus::InService {
        return Some(format!("{:?}, not InService", e.status));
    }
    e.created
        .is_none_or(|c| c > r.now - time::Duration::minutes(r.window_minutes))
        .then(|| format!("younger than the {}-minute window", r.window_minutes))
}

/// Capacity risks per variant: one instance in production, MinCapacity 0 on a standard
/// endpoint, a scale-in cooldown too short for a cold start.
fn risks(e: &EndpointFacts, scaling: &HashMap<String, Scaling>, production: bool) -> Vec<Finding> {
    let mut out = vec![];
    for v in &e.variants {
        if production && v.instances.is_some_and(|n| n < HA_FLOOR) {
            out.push(Finding::UnderReplicated {
                variant: v.name.clone(),
                instances: v.instances.unwrap_or_default(),
            });
        }
        let Some(s) = scaling.get(&resource_id(&e.name, &v.name)) else {
            continue;
        };
        if s.min == 0 && !v.inference_components && production {
            out.push(Finding::ScaleToZeroRisk {
                variant: v.name.clone(),
            });
        }
        for p in &s.policies {
            if let Some(seconds) = p.scale_in_cooldown.filter(|s| *s < MIN_SCALE_IN_COOLDOWN) {
                out.push(Finding::ShortScaleInCooldown {
                    variant: v.name.clone(),
                    policy: p.name.clone(),
                    seconds,
                });
            }
        }
    }
    out
}

/// An endpoint serving a target's group that is not the target's endpoint.
/// Found through its tags, its config's tags or its model's package.
fn stale(e: &EndpointFacts, invocations: Option<f64>, r: &Rules) -> Option<Finding> {
    let group = e.group()?;
    // ARNs carry the group lower-cased.
    let of_group = || {
        r.targets
            .iter()
            .filter(|t| t.model_package_group.eq_ignore_ascii_case(&group))
    };
    // Any target of the group (staging, production) is no duplicate.
    if of_group().any(|t| t.endpoint.eq_ignore_ascii_case(&e.name)) {
        return None;
    }
    // A duplicate is of the group's last target, the one no other promotes after.
    let promoted = |t: &&lifecycle::targets::DeploymentTarget| {
        of_group().any(|o| {
            o.promote_after
                .as_ref()
                .is_some_and(|p| p.target == t.endpoint)
        })
    };
    let target = of_group()
        .find(|t| !promoted(t))
        .or_else(|| of_group().next())?;
    let per_hour = invocations? * 60.0 / r.window_minutes as f64;
    let (group, canonical) = (target.model_package_group.clone(), target.endpoint.clone());
    let version = e.package.as_deref().and_then(version_of);
    let canonical_version = r.versions.get(&canonical).copied();
    Some(if per_hour < r.stale_threshold {
        Finding::Stale {
            group,
            canonical,
            per_hour,
            version,
            canonical_version,
        }
    } else {
        Finding::StaleWithTraffic {
            group,
            canonical,
            per_hour,
            version,
            canonical_version,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Policy, Variant};
    use lifecycle::config::Environment;
    use std::collections::BTreeMap;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap()
    }

    fn endpoint(name: &str, tags: &[(&str, &str)], instances: i32) -> EndpointFacts {
        EndpointFacts {
            name: name.into(),
            arn: format!("arn:aws:sagemaker:us-east-1:1:endpoint/{name}"),
            status: EndpointStatus::InService,
            created: Some(now() - time::Duration::days(30)),
            config: format!("{name}-config"),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config_tags: BTreeMap::new(),
            variants: vec![Variant {
                name: "AllTraffic".into(),
                instance_type: Some("ml.m5.xlarge".into()),
                instances: Some(instances),
                weight: None,
                inference_components: false,
            }],
            config_read: true,
            models: vec![format!("{name}-model")],
            package: None,
            pending_config: None,
            last_modified: None,
            traffic_unmeasured: None,
            error: None,
        }
    }

    /// Staging listed first, then production after it.
    fn targets() -> Targets {
        Targets::parse(
            r#"[{"model_package_group":"recs","endpoint":"recs-staging","instance_type":"ml.m5.xlarge",
                 "instance_count":2,"rollback_alarms":["s"]},
                {"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge",
                 "instance_count":2,"rollback_alarms":["a"],
                 "promote_after":{"target":"recs-staging","soak_minutes":60}}]"#,
            Environment::Production,
        )
        .unwrap()
    }

    fn judge_with(
        e: &EndpointFacts,
        calls: Option<f64>,
        scaling: HashMap<String, Scaling>,
    ) -> Judgement {
        let t = targets();
        let versions = HashMap::from([("recs-prod".to_string(), 7)]);
        let rules = Rules {
            targets: &t,
            protection_tag: "ProtectedFromAutoStop",
            environment_tag: "environment",
            environment: Environment::Production,
            versions: &versions,
            since_mark: &HashMap::new(),
            window_minutes: 60,
            stale_threshold: 100.0,
            now: now(),
        };
        let inv = HashMap::from([((e.name.clone(), "AllTraffic".to_string()), calls)]);
        judge(e, &scaling, &inv, &rules)
    }

    #[test]
    fn idle_needs_a_readable_zero() {
        let e = endpoint("staging-recs", &[("environment", "staging")], 1);
        let j = judge_with(&e, Some(0.0), HashMap::new());
        assert!(j.idle() && !j.production);
        assert_eq!(j.monthly_usd, Some(167.9));
        assert!(
            !judge_with(&e, None, HashMap::new()).idle(),
            "unreadable is not idle"
        );
        assert!(!judge_with(&e, Some(3.0), HashMap::new()).idle());
    }

    #[test]
    fn young_unhealthy_and_unreadable_endpoints_are_not_judged() {
        let mut e = endpoint("new", &[], 2);
        e.created = Some(now() - time::Duration::minutes(10));
        assert!(
            judge_with(&e, Some(0.0), HashMap::new())
                .not_judged
                .unwrap()
                .contains("younger")
        );
        let mut e = endpoint("updating", &[], 2);
        e.status = EndpointStatus::Updating;
        assert!(
            judge_with(&e, Some(0.0), HashMap::new())
                .findings
                .is_empty()
        );
    }

    #[test]
    fn an_old_endpoint_of_a_targets_group_is_stale_and_traffic_keeps_it() {
        let e = endpoint("recs-v1", &[("lifecycle:model-package-group", "recs")], 2);
        let j = judge_with(&e, Some(30.0), HashMap::new());
        assert!(
            matches!(&j.findings[0], Finding::Stale { canonical, .. } if canonical == "recs-prod")
        );
        let j = judge_with(&e, Some(4_000.0), HashMap::new());
        assert!(
            matches!(j.findings[0], Finding::StaleWithTraffic { per_hour, .. } if per_hour == 4_000.0)
        );
        for target in ["recs-prod", "recs-staging"] {
            let e = endpoint(target, &[("lifecycle:model-package-group", "recs")], 2);
            assert!(
                !judge_with(&e, Some(1.0), HashMap::new()).stale(),
                "{target}"
            );
        }
    }

    #[test]
    fn an_untagged_copy_is_found_through_its_models_package() {
        // Seed 000, scenario 5: no tag anywhere; its model was built from version 3 of the group
        // (ARNs carry names lower-cased).
        let mut e = endpoint("mangaassist-recommendation-v1", &[], 2);
        e.package = Some("arn:aws:sagemaker:us-east-1:1:model-package/recs/3".into());
        let j = judge_with(&e, Some(4_000.0), HashMap::new());
        assert!(
            matches!(
                &j.findings[0],
                Finding::StaleWithTraffic {
                    version: Some(3),
                    canonical_version: Some(7),
                    ..
                }
            ),
            "{:?}",
            j.findings
        );
    }

    #[test]
    fn the_environment_tag_wins_and_untagged_takes_the_stacks() {
        let staging = endpoint("a", &[("Environment", "Staging")], 1);
        let untagged = endpoint("b", &[], 1);
        let prod = endpoint("c", &[("environment", "prod")], 1);
        for stack in [Environment::Production, Environment::Staging] {
            assert!(!is_production(&staging, "environment", stack));
            assert!(is_production(&prod, "environment", stack));
        }
        assert!(is_production(
            &untagged,
            "environment",
            Environment::Production
        ));
        assert!(!is_production(
            &untagged,
            "environment",
            Environment::Staging
        ));
        // What is not known to be safe is production, whatever the stack; so is a key that says
        // production beside one that does not.
        let odd = endpoint("d", &[("environment", "prd")], 1);
        assert!(is_production(&odd, "environment", Environment::Staging));
        let both = endpoint(
            "e",
            &[("Environment", "staging"), ("environment", "production")],
            1,
        );
        assert!(is_production(&both, "environment", Environment::Staging));
    }

    #[test]
    fn zero_on_an_asynchronous_endpoint_is_not_idle() {
        let mut e = endpoint("async-recs", &[("environment", "staging")], 1);
        e.traffic_unmeasured = Some("asynchronous inference: no Invocations metric".into());
        let j = judge_with(&e, Some(0.0), HashMap::new());
        assert!(!j.idle() && j.invocations.is_none());
    }

    #[test]
    fn production_rails_single_instance_scale_to_zero_and_cooldown() {
        let e = endpoint("checkout-recs", &[], 1); // no environment tag: production
        let scaling = HashMap::from([(
            resource_id("checkout-recs", "AllTraffic"),
            Scaling {
                min: 0,
                max: 4,
                policies: vec![Policy {
                    name: "invocations".into(),
                    scale_in_cooldown: Some(60),
                }],
            },
        )]);
        let j = judge_with(&e, Some(500.0), scaling);
        assert!(j.production);
        let kinds: Vec<String> = j
            .findings
            .iter()
            .map(|f| {
                serde_json::to_value(f).unwrap()["finding"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "under_replicated",
                "scale_to_zero_risk",
                "short_scale_in_cooldown"
            ]
        );
    }
}
