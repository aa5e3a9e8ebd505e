//! Signed heads anchored in S3 against the AWS emulator: `tregov log anchor` and
//! `tregov log verify --anchors` catch what the hash chain alone cannot — an insider who can
//! write the data directory rewriting the chain and `HEAD` together, rolling the log back, or
//! writing an anchor of their own.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tregov_engine::log::DecisionLog;
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

const BUCKET: &str = "tre-log-anchors";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn locked_bucket(moto: &Moto) {
    rt().block_on(async {
        moto.s3()
            .await
            .create_bucket()
            .bucket(BUCKET)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .expect("bucket");
    });
}

/// A config with only `[log]`, its key line given.
fn config(tre: &Tre, name: &str, key_line: &str) -> PathBuf {
    let path = tre.dir.path().join(name);
    let text =
        format!("[log]\n{key_line}\nanchor_bucket = \"{BUCKET}\"\nanchor_prefix = \"anchors/\"\n");
    std::fs::write(&path, text).expect("config");
    path
}

fn keygen(tre: &Tre, name: &str) -> PathBuf {
    let path = tre.dir.path().join(name);
    let out = tre.run(&["log", "keygen", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "keygen: {}", stderr(&out));
    path
}

fn run(tre: &Tre, moto: &Moto, config: &Path, args: &[&str]) -> (bool, String) {
    let out = tre.run_with(Some(moto), config, args);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out.status.success(), text)
}

/// The log's records as fields to append again (what an insider would replay).
fn fields_of(tre: &Tre) -> Vec<Map<String, Value>> {
    let log = DecisionLog::open(&tre.data_dir()).expect("log");
    log.records()
        .expect("records")
        .into_iter()
        .filter_map(|r| r.as_object().cloned())
        .map(|mut r| {
            for k in ["seq", "time", "prev", "hash"] {
                r.remove(k);
            }
            r
        })
        .collect()
}

/// Replaces the data directory's chain and `HEAD` with a chain of `records` made by tregov's
/// own code: self-consistent, so the hash chain alone cannot tell.
fn replace_chain(tre: &Tre, records: Vec<Map<String, Value>>) {
    let other = tempfile::tempdir().expect("tempdir");
    DecisionLog::open(other.path())
        .expect("log")
        .append(records)
        .expect("append");
    let to = tre.data_dir().join("log");
    for seg in tre.segments() {
        std::fs::remove_file(seg).expect("remove");
    }
    for entry in std::fs::read_dir(other.path().join("log")).expect("read") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
}

#[test]
fn a_rewritten_chain_a_rolled_back_log_and_a_forged_head_fail_verify_with_anchors() {
    let moto = Moto::start();
    locked_bucket(&moto);
    let tre = Tre::new().with_sample();
    let key = keygen(&tre, "head.key");
    let signing = config(&tre, "tregov.toml", &format!("signing_key = {:?}", key));
    let auditor = config(
        &tre,
        "auditor.toml",
        &format!("verify_key = {:?}", key.with_extension("pub")),
    );

    let (ok, text) = run(&tre, &moto, &signing, &["log", "anchor"]);
    assert!(ok, "anchor: {text}");
    let (ok, text) = run(&tre, &moto, &auditor, &["log", "verify", "--anchors"]);
    assert!(ok, "an untouched log checks out: {text}");
    assert!(text.contains("1 anchor(s) verified"), "{text}");

    // Anchors are kept under the bucket's Object Lock.
    rt().block_on(async {
        let s3 = moto.s3().await;
        let listed = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .expect("list");
        let key = listed.contents()[0].key().expect("key").to_string();
        // moto answers GetObjectRetention with the object itself; HeadObject carries the lock.
        let head = s3
            .head_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("head");
        let mode = head.object_lock_mode().map(|m| m.as_str().to_string());
        assert!(head.object_lock_retain_until_date().is_some());
        assert_eq!(mode.as_deref(), Some("GOVERNANCE"));
    });

    // An insider flips a decision and rebuilds the chain and HEAD around it.
    let mut records = fields_of(&tre);
    let original = records.clone();
    records[3].insert("decision".into(), Value::from("allow-forged"));
    replace_chain(&tre, records);
    let (ok, text) = run(&tre, &moto, &auditor, &["log", "verify"]);
    assert!(ok, "the rewritten chain is self-consistent: {text}");
    let (ok, text) = run(&tre, &moto, &auditor, &["log", "verify", "--anchors"]);
    assert!(!ok);
    assert!(text.contains("the chain was rewritten"), "{text}");

    // Or rolls the log back to before the anchor.
    replace_chain(&tre, original[..10].to_vec());
    let (ok, text) = run(&tre, &moto, &auditor, &["log", "verify", "--anchors"]);
    assert!(!ok);
    assert!(text.contains("rolled back"), "{text}");

    // Or, with the original log back, writes an anchor signed by a key of their own.
    replace_chain(&tre, original);
    let theirs = keygen(&tre, "theirs.key");
    let forger = config(&tre, "forger.toml", &format!("signing_key = {:?}", theirs));
    let (ok, text) = run(&tre, &moto, &forger, &["log", "anchor"]);
    assert!(ok, "{text}");
    let (ok, text) = run(&tre, &moto, &auditor, &["log", "verify", "--anchors"]);
    assert!(!ok);
    assert!(text.contains("not the configured key"), "{text}");
    assert!(
        text.contains("the chain was rewritten"),
        "the genuine anchor still signs the first chain: {text}"
    );
}

#[test]
fn heads_signed_by_a_kms_key_are_checked_with_kms() {
    let moto = Moto::start();
    locked_bucket(&moto);
    let key_id = rt().block_on(async {
        let kms = aws_sdk_kms::Client::new(&moto.sdk_config().await);
        let key = kms
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .send()
            .await
            .expect("create key");
        key.key_metadata().expect("metadata").key_id().to_string()
    });
    let tre = Tre::new().with_sample();
    let config = config(&tre, "tregov.toml", &format!("kms_key_id = {key_id:?}"));
    let (ok, text) = run(&tre, &moto, &config, &["log", "anchor"]);
    assert!(ok, "anchor: {text}");
    assert!(text.contains(&key_id), "{text}");
    let (ok, text) = run(&tre, &moto, &config, &["log", "verify", "--anchors"]);
    assert!(ok, "{text}");

    let mut records = fields_of(&tre);
    records.pop();
    records.push(records[0].clone());
    replace_chain(&tre, records);
    let (ok, text) = run(&tre, &moto, &config, &["log", "verify", "--anchors"]);
    assert!(!ok);
    assert!(text.contains("the chain was rewritten"), "{text}");
}
