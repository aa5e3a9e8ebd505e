//! IAM roles of each project account, with tags and their inline and attached policies
//! (documents decoded from the URL encoding IAM returns them in), as observed state.

use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::Config;
use tregov_engine::collect::{BoxFuture, CollectContext, Collector, Listing, RunReport, Source};
use tregov_engine::events::ObservationKind;
use tregov_engine::store::Observed;

use crate::CollectError;

pub struct Iam {
    config: Config,
    aws: Aws,
}

impl Iam {
    pub fn new(config: &Config, aws: &Aws) -> Self {
        Self {
            config: config.clone(),
            aws: aws.clone(),
        }
    }
}

impl Collector for Iam {
    fn source(&self) -> Source {
        Source::Iam
    }

    fn answers(&self) -> &'static [ObservationKind] {
        &[ObservationKind::IamRoleChange]
    }

    fn run<'a>(&'a self, ctx: &'a CollectContext<'a>) -> BoxFuture<'a, RunReport> {
        Box::pin(async move {
            let mut report = RunReport::new(Source::Iam);
            let mut listing = Listing {
                complete: true,
                ..Default::default()
            };
            for (roles, errors) in
                crate::per_project(&self.config, |p| read_account(&self.aws, p)).await
            {
                // An account that could not be listed keeps what was seen of it before.
                listing.complete &= errors.is_empty();
                listing.observed.extend(roles);
                report.errors.extend(errors);
            }
            if let Err(e) = ctx.write(Source::Iam, listing, &mut report) {
                report.fail(e);
            }
            report
        })
    }
}

async fn read_account(
    aws: &Aws,
    project: &tregov_config::ProjectConfig,
) -> (Vec<Observed>, Vec<String>) {
    let mut observed = Vec::new();
    let mut errors = Vec::new();
    let sdk = aws.for_role(project.role_arn.as_deref()).await;
    let iam = aws_sdk_iam::Client::new(&sdk);
    let mut pages = iam.list_roles().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                errors.push(CollectError::aws("iam:ListRoles", &project.account_id, e).to_string());
                break;
            }
        };
        for role in page.roles() {
            match describe_role(&iam, role.role_name()).await {
                Ok(mut body) => {
                    body["arn"] = json!(role.arn());
                    body["path"] = json!(role.path());
                    body["trustPolicy"] = role
                        .assume_role_policy_document()
                        .map(policy_document)
                        .unwrap_or(Value::Null);
                    body["project"] = json!(project.id);
                    body["accountId"] = json!(project.account_id);
                    observed.push(Observed {
                        kind: "iam-role".into(),
                        key: role.arn().to_string(),
                        body,
                    });
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    (observed, errors)
}

async fn describe_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<Value, CollectError> {
    let tags: serde_json::Map<String, Value> = iam
        .list_role_tags()
        .role_name(name)
        .send()
        .await
        .map_err(|e| CollectError::aws("iam:ListRoleTags", name, e))?
        .tags()
        .iter()
        .map(|t| (t.key().to_string(), json!(t.value())))
        .collect();
    let mut inline = serde_json::Map::new();
    let names = iam
        .list_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| CollectError::aws("iam:ListRolePolicies", name, e))?;
    for policy in names.policy_names() {
        let doc = iam
            .get_role_policy()
            .role_name(name)
            .policy_name(policy)
            .send()
            .await
            .map_err(|e| CollectError::aws("iam:GetRolePolicy", name, e))?;
        inline.insert(policy.clone(), policy_document(doc.policy_document()));
    }
    let mut attached: Vec<String> = iam
        .list_attached_role_policies()
        .role_name(name)
        .send()
        .await
        .map_err(|e| CollectError::aws("iam:ListAttachedRolePolicies", name, e))?
        .attached_policies()
        .iter()
        .filter_map(|p| p.policy_arn().map(String::from))
        .collect();
    attached.sort();
    Ok(json!({"name": name, "tags": tags, "inlinePolicies": inline, "attachedPolicies": attached}))
}

/// A policy document as IAM returns it (URL-encoded JSON), parsed; text that is not JSON is
/// kept as text.
fn policy_document(encoded: &str) -> Value {
    let text = percent_decode(encoded);
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Decodes `%XX` escapes (IAM returns policy documents URL-encoded); `+` stays as it is, as
/// in a URL path. Malformed escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn url_encoded_policy_documents_are_decoded() {
        assert_eq!(
            percent_decode("%7B%22Version%22%3A%222012-10-17%22%7D"),
            r#"{"Version":"2012-10-17"}"#
        );
    }

    #[test]
    fn malformed_escapes_and_plain_text_are_kept() {
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz{}"), "%zz{}");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
