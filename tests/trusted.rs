//! Facts tregov can trust, tried as an attacker inside the TRE would: a workspace re-tagged
//! with another owner or an outside role, a Glue table opened or moved by editing its
//! parameters, a study whose location overlaps another's. None of them grants anything; each
//! is reported; widening waits for a data manager.

use std::time::Duration;

use serde_json::{json, Value};
use tregov_tests::governed::{
    identity, lf_permissions, lf_permissions_of, parked, registered, role, runtime, seed, tregov,
    wait_until, write_config, write_identity, write_registry, writer_permissions, Daemon, ACCOUNT,
};
use tregov_tests::jwt::{auth_section, token};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

fn bob_role() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/swb-ws-bob")
}

/// alice and ian as `identity(true)` has them, bob (an active researcher on cardio/ukb's
/// read list) and frank (an active data manager).
fn people() -> Value {
    let mut all = identity(true);
    let list = all.as_array_mut().expect("array");
    list.push(
        json!({"uid": {"type": "Tre::Role", "id": "DataManager"}, "attrs": {}, "parents": []}),
    );
    list.push(
        json!({"uid": {"type": "Tre::User", "id": "bob"}, "attrs": {"status": "active"},
        "parents": [{"type": "Tre::Role", "id": "Researcher"},
                    {"type": "Tre::Project", "id": "proj-genomics"},
                    {"type": "Tre::AccessGroup", "id": "cardio/ukb#readers"}]}),
    );
    list.push(
        json!({"uid": {"type": "Tre::User", "id": "carol"}, "attrs": {"status": "active"},
        "parents": [{"type": "Tre::Role", "id": "Researcher"},
                    {"type": "Tre::Project", "id": "proj-genomics"}]}),
    );
    list.push(
        json!({"uid": {"type": "Tre::User", "id": "frank"}, "attrs": {"status": "active"},
        "parents": [{"type": "Tre::Role", "id": "DataManager"}]}),
    );
    all
}

/// alice's instance, re-tagged with `tags` by someone who may tag it.
fn retag(moto: &Moto, tags: &[(&str, &str)]) {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
        let instances = ec2.describe_instances().send().await.expect("instances");
        let id = instances
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.instance_id())
            .expect("alice's instance")
            .to_string();
        let mut call = ec2.create_tags().resources(id);
        for (k, v) in tags {
            call = call.tags(aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build());
        }
        call.send().await.expect("tags");
    });
}

fn instance_tag(moto: &Moto, key: &str) -> Option<String> {
    runtime().block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&moto.sdk_config().await);
        let out = ec2.describe_instances().send().await.expect("instances");
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .flat_map(|i| i.tags())
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value().map(String::from))
    })
}

fn observed(tre: &Tre, moto: &Moto, cfg: &std::path::Path, kind: &str) -> Vec<Value> {
    let out = tregov(
        tre,
        moto,
        cfg,
        &["--output", "json", "observed", "--kind", kind],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("observed"))
        .collect()
}

fn apply(tre: &Tre, moto: &Moto, cfg: &std::path::Path) {
    let out = tregov(tre, moto, cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
}

/// Sets Glue parameters (and, with `location`, the location) of `db.name`, as anyone able
/// to update the table could.
fn edit_table(moto: &Moto, db: &str, name: &str, params: &[(&str, &str)], location: Option<&str>) {
    runtime().block_on(async {
        let glue = aws_sdk_glue::Client::new(&moto.sdk_config().await);
        let table = glue
            .get_table()
            .database_name(db)
            .name(name)
            .send()
            .await
            .expect("table");
        let table = table.table().expect("table");
        let mut parameters = table.parameters().cloned().unwrap_or_default();
        for (k, v) in params {
            parameters.insert(k.to_string(), v.to_string());
        }
        let location = location.map(String::from).or_else(|| {
            table
                .storage_descriptor()
                .and_then(|s| s.location())
                .map(String::from)
        });
        glue.update_table()
            .database_name(db)
            .table_input(
                aws_sdk_glue::types::TableInput::builder()
                    .name(name)
                    .storage_descriptor(
                        aws_sdk_glue::types::StorageDescriptor::builder()
                            .set_location(location)
                            .build(),
                    )
                    .set_parameters(Some(parameters))
                    .build()
                    .expect("table input"),
            )
            .send()
            .await
            .expect("update table");
    });
}

#[test]
fn alices_instance_retagged_as_bobs_grants_none_of_bobs_studies_and_the_tag_is_set_back() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    write_identity(&tre, &people());
    let cfg = write_config(&tre, 5, "");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        text.replace(
            "registry = \"workspaces.json\"",
            "registry = \"workspaces.json\"\nrevert_tag_drift = true",
        ),
    )
    .expect("config");
    retag(&moto, &[("tre:owner", "bob")]);

    apply(&tre, &moto, &cfg);
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "alice's role holds alice's study, not bob's cardio/ukb"
    );
    let drift = observed(&tre, &moto, &cfg, "workspace-tag-drift");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0]["body"]["found"], "bob");
    assert_eq!(drift[0]["body"]["expected"], "alice");
    assert_eq!(
        instance_tag(&moto, "tre:owner").as_deref(),
        Some("alice"),
        "set back, as configured"
    );

    // Reverted, the drift is gone from the next reading.
    apply(&tre, &moto, &cfg);
    assert!(observed(&tre, &moto, &cfg, "workspace-tag-drift").is_empty());
}

#[test]
fn a_role_tag_pointing_outside_the_tre_is_not_obeyed_the_instance_profile_role_is_governed() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    let outside = "arn:aws:iam::999999999999:role/exfil";
    retag(&moto, &[("tre:role-arn", outside)]);
    let cfg = write_config(&tre, 5, "");

    apply(&tre, &moto, &cfg);
    assert_eq!(
        lf_permissions(&moto),
        vec![("genomics.gwas_2024".to_string(), writer_permissions())],
        "the role of the instance profile, {}, is the one governed",
        role()
    );
    assert!(lf_permissions_of(&moto, outside).is_empty());
    let drift = observed(&tre, &moto, &cfg, "workspace-tag-drift");
    assert!(
        drift
            .iter()
            .any(|d| d["body"]["tag"] == "tre:role-arn" && d["body"]["found"] == outside),
        "{drift:?}"
    );
    assert_eq!(
        instance_tag(&moto, "tre:role-arn").as_deref(),
        Some(outside),
        "reported, and left as it is without `revert_tag_drift`"
    );
}

#[test]
fn an_unregistered_instance_tagged_as_a_workspace_is_not_governed() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    write_identity(&tre, &people());
    runtime().block_on(async {
        moto.create_role("swb-ws-bob", &[]).await;
        moto.run_instance_as_role(
            "swb-ws-bob",
            &[
                ("tre:workspace", "ws-bob"),
                ("tre:owner", "alice"),
                ("tre:workspace-type", "ec2-linux-approved"),
            ],
        )
        .await;
    });
    let cfg = write_config(&tre, 5, "");
    apply(&tre, &moto, &cfg);
    assert!(lf_permissions_of(&moto, &bob_role()).is_empty());
    let found = observed(&tre, &moto, &cfg, "workspace-unregistered");
    assert_eq!(found.len(), 1, "{found:?}");
}

/// alice's workspace and carol's (a researcher on no study's list), both registered.
fn two_researchers(moto: &Moto, tre: &Tre) {
    seed(moto, tre);
    write_identity(tre, &people());
    let instance = runtime().block_on(async {
        moto.create_role("swb-ws-carol", &[]).await;
        moto.run_instance_as_role("swb-ws-carol", &[]).await
    });
    let registry: Value = serde_json::from_str(
        &std::fs::read_to_string(tre.dir.path().join("workspaces.json")).expect("registry"),
    )
    .expect("registry");
    let mut entries = registry["workspaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.push(registered("ws-carol", "carol", &instance));
    write_registry(tre, &entries);
}

fn carol_role() -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/swb-ws-carol")
}

#[test]
fn a_glue_edit_opening_a_study_grants_nothing_until_a_data_manager_approves_it() {
    let moto = Moto::start();
    let tre = Tre::new();
    two_researchers(&moto, &tre);
    let api = format!("[api]\nlisten = \"127.0.0.1:0\"\n{}", auth_section());
    let cfg = write_config(&tre, 1, &api);
    apply(&tre, &moto, &cfg);
    assert!(lf_permissions_of(&moto, &carol_role()).is_empty());

    // A writer opens cardio/ukb to every user by editing its Glue parameters.
    edit_table(&moto, "cardio", "ukb", &[("tre:category", "open")], None);
    apply(&tre, &moto, &cfg);
    assert!(
        lf_permissions_of(&moto, &carol_role()).is_empty(),
        "the accepted labels still decide"
    );
    let waiting: Vec<(String, String, String)> = parked(&tre, &moto, &cfg)
        .into_iter()
        .filter(|(_, status, kind)| status == "pending" && kind == "accept-labels")
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let item = waiting[0].0.clone();
    let pending = observed(&tre, &moto, &cfg, "dataset-labels-pending");
    assert!(
        pending[0]["body"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`category`")),
        "{pending:?}"
    );

    // An IT admin is no data manager; frank is.
    let daemon = Daemon::start(&tre, &moto, &cfg, &[], &[]);
    let url = daemon.api_url(Duration::from_secs(60));
    let approve = |who: &str| {
        tregov(
            &tre,
            &moto,
            &cfg,
            &["approve", &item, "--api", &url, "--token", &token(who)],
        )
    };
    let as_ian = approve("ian");
    assert_eq!(as_ian.status.code(), Some(2), "{}", stderr(&as_ian));
    assert!(
        stderr(&as_ian).contains("approval-labels-only-by-data-managers"),
        "{}",
        stderr(&as_ian)
    );
    let as_frank = approve("frank");
    assert!(as_frank.status.success(), "{}", stderr(&as_frank));
    wait_until(
        "carol reads the study a data manager opened",
        Duration::from_secs(60),
        || !lf_permissions_of(&moto, &carol_role()).is_empty(),
    );
    drop(daemon);
    assert_eq!(
        lf_permissions_of(&moto, &carol_role()),
        vec![(
            "cardio.ukb".to_string(),
            vec!["DESCRIBE".to_string(), "SELECT".to_string()]
        )]
    );
}

/// Puts LF-Tags on `db.name`, creating the tags first, as a data manager would.
fn lf_tag(moto: &Moto, db: &str, name: &str, tags: &[(&str, &str)]) {
    runtime().block_on(async {
        let lf = aws_sdk_lakeformation::Client::new(&moto.sdk_config().await);
        for (k, v) in tags {
            let _ = lf.create_lf_tag().tag_key(*k).tag_values(*v).send().await;
        }
        let pairs = tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_lakeformation::types::LfTagPair::builder()
                    .tag_key(*k)
                    .tag_values(*v)
                    .build()
                    .expect("pair")
            })
            .collect();
        lf.add_lf_tags_to_resource()
            .resource(tregov_tests::governed::table(db, name))
            .set_lf_tags(Some(pairs))
            .send()
            .await
            .expect("lf tags");
    });
}

#[test]
fn a_location_moved_onto_another_study_waits_and_an_overlapping_study_is_quarantined() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    write_identity(&tre, &people());
    let cfg = write_config(&tre, 5, "");
    apply(&tre, &moto, &cfg);
    let held = vec![("genomics.gwas_2024".to_string(), writer_permissions())];
    assert_eq!(lf_permissions(&moto), held);

    // Moving cardio/ukb onto gwas_2024's prefix would give its readers gwas_2024's objects.
    edit_table(
        &moto,
        "cardio",
        "ukb",
        &[],
        Some("s3://tre-datalake/genomics/gwas_2024/"),
    );
    apply(&tre, &moto, &cfg);
    let pending = observed(&tre, &moto, &cfg, "dataset-labels-pending");
    assert!(
        pending.iter().any(|p| p["key"] == "cardio/ukb"
            && p["body"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("`location`"))),
        "{pending:?}"
    );
    assert!(observed(&tre, &moto, &cfg, "dataset-quarantined").is_empty());

    // A data manager labels the studies with LF-Tags (what they say, the Glue parameters
    // said already), then a new study over gwas_2024's prefix: it and gwas_2024 are
    // quarantined; alice's grant is not revoked but parked for approval. (Every table gets
    // an LF-Tag: moto answers `GetResourceLFTags` on an untagged table with a 500, where
    // AWS answers with no tags.)
    for (db, name) in [("genomics", "gwas_2024"), ("cardio", "ukb")] {
        lf_tag(&moto, db, name, &[("tre:project", "proj-genomics")]);
    }
    runtime().block_on(async {
        let glue = aws_sdk_glue::Client::new(&moto.sdk_config().await);
        glue.create_table()
            .database_name("genomics")
            .table_input(
                aws_sdk_glue::types::TableInput::builder()
                    .name("gwas_copy")
                    .storage_descriptor(
                        aws_sdk_glue::types::StorageDescriptor::builder()
                            .location("s3://tre-datalake/genomics/gwas_2024/raw/")
                            .build(),
                    )
                    .build()
                    .expect("table"),
            )
            .send()
            .await
            .expect("table");
    });
    lf_tag(
        &moto,
        "genomics",
        "gwas_copy",
        &[
            ("tre:project", "proj-genomics"),
            ("tre:classification", "internal"),
        ],
    );
    apply(&tre, &moto, &cfg);
    let quarantined: Vec<String> = observed(&tre, &moto, &cfg, "dataset-quarantined")
        .iter()
        .filter_map(|q| q["key"].as_str().map(String::from))
        .collect();
    assert_eq!(
        quarantined,
        vec!["genomics/gwas_2024", "genomics/gwas_copy"]
    );
    assert_eq!(
        lf_permissions(&moto),
        held,
        "nothing revoked without approval"
    );
    let waiting: Vec<(String, String, String)> = parked(&tre, &moto, &cfg)
        .into_iter()
        .filter(|(_, status, kind)| status == "pending" && kind == "lf-revoke")
        .collect();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
}
