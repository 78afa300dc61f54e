//! What the sweep does about its findings, within its rails. Pure.
//!
//! Rails: the protection tag exempts an endpoint from everything; production is never deleted and
//! never scaled below two instances; a deployment target's endpoint is never deleted (the
//! deployer would recreate it); a non-production endpoint is deleted only after it was marked idle
//! and stayed idle for the grace period; fixes of risk findings need `REMEDIATE`; at most
//! `MAX_ACTIONS_PER_RUN` mutations a run, a group of steps that belong together (delete endpoint
//! and config; new config and update) fits whole or waits.

use std::collections::HashMap;

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
    pub protection_tag: &'a str,
    pub now: OffsetDateTime,
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
        Outcome::Remediated => 2,
        Outcome::MarkedIdle => 1,
        _ => 0,
    }
}

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
    // A config another endpoint also runs on is not deleted with the idle one.
    let mut users: HashMap<&str, usize> = HashMap::new();
    for e in facts.values() {
        *users.entry(e.config.as_str()).or_default() += 1;
    }
    for j in judgements {
        let Some(e) = facts.get(j.endpoint.as_str()) else {
            continue;
        };
        let shared_config = users.get(e.config.as_str()).copied().unwrap_or(0) > 1;
        let (groups, withheld) = wanted(j, e, scaling, shared_config, l);
        let ep = within_rails(j, groups, withheld, &mut budget, l);
        if !ep.plan.is_empty() || !ep.withheld.is_empty() {
            out.push(ep);
        }
    }
    out
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
    shared_config: bool,
    l: &Limits,
) -> (Vec<Group>, Vec<Withheld>) {
    let mut groups = vec![];
    let mut withheld = vec![];
    if j.not_judged.is_some() {
        return (groups, withheld);
    }
    // Traffic came back: the idle mark goes.
    if !j.idle() && j.idle_since.is_some() && j.invocations.is_some() {
        groups.push(Group::new(Outcome::Unmarked, "remove the idle mark").push(
            Action::UntagResource {
                arn: e.arn.clone(),
                key: IDLE_TAG.into(),
            },
            "traffic returned",
        ));
    }
    if j.idle() {
        idle(j, e, scaling, shared_config, l, &mut groups, &mut withheld);
    }
    if j.stale() {
        withheld.push(withhold(
            "DeleteEndpoint",
            "stale: reported with its cost; a person retires it (users may still be on it)",
        ));
    }
    let fixes = fixes(j, e, scaling, &mut withheld);
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

/// An idle endpoint: production shrinks to the HA floor; a target's endpoint stays; the rest is
/// marked, and deleted on a later run once the grace period has passed.
fn idle(
    j: &Judgement,
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    shared_config: bool,
    l: &Limits,
    groups: &mut Vec<Group>,
    withheld: &mut Vec<Withheld>,
) {
    let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    if j.production {
        withheld.push(withhold(
            "DeleteEndpoint",
            "production: never deleted; at most scaled down to the HA floor",
        ));
        groups.extend(scale_down(e, scaling));
        return;
    }
    if l.targets.by_endpoint(&e.name).is_some() {
        withheld.push(withhold(
            "DeleteEndpoint",
            "a deployment target's endpoint: the deployer would recreate it; remove it from DEPLOY_TARGETS first",
        ));
        return;
    }
    match j.idle_since {
        None => groups.push(Group::new(Outcome::MarkedIdle, "mark idle").push(
            Action::TagResource {
                arn: e.arn.clone(),
                key: IDLE_TAG.into(),
                value: fmt(l.now),
            },
            format!(
                "idle: deleted on a later run if still idle after {} h",
                l.grace_hours
            ),
        )),
        Some(since) if l.now - since >= time::Duration::hours(l.grace_hours) => {
            let mut g = Group::new(Outcome::Deleted, "delete the idle endpoint").push(
                Action::DeleteEndpoint {
                    endpoint: e.name.clone(),
                },
                format!(
                    "idle since {} (grace {} h); models and older configs are kept for a rollback",
                    fmt(since),
                    l.grace_hours
                ),
            );
            if shared_config {
                withheld.push(withhold(
                    "DeleteEndpointConfig",
                    format!("{} is also used by another endpoint", e.config),
                ));
            } else {
                g = g.push(
                    Action::DeleteEndpointConfig {
                        config: e.config.clone(),
                    },
                    "the config of the deleted endpoint",
                );
            }
            groups.push(g);
        }
        Some(since) => withheld.push(withhold(
            "DeleteEndpoint",
            format!(
                "marked idle at {}; deleted after {} h if still idle",
                fmt(since),
                l.grace_hours
            ),
        )),
    }
}

/// The fixes the risk findings ask for (applied only with `REMEDIATE`).
fn fixes(
    j: &Judgement,
    e: &EndpointFacts,
    scaling: &HashMap<String, Scaling>,
    withheld: &mut Vec<Withheld>,
) -> Vec<Group> {
    let mut fixes = vec![];
    for f in &j.findings {
        match f {
            // A stale endpoint is to be retired, not given more capacity.
            Finding::UnderReplicated { .. } if j.stale() => withheld.push(withhold(
                "CreateEndpointConfig",
                "under-replicated but stale: retire it rather than pay for a second instance",
            )),
            Finding::UnderReplicated { variant, instances } => {
                fixes.push(under_replicated(e, variant, *instances, scaling))
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

/// Idle production: down to the HA floor, never below.
fn scale_down(e: &EndpointFacts, scaling: &HashMap<String, Scaling>) -> Vec<Group> {
    let mut groups = vec![];
    for v in &e.variants {
        let mut g = Group::new(
            Outcome::ScaledDown,
            format!("scale {} down to {HA_FLOOR}", v.name),
        );
        if let Some(s) = scaling.get(&resource_id(&e.name, &v.name))
            && s.min > HA_FLOOR
        {
            g = g.push(
                Action::SetScalingBounds {
                    target: ScalableTarget {
                        resource_id: resource_id(&e.name, &v.name),
                        min: HA_FLOOR,
                        max: s.max,
                    },
                },
                format!("idle: MinCapacity {} -> {HA_FLOOR}", s.min),
            );
        }
        if let Some(n) = v.instances.filter(|n| *n > HA_FLOOR) {
            g = g.push(
                Action::SetInstanceCount {
                    endpoint: e.name.clone(),
                    variant: v.name.clone(),
                    count: HA_FLOOR,
                },
                format!("idle: {n} -> {HA_FLOOR} instances, the HA floor"),
            );
        }
        if !g.steps.is_empty() {
            groups.push(g);
        }
    }
    groups
}

/// A single-instance production variant: a new config with two, then an update to it.
fn under_replicated(
    e: &EndpointFacts,
    variant: &str,
    instances: i32,
    scaling: &HashMap<String, Scaling>,
) -> Group {
    let name = sagemaker_name(
        &e.name,
        &format!("ha{HA_FLOOR}-{}", fingerprint(&[&e.config])),
    );
    let mut g = Group::new(
        Outcome::Remediated,
        format!("give {variant} {HA_FLOOR} instances"),
    )
    .push(
        Action::CopyEndpointConfig {
            from: e.config.clone(),
            name: name.clone(),
            min_instances: HA_FLOOR,
        },
        format!(
            "{} with at least {HA_FLOOR} instances per variant",
            e.config
        ),
    )
    .push(
        Action::UpdateEndpoint {
            endpoint: e.name.clone(),
            config: name,
            rollout: None,
        },
        format!("{instances} instance(s) in production is a single point of failure"),
    );
    if let Some(s) = scaling.get(&resource_id(&e.name, variant))
        && s.min < HA_FLOOR
    {
        g = g.push(
            Action::SetScalingBounds {
                target: ScalableTarget {
                    resource_id: resource_id(&e.name, variant),
                    min: HA_FLOOR,
                    max: s.max.max(HA_FLOOR),
                },
            },
            format!(
                "MinCapacity {} -> {HA_FLOOR}, so autoscaling keeps two",
                s.min
            ),
        );
    }
    g
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
                inference_components: false,
            }],
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
                protection_tag: "ProtectedFromAutoStop",
                now: now(),
            },
        )
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
                Finding::Stale {
                    group: "recs".into(),
                    canonical: "recs-prod".into(),
                    per_hour: 10.0,
                },
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
            p.doing[0].starts_with("delete the idle endpoint (idle since"),
            "{:?}",
            p.doing
        );
        // Idle production that is also under-replicated: a fix and no shrink (already one).
        let f = [facts("prod", 1)];
        let j = judgement(
            "prod",
            true,
            vec![
                Finding::Idle,
                Finding::UnderReplicated {
                    variant: "AllTraffic".into(),
                    instances: 1,
                },
            ],
        );
        assert_eq!(
            run(&[j], &f, 10, true)[0].outcome,
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
