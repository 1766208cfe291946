//! SVD-LoRA adapter cost: one layer and a small stack, forward + backward, adapters off vs on,
//! the fused forward (`SvdLoraLinear::forward`: c·d folded into V, the low-rank product added
//! inside `addmm` on [N, d] views) against the formula as written (`forward_reference`).
//!
//! Run: `cargo bench -p panacea-benches -- svd_lora`
//!
//! Times are this thread's CPU time with one libtorch thread, because the 2-core development
//! machine is shared and wall-clock numbers there are mostly noise.
//!
//! Before timing, the fused output is checked against the reference formula (max |diff| ≤ 1e-4,
//! f32). Results and what was tried: benches/README.md, section "SVD-LoRA adapter".

use std::time::Duration;

use criterion::{black_box, BenchmarkId, Criterion};
use panacea_core::adapter::{Adapter, SvdLoraConfig, SvdLoraLinear};
use tch::{nn, Device, Kind, Tensor};

/// Which forward a measurement runs.
#[derive(Clone, Copy)]
enum Mode {
    /// `Adapter::Off`: the frozen base alone.
    Off,
    /// `Adapter::On`, fused forward.
    Fused,
    /// `Adapter::On`, the formula as written.
    Reference,
    /// `Adapter::On` with one λ per row (fused).
    FusedPerRow,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Fused => "on_fused",
            Mode::Reference => "on_reference",
            Mode::FusedPerRow => "on_fused_per_row",
        }
    }
}

/// A stack of `depth` adapted d×d layers with a tanh between them.
struct Stack {
    _base: nn::VarStore,
    _adapter: nn::VarStore,
    layers: Vec<SvdLoraLinear>,
}

impl Stack {
    fn new(d: i64, depth: usize) -> Self {
        let base = nn::VarStore::new(Device::Cpu);
        let adapter = nn::VarStore::new(Device::Cpu);
        let cfg = SvdLoraConfig::new(2); // k = 8, m = 2, R = 10, c = 64
        let layers: Vec<SvdLoraLinear> = (0..depth)
            .map(|i| {
                SvdLoraLinear::new(
                    &(base.root() / format!("l{i}")),
                    Some((&(adapter.root() / format!("l{i}")), &cfg)),
                    d,
                    d,
                    true,
                )
            })
            .collect();
        tch::no_grad(|| {
            for l in &layers {
                l.weight
                    .shallow_clone()
                    .copy_(&(l.weight.randn_like() * (1.0 / (d as f64).sqrt())));
                let lora = l.lora.as_ref().expect("adapted");
                lora.sigma.shallow_clone().copy_(&(lora.sigma.randn_like() * 0.1));
                let _ = lora.pref_scale.shallow_clone().fill_(0.5);
            }
        });
        Self { _base: base, _adapter: adapter, layers }
    }

    /// x [B, T, d] → [B, T, d].
    fn forward(&self, x: &Tensor, mode: Mode, pref: &Tensor, rows: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, l) in self.layers.iter().enumerate() {
            h = match mode {
                Mode::Off => l.forward(&h, Adapter::Off),
                Mode::Fused => l.forward(&h, Adapter::On { pref }),
                Mode::Reference => l.forward_reference(&h, Adapter::On { pref }),
                Mode::FusedPerRow => l.forward(&h, Adapter::On { pref: rows }),
            };
            if i + 1 < self.layers.len() {
                h = h.tanh();
            }
        }
        h
    }

    /// One forward + backward (x requires grad, as the input of a deeper model's layer would).
    fn step(&self, x: &Tensor, mode: Mode, pref: &Tensor, rows: &Tensor) {
        let y = self.forward(x, mode, pref, rows);
        y.sum(Kind::Float).backward();
    }
}

fn inputs(b: i64, t: i64, d: i64) -> (Tensor, Tensor, Tensor) {
    let x = Tensor::randn([b, t, d], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let pref = Tensor::from_slice(&[0.7f32, 0.3]);
    let rows = Tensor::rand([b, 1], (Kind::Float, Device::Cpu));
    let rows = Tensor::cat(&[&rows, &(1.0 - &rows)], 1); // [B, 2]
    (x, pref, rows)
}

fn check(stack: &Stack, x: &Tensor, pref: &Tensor, rows: &Tensor) {
    let _guard = tch::no_grad_guard();
    for p in [pref, rows] {
        let fused = stack.layers[0].forward(x, Adapter::On { pref: p });
        let reference = stack.layers[0].forward_reference(x, Adapter::On { pref: p });
        let diff = (fused - reference).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "fused forward differs from the formula by {diff}");
    }
}

/// CPU time consumed by this thread. With one intra-op thread, libtorch runs every op (and
/// the CPU autograd engine runs backward) on the calling thread, so this counts the work itself
/// and not the time other processes on a shared machine hold the cores.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median over `iters` rounds of (time of one `mode` step) / (time of one `Off` step), the two
/// steps run back to back so that load from other processes hits both alike.
fn median_ratio(
    stack: &Stack,
    x: &Tensor,
    mode: Mode,
    pref: &Tensor,
    rows: &Tensor,
    iters: usize,
) -> f64 {
    let time = |m: Mode| {
        let start = thread_cpu_time();
        stack.step(x, m, pref, rows);
        (thread_cpu_time() - start).as_secs_f64()
    };
    for _ in 0..3 {
        time(Mode::Off);
        time(mode);
    }
    let mut ratios: Vec<f64> = (0..iters)
        .map(|_| {
            let off = time(Mode::Off);
            time(mode) / off
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[iters / 2]
}

fn bench_svd_lora(c: &mut Criterion) {
    // One intra-op thread: the times below are this thread's CPU time (see `thread_cpu_time`).
    let threads = 1;
    tch::set_num_threads(threads);
    // (label, d, depth, B, T): one layer, and a small stack.
    let cases = [("layer", 512i64, 1usize, 4i64, 256i64), ("stack4", 256, 4, 4, 128)];
    let modes = [Mode::Off, Mode::Fused, Mode::Reference, Mode::FusedPerRow];
    for (label, d, depth, b, t) in cases {
        let stack = Stack::new(d, depth);
        let (x, pref, rows) = inputs(b, t, d);
        check(&stack, &x, &pref, &rows);
        // A direct ratio next to criterion's absolute numbers (same process, same inputs).
        for mode in [Mode::Fused, Mode::Reference, Mode::FusedPerRow] {
            let ratio = median_ratio(&stack, &x, mode, &pref, &rows, 41);
            println!(
                "svd_lora {label} cpu{threads} d{d} depth{depth} tokens{} r10 f32: {} / off = {ratio:.3} (thread CPU time, median of 41 interleaved pairs)",
                b * t,
                mode.name(),
            );
        }
        let mut group = c.benchmark_group(format!("svd_lora_{label}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for mode in modes {
            let id = BenchmarkId::new(
                format!("cpu{threads}_fwd_bwd_d{d}_depth{depth}_tokens{}_r10_f32", b * t),
                mode.name(),
            );
            group.bench_function(id, |bench| {
                // Thread CPU time, not wall time: see `thread_cpu_time`.
                bench.iter_custom(|n| {
                    let start = thread_cpu_time();
                    for _ in 0..n {
                        stack.step(black_box(&x), mode, &pref, &rows);
                    }
                    thread_cpu_time() - start
                });
            });
        }
        group.finish();
    }
}

criterion::criterion_group!(benches, bench_svd_lora);
