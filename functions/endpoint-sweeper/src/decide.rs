//! What the sweep does about its findings, within its rails. Pure.
//!
//! Rails: the protection tag exempts an endpoint from everything; production is never deleted and
//! never scaled below two instances (nor below its deployment target's instance count); a
//! deployment target's endpoint is never deleted (the deployer would recreate it) and its
//! capacity fixes are the deployer's; a non-production endpoint, or a stale duplicate of a target,
//! is deleted only after it was marked idle and had no invocation at all since (the grace period,
//! or the stale window for a duplicate); a config goes only when no endpoint in any state uses it
//! and no target may roll back to it; fixes of risk findings need `REMEDIATE`; at most
//! `MAX_ACTIONS_PER_RUN` mutations a run, a group of steps that belong together (delete endpoint
//! and config; new config and update) fits whole or waits.

use std::collections::{HashMap, HashSet};

use lifecycle::endpoints::LiveVariant;
use lifecycle::names::{fingerprint, sagemaker_name};
use lifecycle::outcome::Outcome;
use lifecycle::plan::{Action, Plan};
use lifecycle::scaling::{ScalableTarget, resource_id};
use lifecycle::targets::Targets;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::findings::{Finding, HA_FLOOR, IDLE_TAG, Judgement, MIN_SCALE_IN_COOLDOWN};
use crate::inventory::{EndpointFacts, Scaling};
use crate::versions::Retire;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Withheld {
    pub action: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EndpointPlan {
    pub endpoint: String,
    /// What the plan does to the endpoint, the most consequential of its groups; `None` when it
    /// plans nothing.
    pub outcome: Option<Outcome>,
    /// The groups the plan holds, in words (the decision's reason).
    pub doing: Vec<String>,
    pub plan: Plan,
    pub withheld: Vec<Withheld>,
}

pub struct Limits<'a> {
    pub targets: &'a Targets,
    pub max_actions: usize,
    pub remediate: bool,
    pub grace_hours: i64,
    /// How long a stale duplicate of a target stays marked, without traffic, before it goes.
    pub stale_hours: i64,
    pub protection_tag: &'a str,
    /// Configs a target may roll back to (the versions the deployer recorded as served).
    pub rollback_configs: &'a HashSet<String>,
    /// Per target endpoint: its old versions to retire (see [`crate::versions`]).
    pub retire: &'a HashMap<String, Vec<Retire>>,
    /// Set under the lease when other endpoints were created or changed since the sweep read the
    /// account: who uses a config is then not known, and no config or model is deleted.
    pub account_changed: Option<&'a str>,
    pub now: OffsetDateTime,
}

impl Limits<'_> {
    /// The deployment target whose endpoint this is (SageMaker names ignore case).
    pub fn target_of(&self, endpoint: &str) -> Option<&lifecycle::targets::DeploymentTarget> {
        self.targets
            .iter()
            .find(|t| t.endpoint.eq_ignore_ascii_case(endpoint))
    }
}

/// Who uses each config: every endpoint's current and pending config, in every state. `None`
/// when some endpoint could not be read (its config could be any of them).
pub fn config_users(facts: &[&EndpointFacts]) -> Option<HashMap<String, usize>> {
    let mut users: HashMap<String, usize> = HashMap::new();
    for e in facts {
        if e.config.is_empty() {
            return None;
        }
        for c in std::iter::once(&e.config).chain(&e.pending_config) {
            *users.entry(c.clone()).or_default() += 1;
        }
    }
    Some(users)
}

/// Steps that go together, what they are in words, and what doing them means for the endpoint.
struct Group {
    what: String,
    outcome: Outcome,
    steps: Vec<(Action, String)>,
}

impl Group {
    fn new(outcome: Outcome, what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            outcome,
            steps: vec![],
        }
    }
    fn push(mut self, action: Action, reason: impl Into<String>) -> Self {
        self.steps.push((action, reason.into()));
        self
    }
}

/// Which outcome names an endpoint's decision when its plan holds several groups.
fn weight(o: Outcome) -> u8 {
    match o {
        Outcome::Deleted => 4,
        Outcome::ScaledDown => 3,
        Outcome::Remediated | Outcome::VersionsRetired => 2,
        Outcome::MarkedIdle => 1,
        _ => 0,
    }
}

/// A target that declares its capacity: a second writer of its autoscaling would fight the
/// deployer's, which puts its declaration back on every reconcile.
const OWNS_CAPACITY: &str = "its capacity is declared in DEPLOY_TARGETS: the deployer keeps it; change the declaration instead";

fn withhold(action: &str, why: impl Into<String>) -> Withheld {
    Withheld {
        action: action.to_string(),
        why: why.into(),
    }
}

pub fn decide(
    judgements: &[Judgement],
    facts: &HashMap<&str, &EndpointFacts>,
    scaling: &HashMap<String, Scaling>,
    l: &Limits,
) -> Vec<EndpointPlan> {
    let mut budget = l.max_actions;
    let mut out = vec![];
    let all: Vec<&EndpointFacts> = facts.values().copied().collect();
    let users = config_users(&all);
    for j in judgements {
        let Some(e) = facts.get(j.endpoint.as_str()) else {
            continue;
        };
        let ep = plan_endpoint(j, e, scaling, users.as_ref(), &mut budget, l);
        if !ep.plan.is_empty() || !ep.withheld.is_empty() {
            out.push(ep);
        }
    }
    out
}

/// One endpoint's plan within the rails and what is left of the budget (also used under the
/// lease, on what was read again).
pub fn plan_endpoint(
    j: &Judgement,
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    users: Option<&HashMap<String, usize>>,
    budget: &mut usize,
    l: &Limits,
) -> EndpointPlan {
    let config_kept = config_kept(e, users, l);
    let (groups, withheld) = wanted(j, e, scaling, config_kept, l);
    within_rails(j, groups, withheld, budget, l)
}

/// Why the config of a deleted endpoint must stay, if it must.
fn config_kept(
    e: &EndpointFacts,
    users: Option<&HashMap<String, usize>>,
    l: &Limits,
) -> Option<String> {
    if let Some(changed) = l.account_changed {
        return Some(format!(
            "endpoints changed since the sweep read the account ({changed}): who uses {} is not known this run",
            e.config
        ));
    }
    if l.rollback_configs.contains(&e.config) {
        return Some(format!(
            "{}: a deployment target may roll back to it",
            e.config
        ));
    }
    match users.map(|u| u.get(&e.config).copied().unwrap_or(0)) {
        None => Some("an endpoint could not be read: its config may be this one".into()),
        Some(n) if n > 1 => Some(format!("{} is also used by another endpoint", e.config)),
        _ => None,
    }
}

/// The groups that pass protection and the budget become the endpoint's plan; a group fits
/// whole or waits for the next run.
fn within_rails(
    j: &Judgement,
    groups: Vec<Group>,
    mut withheld: Vec<Withheld>,
    budget: &mut usize,
    l: &Limits,
) -> EndpointPlan {
    let mut ep = EndpointPlan {
        endpoint: j.endpoint.clone(),
        ..Default::default()
    };
    for g in groups {
        if j.protected {
            withheld.push(withhold(
                &g.what,
                format!("protected by {}=true", l.protection_tag),
            ));
        } else if g.steps.len() > *budget {
            withheld.push(withhold(
                &g.what,
                format!("MAX_ACTIONS_PER_RUN ({}) reached; next run", l.max_actions),
            ));
        } else {
            *budget -= g.steps.len();
            if ep.outcome.is_none_or(|o| weight(g.outcome) > weight(o)) {
                ep.outcome = Some(g.outcome);
            }
            ep.doing.push(match g.steps.first() {
                Some((_, why)) => format!("{} ({why})", g.what),
                None => g.what,
            });
            for (action, reason) in g.steps {
                ep.plan.push(action, reason);
            }
        }
    }
    ep.withheld = withheld;
    ep
}

/// Everything the findings ask for, before protection and budget; and what is withheld outright.
fn wanted(
    j: &Judgement,
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    config_kept: Option<String>,
    l: &Limits,
) -> (Vec<Group>, Vec<Withheld>) {
    let mut groups = vec![];
    let mut withheld = vec![];
    if j.not_judged.is_some() {
        return (groups, withheld);
    }
    // Traffic came back: the idle mark goes.
    if !j.idle() && j.idle_since.is_some() && j.invocations.is_some() {
        groups.push(unmark(e, "traffic returned".into()));
    }
    if j.idle() {
        idle(j, e, scaling, config_kept, l, &mut groups, &mut withheld);
    } else if j.stale() {
        withheld.push(withhold(
            "DeleteEndpoint",
            format!(
                "a stale duplicate with traffic: retired once it has had none for {} h; move its users to the target's endpoint",
                l.stale_hours
            ),
        ));
    }
    let retire = l
        .retire
        .get(&e.name)
        .filter(|_| l.account_changed.is_none());
    for r in retire.into_iter().flatten() {
        let mut g = Group::new(
            Outcome::VersionsRetired,
            format!("retire version {}", r.version),
        );
        for (action, why) in &r.steps {
            g = g.push(action.clone(), why.clone());
        }
        groups.push(g);
    }
    let fixes = fixes(j, e, scaling, l, &mut withheld);
    if l.remediate {
        groups.extend(fixes);
    } else {
        withheld.extend(fixes.into_iter().map(|g| {
            withhold(
                &g.what,
                "remediation disabled (REMEDIATE=false): reported only",
            )
        }));
    }
    (groups, withheld)
}

/// An idle endpoint: production shrinks to its floor; a target's endpoint stays; the rest, and a
/// stale duplicate of a target even in production, is marked, and deleted on a later run once it
/// has had no invocation at all since the mark for the grace period (the stale window).
fn idle(
    j: &Judgement,
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    config_kept: Option<String>,
    l: &Limits,
    groups: &mut Vec<Group>,
    withheld: &mut Vec<Withheld>,
) {
    if let Some(t) = l.target_of(&e.name) {
        withheld.push(withhold(
            "DeleteEndpoint",
            "a deployment target's endpoint: the deployer would recreate it; remove it from DEPLOY_TARGETS first",
        ));
        if t.capacity.is_some() {
            withheld.push(withhold("SetScalingBounds", OWNS_CAPACITY));
        } else if j.production {
            groups.extend(scale_down(e, scaling, l));
        }
        return;
    }
    if j.production && !j.stale() {
        withheld.push(withhold(
            "DeleteEndpoint",
            "production: never deleted; at most scaled down to the HA floor",
        ));
        groups.extend(scale_down(e, scaling, l));
        return;
    }
    let (hours, what) = if j.stale() {
        (
            l.stale_hours.max(l.grace_hours),
            "a stale duplicate of a target, idle",
        )
    } else {
        (l.grace_hours, "idle")
    };
    match j.idle_since {
        None => groups.push(Group::new(Outcome::MarkedIdle, "mark idle").push(
            Action::TagResource {
                arn: e.arn.clone(),
                key: IDLE_TAG.into(),
                value: fmt(l.now),
            },
            format!("{what}: deleted on a later run if no invocation at all in the next {hours} h"),
        )),
        // Changed after its mark (an update, a capacity change): someone works on it.
        Some(since) if e.last_modified.is_some_and(|m| m > since) => groups.push(unmark(
            e,
            format!(
                "changed at {} after it was marked idle at {}: kept",
                e.last_modified.map(fmt).unwrap_or_default(),
                fmt(since)
            ),
        )),
        Some(since) if l.now - since >= time::Duration::hours(hours) => {
            after_grace(j, e, since, hours, config_kept, groups, withheld)
        }
        Some(since) => withheld.push(withhold(
            "DeleteEndpoint",
            format!(
                "marked idle at {}; deleted after {hours} h without invocations",
                fmt(since)
            ),
        )),
    }
}

fn fmt(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Past the grace: deleted only if it had no invocation over the whole time since the mark.
fn after_grace(
    j: &Judgement,
    e: &EndpointFacts,
    since: OffsetDateTime,
    hours: i64,
    config_kept: Option<String>,
    groups: &mut Vec<Group>,
    withheld: &mut Vec<Withheld>,
) {
    match j.since_mark {
        Some(n) if n > 0.0 => groups.push(unmark(
            e,
            format!(
                "{n} invocations since it was marked idle at {}: kept",
                fmt(since)
            ),
        )),
        None => withheld.push(withhold(
            "DeleteEndpoint",
            "invocations since the mark could not be read: not deleted this run",
        )),
        Some(_) => {
            let mut g = Group::new(Outcome::Deleted, "delete the idle endpoint").push(
                Action::DeleteEndpoint {
                    endpoint: e.name.clone(),
                },
                format!(
                    "no invocation since it was marked idle at {} ({hours} h); its models are kept",
                    fmt(since)
                ),
            );
            match config_kept {
                Some(why) => withheld.push(withhold("DeleteEndpointConfig", why)),
                None => {
                    g = g.push(
                        Action::DeleteEndpointConfig {
                            config: e.config.clone(),
                        },
                        "the config of the deleted endpoint; no other endpoint uses it",
                    )
                }
            }
            groups.push(g);
        }
    }
}

fn unmark(e: &EndpointFacts, why: String) -> Group {
    Group::new(Outcome::Unmarked, "remove the idle mark").push(
        Action::UntagResource {
            arn: e.arn.clone(),
            key: IDLE_TAG.into(),
        },
        why,
    )
}

/// The fixes the risk findings ask for (applied only with `REMEDIATE`).
fn fixes(
    j: &Judgement,
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    l: &Limits,
    withheld: &mut Vec<Withheld>,
) -> Vec<Group> {
    let mut fixes = vec![];
    let target = l.target_of(&e.name);
    for f in &j.findings {
        match f {
            // The deployer owns a target's capacity: a second writer would fight it.
            Finding::UnderReplicated { .. } if target.is_some() => withheld.push(withhold(
                "CreateEndpointConfig",
                "a deployment target's endpoint: raise its instance_count in DEPLOY_TARGETS",
            )),
            // Nobody uses it: a second instance would only double its cost.
            Finding::UnderReplicated { .. } if j.idle() => withheld.push(withhold(
                "CreateEndpointConfig",
                "under-replicated but idle: no traffic to protect; a second instance would double its cost",
            )),
            // A stale endpoint is to be retired, not given more capacity.
            Finding::UnderReplicated { .. } if j.stale() => withheld.push(withhold(
                "CreateEndpointConfig",
                "under-replicated but stale: retire it rather than pay for a second instance",
            )),
            Finding::UnderReplicated { variant, instances } => {
                fixes.push(under_replicated(e, variant, *instances, scaling))
            }
            Finding::ScaleToZeroRisk { .. } | Finding::ShortScaleInCooldown { .. }
                if target.is_some_and(|t| t.capacity.is_some()) =>
            {
                withheld.push(withhold("SetScalingBounds", OWNS_CAPACITY))
            }
            Finding::ScaleToZeroRisk { variant } => {
                let s = &scaling[&resource_id(&e.name, variant)];
                fixes.push(Group::new(Outcome::Remediated, "raise MinCapacity from 0").push(
                    Action::SetScalingBounds {
                        target: ScalableTarget {
                            resource_id: resource_id(&e.name, variant),
                            min: HA_FLOOR,
                            max: s.max.max(HA_FLOOR),
                        },
                    },
                    format!("MinCapacity 0 on a standard endpoint: users wait for cold starts; floor {HA_FLOOR}"),
                ))
            }
            Finding::ShortScaleInCooldown {
                variant,
                policy,
                seconds,
            } => fixes.push(
                Group::new(Outcome::Remediated, "lengthen the scale-in cooldown").push(
                    Action::SetScaleInCooldown {
                        resource_id: resource_id(&e.name, variant),
                        policy_name: policy.clone(),
                        seconds: MIN_SCALE_IN_COOLDOWN,
                    },
                    format!("scale-in cooldown {seconds} s -> {MIN_SCALE_IN_COOLDOWN} s"),
                ),
            ),
            _ => {}
        }
    }
    fixes
}

/// Idle production: down to the floor, never below: the HA floor, or a deployment target's
/// instance count when that is higher (the deployer sized it so).
fn scale_down(e: &EndpointFacts, scaling: &HashMap<String, Scaling>, l: &Limits) -> Vec<Group> {
    let floor = l
        .target_of(&e.name)
        .map_or(HA_FLOOR, |t| t.instance_count.max(HA_FLOOR));
    let mut groups = vec![];
    for v in &e.variants {
        let mut g = Group::new(
            Outcome::ScaledDown,
            format!("scale {} down to {floor}", v.name),
        );
        if let Some(s) = scaling.get(&resource_id(&e.name, &v.name))
            && s.min > floor
        {
            g = g.push(
                Action::SetScalingBounds {
                    target: ScalableTarget {
                        resource_id: resource_id(&e.name, &v.name),
                        min: floor,
                        max: s.max,
                    },
                },
                format!("idle: MinCapacity {} -> {floor}", s.min),
            );
        }
        if let Some(n) = v.instances.filter(|n| *n > floor) {
            g = g.push(
                Action::SetInstanceCount {
                    endpoint: e.name.clone(),
                    variant: v.name.clone(),
                    count: floor,
                },
                format!("idle: {n} -> {floor} instances, the floor"),
            );
        }
        if !g.steps.is_empty() {
            groups.push(g);
        }
    }
    groups
}

/// A single-instance production variant: with autoscaling, MinCapacity raised to two (SageMaker
/// refuses an update of an autoscaled variant, and autoscaling would undo a new count); without,
/// a copy of the config with two, from what every variant runs now, then an update to it.
fn under_replicated(
    e: &EndpointFacts,
    variant: &str,
    instances: i32,
    scaling: &HashMap<String, Scaling>,
) -> Group {
    let what = format!("give {variant} {HA_FLOOR} instances");
    let single = format!("{instances} instance(s) in production is a single point of failure");
    if let Some(s) = scaling.get(&resource_id(&e.name, variant)) {
        return Group::new(Outcome::Remediated, what).push(
            Action::SetScalingBounds {
                target: ScalableTarget {
                    resource_id: resource_id(&e.name, variant),
                    min: s.min.max(HA_FLOOR),
                    max: s.max.max(HA_FLOOR),
                },
            },
            format!(
                "{single}; MinCapacity {} -> {HA_FLOOR}: autoscaling adds the second",
                s.min
            ),
        );
    }
    // The copy is made of the config and of what runs now: a copy made for other counts is not
    // reused.
    let running: Vec<String> = e
        .variants
        .iter()
        .map(|v| format!("{}={:?}/{:?}", v.name, v.instances, v.weight))
        .collect();
    let mut parts: Vec<&str> = vec![&e.config];
    parts.extend(running.iter().map(String::as_str));
    let name = sagemaker_name(&e.name, &format!("ha{HA_FLOOR}-{}", fingerprint(&parts)));
    let live = e
        .variants
        .iter()
        .map(|v| LiveVariant {
            name: v.name.clone(),
            current_instance_count: v.instances,
            current_weight: v.weight,
        })
        .collect();
    Group::new(Outcome::Remediated, what)
        .push(
            Action::CopyEndpointConfig {
                from: e.config.clone(),
                name: name.clone(),
                min_instances: HA_FLOOR,
                live,
            },
            format!(
                "{} with at least {HA_FLOOR} instances per production variant, every other field kept",
                e.config
            ),
        )
        .push(
            Action::UpdateEndpoint {
                endpoint: e.name.clone(),
                config: name,
                rollout: None,
            },
            single,
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Variant;
    use lifecycle::endpoints::EndpointStatus;
    use lifecycle::plan::ActionKind;
    use std::collections::BTreeMap;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_772_344_800).unwrap()
    }

    fn facts(name: &str, instances: i32) -> EndpointFacts {
        EndpointFacts {
            name: name.into(),
            arn: format!("arn:{name}"),
            status: EndpointStatus::InService,
            created: None,
            config: format!("{name}-config"),
            tags: BTreeMap::new(),
            config_tags: BTreeMap::new(),
            variants: vec![Variant {
                name: "AllTraffic".into(),
                instance_type: Some("ml.m5.xlarge".into()),
                instances: Some(instances),
                weight: None,
                inference_components: false,
            }],
            config_read: true,
            models: vec![],
            package: None,
            pending_config: None,
            last_modified: None,
            traffic_unmeasured: None,
            error: None,
        }
    }

    fn judgement(name: &str, production: bool, findings: Vec<Finding>) -> Judgement {
        Judgement {
            endpoint: name.into(),
            production,
            protected: false,
            not_judged: None,
            findings,
            invocations: Some(0.0),
            monthly_usd: Some(100.0),
            idle_since: None,
            since_mark: Some(0.0),
        }
    }

    fn run(
        js: &[Judgement],
        fs: &[EndpointFacts],
        max: usize,
        remediate: bool,
    ) -> Vec<EndpointPlan> {
        run_with(&Targets::default(), js, fs, max, remediate)
    }

    fn run_with(
        targets: &Targets,
        js: &[Judgement],
        fs: &[EndpointFacts],
        max: usize,
        remediate: bool,
    ) -> Vec<EndpointPlan> {
        let facts: HashMap<&str, &EndpointFacts> =
            fs.iter().map(|f| (f.name.as_str(), f)).collect();
        decide(
            js,
            &facts,
            &HashMap::new(),
            &Limits {
                targets,
                max_actions: max,
                remediate,
                grace_hours: 24,
                stale_hours: 168,
                protection_tag: "ProtectedFromAutoStop",
                rollback_configs: &HashSet::from(["kept-config".to_string()]),
                retire: &HashMap::new(),
                account_changed: None,
                now: now(),
            },
        )
    }

    #[test]
    fn an_account_that_changed_since_the_read_keeps_every_config() {
        let f = facts("staging", 1);
        let mut j = judgement("staging", false, vec![Finding::Idle]);
        j.idle_since = Some(now() - time::Duration::hours(30));
        let (retire, rollback) = (HashMap::new(), HashSet::new());
        let targets = Targets::default();
        let l = Limits {
            targets: &targets,
            max_actions: 10,
            remediate: false,
            grace_hours: 24,
            stale_hours: 168,
            protection_tag: "ProtectedFromAutoStop",
            rollback_configs: &rollback,
            retire: &retire,
            account_changed: Some("new-endpoint"),
            now: now(),
        };
        let users = config_users(&[&f]);
        let p = plan_endpoint(&j, &f, &HashMap::new(), users.as_ref(), &mut 10, &l);
        assert_eq!(names(&p), [ActionKind::DeleteEndpoint]);
        assert!(
            p.withheld[0].why.contains("new-endpoint"),
            "{:?}",
            p.withheld
        );
    }

    #[test]
    fn a_marked_endpoint_changed_after_its_mark_is_kept() {
        let mut f = facts("staging", 1);
        f.last_modified = Some(now() - time::Duration::hours(2));
        let mut j = judgement("staging", false, vec![Finding::Idle]);
        j.idle_since = Some(now() - time::Duration::hours(30));
        let p = &run(&[j], &[f], 10, false)[0];
        assert_eq!(p.outcome, Some(Outcome::Unmarked));
        assert!(
            p.doing[0].contains("after it was marked idle"),
            "{:?}",
            p.doing
        );
    }

    #[test]
    fn an_autoscaled_single_instance_variant_gets_a_higher_minimum_not_a_new_config() {
        let f = [facts("one", 1)];
        let j = judgement(
            "one",
            true,
            vec![Finding::UnderReplicated {
                variant: "AllTraffic".into(),
                instances: 1,
            }],
        );
        let scaling = HashMap::from([(
            resource_id("one", "AllTraffic"),
            Scaling {
                min: 1,
                max: 4,
                policies: vec![],
            },
        )]);
        let by_name: HashMap<&str, &EndpointFacts> =
            f.iter().map(|e| (e.name.as_str(), e)).collect();
        let (retire, rollback, targets) = (HashMap::new(), HashSet::new(), Targets::default());
        let l = Limits {
            targets: &targets,
            max_actions: 10,
            remediate: true,
            grace_hours: 24,
            stale_hours: 168,
            protection_tag: "ProtectedFromAutoStop",
            rollback_configs: &rollback,
            retire: &retire,
            account_changed: None,
            now: now(),
        };
        let p = &decide(&[j], &by_name, &scaling, &l)[0];
        assert_eq!(names(p), [ActionKind::SetScalingBounds]);
    }

    #[test]
    fn past_the_grace_only_no_invocation_since_the_mark_deletes() {
        let f = [facts("staging", 1)];
        let mut j = judgement("staging", false, vec![Finding::Idle]);
        j.idle_since = Some(now() - time::Duration::hours(30));
        j.since_mark = Some(12.0);
        let p = &run(std::slice::from_ref(&j), &f, 10, false)[0];
        assert_eq!(names(p), [ActionKind::UntagResource]);
        assert_eq!(p.outcome, Some(Outcome::Unmarked));
        assert!(p.doing[0].contains("12 invocations since"), "{:?}", p.doing);
        j.since_mark = None;
        let p = &run(&[j], &f, 10, false)[0];
        assert!(p.plan.is_empty() && p.withheld[0].why.contains("could not be read"));
    }

    #[test]
    fn a_config_in_use_anywhere_or_kept_for_a_rollback_stays() {
        let mut j = judgement("staging-a", false, vec![Finding::Idle]);
        j.idle_since = Some(now() - time::Duration::hours(25));
        // Another endpoint is updating *to* this config.
        let mut b = facts("staging-b", 1);
        b.status = EndpointStatus::Updating;
        b.pending_config = Some("staging-a-config".into());
        let p = &run(
            std::slice::from_ref(&j),
            &[facts("staging-a", 1), b],
            10,
            false,
        )[0];
        assert_eq!(names(p), [ActionKind::DeleteEndpoint]);
        // An endpoint that could not be read could use it.
        let mut c = facts("staging-c", 1);
        c.config = String::new();
        let p = &run(
            std::slice::from_ref(&j),
            &[facts("staging-a", 1), c],
            10,
            false,
        )[0];
        assert_eq!(names(p), [ActionKind::DeleteEndpoint]);
        assert!(p.withheld[0].why.contains("could not be read"));
        // A target may roll back to it.
        let mut a = facts("staging-a", 1);
        a.config = "kept-config".into();
        let p = &run(&[j], &[a], 10, false)[0];
        assert!(
            p.withheld[0].why.contains("roll back to it"),
            "{:?}",
            p.withheld
        );
    }

    fn stale(per_hour: f64) -> Finding {
        Finding::Stale {
            group: "recs".into(),
            canonical: "recs-prod".into(),
            per_hour,
            version: Some(1),
            canonical_version: Some(2),
        }
    }

    #[test]
    fn a_quiet_stale_duplicate_is_retired_after_the_stale_window_even_in_production() {
        let f = [facts("recs-v1", 2)];
        let mut j = judgement("recs-v1", true, vec![Finding::Idle, stale(0.0)]);
        assert_eq!(
            run(std::slice::from_ref(&j), &f, 10, false)[0].outcome,
            Some(Outcome::MarkedIdle)
        );
        j.idle_since = Some(now() - time::Duration::hours(30));
        let p = &run(std::slice::from_ref(&j), &f, 10, false)[0];
        assert!(p.plan.is_empty(), "the grace passed, not the stale window");
        j.idle_since = Some(now() - time::Duration::hours(170));
        let p = &run(&[j], &f, 10, false)[0];
        assert_eq!(
            names(p),
            [ActionKind::DeleteEndpoint, ActionKind::DeleteEndpointConfig]
        );
    }

    #[test]
    fn a_targets_endpoint_keeps_its_floor_and_its_capacity_is_the_deployers() {
        let targets = Targets::parse(
            r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge",
                 "instance_count":3,"rollback_alarms":["a"]}]"#,
            lifecycle::config::Environment::Production,
        )
        .unwrap();
        let f = [facts("recs-prod", 6)];
        let j = judgement("recs-prod", true, vec![Finding::Idle]);
        let p = &run_with(&targets, &[j], &f, 10, false)[0];
        let Action::SetInstanceCount { count, .. } = &p.plan.steps[0].action else {
            panic!("{:?}", p.plan)
        };
        assert_eq!(*count, 3, "the target's instance count, not the HA floor");
        let j = judgement(
            "recs-prod",
            true,
            vec![Finding::UnderReplicated {
                variant: "AllTraffic".into(),
                instances: 1,
            }],
        );
        let p = &run_with(&targets, &[j], &[facts("recs-prod", 1)], 10, true)[0];
        assert!(p.plan.is_empty() && p.withheld[0].why.contains("instance_count"));
    }

    #[test]
    fn a_target_that_declares_its_capacity_is_not_scaled_by_the_sweeper() {
        let targets = Targets::parse(
            r#"[{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge",
                 "instance_count":2,"rollback_alarms":["a"],
                 "capacity":{"min":2,"max":10,"target_invocations":70}}]"#,
            lifecycle::config::Environment::Production,
        )
        .unwrap();
        let f = [facts("recs-prod", 6)];
        let short = Finding::ShortScaleInCooldown {
            variant: "AllTraffic".into(),
            policy: "p".into(),
            seconds: 60,
        };
        for finding in [Finding::Idle, short] {
            let j = judgement("recs-prod", true, vec![finding]);
            let p = &run_with(&targets, &[j], &f, 10, true)[0];
            assert!(p.plan.is_empty(), "{:?}", p.plan);
            assert!(
                p.withheld.iter().any(|w| w.why == OWNS_CAPACITY),
                "{:?}",
                p.withheld
            );
        }
    }

    fn names(p: &EndpointPlan) -> Vec<ActionKind> {
        p.plan.kinds()
    }

    #[test]
    fn idle_staging_is_marked_then_deleted_after_the_grace() {
        let f = [facts("staging", 1)];
        let mut j = judgement("staging", false, vec![Finding::Idle]);
        assert_eq!(
            names(&run(std::slice::from_ref(&j), &f, 10, false)[0]),
            [ActionKind::TagResource]
        );
        j.idle_since = Some(now() - time::Duration::hours(2));
        let p = &run(std::slice::from_ref(&j), &f, 10, false)[0];
        assert!(p.plan.is_empty() && p.withheld[0].why.contains("marked idle"));
        j.idle_since = Some(now() - time::Duration::hours(25));
        assert_eq!(
            names(&run(&[j], &f, 10, false)[0]),
            [ActionKind::DeleteEndpoint, ActionKind::DeleteEndpointConfig]
        );
    }

    #[test]
    fn a_config_another_endpoint_uses_is_kept() {
        let mut b = facts("staging-b", 1);
        b.config = "staging-a-config".into();
        let f = [facts("staging-a", 1), b];
        let mut j = judgement("staging-a", false, vec![Finding::Idle]);
        j.idle_since = Some(now() - time::Duration::hours(25));
        let p = &run(&[j], &f, 10, false)[0];
        assert_eq!(names(p), [ActionKind::DeleteEndpoint]);
        assert!(p.withheld[0].why.contains("also used by another endpoint"));
    }

    #[test]
    fn production_is_never_deleted_and_never_below_two() {
        let f = [facts("prod", 4), facts("prod2", 2)];
        let p = run(
            &[
                judgement("prod", true, vec![Finding::Idle]),
                judgement("prod2", true, vec![Finding::Idle]),
            ],
            &f,
            10,
            false,
        );
        assert_eq!(names(&p[0]), [ActionKind::SetInstanceCount]);
        let Action::SetInstanceCount { count, .. } = &p[0].plan.steps[0].action else {
            panic!()
        };
        assert_eq!(*count, 2);
        assert!(p[1].plan.is_empty(), "already at the floor");
        assert!(p[1].withheld[0].why.contains("never deleted"));
    }

    #[test]
    fn protection_and_the_budget_hold_and_groups_stay_whole() {
        let f = [facts("a", 1), facts("b", 1)];
        let mut a = judgement("a", false, vec![Finding::Idle]);
        a.idle_since = Some(now() - time::Duration::hours(30));
        let mut b = a.clone();
        b.endpoint = "b".into();
        let p = run(&[a.clone(), b.clone()], &f, 3, false);
        assert_eq!(
            names(&p[0]),
            [ActionKind::DeleteEndpoint, ActionKind::DeleteEndpointConfig]
        );
        assert!(p[1].plan.is_empty() && p[1].withheld[0].why.contains("MAX_ACTIONS_PER_RUN"));
        a.protected = true;
        let p = run(&[a], &f, 10, false);
        assert!(p[0].plan.is_empty() && p[0].withheld[0].why.contains("protected"));
    }

    #[test]
    fn a_stale_endpoint_gets_no_second_instance() {
        let f = [facts("recs-v1", 1)];
        let j = judgement(
            "recs-v1",
            true,
            vec![
                stale(10.0),
                Finding::UnderReplicated {
                    variant: "AllTraffic".into(),
                    instances: 1,
                },
            ],
        );
        let p = run(&[j], &f, 10, true);
        assert!(p[0].plan.is_empty());
        assert!(p[0].withheld.iter().any(|w| w.why.contains("retire it")));
    }

    #[test]
    fn a_deployment_targets_endpoint_is_never_deleted() {
        let targets = Targets::parse(
            r#"[{"model_package_group":"recs","endpoint":"recs-staging","instance_type":"ml.m5.xlarge",
                 "instance_count":1,"rollback_alarms":["a"]}]"#,
            lifecycle::config::Environment::Staging,
        )
        .unwrap();
        let f = [facts("recs-staging", 1)];
        let mut j = judgement("recs-staging", false, vec![Finding::Idle]);
        j.idle_since = Some(now() - time::Duration::hours(48));
        let p = run_with(&targets, &[j], &f, 10, false);
        assert!(p[0].plan.is_empty());
        assert!(
            p[0].withheld[0]
                .why
                .contains("the deployer would recreate it")
        );
    }

    #[test]
    fn risk_fixes_need_remediation() {
        let f = [facts("one", 1)];
        let j = judgement(
            "one",
            true,
            vec![Finding::UnderReplicated {
                variant: "AllTraffic".into(),
                instances: 1,
            }],
        );
        let p = run(std::slice::from_ref(&j), &f, 10, false);
        assert!(p[0].plan.is_empty() && p[0].withheld[0].why.contains("REMEDIATE"));
        let p = run(&[j], &f, 10, true);
        assert_eq!(
            names(&p[0]),
            [ActionKind::CopyEndpointConfig, ActionKind::UpdateEndpoint]
        );
    }

    #[test]
    fn an_endpoint_plan_is_named_after_its_most_consequential_group() {
        let f = [facts("staging", 1)];
        let mut j = judgement("staging", false, vec![Finding::Idle]);
        assert_eq!(
            run(std::slice::from_ref(&j), &f, 10, false)[0].outcome,
            Some(Outcome::MarkedIdle)
        );
        j.idle_since = Some(now() - time::Duration::hours(25));
        let p = &run(&[j], &f, 10, false)[0];
        assert_eq!(p.outcome, Some(Outcome::Deleted));
        assert!(
            p.doing[0].starts_with("delete the idle endpoint (no invocation since it was marked"),
            "{:?}",
            p.doing
        );
        // Idle production that is also under-replicated: no shrink (already one), and no second
        // instance for no traffic.
        let f = [facts("prod", 1)];
        let under = Finding::UnderReplicated {
            variant: "AllTraffic".into(),
            instances: 1,
        };
        let j = judgement("prod", true, vec![Finding::Idle, under.clone()]);
        let p = &run(&[j], &f, 10, true)[0];
        assert_eq!(p.outcome, None);
        assert!(p.withheld.iter().any(|w| w.why.contains("double its cost")));
        let mut busy = judgement("prod", true, vec![under]);
        busy.invocations = Some(900.0);
        assert_eq!(
            run(&[busy], &f, 10, true)[0].outcome,
            Some(Outcome::Remediated)
        );
    }

    #[test]
    fn withheld_groups_leave_no_outcome() {
        let f = [facts("a", 1)];
        let mut a = judgement("a", false, vec![Finding::Idle]);
        a.protected = true;
        let p = &run(&[a], &f, 10, false)[0];
        assert_eq!((p.outcome, p.plan.is_empty()), (None, true));
        assert!(p.doing.is_empty());
    }
}
