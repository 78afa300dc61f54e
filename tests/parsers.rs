//! No input panics: every event and time parser answers any string and any JSON with a value or
//! an error. Property tests: arbitrary strings, arbitrary JSON, and the realistic events of
//! `events/` with one field replaced by something arbitrary (which reaches the deep fields random
//! JSON never does). No local AWS needed.

use aws_sdk_dynamodb::types::AttributeValue;
use integration::event_file;
use lifecycle::events::{self, AlarmStateChange, Schedule};
use model_deployer::Trigger;
use proptest::prelude::*;
use serde_json::{Value, json};

const EVENTS: &[&str] = &[
    "alarm-5xx.json",
    "alarm-5xx-muted.json",
    "alarm-action-5xx.json",
    "alarm-composite-suppressed.json",
    "alarm-ctr-kpi.json",
    "alarm-ctr-ok.json",
    "alarm-latency-anomaly.json",
    "alarm-model-monitor-drift.json",
    "alarm-no-capacity-scale-up.json",
    "deployer-tick.json",
    "drift-scanner-schedule.json",
    "endpoint-in-service.json",
    "endpoint-sweeper-schedule.json",
    "malformed-alarm-event.json",
    "malformed-model-package-event.json",
    "model-package-approved-unknown-group.json",
    "model-package-approved.json",
    "model-package-rejected.json",
    "training-job-completed.json",
    "training-job-failed.json",
];

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        // Strings that look almost like times.
        "[0-9T:+Z.é-]{0,32}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z-]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer of a value, leaves and branches.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pointers(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// A realistic event with the value at one of its pointers replaced.
fn mutated_event() -> impl Strategy<Value = Value> {
    (
        0..EVENTS.len(),
        any::<prop::sample::Index>(),
        arbitrary_json(),
    )
        .prop_map(|(file, which, replacement)| {
            let mut event = event_file(EVENTS[file]);
            let mut all = vec![];
            pointers(&event, String::new(), &mut all);
            let at = which.get(&all).clone();
            match event.pointer_mut(&at) {
                Some(slot) if !at.is_empty() => *slot = replacement,
                _ => event = replacement,
            }
            event
        })
}

/// Every parser of an event the suite can receive.
fn parse_every_way(event: &Value) {
    let _ = Trigger::parse(event);
    let _ = alarm_responder::parse(event);
    let _ = Schedule::parse(event);
    if let Ok(env) = events::envelope(event) {
        let _ = AlarmStateChange::parse(&env.detail);
        let _ = drift_scanner::finished::job_name(&env);
    }
    let _ = AlarmStateChange::parse(event);
    let _ = AlarmStateChange::from_alarm_action(event);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_string_panics_a_time_parser(s in any::<String>(), t in "[0-9T:+Z.é-]{0,32}") {
        for s in [&s, &t] {
            let _ = events::parse_time(s);
            let _ = drift_scanner::dates::parse_cutoff(s);
            let _ = drift_scanner::dates::parse_created(&AttributeValue::S(s.clone()));
            let _ = drift_scanner::dates::parse_created(&AttributeValue::N(s.clone()));
        }
    }

    #[test]
    fn no_number_panics_the_creation_date_parser(f in any::<f64>(), n in any::<i64>()) {
        let _ = drift_scanner::dates::parse_created(&AttributeValue::N(f.to_string()));
        let _ = drift_scanner::dates::parse_created(&AttributeValue::N(format!("{f:e}")));
        let _ = drift_scanner::dates::parse_created(&AttributeValue::N(n.to_string()));
    }

    #[test]
    fn no_json_panics_an_event_parser(event in arbitrary_json()) {
        parse_every_way(&event);
    }

    #[test]
    fn no_realistic_event_with_one_field_changed_panics_a_parser(event in mutated_event()) {
        parse_every_way(&event);
    }
}

#[test]
fn the_inputs_that_used_to_panic_are_errors() {
    // A multi-byte character where the offset would be sliced.
    assert!(events::parse_time("2026-03-01T06:00:00+0€").is_err());
    assert!(events::parse_time("a+0€").is_err());
    // A creation time too large for nanoseconds.
    assert!(drift_scanner::dates::parse_created(&AttributeValue::N("1e300".into())).is_none());
    let mut e = event_file("alarm-5xx.json");
    e["detail"]["state"]["timestamp"] = json!("2026-03-02T12:10:07.214+0€");
    assert!(alarm_responder::parse(&e).is_err());
}
