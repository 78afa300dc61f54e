//! Capacity as code (seed 002: scale with the traffic and by business hours; seed 000: never to
//! zero, never in too fast): a target's autoscaling bounds, its target-tracking policy and its
//! scheduled actions, as the target declares them. The deployer registers them and puts back
//! what a person changed by hand.

use serde::{Deserialize, Serialize};

use crate::config::Environment;
use crate::scaling::{Snapshot, TrackingPolicy};

/// What Application Auto Scaling lets a target-tracking policy on a SageMaker variant follow.
const METRIC: &str = "SageMakerVariantInvocationsPerInstance";
/// The suite's target-tracking policy on a target's variant.
pub const POLICY: &str = "lifecycle-invocations-per-instance";
/// The suite's scheduled actions are named `lifecycle-<schedule>`; others are left alone.
pub const SCHEDULE_PREFIX: &str = "lifecycle-";

/// A variant's autoscaling as it is now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityNow {
    pub scaling: Option<Snapshot>,
    /// Its scheduled actions named under [`SCHEDULE_PREFIX`].
    pub schedules: Vec<LiveSchedule>,
}

/// A target's capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    pub min: i32,
    pub max: i32,
    /// Invocations per instance per minute the policy holds the variant at.
    pub target_invocations: f64,
    #[serde(default = "default_scale_in")]
    pub scale_in_cooldown: i32,
    #[serde(default = "default_scale_out")]
    pub scale_out_cooldown: i32,
    /// Business hours: each schedule sets other bounds from when it fires.
    #[serde(default)]
    pub schedules: Vec<Schedule>,
}

fn default_scale_in() -> i32 {
    600
}
fn default_scale_out() -> i32 {
    60
}

/// A scheduled action: from `cron` (in `timezone`), the bounds are `min`..`max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub name: String,
    /// Application Auto Scaling's `cron(minutes hours day-of-month month day-of-week year)`.
    pub cron: String,
    /// An IANA zone (`Asia/Tokyo`); Application Auto Scaling applies daylight saving in it.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    pub min: i32,
    pub max: i32,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// A scheduled action as Application Auto Scaling has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSchedule {
    pub name: String,
    pub schedule: String,
    pub timezone: Option<String>,
    pub min: Option<i32>,
    pub max: Option<i32>,
}

impl Capacity {
    /// Refused at start-up, with the reason: what would let a user-facing endpoint go to zero,
    /// run on one instance in production, or scale in between two bursts of traffic.
    pub fn validate(&self, env: Environment) -> Result<(), String> {
        let floor = if env == Environment::Production { 2 } else { 1 };
        let bounds = std::iter::once(("capacity", self.min, self.max)).chain(
            self.schedules
                .iter()
                .map(|s| (s.name.as_str(), s.min, s.max)),
        );
        for (what, min, max) in bounds {
            if min < floor {
                return Err(format!(
                    "{what}: min {min} is below {floor} (a standard endpoint never scales to zero; production keeps 2 for availability)"
                ));
            }
            if min > max {
                return Err(format!("{what}: min {min} is above max {max}"));
            }
        }
        if self.scale_in_cooldown < 300 {
            return Err(format!(
                "capacity: scale_in_cooldown {} s is under 300 s: autoscaling would remove instances between two bursts",
                self.scale_in_cooldown
            ));
        }
        if !(self.target_invocations.is_finite() && self.target_invocations > 0.0) {
            return Err("capacity: target_invocations must be above 0".into());
        }
        if !(0..=3600).contains(&self.scale_out_cooldown) {
            return Err("capacity: scale_out_cooldown must be 0..=3600 s".into());
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.schedules {
            // Two schedules of one name would overwrite each other on every reconcile.
            if !names.insert(&s.name) {
                return Err(format!("schedule {} is listed twice", s.name));
            }
            parse_cron(&s.cron).map_err(|e| format!("schedule {}: {e}", s.name))?;
            check_timezone(&s.timezone).map_err(|e| format!("schedule {}: {e}", s.name))?;
            if !crate::targets::is_sagemaker_name(&s.name) {
                return Err(format!(
                    "schedule {:?}: letters, digits and hyphens only",
                    s.name
                ));
            }
        }
        Ok(())
    }

    /// The bounds and policy the variant `resource_id` must have.
    pub fn desired(&self, resource_id: &str, policy: &str) -> Snapshot {
        Snapshot {
            resource_id: resource_id.to_string(),
            min: self.min,
            max: self.max,
            policies: vec![TrackingPolicy {
                name: policy.to_string(),
                target_value: self.target_invocations,
                predefined_metric: METRIC.to_string(),
                scale_in_cooldown: Some(self.scale_in_cooldown),
                scale_out_cooldown: Some(self.scale_out_cooldown),
                disable_scale_in: None,
            }],
            unsupported: vec![],
        }
    }

    /// Live bounds brought inside what some declared bound allows: each of min and max within
    /// the lowest and highest the capacity and its schedules declare (so never under the
    /// production floor start-up checked). Bounds a schedule set are inside already and kept;
    /// a hand change no schedule explains (min 0 at 3 a.m., max 50) is not. No time-zone maths:
    /// which schedule is in force is Application Auto Scaling's to apply, daylight saving too.
    pub fn within_declared(&self, min: i32, max: i32) -> (i32, i32) {
        let mins = self.schedules.iter().map(|s| s.min).chain([self.min]);
        let maxes = self.schedules.iter().map(|s| s.max).chain([self.max]);
        let (min_lo, min_hi) = (mins.clone().min().unwrap(), mins.max().unwrap());
        let (max_lo, max_hi) = (maxes.clone().min().unwrap(), maxes.max().unwrap());
        let min = min.clamp(min_lo, min_hi);
        (min, max.clamp(max_lo, max_hi).max(min))
    }

    /// Each schedule as Application Auto Scaling names and keeps it.
    pub fn desired_schedules(&self, prefix: &str) -> Vec<LiveSchedule> {
        self.schedules
            .iter()
            .map(|s| LiveSchedule {
                name: format!("{prefix}{}", s.name),
                schedule: s.cron.clone(),
                timezone: Some(s.timezone.clone()),
                min: Some(s.min),
                max: Some(s.max),
            })
            .collect()
    }
}

/// What differs between the declared capacity and the variant's, in words ("min 2 -> 4"); empty
/// when they agree. Bounds are compared only when no schedule is declared: a schedule moves them
/// by design, and is itself compared.
pub fn differences(
    declared: &Snapshot,
    schedules: &[LiveSchedule],
    live: Option<&Snapshot>,
    live_schedules: &[LiveSchedule],
) -> Vec<String> {
    let Some(live) = live else {
        return vec![format!(
            "{} is not registered for autoscaling",
            declared.resource_id
        )];
    };
    let mut out = vec![];
    if schedules.is_empty() && (live.min, live.max) != (declared.min, declared.max) {
        out.push(format!(
            "bounds {}-{} -> {}-{}",
            live.min, live.max, declared.min, declared.max
        ));
    }
    for want in &declared.policies {
        match live.policies.iter().find(|p| p.name == want.name) {
            None => out.push(format!("policy {} missing", want.name)),
            Some(p) if !same_policy(p, want) => out.push(format!(
                "policy {}: target {} -> {}, scale-in cooldown {:?} -> {:?}, scale-out cooldown {:?} -> {:?}",
                want.name,
                p.target_value,
                want.target_value,
                p.scale_in_cooldown,
                want.scale_in_cooldown,
                p.scale_out_cooldown,
                want.scale_out_cooldown
            )),
            Some(_) => {}
        }
    }
    for want in schedules {
        match live_schedules.iter().find(|s| s.name == want.name) {
            None => out.push(format!("schedule {} missing", want.name)),
            Some(s) if s != want => out.push(format!(
                "schedule {}: {} {:?} {:?}-{:?} -> {} {:?} {:?}-{:?}",
                want.name,
                s.schedule,
                s.timezone,
                s.min,
                s.max,
                want.schedule,
                want.timezone,
                want.min,
                want.max
            )),
            Some(_) => {}
        }
    }
    out
}

/// Application Auto Scaling may answer `DisableScaleIn: false` for a policy put without it.
fn same_policy(live: &TrackingPolicy, want: &TrackingPolicy) -> bool {
    let scale_in = |p: &TrackingPolicy| p.disable_scale_in.unwrap_or(false);
    TrackingPolicy {
        disable_scale_in: want.disable_scale_in,
        ..live.clone()
    } == *want
        && scale_in(live) == scale_in(want)
}

/// Checks `cron(m h dom mon dow year)` as Application Auto Scaling reads it: six fields, one of
/// day-of-month and day-of-week a `?`, each field of the values and wildcards it allows.
pub fn parse_cron(expr: &str) -> Result<[String; 6], String> {
    const MONTHS: &[&str] = &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ];
    const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let inner = expr
        .strip_prefix("cron(")
        .and_then(|r| r.strip_suffix(')'))
        .ok_or(format!("{expr:?} is not cron(...)"))?;
    let fields: Vec<&str> = inner.split_whitespace().collect();
    let [m, h, dom, mon, dow, year] = fields[..] else {
        return Err(format!(
            "{expr:?} has {} fields, expected 6 (minutes hours day-of-month month day-of-week year)",
            fields.len()
        ));
    };
    if (dom == "?") == (dow == "?") {
        return Err(format!(
            "{expr:?}: exactly one of day-of-month and day-of-week must be ?"
        ));
    }
    let fields = [
        (Field::new("minutes", 0, 59), m),
        (Field::new("hours", 0, 23), h),
        (Field::new("day-of-month", 1, 31), dom),
        (
            Field {
                names: MONTHS,
                ..Field::new("month", 1, 12)
            },
            mon,
        ),
        (
            Field {
                names: DAYS,
                ..Field::new("day-of-week", 1, 7)
            },
            dow,
        ),
        (Field::new("year", 1970, 2199), year),
    ];
    for (f, value) in fields {
        f.check(value)?;
    }
    Ok([m, h, dom, mon, dow, year].map(str::to_string))
}

/// Digits only (`u32::from_str` also takes a leading `+`, which AAS does not).
fn number(v: &str) -> Option<u32> {
    v.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| v.parse().ok())
        .flatten()
}

/// One field of a cron expression: its range and the names it may use instead of numbers.
struct Field {
    what: &'static str,
    lo: u32,
    hi: u32,
    names: &'static [&'static str],
}

impl Field {
    fn new(what: &'static str, lo: u32, hi: u32) -> Self {
        Self {
            what,
            lo,
            hi,
            names: &[],
        }
    }

    fn value(&self, v: &str) -> bool {
        match number(v) {
            Some(n) => (self.lo..=self.hi).contains(&n),
            None => self.names.contains(&v.to_ascii_uppercase().as_str()),
        }
    }

    /// The wildcards only the day fields have: `L` (last), `15W` and `LW` (nearest weekday),
    /// `6L` (last Friday), `6#3` (third Friday).
    fn special(&self, item: &str) -> bool {
        let item = item.to_ascii_uppercase();
        let item = item.as_str();
        match self.what {
            "day-of-month" => {
                item == "L" || item == "LW" || item.strip_suffix('W').is_some_and(|d| self.value(d))
            }
            "day-of-week" => {
                item == "L"
                    || item.strip_suffix('L').is_some_and(|d| self.value(d))
                    || item.split_once('#').is_some_and(|(d, n)| {
                        self.value(d) && matches!(n, "1" | "2" | "3" | "4" | "5")
                    })
            }
            _ => false,
        }
    }

    /// `*`, `?` (day fields), or a list of values, ranges `a-b` and steps `*/n` `a/n` `a-b/n`.
    fn check(&self, field: &str) -> Result<(), String> {
        let day = matches!(self.what, "day-of-month" | "day-of-week");
        if field == "*" || (field == "?" && day) {
            return Ok(());
        }
        let item_ok = |item: &str| {
            let (range, step) = match item.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (item, None),
            };
            let step_ok =
                step.is_none_or(|s| number(s).is_some_and(|s| (1..=self.hi).contains(&s)));
            let range_ok = match range.split_once('-') {
                _ if range == "*" => step.is_some(),
                Some((a, b)) => self.value(a) && self.value(b),
                None => self.value(range) || (step.is_none() && self.special(range)),
            };
            step_ok && range_ok
        };
        if field.split(',').all(item_ok) {
            return Ok(());
        }
        let names = if self.names.is_empty() {
            ""
        } else {
            " or names"
        };
        Err(format!(
            "{} {field:?} is not a cron field of {}..={}{names}",
            self.what, self.lo, self.hi
        ))
    }
}

/// An IANA zone name: `UTC`, or `Area/Location` in letters, digits, `_`, `-`, `+`. Whether the
/// zone exists is Application Auto Scaling's to say (it refuses an unknown one at the first
/// reconcile, loudly); this catches the typos a start-up can.
fn check_timezone(tz: &str) -> Result<(), String> {
    let word = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-+".contains(c))
    };
    let ok = tz == "UTC"
        || (tz.contains('/')
            && tz.split('/').all(word)
            && tz.starts_with(|c: char| c.is_ascii_uppercase()));
    ok.then_some(()).ok_or(format!(
        "timezone {tz:?} is not an IANA zone name (e.g. Asia/Tokyo)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capacity(extra: serde_json::Value) -> Capacity {
        let mut v = serde_json::json!({"min": 2, "max": 10, "target_invocations": 70.0});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn what_could_take_a_user_facing_endpoint_down_is_refused() {
        use serde_json::json;
        let prod = Environment::Production;
        let cases = [
            (json!({}), None),
            (json!({"min": 0}), Some("never scales to zero")),
            (json!({"min": 1}), Some("below 2")),
            (json!({"min": 11}), Some("above max")),
            (json!({"scale_in_cooldown": 120}), Some("under 300")),
            (json!({"target_invocations": 0.0}), Some("above 0")),
            (
                json!({"schedules": [{"name": "night", "cron": "cron(0 20 * * ? *)", "min": 1, "max": 4}]}),
                Some("below 2"),
            ),
            (
                json!({"schedules": [{"name": "day", "cron": "cron(0 8 * *)", "min": 2, "max": 10}]}),
                Some("expected 6"),
            ),
            (
                json!({"schedules": [{"name": "day", "cron": "cron(0 25 ? * MON-FRI *)", "min": 2, "max": 10}]}),
                Some("hours"),
            ),
            (
                json!({"schedules": [{"name": "day", "cron": "cron(0 8 * * MON-FRI *)", "min": 2, "max": 10}]}),
                Some("exactly one"),
            ),
            (
                json!({"schedules": [{"name": "day", "cron": "cron(0 8 ? * MON-FRI *)", "timezone": "Tokyo", "min": 2, "max": 10}]}),
                Some("IANA"),
            ),
            (
                json!({"schedules": [{"name": "day", "cron": "cron(0 8 ? * MON-FRI *)", "timezone": "Asia/Tokyo", "min": 2, "max": 10}]}),
                None,
            ),
        ];
        for (extra, refused) in cases {
            let got = capacity(extra.clone()).validate(prod);
            match refused {
                None => assert!(got.is_ok(), "{extra}: {got:?}"),
                Some(why) => assert!(
                    got.as_ref().is_err_and(|e| e.contains(why)),
                    "{extra}: {got:?}"
                ),
            }
        }
        // One instance is fine off production; zero never is.
        assert!(
            capacity(json!({"min": 1}))
                .validate(Environment::Staging)
                .is_ok()
        );
        assert!(
            capacity(json!({"min": 0}))
                .validate(Environment::Staging)
                .is_err()
        );
    }

    #[test]
    fn cron_fields_take_what_application_auto_scaling_takes() {
        let ok = [
            "cron(0 8 ? * MON-FRI *)",
            "cron(*/15 8-20 ? * 2-6 *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 LW * ? *)",
            "cron(0 9 15W * ? *)",
            "cron(0 18 ? * 6L *)",
            "cron(0 9 ? * 2#1 2027)",
            "cron(30 7 1,15 JAN,JUL ? 2026-2030)",
            "cron(0 0 lw * ? *)",
            "cron(0 0/6 ? * * *)",
        ];
        for expr in ok {
            assert!(parse_cron(expr).is_ok(), "{expr}: {:?}", parse_cron(expr));
        }
        let refused = [
            ("cron(? 8 ? * MON *)", "minutes"),
            ("cron(0 8 ? MON * *)", "month"),
            ("cron(0 MON ? * * *)", "hours"),
            ("cron(*/90 8 ? * * *)", "minutes"),
            ("cron(0/0 8 ? * * *)", "minutes"),
            ("cron(0 8 ? * 8 *)", "day-of-week"),
            ("cron(0 8 ? * 2#6 *)", "day-of-week"),
            ("cron(0 8 32W * ? *)", "day-of-month"),
            ("cron(0 8 L/2 * ? *)", "day-of-month"),
            ("cron(0 8 ? * MON 1969)", "year"),
            ("cron(0 8,* ? * MON *)", "hours"),
            ("cron(+5 8 ? * MON *)", "minutes"),
        ];
        for (expr, field) in refused {
            let err = parse_cron(expr).unwrap_err();
            assert!(err.starts_with(field), "{expr}: {err}");
        }
    }

    #[test]
    fn live_bounds_are_kept_inside_what_the_schedules_declare() {
        let c = capacity(serde_json::json!({"min": 3, "max": 10, "schedules": [
            {"name": "business-hours", "cron": "cron(0 8 ? * MON-FRI *)", "timezone": "Asia/Tokyo", "min": 3, "max": 10},
            {"name": "evenings", "cron": "cron(0 20 ? * * *)", "timezone": "Asia/Tokyo", "min": 2, "max": 4},
        ]}));
        for (live, kept) in [
            ((3, 10), (3, 10)), // business hours
            ((2, 4), (2, 4)),   // evenings
            ((3, 4), (3, 4)),   // a mix two schedules can leave
            ((0, 4), (2, 4)),   // scaled to zero by hand: the lowest declared min
            ((1, 50), (2, 10)), // both out
            ((9, 3), (3, 4)),   // min above every declared min, max under every declared max
        ] {
            assert_eq!(c.within_declared(live.0, live.1), kept, "{live:?}");
        }
    }

    #[test]
    fn a_schedule_name_is_declared_once() {
        let day = serde_json::json!({"name": "day", "cron": "cron(0 8 ? * MON-FRI *)", "min": 2, "max": 10});
        let c = capacity(serde_json::json!({"schedules": [day.clone(), day]}));
        let err = c.validate(Environment::Production).unwrap_err();
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn a_policy_without_disable_scale_in_agrees_with_an_explicit_false() {
        let want = capacity(serde_json::json!({})).desired("r", "p");
        let mut live = want.clone();
        live.policies[0].disable_scale_in = Some(false);
        assert!(differences(&want, &[], Some(&live), &[]).is_empty());
        live.policies[0].disable_scale_in = Some(true);
        assert_eq!(differences(&want, &[], Some(&live), &[]).len(), 1);
    }

    #[test]
    fn a_hand_change_is_named_with_its_before_and_after() {
        let c = capacity(serde_json::json!({}));
        let want = c.desired("endpoint/e/variant/AllTraffic", "lifecycle-tracking");
        assert!(differences(&want, &[], Some(&want), &[]).is_empty());
        let mut live = want.clone();
        live.min = 1;
        live.policies[0].scale_in_cooldown = Some(60);
        let diff = differences(&want, &[], Some(&live), &[]);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].contains("1-10 -> 2-10"), "{diff:?}");
        assert!(diff[1].contains("Some(60) -> Some(600)"), "{diff:?}");
        assert_eq!(differences(&want, &[], None, &[]).len(), 1);
    }

    #[test]
    fn schedules_own_the_bounds_and_are_compared_themselves() {
        let c = capacity(serde_json::json!({"schedules": [
            {"name": "business-hours", "cron": "cron(0 8 ? * MON-FRI *)", "timezone": "Asia/Tokyo", "min": 2, "max": 10},
            {"name": "evenings", "cron": "cron(0 20 ? * * *)", "timezone": "Asia/Tokyo", "min": 2, "max": 4}
        ]}));
        let want = c.desired("r", "p");
        let schedules = c.desired_schedules("lifecycle-");
        let mut live = want.clone();
        live.max = 4; // the evening schedule ran
        let mut live_schedules = schedules.clone();
        assert!(differences(&want, &schedules, Some(&live), &live_schedules).is_empty());
        live_schedules[1].max = Some(2);
        live_schedules.remove(0);
        let diff = differences(&want, &schedules, Some(&live), &live_schedules);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].contains("lifecycle-business-hours missing"));
    }
}
