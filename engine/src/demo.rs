//! `tregov demo`: the default policies deciding over the sample TRE, each decision logged and
//! explained.

use serde_json::Value;

use crate::decide::{DecisionOutcome, Engine, RequestSpec};
use crate::entities::parse_entities_file;
use crate::error::{EngineError, Result};
use crate::explain::{explain, Explanation};
use crate::store::{BatchOutcome, StoreBatch};

/// One of the demo's questions, answered.
pub struct DemoDecision {
    pub title: String,
    pub spec: RequestSpec,
    pub outcome: DecisionOutcome,
    pub explanation: Explanation,
}

/// Writes the sample TRE into the store (partition `demo`, replaced whole).
pub fn load_sample(engine: &mut Engine) -> Result<BatchOutcome> {
    let schema = engine.bundle().schema.clone();
    let schema = schema.ok_or_else(|| EngineError::Request("the demo needs a schema".into()))?;
    let list = parse_entities_file(
        "examples/sample-tre.entities.json",
        tregov_policies::SAMPLE_TRE_ENTITIES,
        Some(&schema),
    )?;
    engine.apply(&StoreBatch {
        upserts: list,
        deletes: Vec::new(),
        partition: "demo".into(),
        replace_partition: true,
    })
}

/// The demo's questions, decided over the store and logged.
pub fn decide_all(engine: &Engine) -> Result<Vec<DemoDecision>> {
    let requests: Vec<Value> = serde_json::from_str(tregov_policies::DEMO_REQUESTS)
        .map_err(|e| EngineError::Request(format!("demo requests: {e}")))?;
    requests
        .into_iter()
        .map(|r| {
            let title = r
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let spec: RequestSpec = serde_json::from_value(r)
                .map_err(|e| EngineError::Request(format!("demo request: {e}")))?;
            let request = engine.parse(spec.clone())?;
            let outcome = engine.decide_logged(&request, "demo")?;
            let entities = engine.entities_of(&request)?;
            let explanation = explain(&outcome, &request.request, &entities, engine.bundle());
            Ok(DemoDecision {
                title,
                spec,
                outcome,
                explanation,
            })
        })
        .collect()
}
