//! CloudTrail ingest throughput from local `.json.gz` files, against `gzip -dc` over the same
//! files in the same run: `cargo bench -p tregov-benches --bench ingest`.
//!
//! Ingest is the whole per-file path the collector runs after the S3 download: decompress,
//! parse every record, classify, and store the events with each file's read mark, one SQLite
//! transaction per batch of whatever has arrived (up to 10,000 events). Reading and parsing
//! run on one thread and storing on another, as in the collector (gzip -dc is one process).
//! Medians of 5 runs.
//! `TREGOV_INGEST_FILES` and `TREGOV_INGEST_RECORDS` set the corpus size (default 200 × 500).

use std::path::PathBuf;
use std::time::Instant;

// As in the `tregov` binary, whose collector this measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tregov_benches::median;
use tregov_collectors::cloudtrail_parse::parse_log_file;
use tregov_collectors::testkit::{gzip_records, key, record, uuid, Lcg};
use tregov_engine::events::{EventStore, FileBatch, FileBody, FileEnd, StoredEvent};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Parsed files as one store batch.
fn batch_of<'a>(files: &'a [(&'a String, Vec<u8>, Vec<StoredEvent>)]) -> Vec<FileBatch<'a>> {
    files
        .iter()
        .map(|(key, body, events)| FileBatch {
            key,
            events,
            end: Some(FileEnd {
                etag: "etag",
                body: FileBody::Bytes(body),
                records: events.len() as u64,
                error: None,
                sha256: None,
            }),
        })
        .collect()
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let files = env_or("TREGOV_INGEST_FILES", 200);
    let per_file = env_or("TREGOV_INGEST_RECORDS", 500);
    let dir = tempfile::tempdir().expect("tmp");
    let mut rng = Lcg(3);
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    let mut bytes_in = 0u64;
    for f in 0..files {
        let account = ["111111111111", "222222222222"][f % 2];
        let day = format!("2026-11-{:02}", 1 + f % 28);
        let records: Vec<_> = (0..per_file)
            .map(|_| {
                let id = uuid(&mut rng);
                record(&mut rng, account, "eu-west-2", &day, &id)
            })
            .collect();
        let k = key(Some("o-bench"), account, "eu-west-2", &day, f as u64);
        let path = dir.path().join(format!("{f:05}.json.gz"));
        let gz = gzip_records(&records);
        bytes_in += gz.len() as u64;
        std::fs::write(&path, gz).expect("write");
        paths.push((k, path));
    }
    let events = (files * per_file) as f64;

    let mut gzip_runs = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let status = std::process::Command::new("gzip")
            .arg("-dc")
            .args(paths.iter().map(|(_, p)| p))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("gzip runs");
        assert!(status.success());
        gzip_runs.push(started.elapsed());
    }

    // As the collector does it: files are read and parsed by a worker while the store writes
    // the previous ones (one writer, since SQLite has one).
    let mut ingest_runs = Vec::new();
    for _ in 0..5 {
        let store_dir = tempfile::tempdir().expect("tmp");
        let store = EventStore::open(store_dir.path()).expect("store");
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let stored = std::thread::scope(|scope| {
            scope.spawn(|| {
                for (k, path) in &paths {
                    let bytes = std::fs::read(path).expect("read");
                    let parsed = parse_log_file(k, &bytes, None).expect("parse");
                    if tx.send((k, bytes, parsed)).is_err() {
                        break;
                    }
                }
                drop(tx);
            });
            // The writer commits whatever has arrived, up to 10,000 events at a time.
            let mut stored = 0u64;
            let mut pending: Vec<(&String, Vec<u8>, Vec<_>)> = Vec::new();
            let mut flush = |pending: &mut Vec<(&String, Vec<u8>, Vec<_>)>| {
                stored += store.ingest_files(&mut batch_of(pending)).expect("ingest");
                pending.clear();
            };
            while let Ok(first) = rx.recv() {
                let mut n = first.2.len();
                pending.push(first);
                while n < 10_000 {
                    match rx.try_recv() {
                        Ok(next) => {
                            n += next.2.len();
                            pending.push(next);
                        }
                        Err(_) => break,
                    }
                }
                flush(&mut pending);
            }
            stored
        });
        ingest_runs.push(started.elapsed());
        assert_eq!(stored as f64, events);
    }

    // Each stage alone, to show which one bounds the pipeline.
    let mut parse_runs = Vec::new();
    let mut parsed_all = Vec::new();
    for _ in 0..3 {
        parsed_all.clear();
        let started = Instant::now();
        for (k, path) in &paths {
            let bytes = std::fs::read(path).expect("read");
            let parsed = parse_log_file(k, &bytes, None).expect("parse");
            parsed_all.push((k, bytes, parsed));
        }
        parse_runs.push(started.elapsed());
    }
    let mut write_runs = Vec::new();
    for _ in 0..3 {
        let store_dir = tempfile::tempdir().expect("tmp");
        let store = EventStore::open(store_dir.path()).expect("store");
        let started = Instant::now();
        for chunk in parsed_all.chunks((10_000 / per_file.max(1)).max(1)) {
            store.ingest_files(&mut batch_of(chunk)).expect("ingest");
        }
        write_runs.push(started.elapsed());
    }

    let gzip = median(gzip_runs);
    let ingest = median(ingest_runs);
    let gzip_rate = events / gzip.as_secs_f64();
    let ingest_rate = events / ingest.as_secs_f64();
    println!(
        "corpus: {files} files x {per_file} records = {events} events, {:.1} MiB compressed",
        bytes_in as f64 / 1048576.0
    );
    println!("gzip -dc        median {gzip:>10.2?}  {gzip_rate:>12.0} events/s");
    println!("tregov ingest   median {ingest:>10.2?}  {ingest_rate:>12.0} events/s");
    println!(
        "  stages alone: read+decompress+parse median {:.2?}, store median {:.2?}",
        median(parse_runs),
        median(write_runs)
    );
    println!(
        "ratio ingest / gzip -dc: {:.2} (target >= 0.50)",
        ingest_rate / gzip_rate
    );
}
