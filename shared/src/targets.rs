//! Deployment targets: which model package group feeds which endpoint, and how to roll it out.
//! Read from `DEPLOY_TARGETS` (a JSON list) and validated against SageMaker's own bounds, so a bad
//! value fails the cold start instead of a deployment at 3 a.m.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::config::{Environment, Source, flag, required};
use crate::error::ConfigError;
use crate::guardrails::{AlarmSpec, Guardrails, Role};

const VAR: &str = "DEPLOY_TARGETS";

/// One model package group served by one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentTarget {
    /// The Model Registry group whose newest Approved package the endpoint should serve.
    pub model_package_group: String,
    /// The endpoint that serves it.
    pub endpoint: String,
    /// The production variant the model runs in.
    #[serde(default = "default_variant")]
    pub variant: String,
    pub instance_type: String,
    /// Instances per variant; at least 2 in production (one instance is a single point of failure).
    pub instance_count: i32,
    /// How traffic moves to the new fleet.
    #[serde(default)]
    pub strategy: TrafficStrategy,
    /// Seconds the old fleet is kept after all traffic has shifted (SageMaker: 0..=3600).
    #[serde(default = "default_bake")]
    pub bake_seconds: i32,
    /// Upper bound for the whole deployment (SageMaker: 600..=28800).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: i32,
    /// CloudWatch alarms SageMaker watches while shifting; any in ALARM rolls back (1 to 10).
    pub rollback_alarms: Vec<String>,
    /// Mandatory evaluations a package must pass before it is deployed.
    #[serde(default)]
    pub gates: Vec<Gate>,
    /// Business-KPI alarms (click-through rate, conversion): after the shift, the alarm responder
    /// rolls back on them, but only when the window had enough samples to mean something.
    #[serde(default)]
    pub kpi_alarms: Vec<KpiAlarm>,
    /// Capacity alarms (a 5XX/503 burst after a cold start, `NoCapacityInvocationFailures`): the
    /// alarm responder raises the variant to `scale_up_floor` instead of rolling back.
    #[serde(default)]
    pub scale_up_alarms: Vec<String>,
    /// Instances a scale-up raises the variant to (default and minimum: 2 in production, else 1).
    #[serde(default)]
    pub scale_up_floor: Option<i32>,
    /// A deployment waits while one of the rollback alarms is in ALARM (SageMaker would roll it
    /// back at once, and blame the new version); past this many minutes the wait needs a person.
    #[serde(default = "default_alarm_hold")]
    pub max_alarm_hold_minutes: i64,
    /// The alarm responder rolls a version back by itself only this many days after it went live;
    /// an older version has been trusted long enough that a person decides.
    #[serde(default = "default_auto_rollback_days")]
    pub auto_rollback_days: i64,
    /// After the alarm responder rolls back, the alarm that caused it must be OK again within this
    /// many minutes of the rollback completing (0: on the first reconcile after it); else a person
    /// is told the rollback did not recover.
    #[serde(default = "default_recovery_minutes")]
    pub recovery_minutes: i64,
    /// Error-rate, latency and KPI bounds the deployer keeps as alarms of its own (see
    /// [`crate::guardrails`]); their names join `rollback_alarms` and `kpi_alarms` at start-up.
    #[serde(default)]
    pub guardrails: Option<Guardrails>,
    /// A live KPI canary before full promotion (see [`crate::kpi_gate`]); none: a new version
    /// takes all the traffic through the rollout above.
    #[serde(default)]
    pub kpi_gate: Option<crate::kpi_gate::KpiGate>,
    /// Staging first: a version deploys here only after it has served another target of the
    /// same group for `soak_minutes` with no rollback, rejection or firing rollback alarm.
    #[serde(default)]
    pub promote_after: Option<PromoteAfter>,
    /// Capacity as code: autoscaling bounds, a tracking policy and business-hours schedules the
    /// deployer keeps (see [`crate::capacity`]); none: autoscaling is left as it is.
    #[serde(default)]
    pub capacity: Option<crate::capacity::Capacity>,
    /// One request a new version must answer as declared (see [`crate::smoke`]); a failure
    /// rejects it and brings back the version before.
    #[serde(default)]
    pub smoke_test: Option<crate::smoke::SmokeTest>,
    /// The alarms `guardrails` asks for, named under ALARM_NAME_PREFIX (filled in by parsing).
    #[serde(skip)]
    pub managed_alarms: Vec<AlarmSpec>,
    /// Where this target's managed alarms are named (`<prefix>managed-<endpoint>-`), when
    /// ALARM_NAME_PREFIX is known: the deployer deletes those no bound declares any more.
    #[serde(skip)]
    pub managed_alarm_prefix: Option<String>,
}

/// The target a version must have soaked on first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteAfter {
    /// The endpoint of the required target.
    pub target: String,
    pub soak_minutes: i64,
}

/// A business-KPI alarm and the traffic it needs before it is believed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiAlarm {
    pub alarm: String,
    /// The least number of samples (for example impressions) in the window for a rollback.
    pub min_samples: f64,
    /// The metric that counts samples.
    pub samples: MetricRef,
    /// The window, ending when the alarm fired, over which samples are summed.
    #[serde(default = "default_window")]
    pub window_minutes: i32,
}

/// A CloudWatch metric, by name and dimensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricRef {
    pub namespace: String,
    pub metric: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    #[serde(default = "default_stat")]
    pub stat: String,
}

/// What an alarm of a target asks the alarm responder to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlarmRole<'a> {
    /// A rollback alarm: the live version is bad.
    Rollback,
    /// A business KPI: the live version is bad if enough traffic saw it.
    Kpi(&'a KpiAlarm),
    /// A capacity alarm: more instances, now.
    ScaleUp,
}

fn default_window() -> i32 {
    60
}
fn default_stat() -> String {
    "Sum".to_string()
}

fn default_variant() -> String {
    "AllTraffic".to_string()
}
fn default_bake() -> i32 {
    300
}
fn default_timeout() -> i32 {
    3600
}

fn default_alarm_hold() -> i64 {
    60
}

fn default_auto_rollback_days() -> i64 {
    7
}

fn default_recovery_minutes() -> i64 {
    15
}

/// How SageMaker's blue/green update shifts traffic to the new fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrafficStrategy {
    /// Everything in one step, then bake.
    #[default]
    AllAtOnce,
    /// `percent` of capacity first (1..=50), then the rest after `wait_seconds`.
    Canary { percent: i32, wait_seconds: i32 },
    /// Steps of `step_percent` of capacity (10..=50), `wait_seconds` apart.
    Linear {
        step_percent: i32,
        wait_seconds: i32,
    },
}

/// A mandatory evaluation: a named metric of the package and the bound it must meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    pub metric: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// All targets of one installation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Targets(pub Vec<DeploymentTarget>);

impl Targets {
    /// Parses and validates `DEPLOY_TARGETS` (targets without guardrails).
    pub fn parse(raw: &str, env: Environment) -> Result<Self, ConfigError> {
        Self::parse_with(raw, env, None)
    }

    /// `DEPLOY_TARGETS` and `ALARM_NAME_PREFIX`, which names the targets' managed alarms.
    pub fn from_source(src: &impl Source, env: Environment) -> Result<Self, ConfigError> {
        let raw = required(src, VAR, "a JSON list of deployment targets")?;
        let prefix = src
            .get("ALARM_NAME_PREFIX")
            .filter(|p| !p.trim().is_empty());
        let mut targets = Self::parse_with(&raw, env, prefix.as_deref())?;
        if let Some(topic) = src.get("ALERT_TOPIC_ARN").filter(|t| !t.trim().is_empty()) {
            targets.alert_to(&topic);
        }
        Ok(targets)
    }

    /// Managed alarms notify `topic` in ALARM and back to OK, as the template's alarms do.
    pub fn alert_to(&mut self, topic: &str) {
        for spec in self.0.iter_mut().flat_map(|t| &mut t.managed_alarms) {
            spec.actions = vec![topic.to_string()];
        }
    }

    /// Parses and validates `DEPLOY_TARGETS`; a target's guardrails become alarms named under
    /// `alarm_prefix` (required when any target declares them).
    pub fn parse_with(
        raw: &str,
        env: Environment,
        alarm_prefix: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut targets: Vec<DeploymentTarget> = serde_json::from_str(raw)
            .map_err(|e| ConfigError::new(VAR, format!("is not a valid list of targets: {e}")))?;
        for t in &mut targets {
            t.manage_alarms(alarm_prefix)?;
        }
        if targets.is_empty() {
            return Err(ConfigError::new(
                VAR,
                "lists no targets; expected at least one",
            ));
        }
        let mut groups = HashSet::new();
        let mut endpoints = HashSet::new();
        let mut managed = HashSet::new();
        for spec in targets.iter().flat_map(|t| &t.managed_alarms) {
            if spec.name.len() > 255 {
                return Err(ConfigError::new(
                    "ALARM_NAME_PREFIX",
                    format!(
                        "makes the alarm name {} longer than CloudWatch's 255 characters",
                        spec.name
                    ),
                ));
            }
            // endpoint "a-b" variant "c" and endpoint "a" variant "b-c" would share names.
            if !managed.insert(&spec.name) {
                return Err(ConfigError::new(
                    VAR,
                    format!(
                        "two targets' guardrails would share the alarm {}",
                        spec.name
                    ),
                ));
            }
        }
        let mut alarms = HashMap::new();
        for t in &targets {
            t.validate(env)?;
            // A group feeds one endpoint, or a chain of them, each after the one before: one
            // target of the group takes approvals first, whatever the order they are listed in.
            if t.promote_after.is_none() && !groups.insert(&t.model_package_group) {
                return Err(ConfigError::new(
                    VAR,
                    format!(
                        "group {} is listed twice; a second target of one group must promote_after the first",
                        t.model_package_group
                    ),
                ));
            }
            // An alarm routes to one target: shared by two (a copied staging block), the
            // responder would roll back whichever is listed first.
            for alarm in t.alarm_names() {
                if let Some(other) = alarms.insert(alarm, &t.endpoint) {
                    return Err(ConfigError::new(
                        VAR,
                        format!(
                            "alarm {alarm} is listed by targets {other} and {}; each alarm belongs to one endpoint",
                            t.endpoint
                        ),
                    ));
                }
            }
            if !endpoints.insert(&t.endpoint) {
                return Err(ConfigError::new(
                    VAR,
                    format!("endpoint {} is listed twice", t.endpoint),
                ));
            }
        }
        let targets = Self(targets);
        targets.check_promotions()?;
        Ok(targets)
    }

    /// Every `promote_after` names another target of the same group, and the chain ends.
    fn check_promotions(&self) -> Result<(), ConfigError> {
        for t in &self.0 {
            let mut at = t;
            for _ in 0..=self.0.len() {
                let Some(p) = &at.promote_after else {
                    break;
                };
                let fail =
                    |why: String| ConfigError::new(VAR, format!("target {}: {why}", t.endpoint));
                let Some(before) = self.by_endpoint(&p.target) else {
                    return Err(fail(format!(
                        "promote_after names {}, which is no target",
                        p.target
                    )));
                };
                if before.model_package_group != t.model_package_group {
                    return Err(fail(format!(
                        "promote_after {} serves another group",
                        p.target
                    )));
                }
                if before.endpoint == t.endpoint {
                    return Err(fail(
                        "promote_after names the target itself, or a cycle leads back to it".into(),
                    ));
                }
                at = before;
            }
            if at.promote_after.is_some() {
                return Err(ConfigError::new(
                    VAR,
                    format!("target {}: promote_after goes round in a cycle", t.endpoint),
                ));
            }
        }
        Ok(())
    }

    /// The targets a group feeds (one, or a chain such as staging then production).
    pub fn by_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a DeploymentTarget> {
        self.0
            .iter()
            .filter(move |t| t.model_package_group == group)
    }

    pub fn by_endpoint(&self, endpoint: &str) -> Option<&DeploymentTarget> {
        self.0.iter().find(|t| t.endpoint == endpoint)
    }

    pub fn iter(&self) -> impl Iterator<Item = &DeploymentTarget> {
        self.0.iter()
    }

    /// The target and role of an alarm named in the configuration.
    pub fn by_alarm(&self, alarm: &str) -> Option<(&DeploymentTarget, AlarmRole<'_>)> {
        self.0
            .iter()
            .find_map(|t| t.alarm_role(alarm).map(|role| (t, role)))
    }
}

impl DeploymentTarget {
    /// Names the guardrails' alarms and lists them with the target's rollback and KPI alarms.
    fn manage_alarms(&mut self, prefix: Option<&str>) -> Result<(), ConfigError> {
        self.managed_alarm_prefix =
            prefix.map(|p| crate::guardrails::endpoint_prefix(p, &self.endpoint));
        let Some(g) = self.guardrails.clone() else {
            return Ok(());
        };
        let fail =
            |what: String| ConfigError::new(VAR, format!("target {}: {what}", self.endpoint));
        g.validate().map_err(fail)?;
        let prefix = prefix.ok_or_else(|| {
            ConfigError::new(
                "ALARM_NAME_PREFIX",
                format!(
                    "is not set, and target {} declares guardrails: their alarms are named under it, so the alarm responder hears them",
                    self.endpoint
                ),
            )
        })?;
        for (role, spec) in g.alarms(prefix, &self.endpoint, &self.variant) {
            match role {
                Role::Rollback if !self.rollback_alarms.contains(&spec.name) => {
                    self.rollback_alarms.push(spec.name.clone())
                }
                Role::Kpi if !self.kpi_alarms.iter().any(|k| k.alarm == spec.name) => {
                    let k = g.kpi.as_ref().expect("a KPI alarm comes from a KPI bound");
                    self.kpi_alarms.push(KpiAlarm {
                        alarm: spec.name.clone(),
                        min_samples: k.min_samples,
                        samples: g
                            .kpi_samples(&self.endpoint, &self.variant)
                            .expect("a KPI bound has samples"),
                        window_minutes: k.window_minutes,
                    });
                }
                _ => {}
            }
            self.managed_alarms.push(spec);
        }
        Ok(())
    }

    /// Every alarm the target listens to: rollback, scale-up and KPI.
    fn alarm_names(&self) -> impl Iterator<Item = &String> {
        self.rollback_alarms
            .iter()
            .chain(&self.scale_up_alarms)
            .chain(self.kpi_alarms.iter().map(|k| &k.alarm))
    }

    pub fn alarm_role(&self, alarm: &str) -> Option<AlarmRole<'_>> {
        if let Some(k) = self.kpi_alarms.iter().find(|k| k.alarm == alarm) {
            return Some(AlarmRole::Kpi(k));
        }
        if self.scale_up_alarms.iter().any(|a| a == alarm) {
            return Some(AlarmRole::ScaleUp);
        }
        self.rollback_alarms
            .iter()
            .any(|a| a == alarm)
            .then_some(AlarmRole::Rollback)
    }

    /// The instance count a scale-up raises the variant to.
    pub fn scale_up_floor(&self, env: Environment) -> i32 {
        let least = if env.is_production() { 2 } else { 1 };
        self.scale_up_floor.unwrap_or(least).max(least)
    }

    /// The production variant a canary's candidate runs in, beside `variant`.
    pub fn canary_variant(&self) -> String {
        format!("{}-canary", self.variant)
    }

    fn validate(&self, env: Environment) -> Result<(), ConfigError> {
        self.check_placement(env)
            .and_then(|()| self.check_rollout())
            .and_then(|()| self.check_alarms_and_gates(env))
            .and_then(|()| self.check_kpi_gate())
            .and_then(|()| self.check_capacity(env))
            .and_then(|()| self.smoke_test.as_ref().map_or(Ok(()), |t| t.validate()))
            .and_then(|()| match &self.promote_after {
                Some(p) if !(0..=10080).contains(&p.soak_minutes) => Err(format!(
                    "promote_after soak_minutes is {}, expected 0..=10080",
                    p.soak_minutes
                )),
                _ => Ok(()),
            })
            .map_err(|what| ConfigError::new(VAR, format!("target {}: {what}", self.endpoint)))
    }

    fn check_capacity(&self, env: Environment) -> Result<(), String> {
        let Some(c) = &self.capacity else {
            return Ok(());
        };
        c.validate(env)?;
        // The responder raises the floor on a capacity alarm; a lower declared min would have
        // the deployer take it back down on its next reconcile.
        match self.scale_up_floor {
            Some(f) if f > c.min => Err(format!(
                "capacity min {} is below scale_up_floor {f}: the deployer would undo every scale-up",
                c.min
            )),
            _ => Ok(()),
        }
    }

    fn check_kpi_gate(&self) -> Result<(), String> {
        let Some(g) = &self.kpi_gate else {
            return Ok(());
        };
        g.validate()?;
        if !is_sagemaker_name(&self.canary_variant()) {
            return Err(format!(
                "the canary's variant {} is longer than SageMaker's 63 characters: shorten variant",
                self.canary_variant()
            ));
        }
        Ok(())
    }

    /// Names, instance type and count.
    fn check_placement(&self, env: Environment) -> Result<(), String> {
        if !is_sagemaker_name(&self.endpoint) {
            return Err("endpoint must be 1-63 letters, digits or hyphens".into());
        }
        if !is_sagemaker_name(&self.variant) {
            return Err("variant must be 1-63 letters, digits or hyphens".into());
        }
        if self.model_package_group.is_empty() {
            return Err("model_package_group is empty".into());
        }
        if !self.instance_type.starts_with("ml.") {
            return Err(format!(
                "instance_type {:?} is not a SageMaker instance type (ml.*)",
                self.instance_type
            ));
        }
        let floor = if env.is_production() { 2 } else { 1 };
        if self.instance_count < floor {
            return Err(format!(
                "instance_count is {}, expected at least {floor} in {env:?}",
                self.instance_count
            ));
        }
        Ok(())
    }

    /// SageMaker's bounds on the blue/green deployment config.
    fn check_rollout(&self) -> Result<(), String> {
        let within = |name: &str, v: i32, lo: i32, hi: i32| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} is {v}, expected {lo}..={hi}"))
            }
        };
        if !(1..=10).contains(&self.rollback_alarms.len()) {
            return Err(format!(
                "rollback_alarms has {} alarms, expected 1 to 10",
                self.rollback_alarms.len()
            ));
        }
        within("bake_seconds", self.bake_seconds, 0, 3600)?;
        within("timeout_seconds", self.timeout_seconds, 600, 28800)?;
        match self.strategy {
            TrafficStrategy::AllAtOnce => Ok(()),
            TrafficStrategy::Canary {
                percent,
                wait_seconds,
            } => within("canary percent", percent, 1, 50)
                .and_then(|()| within("canary wait_seconds", wait_seconds, 0, 3600)),
            TrafficStrategy::Linear {
                step_percent,
                wait_seconds,
            } => within("linear step_percent", step_percent, 10, 50)
                .and_then(|()| within("linear wait_seconds", wait_seconds, 0, 3600)),
        }
    }

    /// Gates need a bound; each alarm has one meaning; KPI windows and the scale-up floor.
    fn check_alarms_and_gates(&self, env: Environment) -> Result<(), String> {
        if let Some(g) = self
            .gates
            .iter()
            .find(|g| g.min.is_none() && g.max.is_none())
        {
            return Err(format!("gate {} has neither min nor max", g.metric));
        }
        let mut alarms = HashSet::new();
        for alarm in self.alarm_names() {
            if alarm.trim().is_empty() {
                return Err("an alarm name is empty".into());
            }
            // One alarm, one meaning: "roll back" and "scale up" must not race for the same alarm.
            if !alarms.insert(alarm) {
                return Err(format!("alarm {alarm} is listed twice"));
            }
        }
        for k in &self.kpi_alarms {
            if k.min_samples.is_nan() || k.min_samples < 0.0 {
                return Err(format!("kpi alarm {}: min_samples must be >= 0", k.alarm));
            }
            if !(1..=1440).contains(&k.window_minutes) {
                return Err(format!(
                    "kpi alarm {}: window_minutes is {}, expected 1..=1440",
                    k.alarm, k.window_minutes
                ));
            }
        }
        if !(1..=10080).contains(&self.max_alarm_hold_minutes) {
            return Err(format!(
                "max_alarm_hold_minutes is {}, expected 1..=10080",
                self.max_alarm_hold_minutes
            ));
        }
        if !(0..=1440).contains(&self.recovery_minutes) {
            return Err(format!(
                "recovery_minutes is {}, expected 0..=1440",
                self.recovery_minutes
            ));
        }
        if !(1..=365).contains(&self.auto_rollback_days) {
            return Err(format!(
                "auto_rollback_days is {}, expected 1..=365",
                self.auto_rollback_days
            ));
        }
        let least = if env.is_production() { 2 } else { 1 };
        match self.scale_up_floor {
            Some(f) if !(least..=100).contains(&f) => Err(format!(
                "scale_up_floor is {f}, expected {least}..=100 in {env:?}"
            )),
            _ => Ok(()),
        }
    }
}

/// The deployer may write only endpoints, configs and models whose names start with the stack's
/// ManagedNamePrefix (as SageMaker writes them in ARNs, lower-case): a target outside it would
/// fail at its first deployment, so it fails the cold start instead.
fn check_managed_prefix(targets: &Targets, prefix: &str) -> Result<(), ConfigError> {
    match targets
        .iter()
        .find(|t| !t.endpoint.to_ascii_lowercase().starts_with(prefix))
    {
        Some(t) => Err(ConfigError::new(
            VAR,
            format!(
                "target {} does not start with MANAGED_NAME_PREFIX {prefix:?}: the functions may not change it",
                t.endpoint
            ),
        )),
        None => Ok(()),
    }
}

/// SageMaker resource names: `^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}`.
pub fn is_sagemaker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
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
        let targets = Targets::from_source(src, environment)?;
        if let Some(prefix) = src.get("MANAGED_NAME_PREFIX").filter(|p| !p.is_empty()) {
            check_managed_prefix(&targets, &prefix)?;
        }
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

    fn target(extra: &str) -> String {
        format!(
            r#"[{{"model_package_group":"recs","endpoint":"recs-prod","instance_type":"ml.m5.xlarge",
               "instance_count":2,"rollback_alarms":["recs-5xx"]{extra}}}]"#
        )
    }

    #[test]
    fn a_minimal_target_gets_safe_defaults() {
        let t = Targets::parse(&target(""), Environment::Production).unwrap();
        let t = &t.0[0];
        assert_eq!(t.variant, "AllTraffic");
        assert_eq!(t.strategy, TrafficStrategy::AllAtOnce);
        assert_eq!((t.bake_seconds, t.timeout_seconds), (300, 3600));
    }

    #[test]
    fn strategies_parse_by_type() {
        let t = Targets::parse(
            &target(r#","strategy":{"type":"linear","step_percent":25,"wait_seconds":60}"#),
            Environment::Staging,
        )
        .unwrap();
        assert_eq!(
            t.0[0].strategy,
            TrafficStrategy::Linear {
                step_percent: 25,
                wait_seconds: 60
            }
        );
    }

    #[test]
    fn values_outside_sagemaker_bounds_fail_with_the_variable_named() {
        for (extra, needle) in [
            (
                r#","strategy":{"type":"linear","step_percent":5,"wait_seconds":60}"#,
                "step_percent is 5",
            ),
            (
                r#","strategy":{"type":"canary","percent":60,"wait_seconds":60}"#,
                "canary percent is 60",
            ),
            (r#","bake_seconds":4000"#, "bake_seconds is 4000"),
            (r#","timeout_seconds":60"#, "timeout_seconds is 60"),
            (r#","gates":[{"metric":"loss"}]"#, "neither min nor max"),
            (r#","colour":"blue""#, "unknown field"),
        ] {
            let err = Targets::parse(&target(extra), Environment::Production).unwrap_err();
            assert_eq!(err.var, "DEPLOY_TARGETS");
            assert!(err.problem.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn production_needs_two_instances_and_rollback_alarms() {
        let one = target("").replace("\"instance_count\":2", "\"instance_count\":1");
        assert!(
            Targets::parse(&one, Environment::Production)
                .unwrap_err()
                .problem
                .contains("at least 2")
        );
        assert!(Targets::parse(&one, Environment::Development).is_ok());
        let none = target("").replace(r#"["recs-5xx"]"#, "[]");
        assert!(
            Targets::parse(&none, Environment::Development)
                .unwrap_err()
                .problem
                .contains("1 to 10")
        );
    }

    #[test]
    fn a_group_feeds_a_chain_of_targets_that_promote_after_one_another() {
        let one = target("");
        let body = &one[1..one.len() - 1];
        let staged = body
            .replace("recs-prod", "recs-staging")
            .replace("recs-5xx", "recs-staging-5xx");
        let after = |to: &str| {
            body.replacen(
                "{",
                &format!(r#"{{"promote_after": {{"target": "{to}", "soak_minutes": 60}},"#),
                1,
            )
        };
        let chain = format!("[{staged},{}]", after("recs-staging"));
        let t = Targets::parse(&chain, Environment::Production).unwrap();
        assert_eq!(t.by_group("recs").count(), 2);
        // The order they are listed in does not matter.
        let reversed = format!("[{},{staged}]", after("recs-staging"));
        assert!(Targets::parse(&reversed, Environment::Production).is_ok());
        // A staging block copied with production's alarm would route that alarm to one of them.
        let copied = body.replace("recs-prod", "recs-staging");
        for (bad, why) in [
            (format!("[{staged},{}]", after("nowhere")), "no target"),
            (format!("[{}]", after("recs-prod")), "itself"),
            (
                format!("[{copied},{}]", after("recs-staging")),
                "alarm recs-5xx is listed by targets recs-staging and recs-prod",
            ),
        ] {
            let err = Targets::parse(&bad, Environment::Production).unwrap_err();
            assert!(err.problem.contains(why), "{err}");
        }
    }

    #[test]
    fn duplicate_groups_are_refused() {
        let one = target("");
        let two = format!(
            "[{},{}]",
            &one[1..one.len() - 1],
            &one[1..one.len() - 1].replace("recs-prod", "recs-b")
        );
        assert!(
            Targets::parse(&two, Environment::Staging)
                .unwrap_err()
                .problem
                .contains("listed twice")
        );
    }

    #[test]
    fn alarms_have_one_role_each() {
        let t = Targets::parse(
            &target(
                r#","scale_up_alarms":["recs-503"],"kpi_alarms":[{"alarm":"recs-ctr","min_samples":1000,
                   "samples":{"namespace":"Recs","metric":"Impressions"}}]"#,
            ),
            Environment::Production,
        )
        .unwrap();
        assert_eq!(
            t.by_alarm("recs-5xx").map(|(_, r)| r),
            Some(AlarmRole::Rollback)
        );
        assert_eq!(
            t.by_alarm("recs-503").map(|(_, r)| r),
            Some(AlarmRole::ScaleUp)
        );
        assert!(matches!(
            t.by_alarm("recs-ctr"),
            Some((_, AlarmRole::Kpi(k))) if k.samples.stat == "Sum" && k.window_minutes == 60
        ));
        assert!(t.by_alarm("other").is_none());
        assert_eq!(t.0[0].scale_up_floor(Environment::Production), 2);

        let twice = target(r#","scale_up_alarms":["recs-5xx"]"#);
        let err = Targets::parse(&twice, Environment::Production).unwrap_err();
        assert!(err.problem.contains("listed twice"), "{err}");
        let low = target(r#","scale_up_floor":1"#);
        let err = Targets::parse(&low, Environment::Production).unwrap_err();
        assert!(err.problem.contains("scale_up_floor is 1"), "{err}");
    }

    #[test]
    fn endpoint_names_follow_sagemaker_rules() {
        assert!(is_sagemaker_name("recs-prod-1"));
        assert!(!is_sagemaker_name("recs_prod"));
        assert!(!is_sagemaker_name("-recs"));
        assert!(!is_sagemaker_name(&"a".repeat(64)));
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
