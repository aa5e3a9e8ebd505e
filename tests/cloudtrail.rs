//! The CloudTrail collector against the AWS emulator: an organization trail's bucket holding
//! `.json.gz` log files in the real layout, read with `tregov collect`.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use serde_json::{json, Value};
use tregov_tests::cloudtrail::{gzip_records, key, record, Lcg};
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
