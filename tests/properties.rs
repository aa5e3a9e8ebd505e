//! Properties of every parser that reads what tregov does not control: CloudTrail log
//! objects, entities JSON, `tregov.toml`, bearer tokens and policy files. For any input, a
//! mangled good one or bytes at random: no panic, and a rejection says what was wrong (for
//! a file, naming it).
//!
//! CI runs a few hundred cases per target. A long run, a million per target:
//!
//! ```text
//! PROPTEST_CASES=1000000 cargo test --workspace --release --test properties
//! ```

use std::io::Write;

use proptest::prelude::*;
use tregov_collectors::cloudtrail_stream::stream_log_file;
use tregov_collectors::testkit::{gzip_records, record, Lcg};
use tregov_config::Config;
use tregov_engine::entities::parse_entities_file;
use tregov_engine::policies::{embedded_schema, embedded_sources, parse_schema, PolicySource};
use tregov_engine::PolicyBundle;

/// One edit of a text: delete, insert or replace at a position (taken modulo its length).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, char),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 1usize..16).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), "[\\[\\]{}\",:= \n]{1,4}|\\PC{1,8}")
            .prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::Replace(at, c)),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    proptest::collection::vec(edit, 1..6)
}

/// `text` with `edits` applied, each at a character boundary.
fn mangle(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let at = |i: usize| {
            if chars.is_empty() {
                0
            } else {
                i % (chars.len() + 1)
            }
        };
        match e {
            Edit::Delete(i, n) => {
                let start = at(*i).min(chars.len());
                let end = (start + n).min(chars.len());
                chars.drain(start..end);
            }
            Edit::Insert(i, s) => {
                let start = at(*i);
                chars.splice(start..start, s.chars());
            }
            Edit::Replace(i, c) => {
                if !chars.is_empty() {
                    let idx = i % chars.len();
                    chars[idx] = *c;
                }
            }
            Edit::Truncate(i) => {
                let keep = at(*i);
                chars.truncate(keep);
            }
        }
    }
    chars.into_iter().collect()
}

fn cases(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        // Shrinking a million-case run's failure takes long enough; a few thousand steps
        // find a small example.
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

const KEY: &str = "AWSLogs/111111111111/CloudTrail/eu-west-2/2026/11/20/111111111111_CloudTrail_eu-west-2_20261120T1000Z_a.json.gz";

fn log_json() -> String {
    let mut rng = Lcg(3);
    let records: Vec<serde_json::Value> = (0..4)
        .map(|i| {
            record(
                &mut rng,
                "111111111111",
                "eu-west-2",
                "2026-11-20",
                &format!("e{i}"),
            )
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = gz.write_all(bytes);
    gz.finish().unwrap_or_default()
}

fn stream(bytes: &[u8]) -> (tregov_collectors::cloudtrail_stream::StreamedLog, u64) {
    let mut handed = 0u64;
    let read = stream_log_file(KEY, bytes, None, 1 << 24, &mut |events, _| {
        handed += events.len() as u64;
        Ok(())
    });
    (read, handed)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn a_cloudtrail_object_of_any_bytes_is_read_or_rejected_with_a_reason(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        gzipped in any::<bool>(),
    ) {
        let object = if gzipped { gzip(&bytes) } else { bytes };
        let (read, handed) = stream(&object);
        prop_assert_eq!(read.records, handed);
        match &read.damage {
            Some(damage) => prop_assert!(!damage.is_empty()),
            None => prop_assert!(read.sha256.is_some()),
        }
    }

    #[test]
    fn a_mangled_cloudtrail_log_keeps_what_it_can_and_says_what_is_wrong(edits in edits()) {
        let json = mangle(&log_json(), &edits);
        let (read, handed) = stream(&gzip(json.as_bytes()));
        prop_assert_eq!(read.records, handed);
        prop_assert!(read.records <= 4 + 8, "no record invented");
        if let Some(damage) = &read.damage {
            prop_assert!(!damage.is_empty());
            prop_assert!(read.sha256.is_none());
        }
    }

    #[test]
    fn a_cut_or_flipped_gzip_stream_is_damage_never_a_panic(cut in any::<usize>(), flip in any::<(usize, u8)>()) {
        let mut object = gzip_records(&serde_json::from_str::<serde_json::Value>(&log_json())
            .ok()
            .and_then(|v| v["Records"].as_array().cloned())
            .unwrap_or_default());
        let len = object.len();
        object[flip.0 % len] ^= flip.1;
        object.truncate(cut % (len + 1));
        let (read, handed) = stream(&object);
        prop_assert_eq!(read.records, handed);
    }

    #[test]
    fn a_mangled_entities_file_is_read_or_rejected_naming_the_file(edits in edits()) {
        let schema = parse_schema(&embedded_schema()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let text = mangle(ENTITIES, &edits);
        if let Err(e) = parse_entities_file("people.json", &text, Some(&schema)) {
            prop_assert!(e.one_line().contains("people.json"), "{}", e.one_line());
        }
    }

    #[test]
    fn a_mangled_config_is_read_or_rejected_naming_the_file(edits in edits()) {
        let text = mangle(CONFIG, &edits);
        if let Err(e) = Config::parse("tregov.toml", &text) {
            prop_assert!(e.one_line().contains("tregov.toml"), "{}", e.one_line());
        }
    }

    #[test]
    fn a_mangled_policy_file_is_loaded_or_rejected_naming_the_file(
        which in any::<usize>(),
        edits in edits(),
    ) {
        let mut sources = embedded_sources();
        let i = which % sources.len();
        let name = sources[i].name.clone();
        sources[i] = PolicySource { name: name.clone(), text: mangle(&sources[i].text, &edits) };
        if let Err(e) = PolicyBundle::from_sources(Some(embedded_schema()), sources) {
            prop_assert!(e.one_line().contains(&name), "{}", e.one_line());
        }
    }

    #[test]
    fn a_bearer_token_of_any_text_is_refused_with_a_reason(
        token in "[A-Za-z0-9_\\-\\.=+/ ]{0,300}|\\PC{0,100}",
        mangled in edits(),
    ) {
        let good = tregov_tests::jwt::token("alice");
        let tokens = [token, mangle(&good, &mangled)];
        for t in &tokens {
            let answer = runtime().block_on(authenticator().verify(Some(&format!("Bearer {t}"))));
            if let Err(e) = answer {
                prop_assert!(!e.to_string().is_empty());
            } else {
                // Only a mangling that changed nothing the signature covers can pass.
                prop_assert!(t.trim() == good, "accepted a changed token: {t}");
            }
        }
    }
}

const ENTITIES: &str = r#"[
  {"uid": {"type": "Tre::Role", "id": "Researcher"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Tre::Project", "id": "proj-genomics"}, "attrs": {"accountId": "123456789012"}, "parents": []},
  {"uid": {"type": "Tre::User", "id": "alice"}, "attrs": {"status": "active"},
   "parents": [{"type": "Tre::Role", "id": "Researcher"}, {"type": "Tre::Project", "id": "proj-genomics"}]}
]"#;

const CONFIG: &str = r#"concurrency = 8
[[projects]]
id = "proj-genomics"
account_id = "123456789012"
[cloudtrail]
bucket = "org-trail"
organization_id = "o-abc"
lookback_days = 2
[api]
listen = "127.0.0.1:9465"
services = ["tre-portal"]
[auth]
jwks_file = "jwks.json"
issuer = "https://idp"
audience = "app"
"#;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn authenticator() -> &'static tregov_api::auth::Authenticator {
    static AUTH: std::sync::OnceLock<tregov_api::auth::Authenticator> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let config = tregov_config::AuthConfig {
            jwks_file: Some(tregov_tests::jwt::fixture("jwks.json")),
            jwks_url: None,
            issuer: tregov_tests::jwt::ISSUER.into(),
            audience: tregov_tests::jwt::AUDIENCE.into(),
            leeway_seconds: 30,
            jwks_ttl_seconds: 3600,
        };
        runtime()
            .block_on(tregov_api::auth::Authenticator::new(&config))
            .expect("keys")
    })
}
