//! Requests Cedar has already parsed and checked against the running schema. Parsing a
//! context against the schema costs far more than a cached decision (a fifth of an API
//! call's time, measured), and a service asks the same few questions over and over. A parse
//! is a function of the request's text and the schema alone, so an entry stays exact until
//! the policy set changes, when the engine starts an empty memo.

use cedar_policy::{EntityUid, Request};

use crate::cache::DecisionKey;
use crate::decide::RequestSpec;

/// Parses kept at most; a full memo starts again empty (a burst of distinct requests costs
/// one parse each, as without a memo).
const MOST_PARSED: usize = 4096;

use crate::fast::FastMap;

/// What parsing a request's text yields, besides the text itself.
#[derive(Clone)]
pub(crate) struct Parsed {
    pub(crate) key: DecisionKey,
    pub(crate) request: Request,
    pub(crate) context_entities: Vec<EntityUid>,
}

#[derive(Default)]
pub(crate) struct ParsedRequests {
    entries: FastMap<String, Parsed>,
}

impl ParsedRequests {
    pub(crate) fn get(&self, text: &str) -> Option<Parsed> {
        self.entries.get(text).cloned()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn keep(&mut self, text: String, parsed: Parsed) {
        if self.entries.len() >= MOST_PARSED {
            self.entries.clear();
        }
        self.entries.insert(text, parsed);
    }
}

/// The request's whole text, each part prefixed by its length so no two requests share one.
pub(crate) fn request_text(spec: &RequestSpec, context: &str) -> String {
    let parts = [
        spec.principal.as_str(),
        &spec.action,
        &spec.resource,
        context,
    ];
    let mut text = String::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        text.push_str(&part.len().to_string());
        text.push(':');
        text.push_str(part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(principal: &str, action: &str) -> RequestSpec {
        RequestSpec {
            principal: principal.into(),
            action: action.into(),
            resource: "R::\"r\"".into(),
            context: json!({}),
        }
    }

    #[test]
    fn requests_whose_parts_split_differently_have_different_texts() {
        let a = request_text(&spec("P::\"a\"", "A::\"b\""), "{}");
        let b = request_text(&spec("P::\"a\"A", "::\"b\""), "{}");
        assert_ne!(a, b);
    }
}
