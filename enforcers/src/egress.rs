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
use tregov_engine::egress::notices::Notice;
use tregov_engine::egress::{Effect, EgressRequest, PinnedObject};

use crate::describe;

const SOURCE_VERSION: &str = "tregov-source-version";
const REQUEST: &str = "tregov-egress-request";

pub struct EgressStore {
    s3: aws_sdk_s3::Client,
    sns: aws_sdk_sns::Client,
    config: EgressConfig,
}

/// Why the pinned versions could not be confirmed before an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedCheck {
    /// A pinned version is gone: approving it would publish nothing.
    Gone(String),
    /// S3 did not answer; try again.
    Unavailable(String),
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

    /// The first `max_bytes` of the staged copy of `object` (what reviewers review), and
    /// whether the file goes on beyond them.
    pub async fn preview(
        &self,
        request: &EgressRequest,
        object: &PinnedObject,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, bool), String> {
        let key = Self::staged_key(request, object);
        let last = max_bytes.max(1) - 1;
        let answer = self
            .s3
            .get_object()
            .bucket(&self.config.staging_bucket)
            .key(&key)
            .range(format!("bytes=0-{last}"))
            .send()
            .await
            .map_err(|e| describe("s3:GetObject", &e))?;
        let bytes = answer
            .body
            .collect()
            .await
            .map_err(|e| format!("reading `{key}` from the staging bucket: {e}"))?
            .into_bytes()
            .to_vec();
        let size = usize::try_from(object.size).unwrap_or(usize::MAX);
        let more = size > bytes.len();
        Ok((bytes, more))
    }

    pub fn approved_key(request: &EgressRequest, object: &PinnedObject) -> String {
        format!(
            "approved_egress/{}/{}/{}",
            request.workspace,
            request.id,
            Self::relative(request, &object.key)
        )
    }

    /// Does the effect's S3 work (idempotently) and returns what it did; its notifications
    /// go through the outbox once it is recorded as done, never holding the files up.
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
                json!({"copied": copied, "objects": request.objects.len(), "bucket": bucket})
            }
            Effect::NotifyStep => json!({"notified": request.current_role()}),
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
                json!({"copied": copied, "objects": request.objects.len(), "bucket": self.approved_bucket(), "unstaged": unstaged})
            }
            Effect::Unstage => {
                let deleted = self.unstage(request, after_copy).await?;
                json!({"deleted": deleted, "bucket": self.config.staging_bucket})
            }
        };
        Ok(detail)
    }

    /// Checks that every pinned version is still in the egress store as it was pinned: a
    /// lifecycle rule or a deletion must stop an approval, not the publication after it.
    pub async fn check_pinned(&self, request: &EgressRequest) -> Result<(), PinnedCheck> {
        for o in &request.objects {
            let head = self
                .s3
                .head_object()
                .bucket(&self.config.store_bucket)
                .key(&o.key)
                .version_id(&o.version_id)
                .send()
                .await;
            let present = match &head {
                Ok(h) => o.size == 0 || h.content_length() == Some(o.size),
                Err(e) => {
                    // 404: the version is gone; 405: it is a delete marker now.
                    let missing = e.as_service_error().is_some_and(|s| s.is_not_found())
                        || e.raw_response()
                            .is_some_and(|r| matches!(r.status().as_u16(), 404 | 405));
                    if !missing {
                        return Err(PinnedCheck::Unavailable(describe("s3:HeadObject", e)));
                    }
                    false
                }
            };
            if !present {
                return Err(PinnedCheck::Gone(format!(
                    "pinned version `{}` of `{}` is no longer in `{}` as submitted (a lifecycle rule or a deletion): reject the request, or withdraw it",
                    o.version_id, o.key, self.config.store_bucket
                )));
            }
        }
        Ok(())
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
        if u64::try_from(object.size).unwrap_or(0) > self.config.multipart_copy_bytes {
            return self.copy_in_parts(request, object, &source, to).await;
        }
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

    /// `CopyObject` for sources over `multipart_copy_bytes` (S3 refuses it above 5 GiB): one
    /// `UploadPartCopy` per range, the upload aborted if any part fails, so no half-copied
    /// object is ever visible (and no parts are left to pay for).
    async fn copy_in_parts(
        &self,
        request: &EgressRequest,
        object: &PinnedObject,
        source: &str,
        to: (&str, &str),
    ) -> Result<bool, String> {
        let mut create = self
            .s3
            .create_multipart_upload()
            .bucket(to.0)
            .key(to.1)
            .metadata(SOURCE_VERSION, &object.version_id)
            .metadata(REQUEST, &request.id);
        if let Some(kms) = &self.config.kms_key_id {
            create = create
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        let upload = create
            .send()
            .await
            .map_err(|e| describe("s3:CreateMultipartUpload", &e))?;
        let upload_id = upload
            .upload_id()
            .ok_or("s3:CreateMultipartUpload returned no UploadId")?
            .to_string();
        let copied = self.copy_parts(object, source, to, &upload_id).await;
        let completed = match copied {
            Ok(parts) => self
                .s3
                .complete_multipart_upload()
                .bucket(to.0)
                .key(to.1)
                .upload_id(&upload_id)
                .multipart_upload(
                    aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| describe("s3:CompleteMultipartUpload", &e)),
            Err(e) => Err(e),
        };
        if let Err(e) = completed {
            let _ = self
                .s3
                .abort_multipart_upload()
                .bucket(to.0)
                .key(to.1)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
        Ok(true)
    }

    async fn copy_parts(
        &self,
        object: &PinnedObject,
        source: &str,
        to: (&str, &str),
        upload_id: &str,
    ) -> Result<Vec<aws_sdk_s3::types::CompletedPart>, String> {
        let size = u64::try_from(object.size).unwrap_or(0);
        let part = part_size(size, self.config.multipart_copy_bytes);
        let mut parts = Vec::new();
        let mut start = 0u64;
        while start < size {
            let end = (start + part).min(size) - 1;
            let number = i32::try_from(parts.len() + 1).map_err(|_| "too many parts")?;
            let out = self
                .s3
                .upload_part_copy()
                .bucket(to.0)
                .key(to.1)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(|e| describe("s3:UploadPartCopy", &e))?;
            let etag = out
                .copy_part_result()
                .and_then(|r| r.e_tag())
                .ok_or("s3:UploadPartCopy returned no ETag")?;
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
            start = end + 1;
        }
        Ok(parts)
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

    /// Publishes `notice` to the configured topic, addressed by the `audience` message
    /// attribute (a role or a user id) so subscriptions can filter on it. On a FIFO topic the
    /// outbox row is the deduplication id: a notice sent twice (a crash after sending) is
    /// delivered once.
    pub async fn send(&self, notice: &Notice) -> Result<(), String> {
        let Some(topic) = &self.config.notify_topic_arn else {
            return Ok(());
        };
        let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(&notice.audience)
            .build()
            .map_err(|e| format!("sns message attribute: {e}"))?;
        let mut publish = self
            .sns
            .publish()
            .topic_arn(topic)
            .subject(&notice.subject)
            .message(&notice.message)
            .message_attributes("audience", attribute);
        if topic.ends_with(".fifo") {
            publish = publish
                .message_group_id(&notice.request)
                .message_deduplication_id(format!("tregov-notice-{}", notice.id));
        }
        publish
            .send()
            .await
            .map_err(|e| describe("sns:Publish", &e))?;
        Ok(())
    }
}

/// The part size for copying `size` bytes: at most `largest` (a part of a multipart upload is
/// at most 5 GiB) and big enough to stay within S3's 10,000 parts.
fn part_size(size: u64, largest: u64) -> u64 {
    let fewest = size.div_ceil(10_000);
    largest
        .max(fewest)
        .max(tregov_config::egress::MIN_PART_BYTES)
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
    fn parts_stay_within_five_gib_and_ten_thousand_parts() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(part_size(6 * gib, 5 * gib), 5 * gib);
        assert_eq!(
            part_size(20 * 1024 * 1024, 5 * 1024 * 1024),
            5 * 1024 * 1024
        );
        // 5 TiB, S3's largest object, at 5 MiB parts would be a million parts.
        let tib5 = 5 * 1024 * gib;
        assert!(tib5.div_ceil(part_size(tib5, 5 * 1024 * 1024)) <= 10_000);
    }

    #[test]
    fn copy_sources_are_percent_encoded_but_keep_their_slashes() {
        assert_eq!(
            encode_key("ws-1/my results+v2.csv"),
            "ws-1/my%20results%2Bv2.csv"
        );
        assert_eq!(encode_key("ws-1/é"), "ws-1/%C3%A9");
    }
}
