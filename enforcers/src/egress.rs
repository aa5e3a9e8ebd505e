//! The S3 side of data egress: pinning a workspace's files, staging the pinned versions for
//! review, publishing approved files, cleaning up after a rejection, presigning downloads.
//!
//! Every effect is idempotent, so an effect interrupted by a crash is simply done again: a copy
//! whose destination already holds the same source version (recorded in the object's
//! `tregov-source-version` metadata) is skipped, and deleting what is gone succeeds.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{MetadataDirective, ServerSideEncryption};
use serde_json::{json, Value};
use tregov_config::aws::Aws;
use tregov_config::EgressConfig;
use tregov_engine::egress::{Effect, EgressRequest, PinnedObject, Status};

use crate::describe;

const SOURCE_VERSION: &str = "tregov-source-version";
const REQUEST: &str = "tregov-egress-request";

pub struct EgressStore {
    s3: aws_sdk_s3::Client,
    sns: aws_sdk_sns::Client,
    config: EgressConfig,
}

/// A presigned download of one approved file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Download {
    pub key: String,
    pub url: String,
    pub size: i64,
}

impl EgressStore {
    pub async fn build(aws: &Aws, config: &EgressConfig) -> Self {
        let sdk = aws.for_role(config.role_arn.as_deref()).await;
        Self {
            s3: aws.s3(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            config: config.clone(),
        }
    }

    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    fn approved_bucket(&self) -> &str {
        &self.config.approved_bucket
    }

    /// The latest version of every file under `<workspace>/` (or of the named keys only,
    /// which must all be there): what the request will carry, whatever happens to the files
    /// afterwards.
    pub async fn pin(
        &self,
        workspace: &str,
        only: Option<&[String]>,
    ) -> Result<Vec<PinnedObject>, String> {
        let prefix = format!("{workspace}/");
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.config.store_bucket)
                .prefix(&prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| describe("s3:ListObjectVersions", &e))?;
            for v in page.versions() {
                if v.is_latest() != Some(true) {
                    continue;
                }
                let (Some(key), Some(version)) = (v.key(), v.version_id()) else {
                    continue;
                };
                if version == "null" {
                    return Err(format!(
                        "bucket `{}` is not versioned (`{key}` has no VersionId): egress requests pin versions, so versioning must be on",
                        self.config.store_bucket
                    ));
                }
                if key.ends_with('/') {
                    continue;
                }
                out.push(PinnedObject {
                    key: key.to_string(),
                    version_id: version.to_string(),
                    size: v.size().unwrap_or(0),
                    etag: v.e_tag().map(str::to_string),
                });
            }
            if page.is_truncated() == Some(true) {
                key_marker = page.next_key_marker().map(str::to_string);
                version_marker = page.next_version_id_marker().map(str::to_string);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        // A file deleted since (its latest version a delete marker) is not in the list.
        if let Some(only) = only {
            let wanted: Vec<String> = only
                .iter()
                .map(|k| {
                    if k.starts_with(&prefix) {
                        k.clone()
                    } else {
                        format!("{prefix}{k}")
                    }
                })
                .collect();
            if let Some(missing) = wanted.iter().find(|k| !out.iter().any(|o| &o.key == *k)) {
                return Err(format!(
                    "`{missing}` is not in the egress store of workspace `{workspace}`"
                ));
            }
            out.retain(|o| wanted.contains(&o.key));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn relative<'k>(request: &EgressRequest, key: &'k str) -> &'k str {
        key.strip_prefix(&format!("{}/", request.workspace))
            .unwrap_or(key)
    }

    pub fn staged_key(request: &EgressRequest, object: &PinnedObject) -> String {
        format!(
            "{}/{}/{}",
            request.workspace,
            request.id,
            Self::relative(request, &object.key)
        )
    }

    pub fn approved_key(request: &EgressRequest, object: &PinnedObject) -> String {
        format!(
            "approved_egress/{}/{}/{}",
            request.workspace,
            request.id,
            Self::relative(request, &object.key)
        )
    }

    /// Does the effect's S3 work (idempotently) and its notification; returns what it did.
    /// `after_copy` is called after each object actually copied or deleted.
    pub async fn perform(
        &self,
        request: &EgressRequest,
        effect: Effect,
        after_copy: &(dyn Fn() + Sync),
    ) -> Result<Value, String> {
        let detail = match effect {
            Effect::Stage => {
                let bucket = &self.config.staging_bucket;
                let copied = self
                    .copy_pinned(request, bucket, Self::staged_key, after_copy)
                    .await?;
                self.notify_role(request).await?;
                json!({"copied": copied, "objects": request.objects.len(), "bucket": bucket})
            }
            Effect::NotifyStep => {
                self.notify_role(request).await?;
                json!({"notified": request.current_role()})
            }
            Effect::Publish => {
                // From the pinned version itself, not the staged copy: what leaves is exactly
                // what was submitted, whatever happened in the staging bucket since.
                let copied = self
                    .copy_pinned(
                        request,
                        self.approved_bucket(),
                        Self::approved_key,
                        after_copy,
                    )
                    .await?;
                // The reviewers' copies have done their work: they do not outlive approval.
                let unstaged = self.unstage(request, after_copy).await?;
                self.notify(
                    &request.requester,
                    &format!("egress request {} approved", request.id),
                    &format!(
                        "Your egress request {} for workspace {} was approved at every step; {} file(s) are ready.",
                        request.id,
                        request.workspace,
                        request.objects.len()
                    ),
                )
                .await?;
                json!({"copied": copied, "objects": request.objects.len(), "bucket": self.approved_bucket(), "unstaged": unstaged})
            }
            Effect::Unstage => {
                let deleted = self.unstage(request, after_copy).await?;
                let (subject, message) = if request.status == Status::Withdrawn {
                    (
                        format!("egress request {} withdrawn", request.id),
                        format!(
                            "Egress request {} for workspace {} was withdrawn; its staged copies are removed.",
                            request.id, request.workspace
                        ),
                    )
                } else {
                    let reason = request
                        .reviews
                        .last()
                        .and_then(|r| r.reason.clone())
                        .unwrap_or_default();
                    (
                        format!("egress request {} rejected", request.id),
                        format!(
                            "Your egress request {} for workspace {} was rejected: {reason}. You may resubmit.",
                            request.id, request.workspace
                        ),
                    )
                };
                self.notify(&request.requester, &subject, &message).await?;
                json!({"deleted": deleted, "bucket": self.config.staging_bucket})
            }
        };
        Ok(detail)
    }

    /// Deletes every version (and delete marker) under the request's staging prefix: in a
    /// versioned bucket a plain delete would only hide the rejected files.
    async fn unstage(
        &self,
        request: &EgressRequest,
        after_delete: &(dyn Fn() + Sync),
    ) -> Result<usize, String> {
        let prefix = format!("{}/{}/", request.workspace, request.id);
        let mut deleted = 0;
        // Each round deletes what one listing shows; a bucket that keeps showing objects after
        // that many rounds is not being emptied, and the effect is retried later.
        for _ in 0..1000 {
            let page = self
                .s3
                .list_object_versions()
                .bucket(&self.config.staging_bucket)
                .prefix(&prefix)
                .send()
                .await
                .map_err(|e| describe("s3:ListObjectVersions", &e))?;
            let mut targets: Vec<(String, Option<String>)> = page
                .versions()
                .iter()
                .filter_map(|v| {
                    v.key()
                        .map(|k| (k.to_string(), v.version_id().map(str::to_string)))
                })
                .collect();
            targets.extend(page.delete_markers().iter().filter_map(|m| {
                m.key()
                    .map(|k| (k.to_string(), m.version_id().map(str::to_string)))
            }));
            if targets.is_empty() {
                return Ok(deleted);
            }
            for (key, version) in targets {
                self.s3
                    .delete_object()
                    .bucket(&self.config.staging_bucket)
                    .key(&key)
                    .set_version_id(version.filter(|v| v != "null"))
                    .send()
                    .await
                    .map_err(|e| describe("s3:DeleteObject", &e))?;
                deleted += 1;
                after_delete();
            }
        }
        Err(format!(
            "`{}/{prefix}` still holds objects after deleting {deleted}",
            self.config.staging_bucket
        ))
    }

    /// Copies every pinned version to `bucket` under `key_of`, skipping copies already made;
    /// returns how many it made.
    async fn copy_pinned(
        &self,
        request: &EgressRequest,
        bucket: &str,
        key_of: fn(&EgressRequest, &PinnedObject) -> String,
        after_copy: &(dyn Fn() + Sync),
    ) -> Result<usize, String> {
        let mut copied = 0;
        for o in &request.objects {
            if self
                .copy_once(request, o, (bucket, &key_of(request, o)))
                .await?
            {
                copied += 1;
                after_copy();
            }
        }
        Ok(copied)
    }

    /// Copies the pinned version of `object` to `to` unless `to` already holds this request's
    /// copy of it. Returns whether it copied.
    async fn copy_once(
        &self,
        request: &EgressRequest,
        object: &PinnedObject,
        to: (&str, &str),
    ) -> Result<bool, String> {
        match self.s3.head_object().bucket(to.0).key(to.1).send().await {
            Ok(head) => {
                let meta = head.metadata();
                if meta.and_then(|m| m.get(SOURCE_VERSION)) == Some(&object.version_id)
                    && meta.and_then(|m| m.get(REQUEST)) == Some(&request.id)
                {
                    return Ok(false);
                }
            }
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found());
                if !not_found {
                    return Err(describe("s3:HeadObject", &e));
                }
            }
        }
        let source = format!(
            "{}/{}?versionId={}",
            self.config.store_bucket,
            encode_key(&object.key),
            encode_key(&object.version_id)
        );
        let mut copy = self
            .s3
            .copy_object()
            .copy_source(source)
            .bucket(to.0)
            .key(to.1)
            .metadata_directive(MetadataDirective::Replace)
            .metadata(SOURCE_VERSION, &object.version_id)
            .metadata(REQUEST, &request.id);
        if let Some(kms) = &self.config.kms_key_id {
            copy = copy
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        copy.send()
            .await
            .map_err(|e| describe("s3:CopyObject", &e))?;
        Ok(true)
    }

    /// Presigned GETs for every approved file of the request.
    pub async fn presign(&self, request: &EgressRequest) -> Result<Vec<Download>, String> {
        let expiry =
            PresigningConfig::expires_in(Duration::from_secs(self.config.url_expiry_seconds))
                .map_err(|e| format!("invalid `url_expiry_seconds`: {e}"))?;
        let mut out = Vec::with_capacity(request.objects.len());
        for o in &request.objects {
            let key = Self::approved_key(request, o);
            let signed = self
                .s3
                .get_object()
                .bucket(self.approved_bucket())
                .key(&key)
                .presigned(expiry.clone())
                .await
                .map_err(|e| describe("s3:GetObject (presign)", &e))?;
            out.push(Download {
                key,
                url: signed.uri().to_string(),
                size: o.size,
            });
        }
        Ok(out)
    }

    async fn notify_role(&self, request: &EgressRequest) -> Result<(), String> {
        let Some(role) = request.current_role() else {
            return Ok(());
        };
        self.notify(
            role,
            &format!("egress request {} awaits review", request.id),
            &format!(
                "Egress request {} (workspace {}, {} file(s)) awaits review at step {} ({role}).",
                request.id,
                request.workspace,
                request.objects.len(),
                request.current_step
            ),
        )
        .await
    }

    /// Publishes to the configured topic, addressed by the `audience` message attribute (a
    /// role or a user id) so subscriptions can filter on it.
    async fn notify(&self, audience: &str, subject: &str, message: &str) -> Result<(), String> {
        let Some(topic) = &self.config.notify_topic_arn else {
            return Ok(());
        };
        let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(audience)
            .build()
            .map_err(|e| format!("sns message attribute: {e}"))?;
        self.sns
            .publish()
            .topic_arn(topic)
            .subject(subject)
            .message(message)
            .message_attributes("audience", attribute)
            .send()
            .await
            .map_err(|e| describe("sns:Publish", &e))?;
        Ok(())
    }
}

/// Percent-encodes an S3 key for `x-amz-copy-source` (slashes kept).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_are_percent_encoded_but_keep_their_slashes() {
        assert_eq!(
            encode_key("ws-1/my results+v2.csv"),
            "ws-1/my%20results%2Bv2.csv"
        );
        assert_eq!(encode_key("ws-1/é"), "ws-1/%C3%A9");
    }
}
