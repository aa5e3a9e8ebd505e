//! The workspace registry: which EC2 instance or SageMaker notebook is which workspace, of
//! whom, of which project and type, as Service Workbench records it when it provisions one.
//!
//! This is where a workspace's owner comes from, because it is written by the system that
//! provisioned the workspace for an authenticated user, and researchers cannot write it. The
//! `tre:` tags on the instance are not: anyone allowed to tag an instance could name another
//! person its owner. (The record of the instance's creation in CloudTrail names the caller of
//! `RunInstances`, which under Service Workbench is its provisioning role, not the user.)
//!
//! The file is a JSON object `{"workspaces": [...]}`; each entry names the workspace `id`,
//! its `project`, `owner` (a user id), `workspaceType`, `kind` (`ec2` or `sagemaker`) and
//! `instance` (the instance id, or the notebook's name). A bad entry is an error naming its
//! line and field; the last good registry then stays in force.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use tregov_engine::entities::offset_of_line_col;
use tregov_engine::error::{EngineError, Result, SourceProblem};

/// One registered workspace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registered {
    pub id: String,
    pub project: String,
    pub owner: String,
    pub workspace_type: String,
    pub kind: WorkspaceKind,
    pub instance: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceKind {
    Ec2,
    Sagemaker,
}

/// The registry, looked up by what AWS says a resource is: (project, kind, instance).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_instance: BTreeMap<(String, WorkspaceKind, String), Registered>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File<'a> {
    #[serde(borrow)]
    workspaces: Vec<&'a RawValue>,
}

impl Registry {
    /// Parses the registry file `name`; every bad entry is reported with its position.
    pub fn parse(name: &str, text: &str) -> Result<Self> {
        let at = |offset: usize, len: usize, message: String| {
            SourceProblem::at(name, text, offset, len, message, "here")
        };
        let file: File = serde_json::from_str(text).map_err(|e| {
            let offset = offset_of_line_col(text, e.line(), e.column());
            EngineError::from(at(offset, 0, format!("not a workspace registry: {e}")))
        })?;
        let mut registry = Registry::default();
        let mut problems = Vec::new();
        for (i, raw) in file.workspaces.iter().enumerate() {
            let offset = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            let len = raw.get().len().min(60);
            match serde_json::from_str::<Registered>(raw.get()) {
                Ok(entry) => {
                    let key = (entry.project.clone(), entry.kind, entry.instance.clone());
                    if registry.by_instance.insert(key, entry).is_some() {
                        problems.push(at(
                            offset,
                            len,
                            format!("`workspaces[{i}]`: a second entry for the same instance"),
                        ));
                    }
                }
                Err(e) => problems.push(at(offset, len, format!("`workspaces[{i}]`: {e}"))),
            }
        }
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(EngineError::problems(
                format!("invalid workspace registry `{name}`"),
                problems,
            ))
        }
    }

    pub fn get(&self, project: &str, kind: WorkspaceKind, instance: &str) -> Option<&Registered> {
        self.by_instance
            .get(&(project.to_string(), kind, instance.to_string()))
    }

    pub fn len(&self) -> usize {
        self.by_instance.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_instance.is_empty()
    }
}

/// A `tre:` tag on a registered workspace that says something other than the registry (or
/// the instance profile): reported, never obeyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDrift {
    pub tag: &'static str,
    /// What the registry (or the instance profile) says.
    pub expected: String,
    /// What the tag says; `None` when it is missing.
    pub found: Option<String>,
}

/// The tags tregov reads that disagree with the registry and the workspace's real role.
/// `tre:role-arn` is optional: only a value naming another role is drift.
pub fn tag_drift(
    entry: &Registered,
    role_arn: Option<&str>,
    tags: &BTreeMap<String, String>,
) -> Vec<TagDrift> {
    let mut out = Vec::new();
    for (tag, expected) in [
        ("tre:workspace", &entry.id),
        ("tre:owner", &entry.owner),
        ("tre:workspace-type", &entry.workspace_type),
    ] {
        let found = tags.get(tag);
        if found != Some(expected) {
            out.push(TagDrift {
                tag,
                expected: expected.clone(),
                found: found.cloned(),
            });
        }
    }
    if let (Some(role), Some(found)) = (role_arn, tags.get("tre:role-arn")) {
        if found != role {
            out.push(TagDrift {
                tag: "tre:role-arn",
                expected: role.to_string(),
                found: Some(found.clone()),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = r#"{"workspaces": [
  {"id": "ws-alice", "project": "p1", "owner": "alice", "workspaceType": "linux",
   "kind": "ec2", "instance": "i-1"}
]}"#;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_registered_instance_is_found_by_its_project_kind_and_id() {
        let r = Registry::parse("registry.json", ALICE).expect("parses");
        assert_eq!(
            r.get("p1", WorkspaceKind::Ec2, "i-1")
                .map(|e| e.owner.as_str()),
            Some("alice")
        );
        assert!(r.get("p2", WorkspaceKind::Ec2, "i-1").is_none());
        assert!(r.get("p1", WorkspaceKind::Sagemaker, "i-1").is_none());
    }

    #[test]
    fn a_bad_entry_is_reported_at_its_line_with_the_field() {
        let text = "{\"workspaces\": [\n  {\"id\": \"ws\", \"project\": \"p1\", \"workspaceType\": \"t\", \"kind\": \"ec2\", \"instance\": \"i\"}\n]}";
        let err = Registry::parse("registry.json", text).expect_err("a missing owner");
        let shown = format!("{:?}", miette::Report::new(err));
        assert!(shown.contains("workspaces[0]"), "{shown}");
        assert!(shown.contains("owner"), "{shown}");
        assert!(shown.contains("registry.json:2"), "{shown}");
    }

    #[test]
    fn a_forged_owner_tag_is_drift_and_a_missing_role_tag_is_not() {
        let r = Registry::parse("registry.json", ALICE).expect("parses");
        let entry = r.get("p1", WorkspaceKind::Ec2, "i-1").expect("alice");
        let forged = tags(&[
            ("tre:workspace", "ws-alice"),
            ("tre:owner", "bob"),
            ("tre:workspace-type", "linux"),
        ]);
        let drift = tag_drift(entry, Some("arn:aws:iam::1:role/r"), &forged);
        assert_eq!(
            drift,
            vec![TagDrift {
                tag: "tre:owner",
                expected: "alice".into(),
                found: Some("bob".into())
            }]
        );
    }

    #[test]
    fn a_role_tag_naming_another_role_is_drift() {
        let r = Registry::parse("registry.json", ALICE).expect("parses");
        let entry = r.get("p1", WorkspaceKind::Ec2, "i-1").expect("alice");
        let t = tags(&[
            ("tre:workspace", "ws-alice"),
            ("tre:owner", "alice"),
            ("tre:workspace-type", "linux"),
            ("tre:role-arn", "arn:aws:iam::999999999999:role/x"),
        ]);
        let drift = tag_drift(entry, Some("arn:aws:iam::1:role/r"), &t);
        assert_eq!(drift.len(), 1);
        assert_eq!(drift[0].tag, "tre:role-arn");
    }
}
