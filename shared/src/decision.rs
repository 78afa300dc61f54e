//! A decision: what a function's pure `decide` step concluded about one subject, before anything
//! is applied. The [`crate::pipeline`] applies its plan, records it and reports it.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::outcome::Outcome;
use crate::plan::{ActionKind, Plan};

/// What a decision is about; its ledger key is the partition the decision is recorded under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    Endpoint(String),
    /// A registry event for a group no target deploys.
    Group(String),
    /// An alarm that maps to no endpoint.
    Alarm(String),
    /// The drift scanner's adapter.
    Adapter(String),
    /// The sweeper's run over the whole account.
    Sweep,
}

impl Subject {
    pub fn key(&self) -> String {
        match self {
            Subject::Endpoint(e) => crate::ledger::endpoint_key(e),
            Subject::Group(g) => format!("group#{g}"),
            Subject::Alarm(a) => format!("alarm#{a}"),
            Subject::Adapter(a) => format!("adapter#{a}"),
            Subject::Sweep => "sweep#endpoints".into(),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reason: String,
    /// The model package the decision is about, if any.
    pub package: Option<String>,
    pub plan: Plan,
    pub evidence: Value,
    /// When the step of this kind finds its work already done (a concurrent run won the race),
    /// the decision's outcome is the second one: nothing new happened.
    pub if_already_done: Option<(ActionKind, Outcome)>,
}

impl Decision {
    /// A decision with no plan (yet) and no evidence.
    pub fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
            package: None,
            plan: Plan::default(),
            evidence: Value::Null,
            if_already_done: None,
        }
    }

    pub fn with_plan(self, plan: Plan) -> Self {
        Self { plan, ..self }
    }

    pub fn with_evidence(self, evidence: Value) -> Self {
        Self { evidence, ..self }
    }

    /// Evidence added to what the decision already has (its keys win over `base`'s).
    pub fn with_more_evidence(self, mut base: Value) -> Self {
        if let (Some(b), Value::Object(own)) = (base.as_object_mut(), &self.evidence) {
            b.extend(own.clone());
        }
        self.with_evidence(base)
    }

    pub fn with_package(self, package: Option<String>) -> Self {
        Self { package, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_their_ledger_keys() {
        assert_eq!(Subject::Endpoint("e".into()).key(), "endpoint#e");
        assert_eq!(Subject::Group("g".into()).key(), "group#g");
        assert_eq!(Subject::Alarm("a".into()).key(), "alarm#a");
        assert_eq!(Subject::Adapter("l".into()).key(), "adapter#l");
        assert_eq!(Subject::Sweep.key(), "sweep#endpoints");
        assert_eq!(
            serde_json::to_value(Subject::Endpoint("e".into())).unwrap(),
            "endpoint#e"
        );
    }
}
