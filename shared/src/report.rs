//! What a handler answers: one line per decision. The full record is in the ledger.

use serde::Serialize;

#[derive(Debug, Serialize, Default)]
pub struct Report {
    pub decisions: Vec<Summary>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub endpoint: Option<String>,
    /// The short verdict, as in the ledger: `deployed`, `rolled_back`, `inconclusive`, ...
    pub outcome: &'static str,
    pub reason: String,
    pub package: Option<String>,
    pub actions: Vec<&'static str>,
    pub results: Vec<String>,
}
