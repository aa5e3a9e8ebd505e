//! Reading CloudTrail log files: pure, no I/O, tolerant of what real logs contain.
//!
//! A record missing fields is kept with what it has (an absent `eventID` gets a stable
//! synthetic one, so re-reading the file adds nothing); odd values (`075.050.255.67`, unknown
//! event names, any age, any region) are kept as delivered. Only a file that is not gzip or
//! not a JSON object with a `Records` array is rejected, with the reason.
//!
//! A record's account is the account of its file's key path: the bucket policy decides who
//! may write under `AWSLogs/<account>/`, while a record's own `recipientAccountId` is just
//! text in it. A record claiming another account is kept under the path's account and
//! reported (`AccountClaim`).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tregov_engine::events::{ObservationKind, StoredEvent};

use crate::cloudtrail_stream::stream_log_file;

/// The fields tregov reads, each kept raw so a field of an unexpected type never rejects the
/// record.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Fields<'a> {
    #[serde(borrow, rename = "eventID")]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventTime")]
    event_time: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventSource")]
    event_source: Option<&'a RawValue>,
    #[serde(borrow, rename = "eventName")]
    event_name: Option<&'a RawValue>,
    #[serde(borrow, rename = "awsRegion")]
    aws_region: Option<&'a RawValue>,
    #[serde(borrow, rename = "recipientAccountId")]
    recipient_account_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "errorCode")]
    error_code: Option<&'a RawValue>,
    #[serde(borrow, rename = "userIdentity")]
    user_identity: Option<&'a RawValue>,
    #[serde(borrow, rename = "requestParameters")]
    request_parameters: Option<&'a RawValue>,
    #[serde(borrow, rename = "responseElements")]
    response_elements: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Identity<'a> {
    #[serde(borrow)]
    arn: Option<&'a RawValue>,
    #[serde(borrow, rename = "principalId")]
    principal_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "accountId")]
    account_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, rename = "invokedBy")]
    invoked_by: Option<&'a RawValue>,
}

/// A raw JSON value as text: strings unquoted, anything else as written; null is absent.
fn text(v: Option<&RawValue>) -> Option<String> {
    let raw = v?.get();
    if raw == "null" {
        return None;
    }
    if raw.starts_with('"') {
        // Most values have no escapes: the text between the quotes is the string.
        if raw.len() >= 2 && !raw.contains('\\') {
            return Some(raw[1..raw.len() - 1].to_string());
        }
        return serde_json::from_str::<String>(raw).ok();
    }
    Some(raw.to_string())
}

/// Where a key says the file came from: `.../<account>/CloudTrail/<region>/...`.
pub fn account_region_of_key(key: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.iter().position(|p| *p == "CloudTrail") {
        Some(i) if i >= 1 => (
            parts.get(i - 1).map(|s| s.to_string()),
            parts.get(i + 1).map(|s| s.to_string()),
        ),
        _ => (None, None),
    }
}

/// A record whose `recipientAccountId` is not the account of its file's key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountClaim {
    pub event_id: String,
    /// The account the record claims.
    pub claimed: String,
    /// The account of the key path, which the record is stored under.
    pub account: String,
}

/// One log file read whole: its events, what digests vouch for, and what is odd in it.
#[derive(Debug, Clone, Default)]
pub struct ParsedLog {
    pub events: Vec<StoredEvent>,
    /// SHA-256 (hex) of the uncompressed file, as digest files list it.
    pub sha256: String,
    pub claims: Vec<AccountClaim>,
}

/// Decompresses and parses one log file into events.
pub fn parse_log_file(
    key: &str,
    bytes: &[u8],
    egress_bucket: Option<&str>,
) -> Result<Vec<StoredEvent>, String> {
    read_log_file(key, bytes, egress_bucket).map(|p| p.events)
}

/// Decompresses and parses one log file held in memory, with its SHA-256 and the records
/// claiming another account; a file that is not whole is an error. (The collector streams
/// instead: `cloudtrail_stream`.)
pub fn read_log_file(
    key: &str,
    bytes: &[u8],
    egress_bucket: Option<&str>,
) -> Result<ParsedLog, String> {
    let mut parsed = ParsedLog::default();
    let read = stream_log_file(
        key,
        bytes,
        egress_bucket,
        u64::MAX,
        &mut |events, claims| {
            parsed.events.extend(events);
            parsed.claims.extend(claims);
            Ok(())
        },
    );
    match (read.damage, read.sha256) {
        (None, Some(sha256)) => Ok(ParsedLog { sha256, ..parsed }),
        (Some(damage), _) => Err(damage),
        (None, None) => Err("the file's hash is missing".into()),
    }
}

/// Turns the records of one file into events: what the file's key path says (account,
/// region) fills what a record lacks, and outranks what it claims.
pub(crate) struct RecordReader<'a> {
    key: &'a str,
    key_account: Option<String>,
    key_region: Option<String>,
    egress_bucket: Option<&'a str>,
}

impl<'a> RecordReader<'a> {
    pub(crate) fn new(key: &'a str, egress_bucket: Option<&'a str>) -> Self {
        let (key_account, key_region) = account_region_of_key(key);
        Self {
            key,
            key_account,
            key_region,
            egress_bucket,
        }
    }

    /// The record at `index`, and its claim to another account if it makes one.
    pub(crate) fn event(&self, index: u64, raw: &RawValue) -> (StoredEvent, Option<AccountClaim>) {
        let (event, claimed) = to_event(
            self.key,
            index,
            raw,
            self.key_account.as_deref(),
            self.key_region.as_deref(),
            self.egress_bucket,
        );
        let claim = claimed.map(|claimed| AccountClaim {
            event_id: event.event_id.clone(),
            claimed,
            account: event.account.clone(),
        });
        (event, claim)
    }
}

fn to_event(
    key: &str,
    index: u64,
    raw: &RawValue,
    key_account: Option<&str>,
    key_region: Option<&str>,
    egress_bucket: Option<&str>,
) -> (StoredEvent, Option<String>) {
    let fields: Fields = serde_json::from_str(raw.get()).unwrap_or_default();
    let identity: Identity = fields
        .user_identity
        .and_then(|i| serde_json::from_str(i.get()).ok())
        .unwrap_or_default();
    let event_id = text(fields.event_id).unwrap_or_else(|| {
        format!(
            "synthetic-{}",
            hex::encode(Sha256::digest(raw.get().as_bytes()))
        )
    });
    let principal = text(identity.arn)
        .or_else(|| text(identity.principal_id))
        .or_else(|| text(identity.invoked_by))
        .or_else(|| text(identity.kind))
        .unwrap_or_else(|| "unknown".into());
    let recipient = text(fields.recipient_account_id);
    // `userIdentity.accountId` is the caller's account, which differs for every cross-account
    // call: only `recipientAccountId` claims the record's own account.
    let claimed = match (key_account, &recipient) {
        (Some(path), Some(r)) if r != path => Some(r.clone()),
        _ => None,
    };
    let account = key_account
        .map(String::from)
        .or(recipient)
        .or_else(|| text(identity.account_id))
        .unwrap_or_default();
    let event_source = text(fields.event_source).unwrap_or_default();
    let event_name = text(fields.event_name).unwrap_or_default();
    let (observation, target) = if fields.error_code.is_some_and(|c| c.get() != "null") {
        // A call that failed changed nothing.
        (None, None)
    } else {
        classify(
            &event_source,
            &event_name,
            fields.request_parameters,
            fields.response_elements,
            egress_bucket,
        )
    };
    let event_time = text(fields.event_time).unwrap_or_default();
    let event = StoredEvent {
        event_id,
        event_ts: tregov_engine::events::timestamp(&event_time),
        event_time,
        event_source,
        event_name,
        principal,
        account,
        region: text(fields.aws_region)
            .or_else(|| key_region.map(String::from))
            .unwrap_or_default(),
        source_file: key.to_string(),
        // Records that change governed state are kept inline for the planner; every record
        // stays readable from its file, which is stored as delivered.
        raw: observation.map(|_| raw.get().to_string()),
        observation,
        target,
        record_index: index,
    };
    (event, claimed)
}

/// Recognises events that change governed state, and what they changed.
fn classify(
    source: &str,
    name: &str,
    request: Option<&RawValue>,
    response: Option<&RawValue>,
    egress_bucket: Option<&str>,
) -> (Option<ObservationKind>, Option<String>) {
    use ObservationKind::*;
    let kind = match (source, name) {
        (
            "iam.amazonaws.com",
            "CreateRole"
            | "DeleteRole"
            | "PutRolePolicy"
            | "DeleteRolePolicy"
            | "AttachRolePolicy"
            | "DetachRolePolicy"
            | "UpdateAssumeRolePolicy"
            | "TagRole"
            | "UntagRole",
        ) => IamRoleChange,
        ("lakeformation.amazonaws.com", "GrantPermissions" | "BatchGrantPermissions") => {
            LakeformationGrant
        }
        ("lakeformation.amazonaws.com", "RevokePermissions" | "BatchRevokePermissions") => {
            LakeformationRevoke
        }
        (
            "ec2.amazonaws.com",
            "RunInstances" | "StartInstances" | "StopInstances" | "TerminateInstances",
        )
        | (
            "sagemaker.amazonaws.com",
            "CreateNotebookInstance"
            | "StartNotebookInstance"
            | "StopNotebookInstance"
            | "DeleteNotebookInstance",
        ) => WorkspaceLifecycle,
        (
            "s3.amazonaws.com",
            "PutObject"
            | "CopyObject"
            | "DeleteObject"
            | "DeleteObjects"
            | "CompleteMultipartUpload",
        ) => EgressStoreWrite,
        ("budgets.amazonaws.com", "CreateBudget" | "UpdateBudget" | "DeleteBudget") => BudgetChange,
        (
            "cloudtrail.amazonaws.com",
            "StopLogging" | "StartLogging" | "DeleteTrail" | "UpdateTrail" | "PutEventSelectors",
        ) => TrailChange,
        (
            "backup.amazonaws.com",
            "UpdateBackupPlan"
            | "DeleteBackupPlan"
            | "CreateBackupSelection"
            | "DeleteBackupSelection",
        ) => BackupPlanChange,
        _ => return (None, None),
    };
    let req: Value = request
        .and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null);
    let str_at = |v: &Value, ptr: &str| v.pointer(ptr).and_then(Value::as_str).map(String::from);
    let target = match kind {
        IamRoleChange => str_at(&req, "/roleName"),
        LakeformationGrant | LakeformationRevoke => {
            str_at(&req, "/principal/dataLakePrincipalIdentifier").or_else(|| {
                let entries = req.get("entries").and_then(Value::as_array)?;
                let ids: Vec<String> = entries
                    .iter()
                    .filter_map(|e| str_at(e, "/principal/dataLakePrincipalIdentifier"))
                    .collect();
                (!ids.is_empty()).then(|| ids.join(","))
            })
        }
        WorkspaceLifecycle => str_at(&req, "/notebookInstanceName").or_else(|| {
            let from = |v: &Value| -> Option<String> {
                let items = v.pointer("/instancesSet/items").and_then(Value::as_array)?;
                let ids: Vec<String> = items
                    .iter()
                    .filter_map(|i| str_at(i, "/instanceId"))
                    .collect();
                (!ids.is_empty()).then(|| ids.join(","))
            };
            from(&req).or_else(|| {
                let resp: Value = response
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .unwrap_or(Value::Null);
                from(&resp)
            })
        }),
        EgressStoreWrite => {
            let bucket = str_at(&req, "/bucketName");
            match (bucket, egress_bucket) {
                (Some(b), Some(egress)) if b == egress => {
                    Some(format!("{b}/{}", str_at(&req, "/key").unwrap_or_default()))
                }
                // Only writes to the egress store are governed.
                _ => return (None, None),
            }
        }
        BudgetChange => str_at(&req, "/budgetName").or_else(|| str_at(&req, "/budget/budgetName")),
        TrailChange => str_at(&req, "/name"),
        BackupPlanChange => str_at(&req, "/backupPlanId"),
    };
    (Some(kind), target)
}

/// The record at `index` of a stored (gzip) log file, exactly as delivered.
pub fn record_at(bytes: &[u8], index: u64) -> Result<String, String> {
    crate::cloudtrail_stream::record_at(bytes, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "AWSLogs/o-abc123/111111111111/CloudTrail/eu-west-2/2026/11/26/111111111111_CloudTrail_eu-west-2_20261126T1200Z_x.json.gz";

    fn gzip(json: &str) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, json.as_bytes()).expect("write");
        gz.finish().expect("gzip")
    }

    fn parse_log_json(
        key: &str,
        json: &str,
        egress_bucket: Option<&str>,
    ) -> Result<Vec<StoredEvent>, String> {
        parse_log_file(key, &gzip(json), egress_bucket)
    }

    #[test]
    fn a_record_missing_most_fields_is_kept_with_what_it_has() {
        let events =
            parse_log_json(KEY, r#"{"Records":[{"eventName":"Weird"}]}"#, None).expect("parse");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert!(e.event_id.starts_with("synthetic-"));
        assert_eq!(e.event_name, "Weird");
        assert_eq!(e.account, "111111111111");
        assert_eq!(e.region, "eu-west-2");
        assert_eq!(e.principal, "unknown");
    }

    #[test]
    fn the_synthetic_id_of_a_record_is_stable() {
        let json = r#"{"Records":[{"eventName":"A"},{"eventName":"B"}]}"#;
        let a = parse_log_json(KEY, json, None).expect("parse");
        let b = parse_log_json(KEY, json, None).expect("parse");
        assert_eq!(a[0].event_id, b[0].event_id);
        assert_ne!(a[0].event_id, a[1].event_id);
    }

    #[test]
    fn odd_values_are_kept_as_delivered() {
        let json = r#"{"Records":[{"eventID":"e1","eventTime":1700000000,"sourceIPAddress":"075.050.255.67",
            "awsRegion":"xx-nowhere-9","eventSource":"s3.amazonaws.com","eventName":"GetObject",
            "userIdentity":{"type":"AWSService","invokedBy":"backup.amazonaws.com"}}]}"#;
        let e = &parse_log_json(KEY, json, None).expect("parse")[0];
        assert_eq!(e.event_time, "1700000000");
        assert_eq!(e.region, "xx-nowhere-9");
        assert_eq!(e.principal, "backup.amazonaws.com");
        let raw = record_at(&gzip(json), e.record_index).expect("record");
        assert!(raw.contains("\"075.050.255.67\""), "{raw}");
    }

    #[test]
    fn an_edit_of_a_backup_plan_or_its_selections_is_an_observation_naming_the_plan() {
        for name in [
            "UpdateBackupPlan",
            "CreateBackupSelection",
            "DeleteBackupSelection",
        ] {
            let json = format!(
                r#"{{"Records":[{{"eventID":"b","eventSource":"backup.amazonaws.com","eventName":"{name}",
                "requestParameters":{{"backupPlanId":"plan-1"}}}}]}}"#
            );
            let e = &parse_log_json(KEY, &json, None).expect("parse")[0];
            assert_eq!(
                e.observation,
                Some(ObservationKind::BackupPlanChange),
                "{name}"
            );
            assert_eq!(e.target.as_deref(), Some("plan-1"));
        }
    }

    #[test]
    fn a_lake_formation_grant_is_an_observation_naming_the_principal() {
        let json = r#"{"Records":[{"eventID":"g","eventSource":"lakeformation.amazonaws.com","eventName":"GrantPermissions",
            "requestParameters":{"principal":{"dataLakePrincipalIdentifier":"arn:aws:iam::111111111111:role/x"},"permissions":["SELECT"]}}]}"#;
        let e = &parse_log_json(KEY, json, None).expect("parse")[0];
        assert_eq!(e.observation, Some(ObservationKind::LakeformationGrant));
        assert_eq!(
            e.target.as_deref(),
            Some("arn:aws:iam::111111111111:role/x")
        );
    }

    #[test]
    fn a_failed_call_is_not_an_observation() {
        let json = r#"{"Records":[{"eventID":"f","eventSource":"iam.amazonaws.com","eventName":"PutRolePolicy",
            "errorCode":"AccessDenied","requestParameters":{"roleName":"r"}}]}"#;
        let e = &parse_log_json(KEY, json, None).expect("parse")[0];
        assert_eq!(e.observation, None);
    }

    #[test]
    fn only_writes_to_the_egress_bucket_are_egress_observations() {
        let json = r#"{"Records":[
            {"eventID":"a","eventSource":"s3.amazonaws.com","eventName":"PutObject","requestParameters":{"bucketName":"egress","key":"ws-1/out.csv"}},
            {"eventID":"b","eventSource":"s3.amazonaws.com","eventName":"PutObject","requestParameters":{"bucketName":"other","key":"k"}}]}"#;
        let events = parse_log_json(KEY, json, Some("egress")).expect("parse");
        assert_eq!(events[0].target.as_deref(), Some("egress/ws-1/out.csv"));
        assert_eq!(events[1].observation, None);
    }

    #[test]
    fn a_record_claiming_another_account_is_kept_under_its_paths_account_and_reported() {
        let json = r#"{"Records":[
            {"eventID":"own","recipientAccountId":"111111111111"},
            {"eventID":"cross","recipientAccountId":"111111111111","userIdentity":{"accountId":"999999999999"}},
            {"eventID":"liar","recipientAccountId":"222222222222"}]}"#;
        let parsed = read_log_file(KEY, &gzip(json), None).expect("parse");
        assert!(parsed.events.iter().all(|e| e.account == "111111111111"));
        assert_eq!(
            parsed.claims,
            vec![AccountClaim {
                event_id: "liar".into(),
                claimed: "222222222222".into(),
                account: "111111111111".into(),
            }],
            "a cross-account caller is no claim"
        );
        assert_eq!(parsed.sha256, hex::encode(Sha256::digest(json.as_bytes())));
    }

    #[test]
    fn a_file_that_is_not_gzip_or_not_a_log_is_rejected_with_the_reason() {
        assert_eq!(
            parse_log_file(KEY, b"{}", None).expect_err("not gzip"),
            "not a gzip file"
        );
        assert!(parse_log_file(KEY, &gzip("[1,2,3]"), None)
            .expect_err("not a log")
            .contains("Records"));
    }
}
