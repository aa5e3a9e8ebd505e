//! The trail-status and identity collectors against the AWS emulator and the file system.

use std::process::{Command, Output};

use serde_json::Value;
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, tregov_bin, workspace_root, Tre};

const ACCOUNT: &str = "111111111111";
const ROLE: &str = "arn:aws:iam::111111111111:role/tregov-reader";

fn tregov(tre: &Tre, moto: Option<&Moto>, config: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(tregov_bin());
    cmd.arg("--data-dir")
        .arg(tre.data_dir())
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(workspace_root());
    if let Some(m) = moto {
        cmd.envs(m.env());
    }
    cmd.output().expect("tregov runs")
}

fn entity(tre: &Tre, uid: &str) -> Option<Value> {
    let out = tre.run(&["--output", "json", "entities", "get", uid]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("json"))
}

#[test]
fn a_trail_that_stops_logging_is_seen_through_the_projects_role() {
    let moto = Moto::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The trail lives in the project account, reached by assuming the project's role.
    let (client, arn) = rt.block_on(async {
        let base = moto.sdk_config().await;
        let s3 = moto.s3().await;
        s3.create_bucket()
            .bucket("project-trail")
            .send()
            .await
            .expect("bucket");
        let role = aws_config::sts::AssumeRoleProvider::builder(ROLE)
            .session_name("test")
            .configure(&base)
            .build()
            .await;
        let sdk = base
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(role),
            )
            .build();
        let client = aws_sdk_cloudtrail::Client::new(&sdk);
        let trail = client
            .create_trail()
            .name("tre-trail")
            .s3_bucket_name("project-trail")
            .is_multi_region_trail(true)
            .send()
            .await
            .expect("trail");
        let arn = trail.trail_arn().expect("arn").to_string();
        client
            .start_logging()
            .name(&arn)
            .send()
            .await
            .expect("start");
        (client, arn)
    });
    assert!(arn.contains(ACCOUNT), "{arn}");
    let tre = Tre::new();
    let cfg = tre.dir.path().join("tregov.toml");
    std::fs::write(
        &cfg,
        format!("max_attempts = 1\n[[projects]]\nid = \"proj-genomics\"\naccount_id = \"{ACCOUNT}\"\nrole_arn = \"{ROLE}\"\n"),
    )
    .expect("config");
    let uid = format!("Tre::Trail::\"{ACCOUNT}/{arn}\"");

    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trail = entity(&tre, &uid).expect("trail entity");
    assert_eq!(trail["attrs"]["isLogging"], true);
    assert_eq!(trail["attrs"]["isMultiRegionTrail"], true);

    rt.block_on(async { client.stop_logging().name(&arn).send().await.expect("stop") });
    let out = tregov(&tre, Some(&moto), &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        entity(&tre, &uid).expect("trail")["attrs"]["isLogging"],
        false
    );
}

#[test]
fn the_identity_file_is_reread_each_pass_and_a_bad_edit_changes_nothing() {
    let tre = Tre::new();
    let file = tre.dir.path().join("identity.entities.json");
    let people = |users: &[&str]| {
        let list: Vec<Value> = users
            .iter()
            .map(|u| {
                serde_json::json!({"uid": {"type": "Tre::User", "id": u}, "attrs": {"status": "active"},
                    "parents": [{"type": "Tre::Role", "id": "Researcher"}]})
            })
            .collect();
        serde_json::to_string_pretty(&list).expect("json")
    };
    std::fs::write(&file, people(&["alice", "bob"])).expect("write");
    let cfg = tre.dir.path().join("tregov.toml");
    std::fs::write(&cfg, "[identity]\nentities = \"identity.entities.json\"\n").expect("config");

    let out = tregov(&tre, None, &cfg, &["collect", "--once"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(entity(&tre, r#"Tre::User::"bob""#).is_some());

    // bob leaves: the next pass removes him.
    std::fs::write(&file, people(&["alice"])).expect("write");
    assert!(tregov(&tre, None, &cfg, &["collect", "--once"])
        .status
        .success());
    assert!(entity(&tre, r#"Tre::User::"bob""#).is_none());
    assert!(entity(&tre, r#"Tre::User::"alice""#).is_some());

    // A broken file is reported and the last good identities stay.
    std::fs::write(
        &file,
        "[{\"uid\": {\"type\": \"Tre::User\", \"id\": \"carol\"}, \"attrs\": {}}]",
    )
    .expect("write");
    let out = tregov(&tre, None, &cfg, &["--output", "json", "collect", "--once"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(report["identity"]["errors"][0]
        .as_str()
        .unwrap_or("")
        .contains("identity.entities.json"));
    assert!(entity(&tre, r#"Tre::User::"alice""#).is_some());
    assert!(entity(&tre, r#"Tre::User::"carol""#).is_none());
}
