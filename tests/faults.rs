//! Fault injection: between tregov's AWS SDK clients and moto, a loopback proxy fails 30 % of
//! calls with throttling, 500s, connection resets (some after the call was done, so a retry
//! repeats it) and hangs past the attempt timeout. `apply` over 200 studies still converges,
//! each grant applied once. (The egress workflow under the same faults is in `egress.rs`.)

use std::time::Duration;

use tregov_tests::faults::FaultProxy;
use tregov_tests::governed::{
    applied_counts, lf_permissions, seed, seed_studies, write_config, writer_permissions,
};
use tregov_tests::moto::Moto;
use tregov_tests::{stderr, stdout, Tre};

const STUDIES: usize = 200;
/// What the SDK is told: a hung call is abandoned after 2 s (the proxy hangs for 4).
const UNDER_FAULTS: &str = "attempt_timeout_seconds = 2\nconnect_timeout_seconds = 2\n";

#[test]
fn apply_over_200_studies_converges_through_30_percent_faults_with_nothing_doubled() {
    let moto = Moto::start();
    let tre = Tre::new();
    seed(&moto, &tre);
    seed_studies(&moto, &tre, STUDIES);
    let cfg = write_config(&tre, 5, "");
    // Top-level keys go before the first section.
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, format!("{UNDER_FAULTS}{text}")).expect("config");
    let seed = std::env::var("TREGOV_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let proxy = FaultProxy::start(&moto.endpoint(), 0.3, seed, Duration::from_secs(4));

    let mut runs = 0;
    loop {
        runs += 1;
        let out = tre
            .command(Some(&moto), &cfg, &["apply", "--yes"])
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .output()
            .expect("apply runs");
        let text = stdout(&out);
        eprintln!(
            "apply run {runs}: exit {:?}, {}",
            out.status.code(),
            text.lines().last().unwrap_or("")
        );
        if out.status.success() && text.starts_with("no changes") {
            break;
        }
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "apply neither finished nor reported failed items (seed {seed}): {}",
            stderr(&out)
        );
        assert!(
            runs < 12,
            "apply did not converge in 12 runs (seed {seed}): {}",
            stderr(&out)
        );
    }

    let calls = proxy.counts.calls();
    let faults = proxy.counts.faults();
    eprintln!(
        "{calls} calls, {faults} faults ({:?}) in {runs} runs",
        proxy.counts
    );
    assert!(
        faults * 100 >= calls * 20,
        "too few faults to mean anything: {faults} of {calls}"
    );
    let held = lf_permissions(&moto);
    assert_eq!(held.len(), STUDIES + 1, "{held:?}");
    assert!(
        held.iter().all(|(_, p)| p == &writer_permissions()),
        "{held:?}"
    );
    let applied = applied_counts(&tre);
    assert!(
        applied.values().all(|n| *n == 1),
        "an item applied twice: {applied:?}"
    );
    let verify = tre.run(&["log", "verify"]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}
