//! A target's smoke test (seed 002's CI gating, seed 003's post-deployment validation): one
//! request a new version must answer as declared before it keeps the traffic. Sent to the
//! canary's candidate variant (`TargetVariant`) before it takes all the traffic, or to the
//! endpoint right after an update completes. What it declares and how an answer is judged live
//! here; the InvokeEndpoint call is the deployer's.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The most of an answer's body kept as evidence (a ledger item and a registry description have
/// limits; the start of an answer says what went wrong).
const KEPT_BODY: usize = 1024;

/// One request and what its answer must be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeTest {
    /// The request body, sent as it is.
    pub body: String,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The status the model answers with: 200, or what the container returned (SageMaker
    /// reports a container's other statuses as a ModelError carrying it).
    #[serde(default = "default_status")]
    pub expected_status: u16,
    /// Fields the answer's JSON must have: `recommendations`, or a path such as `result.items`.
    #[serde(default)]
    pub required_fields: Vec<String>,
}

fn default_content_type() -> String {
    "application/json".into()
}

fn default_status() -> u16 {
    200
}

/// What the endpoint answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    pub status: u16,
    /// The answer's body, cut to its first KiB.
    pub body: String,
    /// The variant that answered, as SageMaker says.
    pub variant: Option<String>,
}

impl Answer {
    pub fn new(status: u16, body: &[u8], variant: Option<String>) -> Self {
        let text = String::from_utf8_lossy(body);
        let mut end = text.len().min(KEPT_BODY);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            status,
            body: text[..end].to_string(),
            variant,
        }
    }
}

/// A smoke test run: the request, the answer, and why it failed (`None`: it passed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SmokeRun {
    pub endpoint: String,
    /// The variant it was sent to (a canary's candidate), else SageMaker chose.
    pub target_variant: Option<String>,
    pub request: SmokeTest,
    pub answer: Answer,
    pub failure: Option<String>,
}

impl SmokeRun {
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The reason, the request and the answer, in that order: a registry description keeps
    /// only its first KiB.
    pub fn describe(&self) -> String {
        format!(
            "smoke test on {}{} {}: sent {} {}; answered {} {}",
            self.endpoint,
            self.target_variant
                .as_deref()
                .map_or(String::new(), |v| format!(" variant {v}")),
            self.failure
                .as_deref()
                .map_or("passed".into(), |f| format!("failed ({f})")),
            self.request.content_type,
            crate::names::truncate(&self.request.body, 256),
            self.answer.status,
            self.answer.body,
        )
    }
}

impl SmokeTest {
    /// Refused at start-up: what could never pass, or could not be sent.
    pub fn validate(&self) -> Result<(), String> {
        // InvokeEndpoint takes up to 25 MB; a smoke request is one small example.
        if self.body.is_empty() || self.body.len() > 64 * 1024 {
            return Err("smoke_test: body must be 1 byte to 64 KiB".into());
        }
        if !(100..=599).contains(&self.expected_status) {
            return Err(format!(
                "smoke_test: expected_status {} is not an HTTP status",
                self.expected_status
            ));
        }
        if self.content_type.trim().is_empty() {
            return Err("smoke_test: content_type is empty".into());
        }
        if let Some(f) = self
            .required_fields
            .iter()
            .find(|f| f.split('.').any(str::is_empty))
        {
            return Err(format!("smoke_test: required field {f:?} is not a.b.c"));
        }
        Ok(())
    }

    /// Why `answer` (whose whole body is `body`) is not the one declared; `None` when it is.
    pub fn judge(&self, answer: &Answer, body: &[u8]) -> Option<String> {
        if answer.status != self.expected_status {
            return Some(format!(
                "status {} where {} was expected",
                answer.status, self.expected_status
            ));
        }
        if self.required_fields.is_empty() {
            return None;
        }
        let Ok(json) = serde_json::from_slice::<Value>(body) else {
            return Some("the answer is not JSON".into());
        };
        let missing: Vec<&str> = self
            .required_fields
            .iter()
            .filter(|f| field(&json, f).is_none_or(Value::is_null))
            .map(String::as_str)
            .collect();
        (!missing.is_empty()).then(|| format!("the answer lacks {}", missing.join(", ")))
    }
}

/// `a.b.c` in a JSON object.
fn field<'v>(json: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(json, |v, key| v.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(fields: &[&str]) -> SmokeTest {
        serde_json::from_value(serde_json::json!({
            "body": r#"{"user_id":"u-1","k":5}"#,
            "required_fields": fields,
        }))
        .unwrap()
    }

    #[test]
    fn an_answer_is_judged_by_its_status_and_its_fields() {
        let t = test(&["recommendations", "model.version"]);
        let ok = r#"{"recommendations":[1,2],"model":{"version":"v3"}}"#;
        let cases = [
            (200, ok, None),
            (500, ok, Some("status 500 where 200")),
            (
                200,
                r#"{"recommendations":[1]}"#,
                Some("lacks model.version"),
            ),
            (
                200,
                r#"{"recommendations":null,"model":{"version":"v3"}}"#,
                Some("lacks recommendations"),
            ),
            (200, "<html>", Some("not JSON")),
        ];
        for (status, body, why) in cases {
            let got = t.judge(&Answer::new(status, body.as_bytes(), None), body.as_bytes());
            match why {
                None => assert_eq!(got, None, "{body}"),
                Some(why) => assert!(got.as_ref().is_some_and(|g| g.contains(why)), "{got:?}"),
            }
        }
        // No fields declared: any body with the status passes.
        assert_eq!(test(&[]).judge(&Answer::new(200, b"ok", None), b"ok"), None);
    }

    #[test]
    fn what_could_never_pass_is_refused() {
        assert!(test(&["a.b"]).validate().is_ok());
        for (bad, why) in [
            (serde_json::json!({"body": ""}), "1 byte"),
            (
                serde_json::json!({"body": "x", "expected_status": 42}),
                "not an HTTP status",
            ),
            (
                serde_json::json!({"body": "x", "required_fields": ["a..b"]}),
                "not a.b.c",
            ),
        ] {
            let t: SmokeTest = serde_json::from_value(bad).unwrap();
            assert!(t.validate().unwrap_err().contains(why));
        }
    }

    #[test]
    fn a_long_answer_is_judged_whole_and_kept_to_its_first_kib_on_a_char_boundary() {
        let body = serde_json::json!({"recommendations": ["é".repeat(2000)]}).to_string();
        let a = Answer::new(200, body.as_bytes(), None);
        assert!(a.body.len() <= KEPT_BODY && a.body.len() > KEPT_BODY - 4);
        assert_eq!(test(&["recommendations"]).judge(&a, body.as_bytes()), None);
    }
}
