//! CloudTrail log files as the organization trail delivers them, for tests and benchmarks.

use std::io::Write;

use serde_json::{json, Value};

/// A deterministic generator (64-bit LCG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

const NAMES: &[(&str, &str)] = &[
    ("s3.amazonaws.com", "GetObject"),
    ("s3.amazonaws.com", "ListObjects"),
    ("sts.amazonaws.com", "AssumeRole"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("iam.amazonaws.com", "PutRolePolicy"),
    ("lakeformation.amazonaws.com", "GrantPermissions"),
    ("glue.amazonaws.com", "GetTable"),
    ("kms.amazonaws.com", "Decrypt"),
    ("sagemaker.amazonaws.com", "StopNotebookInstance"),
    ("athena.amazonaws.com", "StartQueryExecution"),
];

/// One realistic record; `id` makes its `eventID`.
pub fn record(rng: &mut Lcg, account: &str, region: &str, day: &str, id: &str) -> Value {
    let (source, name) = NAMES[rng.below(NAMES.len() as u64) as usize];
    let user = format!("researcher-{}", rng.below(40));
    let mut r = json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": format!("AROAEXAMPLE:{user}"),
            "arn": format!("arn:aws:sts::{account}:assumed-role/swb-workspace/{user}"),
            "accountId": account,
            "sessionContext": {"attributes": {"creationDate": format!("{day}T08:00:00Z"), "mfaAuthenticated": "false"}}
        },
        "eventTime": format!("{day}T{:02}:{:02}:{:02}Z", rng.below(24), rng.below(60), rng.below(60)),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.below(256)),
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": {"bucketName": "tre-datalake", "key": format!("genomics/part-{}.parquet", rng.below(1000))},
        "responseElements": null,
        "requestID": format!("req-{id}"),
        "eventID": id,
        "readOnly": true,
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management"
    });
    if name == "PutRolePolicy" {
        r["requestParameters"] =
            json!({"roleName": "swb-ws-role", "policyName": "data", "policyDocument": "{}"});
        r["readOnly"] = json!(false);
    }
    if name == "GrantPermissions" {
        r["requestParameters"] = json!({"principal": {"dataLakePrincipalIdentifier": format!("arn:aws:iam::{account}:role/swb-ws-role")},
            "resource": {"table": {"databaseName": "genomics", "name": "gwas_2024"}}, "permissions": ["SELECT"]});
        r["readOnly"] = json!(false);
    }
    r
}

/// A random-looking, deterministic event id in CloudTrail's UUID format.
pub fn uuid(rng: &mut Lcg) -> String {
    let a = rng.below(1 << 32);
    let b = rng.below(1 << 16);
    let c = rng.below(1 << 16);
    let d = rng.below(1 << 16);
    let e = rng.below(1 << 32) << 16 | rng.below(1 << 16);
    format!("{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}")
}

/// The key of a log file in the organization-trail layout.
pub fn key(org: Option<&str>, account: &str, region: &str, day: &str, n: u64) -> String {
    let (y, m, d) = (&day[0..4], &day[5..7], &day[8..10]);
    let org = org.map(|o| format!("{o}/")).unwrap_or_default();
    format!(
        "AWSLogs/{org}{account}/CloudTrail/{region}/{y}/{m}/{d}/{account}_CloudTrail_{region}_{y}{m}{d}T{:02}{:02}Z_{n:016x}.json.gz",
        n % 24,
        (n * 5) % 60
    )
}

/// A log file's bytes: `{"Records": [...]}`, gzip-compressed.
pub fn gzip_records(records: &[Value]) -> Vec<u8> {
    let body = serde_json::to_vec(&json!({ "Records": records })).unwrap_or_default();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(&body);
    gz.finish().unwrap_or_default()
}
