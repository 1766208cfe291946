//! c10d through the shim: two processes of this test binary meet on 127.0.0.1 through a
//! TCPStore and run Gloo collectives on known values. The Gloo headers are vendored (not the
//! library's own), so wrong sums or a crash here mean they disagree with libtorch's Gloo.

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use panacea_shim::dist::{loopback_launch_vars, ProcessGroup, ReduceOp};
use tch::{Kind, Tensor};

/// A TCP port that was free a moment ago (the OS picks it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs the ignored test `name` of this binary as ranks 0 and 1 of a world of 2, with `extra`
/// variables, and returns both outputs (rank order).
fn run_ranks(name: &str, timeout_s: u64, extra: &[(&str, &str)]) -> Vec<Output> {
    let exe = std::env::current_exe().expect("test binary");
    let port = free_port();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["--exact", name, "--ignored", "--test-threads", "1", "--nocapture"])
                .envs(loopback_launch_vars(rank, 2, port))
                .env("PANACEA_DIST_TIMEOUT_S", timeout_s.to_string())
                .envs(extra.iter().copied())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("child rank starts")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().expect("child rank ends")).collect()
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn two_gloo_ranks_all_reduce_known_values() {
    let outs = run_ranks("dist::gloo_rank_checks_collectives", 60, &[]);
    for (rank, out) in outs.iter().enumerate() {
        let t = text(out);
        assert!(out.status.success(), "rank {rank}: {t}");
        assert!(t.contains("1 passed"), "rank {rank} ran the checks: {t}");
    }
}

/// One rank of [`two_gloo_ranks_all_reduce_known_values`]. Expected values by hand: rank r
/// holds (r + 1)·[1, 2, 3].
#[test]
#[ignore = "run as a child rank by two_gloo_ranks_all_reduce_known_values"]
fn gloo_rank_checks_collectives() {
    let pg = ProcessGroup::from_env().expect("joins").expect("a world of 2");
    let r = pg.rank() as f32;
    assert_eq!(pg.world_size(), 2);
    assert_eq!(pg.backend().name(), "gloo");
    let mine = || Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * f64::from(r + 1.0);
    let host = |t: &Tensor| Vec::<f32>::try_from(t).expect("host");

    let t = mine();
    pg.all_reduce(&t, ReduceOp::Sum).expect("sum");
    assert_eq!(host(&t), [3.0, 6.0, 9.0]);
    let t = mine();
    pg.all_reduce(&t, ReduceOp::Average).expect("average");
    assert_eq!(host(&t), [1.5, 3.0, 4.5]);
    let t = mine();
    pg.all_reduce(&t, ReduceOp::Max).expect("max");
    assert_eq!(host(&t), [2.0, 4.0, 6.0]);
    let t = mine();
    pg.all_reduce(&t, ReduceOp::Min).expect("min");
    assert_eq!(host(&t), [1.0, 2.0, 3.0]);

    // A large buffer (Gloo splits it into chunks) with values that differ per element.
    let n = 1 << 20;
    let big = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) * f64::from(r + 1.0);
    pg.all_reduce(&big, ReduceOp::Sum).expect("big sum");
    let expected = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) * 3.0;
    assert_eq!(big.eq_tensor(&expected).all().int64_value(&[]), 1);

    let t = mine();
    pg.broadcast(&t, 1).expect("broadcast");
    assert_eq!(host(&t), [2.0, 4.0, 6.0]);

    let gathered = pg.all_gather(&mine()).expect("all_gather");
    assert_eq!(gathered.size(), [2, 3]);
    assert_eq!(Vec::<Vec<f32>>::try_from(&gathered).unwrap(), [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]);
    let rows = pg.all_gather_f64(&[f64::from(r), 10.0]).expect("all_gather_f64");
    assert_eq!(rows, [[0.0, 10.0], [1.0, 10.0]]);

    let mut v = [f64::from(r) + 0.25, 1.0];
    pg.all_reduce_f64(&mut v, ReduceOp::Sum).expect("f64 sum");
    assert_eq!(v, [1.5, 2.0]);
    let bytes = if pg.is_main() { b"runs/2026-x".to_vec() } else { Vec::new() };
    assert_eq!(pg.broadcast_bytes(&bytes, 0).expect("bytes"), b"runs/2026-x");
    pg.barrier().expect("barrier");
}

#[test]
fn a_dead_rank_makes_the_other_fail_within_the_timeout() {
    let timeout = 20;
    let outs = run_ranks("dist::gloo_rank_one_dies", timeout, &[]);
    let (t0, t1) = (text(&outs[0]), text(&outs[1]));
    assert!(!outs[1].status.success(), "rank 1 aborts on purpose: {t1}");
    assert!(outs[0].status.success(), "rank 0 saw the failure: {t0}");
    assert!(t0.contains("all_reduce failed on rank 0 of 2 (rank 1 died"), "{t0}");
    // The failing collective returned within the timeout (process start-up, slow on a loaded
    // machine, is not part of it).
    let ms: u64 = t0
        .lines()
        .find_map(|l| l.strip_prefix("rank 0 failed after ms: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("rank 0 reports how long the collective took: {t0}"));
    assert!(Duration::from_millis(ms) < Duration::from_secs(timeout + 2), "{ms} ms");
}

/// One rank of [`a_dead_rank_makes_the_other_fail_within_the_timeout`]: rank 1 aborts after the
/// rendezvous, rank 0's next collective must fail (the test passes when it does).
#[test]
#[ignore = "run as a child rank by a_dead_rank_makes_the_other_fail_within_the_timeout"]
fn gloo_rank_one_dies() {
    let pg = ProcessGroup::from_env().expect("joins").expect("a world of 2");
    pg.barrier().expect("both joined");
    if pg.rank() == 1 {
        // Dies the way a crashed rank does: no unwinding, no goodbye to the peer.
        std::process::abort();
    }
    let t = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
    let start = Instant::now();
    let err = pg.all_reduce(&t, ReduceOp::Sum).expect_err("the peer is gone");
    println!("rank 0 error: {err}");
    println!("rank 0 failed after ms: {}", start.elapsed().as_millis());
}
