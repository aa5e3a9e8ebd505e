//! Crash trials: `tregov apply` over 200 studies killed (SIGKILL) at random moments, then run
//! again. Each trial converges on the restart with nothing lost and no grant applied twice,
//! and the decision log verifies after every one. Seeded: `TREGOV_CRASH_SEED` replays a run,
//! `TREGOV_CRASH_TRIALS` sets how many (CI runs 2; `scripts/crash-trials` runs 50). The
//! egress workflow's trials are in `egress.rs`.

use std::process::Stdio;
use std::time::Duration;

use tregov_tests::cloudtrail::Lcg;
use tregov_tests::governed::{
    applied_counts, lf_permissions, revoke_all, role, seed, seed_studies, tregov, write_config,
    writer_permissions,
};
use tregov_tests::moto::Moto;
use tregov_tests::{env_number, stderr, stdout, Tre};

const STUDIES: usize = 200;

#[test]
fn apply_over_200_studies_killed_at_random_moments_converges_each_time() {
    let trials = env_number("TREGOV_CRASH_TRIALS", 2);
    let seed_value = env_number("TREGOV_CRASH_SEED", 7);
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    seed_studies(&moto, &tre, STUDIES);
    let cfg = write_config(&tre, 5, "");
    let mut rng = Lcg(seed_value);

    // An apply with all 201 grants to make takes about two minutes against moto on the
    // 2-core build machine: kill within its first 40 s, where most of the work is in flight.
    let window_ms = env_number("TREGOV_CRASH_WINDOW_MS", 40_000);

    for trial in 0..trials {
        let context = format!("trial {trial} of seed {seed_value}");
        if trial > 0 {
            revoke_all(&moto, &role());
        }
        let before = applied_counts(&tre);
        let kill_after = Duration::from_millis(rng.below(window_ms));
        let mut child = tre
            .command(Some(&moto), &cfg, &["apply", "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("apply starts");
        std::thread::sleep(kill_after);
        let _ = child.kill();
        let _ = child.wait();

        let verify = tregov(&tre, &moto, &cfg, &["log", "verify"]);
        assert!(verify.status.success(), "{context}: {}", stdout(&verify));
        let resumed = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
        assert!(resumed.status.success(), "{context}: {}", stderr(&resumed));
        let done = tregov(&tre, &moto, &cfg, &["apply", "--yes"]);
        assert!(
            stdout(&done).starts_with("no changes"),
            "{context}: {}",
            stdout(&done)
        );

        let held = lf_permissions(&moto);
        assert_eq!(held.len(), STUDIES + 1, "{context}: {held:?}");
        assert!(
            held.iter().all(|(_, p)| p == &writer_permissions()),
            "{context}"
        );
        let after = applied_counts(&tre);
        let twice: Vec<_> = after
            .iter()
            .filter(|(item, n)| **n > before.get(*item).copied().unwrap_or(0) + 1)
            .collect();
        assert!(twice.is_empty(), "{context}: applied twice: {twice:?}");
        eprintln!("{context}: killed after {kill_after:?}; converged");
    }
}
