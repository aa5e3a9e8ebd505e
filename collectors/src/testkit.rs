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

/// A gzip bomb: `head` (the start of a log, say), then `inflated` bytes of spaces, in a file
/// about a thousandth that size (concatenated members, each a mebibyte of spaces).
pub fn gzip_bomb(head: &[u8], inflated: u64) -> Vec<u8> {
    const MEMBER: usize = 1 << 20;
    let member = gzip_bytes(&vec![b' '; MEMBER]);
    let mut out = gzip_bytes(head);
    for _ in 0..inflated.div_ceil(MEMBER as u64) {
        out.extend_from_slice(&member);
    }
    out
}

/// Bytes, gzip-compressed.
pub fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(bytes);
    gz.finish().unwrap_or_default()
}

/// The TEST-ONLY digest-signing key pair (`tests/fixtures/cloudtrail/`): moto has no
/// `ListPublicKeys`, so tests sign digests themselves and configure this public key.
const TEST_PRIVATE_KEY: &[u8] =
    include_bytes!("../../tests/fixtures/cloudtrail/TEST-ONLY-digest-signing-key.pk8.der");
const TEST_PUBLIC_KEY: &[u8] =
    include_bytes!("../../tests/fixtures/cloudtrail/TEST-ONLY-digest-signing-key.pub.der");

/// The fingerprint tests give the TEST-ONLY key.
pub const TEST_KEY_FINGERPRINT: &str = "809ecd492539551a4aab3ee76bdc2c8f";

/// The TEST-ONLY public key: DER PKCS#1 `RSAPublicKey`, as `ListPublicKeys` returns keys.
pub fn test_public_key() -> Vec<u8> {
    TEST_PUBLIC_KEY.to_vec()
}

/// Signs `text` SHA256withRSA with the TEST-ONLY key; the signature in hex, as CloudTrail
/// puts it in a digest's `signature` metadata. Empty if the key cannot sign.
pub fn sign_digest(text: &str) -> String {
    use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
    let Ok(pair) = RsaKeyPair::from_pkcs8(TEST_PRIVATE_KEY) else {
        return String::new();
    };
    let mut signature = vec![0; pair.public().modulus_len()];
    let rng = ring::rand::SystemRandom::new();
    match pair.sign(&RSA_PKCS1_SHA256, &rng, text.as_bytes(), &mut signature) {
        Ok(()) => hex::encode(signature),
        Err(_) => String::new(),
    }
}

/// A digest file's JSON in CloudTrail's documented layout. `previous` is the previous
/// digest's (key, SHA-256 of its uncompressed content, signature); `files` are
/// (bucket, key, SHA-256 of the uncompressed log file).
pub fn digest_json(
    bucket: &str,
    key: &str,
    end_time: &str,
    previous: Option<(&str, &str, &str)>,
    files: &[(&str, &str, String)],
) -> String {
    let account = crate::cloudtrail_digest::parse_digest_key(key)
        .map(|k| k.account)
        .unwrap_or_default();
    let log_files: Vec<Value> = files
        .iter()
        .map(|(b, k, h)| {
            json!({"s3Bucket": b, "s3Object": k, "hashValue": h, "hashAlgorithm": "SHA-256",
                   "newestEventTime": end_time, "oldestEventTime": end_time})
        })
        .collect();
    let mut digest = json!({
        "awsAccountId": account,
        "digestStartTime": end_time,
        "digestEndTime": end_time,
        "digestS3Bucket": bucket,
        "digestS3Object": key,
        "digestPublicKeyFingerprint": TEST_KEY_FINGERPRINT,
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": end_time,
        "oldestEventTime": end_time,
        "previousDigestS3Bucket": null,
        "previousDigestS3Object": null,
        "previousDigestHashValue": null,
        "previousDigestHashAlgorithm": null,
        "previousDigestSignature": null,
        "logFiles": log_files,
    });
    if let Some((k, h, s)) = previous {
        digest["previousDigestS3Bucket"] = json!(bucket);
        digest["previousDigestS3Object"] = json!(k);
        digest["previousDigestHashValue"] = json!(h);
        digest["previousDigestHashAlgorithm"] = json!("SHA-256");
        digest["previousDigestSignature"] = json!(s);
    }
    digest.to_string()
}

/// The key of a digest file in the (organization-)trail layout, ending at `end`
/// (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn digest_key(
    org: Option<&str>,
    account: &str,
    region: &str,
    trail: &str,
    end: &str,
) -> String {
    let (y, m, d) = (&end[0..4], &end[5..7], &end[8..10]);
    let stamp: String = end.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let org = org.map(|o| format!("{o}/")).unwrap_or_default();
    format!(
        "AWSLogs/{org}{account}/CloudTrail-Digest/{region}/{y}/{m}/{d}/{account}_CloudTrail-Digest_{region}_{trail}_us-east-1_{stamp}.json.gz"
    )
}

/// A digest written and signed as CloudTrail writes it: the gzip body, its signature (hex,
/// for the `signature` metadata), and the SHA-256 of its uncompressed content (for the next
/// digest's `previousDigestHashValue`).
pub struct SignedDigest {
    pub key: String,
    pub body: Vec<u8>,
    pub signature: String,
    pub content_sha256: String,
}

/// Signs a digest over `files`, chained to `previous` (if any).
pub fn signed_digest(
    bucket: &str,
    key: &str,
    end_time: &str,
    previous: Option<&SignedDigest>,
    files: &[(&str, &str, String)],
) -> SignedDigest {
    use sha2::Digest as _;
    let prev = previous.map(|p| {
        (
            p.key.as_str(),
            p.content_sha256.as_str(),
            p.signature.as_str(),
        )
    });
    let json = digest_json(bucket, key, end_time, prev, files);
    let content_sha256 = hex::encode(sha2::Sha256::digest(json.as_bytes()));
    let to_sign = format!(
        "{end_time}\n{bucket}/{key}\n{content_sha256}\n{}",
        previous.map(|p| p.signature.as_str()).unwrap_or("null")
    );
    SignedDigest {
        key: key.to_string(),
        body: gzip_bytes(json.as_bytes()),
        signature: sign_digest(&to_sign),
        content_sha256,
    }
}

/// SHA-256 (hex) of a log file's uncompressed content, as digests list it.
pub fn uncompressed_sha256(gz: &[u8]) -> String {
    use sha2::Digest as _;
    use std::io::Read;
    let mut content = Vec::new();
    let _ = flate2::read::MultiGzDecoder::new(gz).read_to_end(&mut content);
    hex::encode(sha2::Sha256::digest(&content))
}
