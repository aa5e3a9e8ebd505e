//! Decision latency over the store at 1k, 10k and 100k entities; store load time; memory
//! per entity; and the cost of logging decisions.
//!
//! `cargo bench -p tregov-benches --bench decision` (criterion medians), followed by a
//! percentile table (p50/p99/p99.9 of individually timed decisions) and load/memory figures.
//! `TREGOV_BENCH_SIZES=1000,10000` limits the sizes.

use std::time::{Duration, Instant};

use cedar_policy::Entity;
use criterion::Criterion;
use tregov_benches::{requests, rss_bytes, tre_entities};
use tregov_engine::decide::ParsedRequest;
use tregov_engine::{Engine, PolicyBundle, RequestSpec, StoreBatch};

struct Loaded {
    engine: Engine,
    requests: Vec<ParsedRequest>,
    load: Duration,
    heap_per_entity: f64,
    rss_per_entity: f64,
    entities: usize,
    _dir: tempfile::TempDir,
}

fn load(total: usize) -> Loaded {
    let dir = tempfile::tempdir().expect("tmp");
    let (shape, count) = write_store(dir.path(), total);
    let bundle = PolicyBundle::embedded().expect("policies");
    // Load time and memory are measured in a fresh process, so nothing the set-up allocated
    // (and the allocator kept) hides in the figures.
    let out = std::process::Command::new(std::env::current_exe().expect("bench exe"))
        .env(LOAD_PROBE, dir.path())
        .output()
        .expect("load probe");
    let probe = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<f64> = probe
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let (load, heap_growth, rss_growth) = match fields.as_slice() {
        [secs, heap, rss, ..] => (Duration::from_secs_f64(*secs), *heap, *rss),
        _ => panic!(
            "load probe failed: {probe} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    let engine = Engine::open(dir.path(), bundle).expect("engine");
    let requests = requests(shape, 20_000)
        .into_iter()
        .map(|(p, a, r)| {
            engine
                .parse(RequestSpec {
                    principal: p,
                    action: a,
                    resource: r,
                    context: serde_json::json!({}),
                })
                .expect("request")
        })
        .collect();
    Loaded {
        engine,
        requests,
        load,
        heap_per_entity: heap_growth / count as f64,
        rss_per_entity: rss_growth / count as f64,
        entities: count,
        _dir: dir,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Writes a synthetic TRE of about `total` entities into a store at `dir`.
fn write_store(dir: &std::path::Path, total: usize) -> (tregov_benches::Shape, usize) {
    let bundle = PolicyBundle::embedded().expect("policies");
    let schema = bundle.schema.clone().expect("schema");
    let (shape, values) = tre_entities(total);
    let entities: Vec<Entity> = values
        .into_iter()
        .map(|v| Entity::from_json_value(v, Some(&schema)).expect("valid entity"))
        .collect();
    let count = entities.len();
    let store = tregov_engine::Store::open(dir).expect("store");
    store
        .apply(
            &StoreBatch {
                upserts: entities,
                partition: "bench".into(),
                ..Default::default()
            },
            &schema,
        )
        .expect("import");
    (shape, count)
}

// Counts live heap bytes, so memory per entity is what the graph holds, not what the
// allocator happens to keep; over the binary's own allocator, so times are what ships.
#[global_allocator]
static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

const LOAD_PROBE: &str = "TREGOV_BENCH_LOAD_PROBE";

/// In the probe process: open the engine over the store and print seconds and RSS growth.
fn load_probe(dir: &str) {
    let bundle = PolicyBundle::embedded().expect("policies");
    let rss_before = rss_bytes().unwrap_or(0);
    let heap_before = ALLOCATOR.allocated();
    let started = Instant::now();
    let engine = Engine::open(std::path::Path::new(dir), bundle).expect("engine");
    let secs = started.elapsed().as_secs_f64();
    let heap_after = ALLOCATOR.allocated();
    let rss_after = rss_bytes().unwrap_or(0);
    println!(
        "{secs} {} {} {}",
        heap_after.saturating_sub(heap_before),
        rss_after.saturating_sub(rss_before),
        engine.graph().len()
    );
}

fn main() {
    if let Ok(dir) = std::env::var(LOAD_PROBE) {
        load_probe(&dir);
        return;
    }
    // `TREGOV_BENCH_WRITE_STORE=DIR:N` only writes a store of N entities (for profiling).
    if let Ok(spec) = std::env::var("TREGOV_BENCH_WRITE_STORE") {
        let (dir, n) = spec.rsplit_once(':').expect("DIR:N");
        write_store(std::path::Path::new(dir), n.parse().expect("N"));
        return;
    }
    let sizes: Vec<usize> = std::env::var("TREGOV_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut table = Vec::new();
    for &n in &sizes {
        let loaded = load(n);
        let engine = &loaded.engine;
        let reqs = &loaded.requests;
        // Hot: the answers are in the cache (nothing they depend on changed).
        for r in reqs {
            engine.decide(r);
        }
        let mut i = 0usize;
        criterion.bench_function(&format!("decide_hot/{n}"), |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                std::hint::black_box(engine.decide(&reqs[i]))
            })
        });
        // Cold: the cache emptied before each decision, so each is a miss that also works
        // out what its answer depends on and remembers it.
        criterion.bench_function(&format!("decide_cold/{n}"), |b| {
            b.iter_batched(
                || {
                    engine.clear_cache();
                    i = (i + 1) % reqs.len();
                    i
                },
                |i| std::hint::black_box(engine.decide(&reqs[i])),
                criterion::BatchSize::PerIteration,
            )
        });
        // Cedar's authorizer alone on the same requests, to attribute the cost.
        let whole = tregov_benches::cedar_store_entities(engine);
        let authorizer = cedar_policy::Authorizer::new();
        let mut k = 0usize;
        criterion.bench_function(&format!("cedar_is_authorized_only/{n}"), |b| {
            b.iter(|| {
                k = (k + 1) % reqs.len();
                let r = &reqs[k];
                std::hint::black_box(authorizer.is_authorized(
                    &r.request,
                    engine.bundle().policies_for(r.action()),
                    &whole,
                ))
            })
        });
        // Cedar timed the same way as the cold decisions, for a like-for-like ratio.
        criterion.bench_function(&format!("cedar_is_authorized_per_iteration/{n}"), |b| {
            b.iter_batched(
                || {
                    k = (k + 1) % reqs.len();
                    k
                },
                |k| {
                    let r = &reqs[k];
                    std::hint::black_box(authorizer.is_authorized(
                        &r.request,
                        engine.bundle().policies_for(r.action()),
                        &whole,
                    ))
                },
                criterion::BatchSize::PerIteration,
            )
        });
        // The same with no policies at all: Cedar's fixed cost per request.
        let empty = cedar_policy::PolicySet::new();
        criterion.bench_function(&format!("cedar_is_authorized_empty_set/{n}"), |b| {
            b.iter(|| {
                k = (k + 1) % reqs.len();
                let r = &reqs[k];
                std::hint::black_box(authorizer.is_authorized(&r.request, &empty, &whole))
            })
        });
        let mut j = 0usize;
        criterion.bench_function(&format!("decide_and_log_batch_of_100/{n}"), |b| {
            b.iter(|| {
                j = (j + 100) % (reqs.len() - 100);
                std::hint::black_box(
                    engine
                        .decide_batch_logged(&reqs[j..j + 100], "bench")
                        .expect("logged"),
                )
            })
        });
        // Eight callers at once, one decision each per append, as API requests arrive:
        // group commit shares their writes. Each iteration is 200 logged decisions.
        let mut round = 0usize;
        criterion.bench_function(&format!("decide_and_log_8_callers_x25/{n}"), |b| {
            b.iter(|| {
                round = (round + 200) % (reqs.len() - 200);
                let engine = &engine;
                std::thread::scope(|scope| {
                    for caller in 0..8 {
                        let mine = &reqs[round + caller * 25..round + caller * 25 + 25];
                        scope.spawn(move || {
                            for r in mine {
                                std::hint::black_box(
                                    engine.decide_logged(r, "bench").expect("logged"),
                                );
                            }
                        });
                    }
                });
            })
        });
        // Every uncached decision timed on its own, for Cedar's tail.
        let mut samples = Vec::with_capacity(200_000);
        for k in 0..200_000 {
            let r = &reqs[k % reqs.len()];
            let t = Instant::now();
            std::hint::black_box(engine.decide_uncached(r));
            samples.push(t.elapsed());
        }
        samples.sort();
        table.push((
            loaded.entities,
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            percentile(&samples, 0.999),
            loaded.load,
            loaded.heap_per_entity,
            loaded.rss_per_entity,
        ));
    }
    criterion.final_summary();
    println!();
    println!(
        "entities   p50        p99        p99.9      load       heap B/entity  peak RSS B/entity"
    );
    for (n, p50, p99, p999, load, heap, rss) in table {
        println!(
            "{n:<10} {:<10} {:<10} {:<10} {:<10} {heap:<14.0} {rss:.0}",
            format!("{:.2?}", p50),
            format!("{:.2?}", p99),
            format!("{:.2?}", p999),
            format!("{:.2?}", load)
        );
    }
}
