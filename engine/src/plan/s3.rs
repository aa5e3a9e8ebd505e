//! The S3 side of a role's data access: the statements of its inline policy, grouped so
//! that a role with many datasets stays under IAM's size limit.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::index::Dataset;

/// IAM's limit on a role's inline policies, in characters (whitespace not counted).
pub(super) const IAM_INLINE_POLICY_LIMIT: usize = 10_240;

/// The S3 statements for the datasets a role may use: one read statement and one write
/// statement naming every object prefix, and one list statement per bucket with its
/// prefixes as `s3:prefix` conditions. Grouped, each further dataset costs two short strings
/// rather than three statements, which keeps roles with many studies under IAM's size limit.
pub(super) fn s3_statements(allowed: &[(&Dataset, bool)]) -> Vec<Value> {
    let objects = |ds: &Dataset| format!("arn:aws:s3:::{}/{}*", ds.bucket, ds.prefix);
    let read: BTreeSet<String> = allowed.iter().map(|(ds, _)| objects(ds)).collect();
    let write: BTreeSet<String> = allowed
        .iter()
        .filter(|(_, w)| *w)
        .map(|(ds, _)| objects(ds))
        .collect();
    let mut by_bucket: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (ds, _) in allowed {
        by_bucket
            .entry(ds.bucket.as_str())
            .or_default()
            .insert(format!("{}*", ds.prefix));
    }
    let mut out = Vec::new();
    if !read.is_empty() {
        out.push(json!({"Sid": "TregovRead", "Effect": "Allow",
            "Action": ["s3:GetObject*"], "Resource": read}));
    }
    if !write.is_empty() {
        out.push(json!({"Sid": "TregovWrite", "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": write}));
    }
    for (bucket, prefixes) in by_bucket {
        // Sids must be alphanumeric: the bucket name's letters and a digest keep them unique.
        let readable: String = bucket
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(40)
            .collect();
        let sid = format!(
            "TregovList{readable}{}",
            &crate::log::sha256_hex(bucket.as_bytes())[..8]
        );
        out.push(json!({"Sid": sid, "Effect": "Allow",
            "Action": ["s3:ListBucket"], "Resource": [format!("arn:aws:s3:::{bucket}")],
            "Condition": {"StringLike": {"s3:prefix": prefixes}}}));
    }
    out
}

/// The length of `document` as JSON text, without the text: the planner checks every
/// role's policy against IAM's limit.
pub(super) fn json_len(document: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a `Value` always serialises.
    let _ = serde_json::to_writer(&mut counter, document);
    counter.0
}

/// Whether `new` takes away anything `current` allows: an action on a resource, or a listed
/// prefix, that only `current` has. A narrower data-access policy is a revocation.
pub(super) fn narrows(current: &Value, new: &Value) -> bool {
    let had = grants_of(current);
    let has = grants_of(new);
    had.difference(&has).next().is_some()
}

/// Every (action, resource) and (bucket, listed prefix) pair a policy document allows.
fn grants_of(document: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    };
    for statement in document["Statement"].as_array().into_iter().flatten() {
        if statement["Effect"] != "Allow" {
            continue;
        }
        let resources = strings(&statement["Resource"]);
        let prefixes = strings(&statement["Condition"]["StringLike"]["s3:prefix"]);
        for action in strings(&statement["Action"]) {
            for resource in &resources {
                if prefixes.is_empty() {
                    out.insert(format!("{action} {resource}"));
                }
                for prefix in &prefixes {
                    out.insert(format!("{action} {resource} {prefix}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(bucket: &str, prefix: &str) -> Dataset {
        Dataset {
            resource: Value::Null,
            bucket: bucket.into(),
            prefix: prefix.into(),
            max_write: true,
            resource_key: String::new(),
            groups: Vec::new(),
            owner: None,
        }
    }

    #[test]
    fn s3_access_is_grouped_so_a_role_with_many_studies_stays_under_the_iam_limit() {
        let studies: Vec<Dataset> = (0..150)
            .map(|i| {
                dataset(
                    if i % 2 == 0 { "tre-open" } else { "tre-lake" },
                    &format!("db{i}/t/"),
                )
            })
            .collect();
        let allowed: Vec<(&Dataset, bool)> =
            studies.iter().map(|d| (d, d.prefix == "db1/t/")).collect();
        let statements = s3_statements(&allowed);
        // Read, write, and a list statement per bucket.
        assert_eq!(statements.len(), 4);
        assert_eq!(
            statements[0]["Resource"].as_array().map(Vec::len),
            Some(150)
        );
        assert_eq!(
            statements[1]["Resource"],
            json!(["arn:aws:s3:::tre-lake/db1/t/*"])
        );
        assert!(statements[2..]
            .iter()
            .all(|s| s["Condition"]["StringLike"]["s3:prefix"]
                .as_array()
                .is_some_and(|p| p.len() == 75)));
        let document = json!({"Version": "2012-10-17", "Statement": statements});
        assert_eq!(json_len(&document), document.to_string().len());
        assert!(
            document.to_string().len() <= IAM_INLINE_POLICY_LIMIT,
            "{}",
            document.to_string().len()
        );
    }

    #[test]
    fn a_policy_is_narrower_when_it_drops_a_prefix_and_wider_when_it_only_adds() {
        let a = dataset("lake", "a/");
        let b = dataset("lake", "b/");
        let doc = |allowed: &[(&Dataset, bool)]| json!({"Version": "2012-10-17", "Statement": s3_statements(allowed)});
        let both = doc(&[(&a, true), (&b, false)]);
        let only_a = doc(&[(&a, true)]);
        let a_read_only = doc(&[(&a, false), (&b, false)]);
        assert!(narrows(&both, &only_a), "b dropped");
        assert!(!narrows(&only_a, &both), "b added");
        assert!(narrows(&both, &a_read_only), "writing a dropped");
        assert!(!narrows(&both, &both));
    }
}
