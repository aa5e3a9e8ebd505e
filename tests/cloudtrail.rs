//! The CloudTrail collector against the AWS emulator: an organization trail's bucket holding
//! `.json.gz` log files in the real layout, read with `tregov collect`.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tregov_tests::cloudtrail::{gzip_bomb, gzip_bytes, gzip_records, key, record, Lcg};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, tregov_bin, Tre};

const ORG: &str = "o-a1b2c3d4e5";
const BUCKET: &str = "org-trail-logs";
const ACCOUNTS: &[&str] = &["111111111111", "222222222222", "333333333333"];

/// What was put in the bucket.
struct Seeded {
    event_ids: BTreeSet<String>,
    files: usize,
    corrupt_key: String,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Three accounts, two regions, four days, files of ~30 records: over 10,000 events in
/// hundreds of files; some records missing fields; one corrupt file among them.
fn seed(moto: &Moto) -> Seeded {
    rt().block_on(async {
        let s3 = moto.s3().await;
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        let mut rng = Lcg(11);
        let mut event_ids = BTreeSet::new();
        let mut files = 0;
        let mut n = 0u64;
        for account in ACCOUNTS {
            for region in ["eu-west-2", "us-east-1"] {
                for day in ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"] {
                    for _ in 0..15 {
                        n += 1;
                        let mut records = Vec::new();
                        for i in 0..30 {
                            let id = format!("{account}-{n:05}-{i:02}");
                            let mut r = record(&mut rng, account, region, day, &id);
                            if i == 7 {
                                // Real logs have records missing fields.
                                if let Some(o) = r.as_object_mut() {
                                    o.remove("userIdentity");
                                    o.remove("awsRegion");
                                }
                            }
                            event_ids.insert(id);
                            records.push(r);
                        }
                        // The same event delivered twice (CloudTrail may).
                        records.push(records[0].clone());
                        s3.put_object()
                            .bucket(BUCKET)
                            .key(key(Some(ORG), account, region, day, n))
                            .body(gzip_records(&records).into())
                            .send()
                            .await
                            .expect("put");
                        files += 1;
                    }
                }
            }
        }
        let corrupt_key = key(Some(ORG), ACCOUNTS[1], "eu-west-2", "2026-11-22", 999_999);
        s3.put_object()
            .bucket(BUCKET)
            .key(&corrupt_key)
            .body(b"this is not gzip".to_vec().into())
            .send()
            .await
            .expect("put corrupt");
        Seeded {
            event_ids,
            files,
            corrupt_key,
        }
    })
}

fn config(tre: &Tre, accounts: &[&str]) -> std::path::PathBuf {
    let mut text = String::from("max_attempts = 2\nconcurrency = 8\n");
    for (i, a) in accounts.iter().enumerate() {
        text.push_str(&format!(
            "[[projects]]\nid = \"proj-{i}\"\naccount_id = \"{a}\"\n"
        ));
    }
    text.push_str(&format!(
        "[cloudtrail]\nbucket = \"{BUCKET}\"\norganization_id = \"{ORG}\"\n"
    ));
    let path = tre.dir.path().join("tregov.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn tregov(tre: &Tre, moto: &Moto, config: &std::path::Path, args: &[&str]) -> Output {
    tre.run_with(Some(moto), config, args)
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn event_count(tre: &Tre, moto: &Moto, config: &std::path::Path) -> u64 {
    let out = tregov(tre, moto, config, &["--output", "json", "events", "count"]);
    json_of(&out)["count"].as_u64().expect("count")
}

#[test]
fn collecting_twice_stores_every_event_once_and_names_the_corrupt_file() {
    let moto = Moto::start();
    let seeded = seed(&moto);
    assert!(seeded.event_ids.len() >= 10_000);
    assert!(seeded.files >= 300);
    let tre = Tre::new();
    let cfg = config(&tre, ACCOUNTS);

    let first = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "collect", "--once"],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let report = &json_of(&first)["cloudtrail"];
    assert_eq!(report["items"], seeded.event_ids.len() as u64);
    assert_eq!(report["files"], seeded.files as u64 + 1);
    assert_eq!(
        event_count(&tre, &moto, &cfg),
        seeded.event_ids.len() as u64
    );

    let second = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "collect", "--once"],
    );
    assert!(second.status.success(), "{}", stderr(&second));
    let report = &json_of(&second)["cloudtrail"];
    assert_eq!(report["items"], 0, "nothing new the second time");
    assert_eq!(report["files"], 0, "no file is read twice");
    assert_eq!(
        event_count(&tre, &moto, &cfg),
        seeded.event_ids.len() as u64
    );

    let status = json_of(&tregov(&tre, &moto, &cfg, &["--output", "json", "status"]));
    let errors = status["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .find(|c| c["collector"] == "cloudtrail")
        .expect("cloudtrail status")["errors"]
        .to_string();
    assert!(errors.contains(&seeded.corrupt_key), "{errors}");
    assert!(errors.contains("not a gzip file"), "{errors}");

    // Every event listed once, with where it came from.
    let listed = tregov(&tre, &moto, &cfg, &["--output", "json", "events", "list"]);
    let ids: Vec<String> = stdout(&listed)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            assert!(v["sourceFile"]
                .as_str()
                .unwrap_or("")
                .starts_with("AWSLogs/"));
            v["eventID"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(ids.len(), seeded.event_ids.len());
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), seeded.event_ids);
}

#[test]
fn a_collector_killed_midway_and_restarted_loses_and_doubles_nothing() {
    let moto = Moto::start();
    let seeded = seed(&moto);
    let tre = Tre::new();
    let cfg = config(&tre, ACCOUNTS);
    for delay_ms in [400u64, 900] {
        let mut child = tre
            .command(Some(&moto), &cfg, &["collect", "--once"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let partial = event_count(&tre, &moto, &cfg);
    let done = tregov(&tre, &moto, &cfg, &["collect", "--once"]);
    assert!(done.status.success(), "{}", stderr(&done));
    let total = event_count(&tre, &moto, &cfg);
    assert_eq!(
        total,
        seeded.event_ids.len() as u64,
        "after {partial} before the restart"
    );
}

#[test]
fn a_collector_for_one_project_account_sees_only_that_account() {
    let moto = Moto::start();
    seed(&moto);
    let tre = Tre::new();
    let cfg = config(&tre, &[ACCOUNTS[1]]);
    let out = tregov(&tre, &moto, &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = tregov(&tre, &moto, &cfg, &["--output", "json", "events", "list"]);
    let accounts: BTreeSet<String> = stdout(&listed)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            v["account"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(accounts, BTreeSet::from([ACCOUNTS[1].to_string()]));
}

#[test]
fn a_file_delivered_late_for_an_earlier_day_is_still_read() {
    let moto = Moto::start();
    let seeded = seed(&moto);
    let tre = Tre::new();
    let cfg = config(&tre, ACCOUNTS);
    assert!(tregov(&tre, &moto, &cfg, &["collect", "--once"])
        .status
        .success());
    // A file for the day before the newest, arriving after the first pass.
    rt().block_on(async {
        let s3 = moto.s3().await;
        let mut rng = Lcg(5);
        let records = vec![record(
            &mut rng,
            ACCOUNTS[0],
            "eu-west-2",
            "2026-11-22",
            "late-1",
        )];
        s3.put_object()
            .bucket(BUCKET)
            .key(key(
                Some(ORG),
                ACCOUNTS[0],
                "eu-west-2",
                "2026-11-22",
                777_777,
            ))
            .body(gzip_records(&records).into())
            .send()
            .await
            .expect("put");
    });
    let out = tregov(
        &tre,
        &moto,
        &cfg,
        &["--output", "json", "collect", "--once"],
    );
    assert_eq!(json_of(&out)["cloudtrail"]["items"], 1);
    assert_eq!(
        event_count(&tre, &moto, &cfg),
        seeded.event_ids.len() as u64 + 1
    );
}

#[test]
fn events_are_filtered_by_name_principal_and_time() {
    let moto = Moto::start();
    seed(&moto);
    let tre = Tre::new();
    let cfg = config(&tre, ACCOUNTS);
    assert!(tregov(&tre, &moto, &cfg, &["collect", "--once"])
        .status
        .success());
    let count = |args: &[&str]| {
        let mut all = vec!["--output", "json", "events", "count"];
        all.extend_from_slice(args);
        json_of(&tregov(&tre, &moto, &cfg, &all))["count"]
            .as_u64()
            .expect("count")
    };
    let total = count(&[]);
    let grants = count(&["--name", "GrantPermissions"]);
    assert!(grants > 0 && grants < total);
    let since = count(&["--since", "2026-11-22T00:00:00Z"]);
    assert!(since > 0 && since < total);
    let one = count(&["--principal", "researcher-7"]);
    assert!(one > 0 && one < total);
    let listed = tregov(
        &tre,
        &moto,
        &cfg,
        &[
            "--output",
            "json",
            "events",
            "list",
            "--name",
            "GrantPermissions",
            "--limit",
            "1",
        ],
    );
    let v: Value =
        serde_json::from_str(stdout(&listed).lines().next().unwrap_or("{}")).expect("json");
    assert_eq!(v["observation"], json!("lakeformation-grant"));
    for field in [
        "eventID",
        "eventTime",
        "eventSource",
        "eventName",
        "principal",
        "account",
        "sourceFile",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
}

#[test]
fn a_bad_config_key_is_named_with_its_line() {
    let tre = Tre::new();
    let path = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &path,
        "[[projects]]\nid = \"p\"\naccount_id = \"111111111111\"\nrole = \"x\"\n",
    )
    .expect("write");
    let out = Command::new(tregov_bin())
        .args(["--config", &path.display().to_string(), "config", "check"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("tregov.toml:4:"), "{err}");
    assert!(err.contains("role"), "{err}");
}

// ---- Hostile objects: bounded, and nothing silently lost -----------------------------------

/// Errors the trail's collector lists in `status` (persisted, not just the last pass's).
fn trail_errors(tre: &Tre, moto: &Moto, cfg: &std::path::Path) -> String {
    let status = json_of(&tregov(tre, moto, cfg, &["--output", "json", "status"]));
    status["collectors"]
        .as_array()
        .expect("collectors")
        .iter()
        .find(|c| c["collector"] == "cloudtrail")
        .expect("cloudtrail status")["errors"]
        .to_string()
}

#[test]
fn a_gigabyte_gzip_bomb_and_a_cut_file_are_reported_by_key_while_the_other_files_are_read() {
    let moto = Moto::start();
    let account = ACCOUNTS[0];
    let mut rng = Lcg(5);
    let records = |rng: &mut Lcg, n: u64, count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| {
                record(
                    rng,
                    account,
                    "eu-west-2",
                    "2026-11-20",
                    &format!("f{n}-{i:03}"),
                )
            })
            .collect()
    };
    let whole: Vec<Vec<Value>> = (1..=3).map(|n| records(&mut rng, n, 30)).collect();
    let cut_records = records(&mut rng, 4, 100);
    let cut_json = serde_json::to_vec(&json!({ "Records": cut_records })).expect("json");
    let at = |n| key(Some(ORG), account, "eu-west-2", "2026-11-20", n);
    let (cut_key, bomb_key) = (at(4), at(5));
    rt().block_on(async {
        let s3 = moto.s3().await;
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        let put = |key: String, body: Vec<u8>| {
            let s3 = s3.clone();
            async move {
                s3.put_object()
                    .bucket(BUCKET)
                    .key(key)
                    .body(body.into())
                    .send()
                    .await
                    .expect("put")
            }
        };
        for (i, r) in whole.iter().enumerate() {
            put(at(i as u64 + 1), gzip_records(r)).await;
        }
        // An interrupted upload: the JSON cut a few bytes into record 60.
        let cut = cut_json
            .windows(8)
            .position(|w| w == b"\"f4-060\"".as_slice())
            .expect("record 60");
        put(cut_key.clone(), gzip_bytes(&cut_json[..cut])).await;
        // One record, then a gibibyte of spaces, in about a megabyte.
        let head = br#"{"Records":[{"eventID":"bomb-0","eventName":"GetObject"},"#;
        put(bomb_key.clone(), gzip_bomb(head, 1 << 30)).await;
    });
    let tre = Tre::new();
    let cfg = config(&tre, &[account]);

    collect_once(&tre, &moto, &cfg);
    assert_eq!(
        event_count(&tre, &moto, &cfg),
        90 + 60 + 1,
        "every record before the damage kept"
    );
    let errors = trail_errors(&tre, &moto, &cfg);
    assert!(errors.contains(&bomb_key), "{errors}");
    assert!(errors.contains("without a record ending"), "{errors}");
    assert!(errors.contains(&cut_key), "{errors}");
    assert!(errors.contains("truncated"), "{errors}");

    // The records kept from the cut file are marked as coming from a damaged file.
    let listed = tregov(&tre, &moto, &cfg, &["--output", "json", "events", "list"]);
    let damaged: Vec<Value> = stdout(&listed)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|v| v["verification"] == "damaged")
        .collect();
    assert_eq!(damaged.len(), 61, "the cut file's 60 and the bomb's one");

    // A pass that reads nothing new still lists both files.
    let again = collect_once(&tre, &moto, &cfg);
    assert_eq!(again["files"], 0);
    let errors = trail_errors(&tre, &moto, &cfg);
    assert!(
        errors.contains(&bomb_key) && errors.contains(&cut_key),
        "{errors}"
    );

    // Delivered again whole (a new ETag): read again, the rest of its records found, and no
    // longer listed.
    rt().block_on(async {
        let s3 = moto.s3().await;
        s3.put_object()
            .bucket(BUCKET)
            .key(&cut_key)
            .body(gzip_bytes(&cut_json).into())
            .send()
            .await
            .expect("put whole");
    });
    collect_once(&tre, &moto, &cfg);
    assert_eq!(event_count(&tre, &moto, &cfg), 90 + 100 + 1);
    let errors = trail_errors(&tre, &moto, &cfg);
    assert!(!errors.contains(&cut_key), "{errors}");
    assert!(errors.contains(&bomb_key), "{errors}");
}

#[test]
fn an_object_over_max_file_bytes_is_reported_and_not_read() {
    let moto = Moto::start();
    let account = ACCOUNTS[0];
    let mut rng = Lcg(9);
    let big: Vec<Value> = (0..400)
        .map(|i| {
            record(
                &mut rng,
                account,
                "eu-west-2",
                "2026-11-20",
                &format!("big-{i}"),
            )
        })
        .collect();
    let small: Vec<Value> = (0..3)
        .map(|i| {
            record(
                &mut rng,
                account,
                "eu-west-2",
                "2026-11-20",
                &format!("small-{i}"),
            )
        })
        .collect();
    let big_key = key(Some(ORG), account, "eu-west-2", "2026-11-20", 1);
    rt().block_on(async {
        let s3 = moto.s3().await;
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        for (k, r) in [
            (big_key.clone(), &big),
            (
                key(Some(ORG), account, "eu-west-2", "2026-11-20", 2),
                &small,
            ),
        ] {
            s3.put_object()
                .bucket(BUCKET)
                .key(k)
                .body(gzip_records(r).into())
                .send()
                .await
                .expect("put");
        }
    });
    let tre = Tre::new();
    let cfg = config(&tre, &[account]);
    let mut text = std::fs::read_to_string(&cfg).expect("config");
    text.push_str("max_file_bytes = 4096\n");
    std::fs::write(&cfg, text).expect("config");
    collect_once(&tre, &moto, &cfg);
    assert_eq!(event_count(&tre, &moto, &cfg), 3);
    let errors = trail_errors(&tre, &moto, &cfg);
    assert!(errors.contains(&big_key), "{errors}");
    assert!(errors.contains("max_file_bytes"), "{errors}");
}

// ---- Digest files: CloudTrail you can verify ----------------------------------------------
//
// moto writes no digests (and has no `ListPublicKeys`): the tests write log files and a
// digest chain signed with the TEST-ONLY key pair (`tests/fixtures/cloudtrail/`) in the
// documented layout, and configure its public key.

const ACCOUNT: &str = "111111111111";
const REGION: &str = "eu-west-2";
const DAY: &str = "2026-11-20";

/// Three log files, one per hour, each listed by its own digest; the digests chained.
struct Signed {
    logs: Vec<String>,
    digests: Vec<tregov_tests::cloudtrail::SignedDigest>,
}

fn log_records(hour: u64, claim: Option<&str>) -> Vec<Value> {
    let mut rng = Lcg(hour);
    (0..5)
        .map(|i| {
            let mut r = record(&mut rng, ACCOUNT, REGION, DAY, &format!("h{hour}-{i}"));
            if let (Some(other), 0) = (claim, i) {
                r["recipientAccountId"] = json!(other);
            }
            r
        })
        .collect()
}

async fn put_digest(s3: &aws_sdk_s3::Client, d: &tregov_tests::cloudtrail::SignedDigest) {
    s3.put_object()
        .bucket(BUCKET)
        .key(&d.key)
        .metadata("signature", &d.signature)
        .metadata("signature-algorithm", "SHA256withRSA")
        .body(d.body.clone().into())
        .send()
        .await
        .expect("put digest");
}

/// Writes the log files, then (as CloudTrail does, an hour later each) the signed digests.
fn seed_signed(moto: &Moto, claim: Option<&str>) -> Signed {
    use tregov_tests::cloudtrail::{digest_key, signed_digest, uncompressed_sha256};
    rt().block_on(async {
        let s3 = moto.s3().await;
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("bucket");
        let mut signed = Signed {
            logs: Vec::new(),
            digests: Vec::new(),
        };
        for hour in 1..=3u64 {
            let body = gzip_records(&log_records(hour, claim.filter(|_| hour == 2)));
            let log = key(Some(ORG), ACCOUNT, REGION, DAY, hour);
            s3.put_object()
                .bucket(BUCKET)
                .key(&log)
                .body(body.clone().into())
                .send()
                .await
                .expect("put log");
            let end = format!("{DAY}T{:02}:30:00Z", hour);
            let dkey = digest_key(Some(ORG), ACCOUNT, REGION, "org-trail", &end);
            let files = [(BUCKET, log.as_str(), uncompressed_sha256(&body))];
            let digest = signed_digest(BUCKET, &dkey, &end, signed.digests.last(), &files);
            put_digest(&s3, &digest).await;
            signed.logs.push(log);
            signed.digests.push(digest);
        }
        signed
    })
}

fn signed_config(tre: &Tre) -> std::path::PathBuf {
    let key = tregov_tests::workspace_root()
        .join("tests/fixtures/cloudtrail/TEST-ONLY-digest-signing-key.pub.der");
    let text = format!(
        "max_attempts = 1\n[[projects]]\nid = \"proj\"\naccount_id = \"{ACCOUNT}\"\n\
         [cloudtrail]\nbucket = \"{BUCKET}\"\norganization_id = \"{ORG}\"\n\
         [[cloudtrail.public_keys]]\nfingerprint = \"{}\"\npath = \"{}\"\n",
        tregov_tests::cloudtrail::TEST_KEY_FINGERPRINT,
        key.display()
    );
    let path = tre.dir.path().join("tregov.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn collect_once(tre: &Tre, moto: &Moto, cfg: &std::path::Path) -> Value {
    let out = tregov(tre, moto, cfg, &["--output", "json", "collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    json_of(&out)["cloudtrail"].clone()
}

fn trail_status(tre: &Tre, moto: &Moto, cfg: &std::path::Path) -> Value {
    json_of(&tregov(tre, moto, cfg, &["--output", "json", "status"]))["trail"].clone()
}

/// Each listed event's file and how it compared.
fn verification_by_file(tre: &Tre, moto: &Moto, cfg: &std::path::Path) -> Vec<(String, String)> {
    let listed = tregov(tre, moto, cfg, &["--output", "json", "events", "list"]);
    stdout(&listed)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let state = v["verification"].as_str().unwrap_or("").to_string();
            assert_eq!(v["verified"], json!(state == "verified"), "{v}");
            (v["sourceFile"].as_str().unwrap_or("").to_string(), state)
        })
        .collect()
}

fn anomalies(trail: &Value) -> Vec<(String, String)> {
    trail["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .map(|a| {
            let kind = a["kind"].as_str().unwrap_or("").to_string();
            (kind, a["key"].as_str().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn log_files_under_a_correctly_signed_digest_chain_are_verified_through_its_last_digest() {
    let moto = Moto::start();
    let signed = seed_signed(&moto, None);
    let tre = Tre::new();
    let cfg = signed_config(&tre);
    let report = collect_once(&tre, &moto, &cfg);
    assert_eq!(report["errors"], json!([]), "{report}");

    let trail = trail_status(&tre, &moto, &cfg);
    assert_eq!(trail["files"]["verified"], 3, "{trail}");
    assert_eq!(anomalies(&trail), vec![]);
    let chain = &trail["chains"][0];
    assert_eq!(chain["account"], ACCOUNT);
    assert_eq!(chain["region"], REGION);
    assert_eq!(chain["verifiedThrough"], format!("{DAY}T03:30:00Z"));
    let events = verification_by_file(&tre, &moto, &cfg);
    assert_eq!(events.len(), 15);
    assert!(events.iter().all(|(_, s)| s == "verified"), "{events:?}");

    let text = stdout(&tregov(&tre, &moto, &cfg, &["status"]));
    assert!(
        text.contains(&format!("verified through {DAY}T03:30:00Z")),
        "{text}"
    );
    assert!(!text.contains("TAMPERING"), "{text}");
    assert_eq!(signed.logs.len(), 3);
}

#[test]
fn a_log_file_changed_after_its_digest_was_written_is_reported_as_tampering() {
    let moto = Moto::start();
    let signed = seed_signed(&moto, None);
    let tre = Tre::new();
    let cfg = signed_config(&tre);
    collect_once(&tre, &moto, &cfg);
    // Someone with write access to the bucket rewrites the second hour's file.
    let altered = &signed.logs[1];
    rt().block_on(async {
        let mut records = log_records(2, None);
        records.truncate(3);
        moto.s3()
            .await
            .put_object()
            .bucket(BUCKET)
            .key(altered)
            .body(gzip_records(&records).into())
            .send()
            .await
            .expect("rewrite");
    });

    let report = collect_once(&tre, &moto, &cfg);
    assert!(report["errors"].to_string().contains("altered"), "{report}");
    assert_eq!(
        report["complete"],
        json!(true),
        "tampering never fails a pass"
    );
    let trail = trail_status(&tre, &moto, &cfg);
    assert_eq!(
        anomalies(&trail),
        vec![("altered".to_string(), altered.clone())]
    );
    assert_eq!(
        trail["chains"][0]["verifiedThrough"],
        format!("{DAY}T01:30:00Z")
    );
    for (file, state) in verification_by_file(&tre, &moto, &cfg) {
        let expected = if &file == altered {
            "altered"
        } else {
            "verified"
        };
        assert_eq!(state, expected, "{file}");
    }
    let text = stdout(&tregov(&tre, &moto, &cfg, &["status"]));
    assert!(text.contains("TAMPERING: altered"), "{text}");
    let list = stdout(&tregov(&tre, &moto, &cfg, &["events", "list"]));
    assert!(list.lines().any(|l| l.ends_with("[altered]")), "{list}");
}

#[test]
fn a_log_file_deleted_before_or_after_it_was_read_is_reported_as_tampering() {
    let moto = Moto::start();
    let signed = seed_signed(&moto, None);
    let delete = |key: &str| {
        rt().block_on(async {
            moto.s3()
                .await
                .delete_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .expect("delete");
        })
    };
    let tre = Tre::new();
    let cfg = signed_config(&tre);
    // Deleted before tregov ever read it.
    delete(&signed.logs[2]);
    collect_once(&tre, &moto, &cfg);
    let trail = trail_status(&tre, &moto, &cfg);
    assert_eq!(
        anomalies(&trail),
        vec![("missing".to_string(), signed.logs[2].clone())]
    );
    assert_eq!(
        trail["chains"][0]["verifiedThrough"],
        format!("{DAY}T02:30:00Z")
    );

    // Deleted after it was read.
    delete(&signed.logs[0]);
    let report = collect_once(&tre, &moto, &cfg);
    assert!(
        report["errors"].to_string().contains(&signed.logs[0]),
        "{report}"
    );
    let trail = trail_status(&tre, &moto, &cfg);
    let found: BTreeSet<(String, String)> = anomalies(&trail).into_iter().collect();
    let expected: BTreeSet<(String, String)> = [0, 2]
        .iter()
        .map(|&i| ("missing".to_string(), signed.logs[i].clone()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(trail["chains"][0]["verifiedThrough"], Value::Null);
    assert_eq!(trail["files"]["missing"], 2, "{trail}");
    // Its events are kept, marked.
    let events = verification_by_file(&tre, &moto, &cfg);
    assert!(events
        .iter()
        .any(|(f, s)| f == &signed.logs[0] && s == "missing"));
}

#[test]
fn a_deleted_digest_breaks_the_chain_and_is_reported_as_tampering() {
    let moto = Moto::start();
    let signed = seed_signed(&moto, None);
    rt().block_on(async {
        moto.s3()
            .await
            .delete_object()
            .bucket(BUCKET)
            .key(&signed.digests[1].key)
            .send()
            .await
            .expect("delete");
    });
    let tre = Tre::new();
    let cfg = signed_config(&tre);
    collect_once(&tre, &moto, &cfg);
    let trail = trail_status(&tre, &moto, &cfg);
    assert_eq!(
        anomalies(&trail),
        vec![("broken-chain".to_string(), signed.digests[2].key.clone())]
    );
    assert_eq!(
        trail["chains"][0]["verifiedThrough"],
        format!("{DAY}T01:30:00Z")
    );
    // The second hour's file is no longer listed by any digest: unverified, not verified.
    let events = verification_by_file(&tre, &moto, &cfg);
    assert!(events
        .iter()
        .any(|(f, s)| f == &signed.logs[1] && s == "unverified"));
}

#[test]
fn a_record_claiming_another_account_is_kept_under_its_key_paths_account_and_reported() {
    let moto = Moto::start();
    let signed = seed_signed(&moto, Some("999999999999"));
    let tre = Tre::new();
    let cfg = signed_config(&tre);
    collect_once(&tre, &moto, &cfg);
    let listed = tregov(&tre, &moto, &cfg, &["--output", "json", "events", "list"]);
    let accounts: BTreeSet<String> = stdout(&listed)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            v["account"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(accounts, BTreeSet::from([ACCOUNT.to_string()]));
    let trail = trail_status(&tre, &moto, &cfg);
    assert_eq!(
        anomalies(&trail),
        vec![(
            "account-mismatch".to_string(),
            format!("{}#h2-0", signed.logs[1])
        )]
    );
    let text = stdout(&tregov(&tre, &moto, &cfg, &["status"]));
    assert!(text.contains("anomaly: account-mismatch"), "{text}");
    assert!(text.contains("999999999999"), "{text}");
}
