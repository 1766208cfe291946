//! Host work that rayon may parallelise, serial against parallel on the same inputs; rayon
//! stays in a library only where the parallel run wins (benches/README.md, "Host
//! parallelism"):
//!
//! - gold scoring of many responses: harmless (TF-IDF + calibrated SVMs) and positive (VADER)
//!   on the committed SmolLM2 responses (`data/pairs/smollm2-responses.jsonl`), 64 and 1024 of
//!   them (a PPO step's batch; an eval-front run's rows): the library's serial `score` against
//!   one response per rayon task (written here; it did not win, so the library stays serial);
//! - pair building from those scored prompts (8 responses each), 64 and 1024 prompts: the
//!   serial loop over `pairgen::build_pairs` against one prompt per rayon task (here too);
//! - bootstrap resampling (`panacea_eval::bootstrap_ci`, parallel over resamples in the
//!   library), on a 1-thread rayon pool (serial) and on all cores: eval-front's shapes, 11
//!   front points × 32 prompts, 1000 resamples, the hypervolume interval, and the per-point
//!   interval (1 point, 32 prompts, the mean).
//!
//! Run: `cargo bench -p panacea-benches -- host_parallel`
//!
//! Before timing, each parallel result is checked to equal the 1-thread result exactly.

use std::time::Duration;

use criterion::{black_box, Criterion};
use panacea_data::pairgen::{
    build_pairs, read_scored_responses, PairGenConfig, PairGenStats, ScoredPrompt,
};
use panacea_data::{HarmlessScorer, PositiveScorer, Scorer};
use panacea_eval::{bootstrap_ci, hypervolume, BootstrapOptions, RefPoint, Sense};
use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

fn pool(threads: usize) -> ThreadPool {
    ThreadPoolBuilder::new().num_threads(threads).build().expect("rayon pool")
}

/// The committed scored prompts (32 prompts × 8 responses) with the margins of
/// `data/pairs/stats.json`, repeated to `n` prompts.
fn scored_prompts(n: usize) -> (Vec<ScoredPrompt>, PairGenConfig) {
    let path = panacea_data::workspace_path("data/pairs/smollm2-responses.jsonl");
    let records = read_scored_responses(&path).expect("committed responses");
    let dims: Vec<String> =
        ["harmless", "positive", "relevant", "concise"].map(String::from).to_vec();
    let one: Vec<ScoredPrompt> =
        records.iter().map(|r| r.to_scored_prompt(&dims).expect("dims")).collect();
    let prompts = one.iter().cycle().take(n).cloned().collect();
    let cfg = PairGenConfig {
        dims,
        margins: vec![0.1, 0.05, 0.05, 0.0],
        pku_helpful: "relevant".into(),
        pku_harmless: "harmless".into(),
        safe_threshold: 0.5,
    };
    (prompts, cfg)
}

fn bench_scoring(c: &mut Criterion) {
    let (prompts, _) = scored_prompts(32);
    let all: Vec<&str> =
        prompts.iter().flat_map(|p| p.responses.iter().map(String::as_str)).collect();
    let harmless = HarmlessScorer::load_bundled().expect("bundled export");
    let positive = PositiveScorer::new();
    let mut group = c.benchmark_group("host_parallel");
    group.sample_size(10).warm_up_time(Duration::from_millis(300));
    for n in [64, 1024] {
        let responses: Vec<&str> = all.iter().cycle().take(n).copied().collect();
        let empty = vec![""; n];
        let serial_h = || harmless.score(black_box(&empty), black_box(&responses)).expect("h");
        let parallel_h =
            || responses.par_iter().map(|r| 1.0 - harmless.toxicity(r)).collect::<Vec<f64>>();
        let serial_p = || positive.score(black_box(&empty), black_box(&responses)).expect("p");
        let parallel_p = || {
            let v: Vec<_> = responses.par_iter().map(|r| positive.compound(r)).collect();
            v.into_iter().collect::<Result<Vec<f64>, _>>().expect("p")
        };
        assert_eq!(parallel_h(), serial_h(), "harmless: parallel ≠ serial");
        assert_eq!(parallel_p(), serial_p(), "positive: parallel ≠ serial");
        group.bench_function(format!("score_harmless_n{n}_serial"), |b| b.iter(serial_h));
        group.bench_function(format!("score_harmless_n{n}_rayon"), |b| b.iter(parallel_h));
        group.bench_function(format!("score_positive_n{n}_serial"), |b| b.iter(serial_p));
        group.bench_function(format!("score_positive_n{n}_rayon"), |b| b.iter(parallel_p));
    }
    group.finish();
}

/// Every prompt's pairs and the summed counts, prompt by prompt.
type AllPairs = (Vec<panacea_data::GenericPair>, Vec<panacea_data::PkuRecord>, PairGenStats);

fn bench_pairgen(c: &mut Criterion) {
    let mut group = c.benchmark_group("host_parallel");
    group.sample_size(10).warm_up_time(Duration::from_millis(300));
    for n in [64, 1024] {
        let (prompts, cfg) = scored_prompts(n);
        let serial = || -> AllPairs {
            let mut stats = PairGenStats::default();
            let (mut g, mut p) = (Vec::new(), Vec::new());
            for sp in black_box(&prompts) {
                let (a, b) = build_pairs(sp, &cfg, &mut stats).expect("pairs");
                g.extend(a);
                p.extend(b);
            }
            (g, p, stats)
        };
        let parallel = || -> AllPairs {
            let per_prompt: Vec<_> = black_box(&prompts)
                .par_iter()
                .map(|sp| {
                    let mut stats = PairGenStats::default();
                    let (g, p) = build_pairs(sp, &cfg, &mut stats).expect("pairs");
                    (g, p, stats)
                })
                .collect();
            let mut total =
                PairGenStats { labelled: vec![0; cfg.dims.len()], ..Default::default() };
            let (mut g, mut p) = (Vec::new(), Vec::new());
            for (a, b, s) in per_prompt {
                g.extend(a);
                p.extend(b);
                total.candidates += s.candidates;
                total.identical += s.identical;
                total.all_ties += s.all_ties;
                total.generic += s.generic;
                total.pku += s.pku;
                total.labelled.iter_mut().zip(&s.labelled).for_each(|(t, x)| *t += x);
            }
            (g, p, total)
        };
        assert!(parallel() == serial(), "pairs: parallel ≠ serial");
        group.bench_function(format!("pairs_n{n}_serial"), |b| b.iter(serial));
        group.bench_function(format!("pairs_n{n}_rayon"), |b| b.iter(parallel));
    }
    group.finish();
}

fn bench_bootstrap(c: &mut Criterion) {
    // 11 λ × 32 prompts × 2 objectives from a fixed formula (a line of points with prompt
    // effects), the shape of configs/eval-front.yaml's default run.
    let per_prompt: Vec<Vec<Vec<f64>>> = (0..11)
        .map(|k| {
            (0..32)
                .map(|p| {
                    let e = ((p * 7 + k * 3) % 13) as f64 / 20.0;
                    vec![k as f64 / 10.0 + e, 1.0 - k as f64 / 10.0 + e * 0.5]
                })
                .collect()
        })
        .collect();
    let opts = BootstrapOptions { n_resamples: 1000, level: 0.95, seed: 0 };
    let rp = RefPoint::Explicit(vec![-0.1, -0.1]);
    let hv = |f: &[Vec<f64>]| Ok(hypervolume(f, Sense::Max, &rp)?.value);
    let one_point = [per_prompt[5].clone()];
    let mean = |f: &[Vec<f64>]| Ok(f[0][0]);
    let (one, all_cores) = (pool(1), pool(0));
    let front_ci = || bootstrap_ci(black_box(&per_prompt), hv, &opts).expect("ci");
    let point_ci = || bootstrap_ci(black_box(&one_point), mean, &opts).expect("ci");
    assert_eq!(one.install(front_ci), all_cores.install(front_ci), "front: parallel ≠ serial");
    assert_eq!(one.install(point_ci), all_cores.install(point_ci), "point: parallel ≠ serial");
    let mut group = c.benchmark_group("host_parallel");
    group.sample_size(10).warm_up_time(Duration::from_millis(300));
    group
        .bench_function("bootstrap_hv_k11_p32_r1000_1thread", |b| b.iter(|| one.install(front_ci)));
    group.bench_function("bootstrap_hv_k11_p32_r1000_all", |b| {
        b.iter(|| all_cores.install(front_ci))
    });
    group.bench_function("bootstrap_point_p32_r1000_1thread", |b| b.iter(|| one.install(point_ci)));
    group.bench_function("bootstrap_point_p32_r1000_all", |b| {
        b.iter(|| all_cores.install(point_ci))
    });
    group.finish();
}

criterion::criterion_group!(benches, bench_scoring, bench_pairgen, bench_bootstrap);
