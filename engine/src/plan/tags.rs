//! Tag drift: a `tre:` tag on a registered workspace that someone changed is never obeyed
//! (the registry and the instance profile decide); with `[workspaces] revert_tag_drift` it
//! is also set back, so what people read on the instance is true again.

use serde_json::Value;

use super::decider::item;
use super::{Change, Inputs, PlanItem};

pub(super) fn plan_tag_reverts(inputs: &Inputs, items: &mut Vec<PlanItem>) {
    if !inputs.settings.revert_tag_drift {
        return;
    }
    for drift in &inputs.actual.tag_drift {
        items.extend(revert(drift));
    }
}

fn revert(drift: &Value) -> Option<PlanItem> {
    let text = |k: &str| drift[k].as_str().map(String::from);
    let (tag, expected) = (text("tag")?, text("expected")?);
    let found = text("found").map_or("removed".to_string(), |f| format!("set to `{f}`"));
    let workspace = text("workspace")?;
    Some(item(
        Change::TagWorkspace {
            account: text("account")?,
            workspace: workspace.clone(),
            workspace_kind: text("kind")?,
            resources: vec![text("resource")?],
            key: tag.clone(),
            value: expected.clone(),
            remove: false,
        },
        format!(
            "tag `{tag}` of workspace `{workspace}` was {found} outside the registry: set back to `{expected}`"
        ),
        Vec::new(),
    ))
}
