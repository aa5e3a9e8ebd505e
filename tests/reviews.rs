//! Access reviews against the AWS emulator: the report of who may reach what is the access
//! Lake Formation holds after an apply.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tregov_tests::governed::{
    identity, lf_permissions_of, role, seed, tregov, write_config, write_identity,
    writer_permissions,
};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

fn report(tre: &Tre, moto: &Moto, cfg: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["access"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = tregov(tre, moto, cfg, &all);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("a JSON report")
}

/// The report's role rows for `role` as Lake Formation lists grants: per `db.table`, the
/// permissions a read (`DESCRIBE`, `SELECT`) or a write (and `DELETE`, `INSERT`) holds.
fn as_grants(report: &Value, role: &str) -> Vec<(String, Vec<String>)> {
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in report["rows"].as_array().into_iter().flatten() {
        if row["holder_kind"] != "role" || row["holder"] != role {
            continue;
        }
        let table = row["dataset"]
            .as_str()
            .unwrap_or_default()
            .replace('/', ".");
        let perms = by_table.entry(table).or_default();
        perms.extend(["DESCRIBE", "SELECT"].map(String::from));
        if row["action"] == "write" {
            perms.extend(["DELETE", "INSERT"].map(String::from));
        }
        perms.sort();
        perms.dedup();
    }
    by_table.into_iter().collect()
}

#[test]
fn access_who_and_access_of_agree_with_lake_formation_after_apply_and_name_what_ends_it() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    // alice's training lapses in 30 days: her access ends then, and the report says so.
    let lapses = SystemTime::now() + Duration::from_secs(30 * 86_400);
    let lapses = tregov_engine::clock::wall_ms(lapses);
    let mut people = identity(true);
    for entity in people.as_array_mut().into_iter().flatten() {
        if entity["uid"]["id"] == "alice" {
            entity["attrs"]["trainingExpires"] = tregov_engine::clock::datetime_value(lapses);
        }
    }
    write_identity(&tre, &people);
    let cfg = write_config(&tre, 5, "");
    let out = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let held = lf_permissions_of(&moto, &role());
    assert_eq!(
        held,
        vec![("genomics.gwas_2024".to_string(), writer_permissions())]
    );

    let of_alice = report(&tre, &moto, &cfg, &["of", "alice"]);
    assert_eq!(as_grants(&of_alice, &role()), held, "{of_alice:#}");
    let who = report(&tre, &moto, &cfg, &["who", "genomics/gwas_2024"]);
    assert_eq!(as_grants(&who, &role()), held, "{who:#}");
    let roles: Vec<&Value> = who["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["holder_kind"] == "role")
        .collect();
    assert!(
        roles
            .iter()
            .all(|r| r["holder"] == role().as_str() && r["owners"] == json!(["alice"])),
        "only alice's workspace role holds it: {roles:#?}"
    );
    let write = who["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["holder_kind"] == "user" && r["holder"] == "alice" && r["action"] == "write")
        .expect("alice may write");
    assert_eq!(write["policies"], json!(["data-study-writers-write"]));
    assert_eq!(
        write["ends"]["at"],
        tregov_engine::clock::datetime_value(lapses)["__extn"]["arg"]
    );
    assert_eq!(write["ends"]["because"], json!(["data-training-current"]));

    // CSV: a header and one row per access.
    let csv = tregov(
        &tre,
        &moto,
        &cfg,
        &["access", "who", "genomics/gwas_2024", "--format", "csv"],
    );
    let text = stdout(&csv);
    assert!(
        text.starts_with("holder_kind,holder,owners,dataset,action,policies,ends_at,ended_by\n")
    );
    assert_eq!(
        text.lines().count(),
        1 + who["rows"].as_array().map_or(0, Vec::len)
    );
}
