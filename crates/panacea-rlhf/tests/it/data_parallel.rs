//! Data-parallel PPO through c10d's Gloo: two processes of this test binary on 127.0.0.1 train
//! the tiny config (`tiny-random` base; skipped without the SmolLM2 tokenizer) as ranks 0 and
//! 1, and 2 ranks × batch 2 (minibatch 1 per rank) is the same run as 1 process × batch 4
//! (minibatch 2): same prompts, λ and sampled tokens per row, the whole batch's statistics
//! (score normaliser, whitening; Tchebycheff's estimate and ideal point), and per minibatch
//! the summed loss shares' gradient equal to the minibatch's gradient. Also: the one-process
//! numbers are those recorded before data parallelism existed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use panacea_core::RunRng;
use panacea_rlhf::rollout::RankSlicedRng;
use panacea_rlhf::trainer::{CRITIC_FILE, PPO_STATE_FILE};
use panacea_rlhf::{train_ppo, RlhfError};
use panacea_run::{latest_checkpoint, Manifest, RunError, RunOptions, Silent};
use panacea_shim::dist::{loopback_launch_vars, ProcessGroup};
use rand::{Rng, RngCore};
use tch::Tensor;

use crate::jobs::{scratch, tiny_ppo, workspace_with_smollm2};

/// Settings shared by the 1-process and 2-process runs (all but the batch sizes).
const COMMON: [&str; 5] = [
    "train.preference_per_row=true",
    "train.steps=3",
    "train.save_every=1",
    "train.log_every=1",
    "train.eval_prompts=2",
];

/// libtorch's thread count is global to a process, so only child processes set it (in this
/// one it would change the numerics of tests running beside them).
const ONE_THREAD: &str = "threads=1";

/// The sampling of the data-parallel runs: the 8 likeliest tokens. A row samples with the same
/// words in both runs, but its logits are computed in batches of other shapes (another left
/// padding, kernels picked by batch size), which moves them by float rounding (~1e-7). Over
/// the tiny random model's nearly uniform 49k-token distribution that rounding moves a CDF
/// boundary past the drawn word in a few percent of draws; over 8 tokens of probability ~1/8
/// it practically never does, so the test sees the same tokens and checks the rest exactly.
const TOP_K: &str = "rollout.top_k=8";

/// Variables that tell a child rank what to run (read by [`ppo_rank`]).
const RUNS_VAR: &str = "PANACEA_TEST_DP_RUNS";
const STEPS_VAR: &str = "PANACEA_TEST_DP_STEPS";
/// More `--set`s for the child ranks, separated by `;`.
const SETS_VAR: &str = "PANACEA_TEST_DP_SETS";

/// The batch statistics of linear aggregation on: the running score normaliser and whitened
/// advantages. (A Lagrange multiplier needs a cost objective, which the built-in scorers
/// cannot be; its costs are read from the same gathered rows as the normaliser's.)
const LINEAR_STATISTICS: [&str; 3] =
    ["aggregation={kind: linear}", "ppo.normalise_scores=true", "ppo.whiten_advantages=true"];

/// Tchebycheff aggregation: the batch estimate of each J_i and the running ideal point.
const TCHEBYCHEFF: [&str; 1] = ["aggregation={kind: tchebycheff}"];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts ranks 0 and 1 of [`ppo_rank`] writing under `runs`, training `steps` steps with
/// `sets` on top of the common settings.
fn spawn_ranks(runs: &Path, steps: u64, timeout_s: u64, sets: &[&str]) -> Vec<Child> {
    let exe = std::env::current_exe().expect("test binary");
    let port = free_port();
    (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", "data_parallel::ppo_rank", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .envs(loopback_launch_vars(rank, 2, port))
                .env("PANACEA_DIST_TIMEOUT_S", timeout_s.to_string())
                .env(RUNS_VAR, runs)
                .env(STEPS_VAR, steps.to_string())
                .env(SETS_VAR, sets.join(";"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("child rank starts")
        })
        .collect()
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The run folders under `runs` whose name ends with `-{name}`.
fn runs_named(runs: &Path, name: &str) -> Vec<PathBuf> {
    let suffix = format!("-{name}");
    let mut v: Vec<PathBuf> = std::fs::read_dir(runs)
        .expect("ls runs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&suffix)))
        .collect();
    v.sort();
    v
}

/// The tensors of a safetensors file, sorted by name.
fn tensors(file: &Path) -> Vec<(String, Tensor)> {
    let mut v = Tensor::read_safetensors(file).expect("safetensors");
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The rows of a run's metrics.jsonl that carry a step's training metrics.
fn train_rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("train/kl").is_some())
        .collect()
}

/// Σ|x| over every tensor of a safetensors file.
fn abs_sum(file: &Path) -> f64 {
    tensors(file)
        .iter()
        .map(|(_, t)| f64::try_from(t.abs().sum(tch::Kind::Double)).expect("Σ"))
        .sum()
}

/// `a` and `b` have the same shape and their numbers agree within 1e-6 (relative above 1).
fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, at: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().expect("f64"), y.as_f64().expect("f64"));
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_json_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (k, x) in x {
                assert_json_close(x, y.get(k).expect(k), &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// Max |a − b| over same-named tensors of two safetensors files, and max |a| of the names
/// `moving` picks (to show they trained).
fn max_diff(a: &Path, b: &Path, moving: impl Fn(&str) -> bool) -> (f64, f64) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    let (mut diff, mut moved) = (0.0f64, 0.0f64);
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        diff = diff.max(f64::try_from((ta - tb).abs().max()).expect("scalar"));
        if moving(na) {
            moved = moved.max(f64::try_from(ta.abs().max()).expect("scalar"));
        }
    }
    (diff, moved)
}

#[test]
fn rank_sliced_sampling_draws_the_words_of_the_global_rows() {
    // One process: 3 decoding steps of 4 rows, one f32 each (as generation draws them).
    let mut one = RunRng::new(7).sampling;
    let global: Vec<Vec<f32>> =
        (0..3).map(|_| (0..4).map(|_| one.gen::<f32>()).collect()).collect();
    for rank in 0..2 {
        let mut stream = RunRng::new(7).sampling;
        let mut sliced = RankSlicedRng::new(&mut stream, rank, 2, 2);
        // This rank's rows finish after 2 steps; the other rank decodes a third.
        let mine: Vec<Vec<f32>> =
            (0..2).map(|_| (0..2).map(|_| sliced.gen::<f32>()).collect()).collect();
        let steps = sliced.steps();
        assert_eq!(steps, 2);
        for (step, row) in mine.iter().enumerate() {
            assert_eq!(row.as_slice(), &global[step][rank * 2..rank * 2 + 2], "rank {rank}");
        }
        RankSlicedRng::catch_up(&mut stream, 2, 2, steps, 3);
        // The shared stream continues where the one process's does.
        assert_eq!(stream.next_u32(), one.clone().next_u32(), "rank {rank}");
    }
}

/// `train/policy_loss`, `train/value_loss`, `train/kl`, `train/score/even` and `train/entropy`
/// of steps 1–3 of [`one_process_numbers_are_those_before_data_parallelism`]'s run, and Σ|x|
/// of its final adapter and critic: recorded from the `panacea train-ppo` binary of commit
/// 5a14aa8 (before data-parallel PPO) with the same settings (`configs/tiny/ppo.yaml`,
/// `--set` of [`COMMON`], [`ONE_THREAD`], `train.batch_size=4`, `device=cpu`) on this machine's libtorch
/// 2.11.0, Σ|x| summed in f64 by torch in name order.
const GOLDEN_ROWS: [[f64; 5]; 3] = [
    [-0.5119469463825226, 0.08998621255159378, 0.0, 0.5000000074505806, 10.790042877197266],
    [
        -0.26926806569099426,
        0.03792674280703068,
        -0.00033926963806152344,
        0.5416666716337204,
        10.790046215057373,
    ],
    [
        -0.17159831151366234,
        0.06488658860325813,
        5.7220458984375e-06,
        0.5833333283662796,
        10.790042877197266,
    ],
];
const GOLDEN_SUMS: [f64; 2] = [213.28828379978222, 260.9267793497129];

#[test]
fn one_process_numbers_are_those_before_data_parallelism() {
    if workspace_with_smollm2().is_none() {
        return;
    }
    let runs = scratch("dp-golden");
    // In a child process, on one libtorch thread.
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "data_parallel::golden_run", "--ignored", "--nocapture"])
        .env(RUNS_VAR, &runs)
        .output()
        .expect("child runs");
    assert!(out.status.success(), "{}", output_text(&out));
    let run = runs_named(&runs, "golden").pop().expect("the child's run folder");
    let ckpt = latest_checkpoint(&run).expect("ls").expect("a checkpoint").dir;
    let rows = train_rows(&run);
    let got: Vec<[f64; 5]> = rows
        .iter()
        .map(|r| {
            [
                "train/policy_loss",
                "train/value_loss",
                "train/kl",
                "train/score/even",
                "train/entropy",
            ]
            .map(|k| r[k].as_f64().expect(k))
        })
        .collect();
    let sums = [abs_sum(&ckpt.join("adapter_model.safetensors")), abs_sum(&ckpt.join(CRITIC_FILE))];
    // Bit for bit: one process runs the code it ran before data parallelism.
    assert_eq!(got, GOLDEN_ROWS.to_vec(), "metrics of the one-process run changed");
    assert_eq!(sums, GOLDEN_SUMS, "adapter / critic Σ|x| of the one-process run changed");
    std::fs::remove_dir_all(&runs).ok();
}

#[test]
fn two_ranks_of_batch_2_train_the_adapter_and_critic_of_one_rank_of_batch_4() {
    two_ranks_equal_one("dp-same", &LINEAR_STATISTICS);
}

#[test]
fn two_ranks_equal_one_under_tchebycheff_aggregation() {
    two_ranks_equal_one("dp-tcheb", &TCHEBYCHEFF);
}

/// 3 steps of 1 process × batch 4 (minibatch 2) and of 2 ranks × batch 2 (minibatch 1) with
/// `extra` settings: the same adapter, critic and metrics; rank 0 alone writes; the manifests
/// record the world; a 1-process resume of the 2-rank run is refused.
fn two_ranks_equal_one(name: &str, extra: &[&str]) {
    let Some(root) = workspace_with_smollm2() else { return };
    let runs = scratch(name);
    let mut sets = COMMON.to_vec();
    sets.extend(["train.batch_size=4", "ppo.mini_batch_size=2", TOP_K]);
    sets.extend(extra);
    let cfg = tiny_ppo(&root, &sets);
    // The one-process run in a child process too: libtorch's generator (which initialises the
    // adapter and critic) and thread count are global to a process, so a run beside other
    // tests' runs in this one would not be the run it is compared with.
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "data_parallel::one_process_run", "--ignored", "--nocapture"])
        .env(RUNS_VAR, &runs)
        .env(SETS_VAR, extra.join(";"))
        .output()
        .expect("child runs");
    assert!(out.status.success(), "{}", output_text(&out));
    let single_dir = runs_named(&runs, "single").pop().expect("the child's run folder");
    let single_ckpt = latest_checkpoint(&single_dir).expect("ls").expect("a checkpoint").dir;

    let children = spawn_ranks(&runs, 3, 120, extra);
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("rank ends");
        let text = output_text(&out);
        assert!(out.status.success(), "rank {rank}: {text}");
        assert!(text.contains("1 passed"), "rank {rank} trained: {text}");
    }
    // Rank 0 alone created a run folder.
    let dp = runs_named(&runs, "dp");
    assert_eq!(dp.len(), 1, "{dp:?}");
    let dp = &dp[0];

    // Same adapter and critic after 3 steps (f32 sums in another order: within 1e-5).
    let ckpt = latest_checkpoint(dp).expect("ls").expect("a checkpoint");
    assert_eq!(ckpt.step, 3);
    let one = &single_ckpt;
    let (diff, moved) = max_diff(
        &one.join("adapter_model.safetensors"),
        &ckpt.dir.join("adapter_model.safetensors"),
        |n| n.ends_with("svd_lora_sigma") || n.ends_with("svd_lora_pref_scale"),
    );
    eprintln!("adapter: max |Δ| = {diff:e}, max |σ|, |s| = {moved}");
    assert!(diff < 1e-5, "adapter: max |Δ| = {diff}");
    // σ and s start at 0; AdamW at lr 1e-2 moves them by about 1e-2 a step.
    assert!(moved > 1e-3, "the adapter trained: max |σ|, |s| = {moved}");
    let (diff, _) = max_diff(&one.join(CRITIC_FILE), &ckpt.dir.join(CRITIC_FILE), |_| false);
    eprintln!("critic: max |Δ| = {diff:e}");
    assert!(diff < 1e-5, "critic: max |Δ| = {diff}");
    // The same running statistics: score normaliser, Lagrange multiplier, ideal point.
    let state = |dir: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join(PPO_STATE_FILE)).expect("ppo state");
        serde_json::from_str(&text).expect("json")
    };
    assert_json_close(&state(one), &state(&ckpt.dir), "ppo_state");

    // The logged metrics are the whole batch's: the same as one process's, one row per step
    // (rank 1 logged nothing).
    let (m1, m2) = (train_rows(&single_dir), train_rows(dp));
    assert_eq!(m1.len(), 3);
    assert_eq!(m2.len(), 3);
    for (r1, r2) in m1.iter().zip(&m2) {
        assert_eq!(r1["step"], r2["step"]);
        for key in [
            "train/score/even",
            "train/score/odd",
            "train/pref/even",
            "train/kl",
            "train/policy_loss",
            "train/value_loss",
            "train/clip_frac",
            "train/approx_kl",
            "train/entropy",
            "train/response_len",
            "diag/preference_grad_share",
            "train/lagrange_mu",
        ] {
            if r1.get(key).is_none() {
                assert!(r2.get(key).is_none(), "{key} logged by one run only");
                continue;
            }
            let (x, y) = (r1[key].as_f64().expect(key), r2[key].as_f64().expect(key));
            assert!(
                (x - y).abs() <= 1e-5 * x.abs().max(1.0),
                "step {}: {key} {x} vs {y}",
                r1["step"]
            );
        }
        assert!(r2["time/allreduce_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{r2}");
    }

    // The manifests record the world.
    let (s, d) = (Manifest::read(&single_dir).expect("m"), Manifest::read(dp).expect("m"));
    assert_eq!((s.world_size, s.backend.as_deref()), (1, None));
    assert_eq!((d.world_size, d.backend.as_deref()), (2, Some("gloo")));

    // Resuming the 2-rank run in one process is refused, naming both world sizes.
    let mut more = cfg.clone();
    more.train.batch_size = 2;
    more.ppo.mini_batch_size = 1;
    more.train.steps = 4;
    let err = train_ppo(&more, &RunOptions::new(&runs).resuming(dp), &mut Silent)
        .expect_err("a world of 1 cannot continue a world of 2");
    assert!(
        matches!(err, RlhfError::Run(RunError::WorldSizeChanged { saved: 2, requested: 1, .. })),
        "{err}"
    );
    std::fs::remove_dir_all(&runs).ok();
}

#[test]
fn killing_one_rank_makes_the_other_fail_naming_it() {
    if workspace_with_smollm2().is_none() {
        return;
    }
    let runs = scratch("dp-kill");
    let timeout = 30;
    let mut children = spawn_ranks(&runs, 100_000, timeout, &[]);
    // Wait until rank 0 has logged two steps, then kill rank 1 mid-run.
    let started = Instant::now();
    loop {
        let logged = runs_named(&runs, "dp").first().is_some_and(|d| {
            std::fs::read_to_string(d.join("metrics.jsonl")).is_ok_and(|t| t.lines().count() >= 2)
        });
        if logged {
            break;
        }
        // Generous: start-up on the loaded 2-core machine can take minutes.
        if started.elapsed() > Duration::from_secs(900)
            || children[0].try_wait().expect("poll").is_some()
        {
            for c in &mut children {
                c.kill().ok();
            }
            let out = children.remove(0).wait_with_output().expect("rank 0 output");
            panic!("rank 0 never logged two steps: {}", output_text(&out));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    children[1].kill().expect("kill rank 1");
    children[1].wait().expect("rank 1 reaped");
    let killed = Instant::now();
    let mut rank0 = children.remove(0);
    while rank0.try_wait().expect("poll").is_none() {
        if killed.elapsed() > Duration::from_secs(timeout + 30) {
            rank0.kill().ok();
            panic!("rank 0 still runs {:?} after rank 1 died", killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = rank0.wait_with_output().expect("rank 0 output");
    let text = output_text(&out);
    assert!(!out.status.success(), "rank 0 must fail: {text}");
    assert!(killed.elapsed() < Duration::from_secs(timeout + 5), "{:?}", killed.elapsed());
    assert!(text.contains("failed on rank 0 of 2 (rank 1 died"), "{text}");
    // The last complete checkpoint is still there to resume from.
    let dp = &runs_named(&runs, "dp")[0];
    assert!(latest_checkpoint(dp).expect("ls").is_some_and(|c| c.step >= 1));
    std::fs::remove_dir_all(&runs).ok();
}

/// The 1-process × batch 4 run of the equality tests, with `$PANACEA_TEST_DP_SETS`, in a run
/// named `single` under `$PANACEA_TEST_DP_RUNS`.
#[test]
#[ignore = "run as a child process by the data-parallel equality tests"]
fn one_process_run() {
    let runs = PathBuf::from(std::env::var(RUNS_VAR).expect(RUNS_VAR));
    let extra = std::env::var(SETS_VAR).unwrap_or_default();
    let root = workspace_with_smollm2().expect("the parent checked the tokenizer");
    let mut sets = COMMON.to_vec();
    sets.extend(["train.batch_size=4", "ppo.mini_batch_size=2", TOP_K, ONE_THREAD]);
    sets.extend(extra.split(';').filter(|s| !s.is_empty()));
    let cfg = tiny_ppo(&root, &sets);
    train_ppo(&cfg, &RunOptions::new(&runs).named("single"), &mut Silent).expect("trains");
}

/// The one-process run of [`one_process_numbers_are_those_before_data_parallelism`], in a run
/// named `golden` under `$PANACEA_TEST_DP_RUNS`.
#[test]
#[ignore = "run as a child process by one_process_numbers_are_those_before_data_parallelism"]
fn golden_run() {
    let runs = PathBuf::from(std::env::var(RUNS_VAR).expect(RUNS_VAR));
    let root = workspace_with_smollm2().expect("the parent checked the tokenizer");
    let mut sets = COMMON.to_vec();
    sets.extend([ONE_THREAD, "train.batch_size=4"]);
    let cfg = tiny_ppo(&root, &sets);
    train_ppo(&cfg, &RunOptions::new(&runs).named("golden"), &mut Silent).expect("trains");
}

/// One rank of the tests above: the tiny config with batch 2 and minibatch 1 per rank for
/// `$PANACEA_TEST_DP_STEPS` steps, in a run named `dp` under `$PANACEA_TEST_DP_RUNS`.
#[test]
#[ignore = "run as a child rank by the data-parallel tests"]
fn ppo_rank() {
    let runs = PathBuf::from(std::env::var(RUNS_VAR).expect(RUNS_VAR));
    let steps = format!("train.steps={}", std::env::var(STEPS_VAR).expect(STEPS_VAR));
    let root = workspace_with_smollm2().expect("the parent checked the tokenizer");
    let extra = std::env::var(SETS_VAR).unwrap_or_default();
    let mut sets = COMMON.to_vec();
    sets.retain(|s| !s.starts_with("train.steps"));
    sets.extend(["train.batch_size=2", "ppo.mini_batch_size=1", TOP_K, ONE_THREAD, steps.as_str()]);
    sets.extend(extra.split(';').filter(|s| !s.is_empty()));
    let cfg = tiny_ppo(&root, &sets);
    let group = ProcessGroup::from_env().expect("joins").expect("a world of 2");
    let opts = RunOptions::new(&runs).named("dp");
    let trained =
        panacea_rlhf::train::train_ppo_data_parallel(&cfg, &opts, &mut Silent, Some(&group));
    if let Err(e) = &trained {
        panic!("rank {}: {e}", group.rank());
    }
}
