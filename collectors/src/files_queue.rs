//! New log files announced on an SQS queue, instead of listing the trail's bucket on every
//! poll: S3 event notifications (`s3:ObjectCreated:*`, delivered directly or through SNS) or
//! CloudTrail's own SNS notifications (`s3ObjectKey`).
//!
//! A message is deleted once every file it announces is stored; one whose files could not be
//! read stays and is received again. Notifications can be lost or late, so a resync still
//! lists the bucket.

use serde_json::Value;

use crate::CollectError;

/// Most messages one poll takes from the queue (ten per receive).
const MAX_MESSAGES_PER_POLL: usize = 1000;

pub struct FilesQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

/// A received message and the objects it announces (bucket, key, ETag and size if it said).
pub struct Announcement {
    pub receipt_handle: Option<String>,
    pub objects: Vec<Announced>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
    pub size: Option<u64>,
}

impl FilesQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: String) -> Self {
        Self { sqs, url }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Everything waiting now (short polls until one comes back empty). A message that
    /// cannot be read is left for the redrive policy and logged.
    pub async fn drain(&self) -> Result<Vec<Announcement>, CollectError> {
        let mut out = Vec::new();
        let mut taken = 0;
        while taken < MAX_MESSAGES_PER_POLL {
            let answer = self
                .sqs
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .wait_time_seconds(if taken == 0 { 1 } else { 0 })
                .send()
                .await
                .map_err(|e| CollectError::aws("sqs:ReceiveMessage", &self.url, e))?;
            let messages = answer.messages();
            if messages.is_empty() {
                break;
            }
            taken += messages.len();
            for message in messages {
                match announced(message.body().unwrap_or_default()) {
                    Ok(objects) => out.push(Announcement {
                        receipt_handle: message.receipt_handle().map(String::from),
                        objects,
                    }),
                    Err(why) => {
                        tracing::warn!(queue = %self.url, message = message.message_id(), why,
                        "unreadable file notification left for the dead-letter queue")
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes the messages whose files are stored.
    pub async fn delete(&self, handles: &[&str]) -> Result<(), CollectError> {
        let failed = crate::queue::delete(&self.sqs, &self.url, handles).await?;
        if failed > 0 {
            // Received again, the files are found read and the message goes then.
            tracing::warn!(queue = %self.url, failed, "file notifications not deleted");
        }
        Ok(())
    }
}

/// The objects a notification announces: none for S3's test event or anything that is not
/// an object creation; an error for a body that is no notification at all.
pub fn announced(body: &str) -> Result<Vec<Announced>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    // Through SNS (not raw delivery): the notification is the envelope's `Message`.
    if v.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = v
            .get("Message")
            .and_then(Value::as_str)
            .ok_or("an SNS notification without `Message`")?;
        return announced(inner);
    }
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    // CloudTrail's own SNS notification: `{"s3Bucket": ..., "s3ObjectKey": [...]}`.
    if let (Some(bucket), Some(keys)) = (
        v.get("s3Bucket").and_then(Value::as_str),
        v.get("s3ObjectKey").and_then(Value::as_array),
    ) {
        return Ok(keys
            .iter()
            .filter_map(Value::as_str)
            .map(|key| Announced {
                bucket: bucket.to_string(),
                key: key.to_string(),
                etag: None,
                size: None,
            })
            .collect());
    }
    let records = v
        .get("Records")
        .and_then(Value::as_array)
        .ok_or("neither an S3 event notification nor a CloudTrail notification")?;
    let mut out = Vec::new();
    for r in records {
        let created = r
            .get("eventName")
            .and_then(Value::as_str)
            .is_some_and(|n| n.starts_with("ObjectCreated:"));
        if !created {
            continue;
        }
        let s3 = r.get("s3").ok_or("an S3 record without `s3`")?;
        let bucket = s3
            .pointer("/bucket/name")
            .and_then(Value::as_str)
            .ok_or("an S3 record without `s3.bucket.name`")?;
        let key = s3
            .pointer("/object/key")
            .and_then(Value::as_str)
            .ok_or("an S3 record without `s3.object.key`")?;
        out.push(Announced {
            bucket: bucket.to_string(),
            key: url_decoded(key)?,
            etag: s3
                .pointer("/object/eTag")
                .and_then(Value::as_str)
                .map(|e| format!("\"{}\"", e.trim_matches('"'))),
            size: s3.pointer("/object/size").and_then(Value::as_u64),
        });
    }
    Ok(out)
}

/// S3 notifications give keys URL-encoded, spaces as `+`.
fn url_decoded(key: &str) -> Result<String, String> {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = key
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("`{key}` has a bad escape"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("`{key}` is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_notification_names_its_decoded_key_etag_and_size() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"trail"},"object":{"key":"AWSLogs/o-1/111/CloudTrail/eu-west-2/2026/12/07/a%3Ab+c.json.gz","size":42,"eTag":"abc"}}}]}"#;
        assert_eq!(
            announced(body).expect("read"),
            vec![Announced {
                bucket: "trail".into(),
                key: "AWSLogs/o-1/111/CloudTrail/eu-west-2/2026/12/07/a:b c.json.gz".into(),
                etag: Some("\"abc\"".into()),
                size: Some(42),
            }]
        );
    }

    #[test]
    fn a_cloudtrail_notification_through_sns_names_its_keys() {
        let inner = r#"{"s3Bucket":"trail","s3ObjectKey":["k1","k2"]}"#;
        let body = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        let keys: Vec<String> = announced(&body)
            .expect("read")
            .into_iter()
            .map(|a| a.key)
            .collect();
        assert_eq!(keys, ["k1", "k2"]);
    }

    #[test]
    fn s3_test_events_and_deletions_announce_nothing_and_other_json_is_an_error() {
        assert!(
            announced(r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#)
                .expect("test event")
                .is_empty()
        );
        let deleted = r#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{}}]}"#;
        assert!(announced(deleted).expect("deletion").is_empty());
        assert!(announced(r#"{"hello":1}"#).is_err());
        assert!(announced("not json").is_err());
    }
}
