//! `y = x·Wᵀ` for a few rows of x (M ≤ [`MAX_ROWS`]) on the CPU — the projections of one decode
//! step — through `panacea_kernels`' small-M GEMM instead of libtorch's BLAS.
//!
//! Why: a decode step multiplies B ≤ 16 token rows by every weight matrix once, so it is bound
//! by streaming the weights from memory (0.54 GB of f32 per step for SmolLM2-135M). On the bench
//! machine (2-core AMD EPYC, AVX2/FMA, no AVX-512) libtorch's MKL streams them at ~6–8 GB/s for
//! such shapes while one core reads ~16–18 GB/s; the kernel reaches 11–16 GB/s, and with bf16
//! weights it streams half the bytes (benches/README.md, "LM decode").
//!
//! [`linear`] takes this path only where it computes what `x.linear(w, b)` does — CPU tensors,
//! f32 or bf16 (x and w of the same dtype), a contiguous 2-D weight (`nn.Linear`'s [N, K]),
//! 1..=16 rows, grad mode off and nothing requiring grad, one libtorch intra-op thread (the
//! kernel is single-threaded; with more threads BLAS may use them) and AVX2+FMA detected at run
//! time — and calls libtorch otherwise. Results differ from BLAS only in summation order (f32
//! accumulation in both; bf16 outputs are rounded once, like libtorch's).

use panacea_kernels::simd_available;
use panacea_kernels::Bf16;
use tch::{Device, Kind, Tensor};

use crate::ops::grad_enabled;

/// The most rows of x (all leading dimensions together) that [`linear`] handles itself.
pub const MAX_ROWS: i64 = 16;

/// Whether [`linear`] runs the kernel on `dev` right now (for suitable tensors): a CPU with
/// AVX2+FMA and one libtorch intra-op thread. With more threads libtorch's BLAS may use them
/// (the kernel is single-threaded), so everything stays as it was. Weight layouts chosen for
/// the kernel (`Llama::fuse_projections`) ask this at load time.
pub fn kernel_active(dev: Device) -> bool {
    dev == Device::Cpu && simd_available() && tch::get_num_threads() == 1
}

/// `x [.., K] · w [N, K]ᵀ (+ bias [N]) → [.., N]`, through the small-M kernel where it applies
/// (see the module docs), through `Tensor::linear` otherwise (for CPU bf16 on a CPU without
/// bf16 units, on f32 copies: see [`bf16_via_f32`]).
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
    try_linear(x, w, bias).or_else(|| bf16_via_f32(x, w, bias)).unwrap_or_else(|| x.linear(w, bias))
}

/// A CPU bf16 `linear` that the kernel does not take (a prefill's many rows, or several
/// intra-op threads) as f32 `linear` on upcast copies, rounded once: on CPUs without bf16
/// units libtorch 2.11's bf16 GEMM ran 8× slower than its f32 GEMM for [328, 576]·[576, 3072]
/// on the bench machine (80× with a pre-transposed weight), while the copies cost about one
/// more pass over W. The arithmetic is the same as libtorch's bf16 `linear`: products of bf16
/// values (exact in f32) accumulated in f32 and rounded to bf16 once.
fn bf16_via_f32(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    let bf = Kind::BFloat16;
    let cpu_bf16 = |t: &Tensor| t.kind() == bf && t.device() == Device::Cpu && !t.requires_grad();
    if !cpu_bf16(x) || !cpu_bf16(w) || !bias.is_none_or(cpu_bf16) || native_bf16() {
        return None;
    }
    if grad_enabled() {
        return None;
    }
    let f = Kind::Float;
    let b = bias.map(|b| b.to_kind(f));
    Some(x.to_kind(f).linear(&w.to_kind(f), b.as_ref()).to_kind(bf))
}

/// Whether the CPU has bf16 dot-product instructions (AVX512-BF16; AMX CPUs have it too), with
/// which libtorch's own bf16 GEMM is the better choice.
fn native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`linear`]'s fast path alone: `None` where it does not apply (the caller then uses libtorch).
pub fn try_linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    try_linear_f32(x, w, bias).map(|y| y.to_kind(x.kind()))
}

/// [`try_linear`] with the f32 accumulators returned as they are (not rounded to x's dtype):
/// for the LM head of a bf16 model, whose logits are wanted in f32 anyway, it keeps the top
/// logits apart where bf16 (8 significant bits: steps of 0.125 at 20) would tie them.
pub fn try_linear_f32(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Option<Tensor> {
    let kind = w.kind();
    if !matches!(kind, Kind::Float | Kind::BFloat16)
        || x.kind() != kind
        || x.device() != Device::Cpu
        || w.device() != Device::Cpu
        || w.dim() != 2
        || x.dim() == 0
        || !w.is_contiguous()
        || !kernel_active(Device::Cpu)
    {
        return None;
    }
    let (n, k) = (w.size()[0], w.size()[1]);
    let x_size = x.size();
    if x_size.last() != Some(&k) || k == 0 || n == 0 {
        return None;
    }
    let m: i64 = x_size[..x_size.len() - 1].iter().product();
    if !(1..=MAX_ROWS).contains(&m) {
        return None;
    }
    if let Some(b) = bias {
        if b.size() != [n] || b.device() != Device::Cpu || b.kind() != kind {
            return None;
        }
    }
    let needs_grad =
        x.requires_grad() || w.requires_grad() || bias.is_some_and(|b| b.requires_grad());
    if needs_grad || grad_enabled() {
        return None;
    }
    // [M, K] f32, contiguous: a copy only for bf16 or strided inputs (M·K elements, small).
    let xf = x.reshape([m, k]).to_kind(Kind::Float).contiguous();
    let y = Tensor::empty([m, n], (Kind::Float, Device::Cpu)); // [M, N]
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    // SAFETY: `xf` is a contiguous CPU f32 tensor of M·K elements and `w` a contiguous CPU
    // tensor of N·K elements of the dtype read here (checked above; `data_ptr` includes the
    // storage offset of a view and is aligned for the dtype: libtorch's CPU storage is 64-byte
    // aligned and offsets count whole elements). Both stay alive until the end of this
    // function, and, as for any libtorch op reading them, nothing may write them meanwhile
    // (this function writes only `y`). `y` was just allocated with M·N f32 elements and is
    // not shared yet, so the one mutable slice into it is the only access.
    unsafe {
        let xs = std::slice::from_raw_parts(xf.data_ptr() as *const f32, mu * ku);
        let ys = std::slice::from_raw_parts_mut(y.data_ptr() as *mut f32, mu * nu);
        if kind == Kind::Float {
            let ws = std::slice::from_raw_parts(w.data_ptr() as *const f32, nu * ku);
            panacea_kernels::matmul_nt_f32(mu, nu, ku, xs, ws, ys);
        } else {
            // bf16 storage is 16-bit words, which `Bf16` wraps transparently.
            let ws = std::slice::from_raw_parts(w.data_ptr() as *const Bf16, nu * ku);
            panacea_kernels::matmul_nt_bf16(mu, nu, ku, xs, ws, ys);
        }
    }
    let y = match bias {
        Some(b) => y + b.to_kind(Kind::Float),
        None => y,
    };
    let mut out_size = x_size[..x_size.len() - 1].to_vec();
    out_size.push(n);
    Some(y.view(out_size.as_slice())) // [.., N], f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn randn(size: &[i64], kind: Kind) -> Tensor {
        Tensor::randn(size, (Kind::Float, Device::Cpu)).to_kind(kind)
    }

    fn max_rel_err(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (a.to_kind(Kind::Float), b.to_kind(Kind::Float));
        let scale = b.abs().max().double_value(&[]).max(1.0);
        (a - &b).abs().max().double_value(&[]) / scale
    }

    /// Every row count 1..=16 with N and K that are not multiples of the tile sizes (3, 8), and
    /// the decode shapes, for f32 and bf16, match libtorch's `linear` to float tolerance.
    #[test]
    fn matches_libtorch_linear() {
        crate::device::init_torch();
        tch::manual_seed(0);
        tch::set_num_threads(1);
        let _guard = tch::no_grad_guard();
        for (kind, tol) in [(Kind::Float, 1e-5), (Kind::BFloat16, 1e-2)] {
            for &(n, k) in &[(1, 1), (7, 5), (37, 19), (64, 576), (961, 577), (50, 1536)] {
                let w = randn(&[n, k], kind);
                for m in 1..=MAX_ROWS {
                    let x = randn(&[m, k], kind);
                    let fast = try_linear(&x, &w, None).expect("fast path applies");
                    let want = x.linear(&w, None::<&Tensor>);
                    assert_eq!(fast.size(), want.size());
                    assert_eq!(fast.kind(), kind);
                    let e = max_rel_err(&fast, &want);
                    assert!(e < tol, "{kind:?} m={m} n={n} k={k}: rel err {e}");
                }
            }
        }
    }

    /// Leading dimensions, bias, strided x and a contiguous row-range view of a larger weight
    /// (how fused projections hand out their members).
    #[test]
    fn handles_batch_dims_bias_and_views() {
        crate::device::init_torch();
        tch::manual_seed(1);
        tch::set_num_threads(1);
        let _guard = tch::no_grad_guard();
        let big = randn(&[100, 40], Kind::Float);
        let w = big.narrow(0, 30, 45); // rows 30..75, contiguous, storage offset ≠ 0
        let b = randn(&[45], Kind::Float);
        let x = randn(&[2, 40, 3], Kind::Float).transpose(1, 2); // [2, 3, 40], strided
        let fast = try_linear(&x, &w, Some(&b)).expect("fast path applies");
        let want = x.linear(&w, Some(&b));
        assert_eq!(fast.size(), [2, 3, 45]);
        assert!(max_rel_err(&fast, &want) < 1e-5);
    }

    /// A bf16 prefill (more rows than the kernel takes) through f32 copies matches libtorch's
    /// bf16 `linear` up to one bf16 rounding step.
    #[test]
    fn bf16_with_many_rows_matches_libtorch() {
        crate::device::init_torch();
        tch::manual_seed(2);
        let _guard = tch::no_grad_guard();
        let w = randn(&[50, 37], Kind::BFloat16);
        let b = randn(&[50], Kind::BFloat16);
        let x = randn(&[3, 11, 37], Kind::BFloat16); // 33 rows
        assert!(try_linear(&x, &w, Some(&b)).is_none());
        let y = linear(&x, &w, Some(&b));
        assert_eq!((y.size(), y.kind()), (vec![3, 11, 50], Kind::BFloat16));
        assert!(max_rel_err(&y, &x.linear(&w, Some(&b))) < 1e-2);
    }

    /// Everything outside the fast path's contract goes to libtorch (and still gives its answer).
    #[test]
    fn declines_what_it_does_not_cover() {
        crate::device::init_torch();
        tch::set_num_threads(1);
        let w = randn(&[8, 16], Kind::Float);
        let x = randn(&[2, 16], Kind::Float);
        {
            let _guard = tch::no_grad_guard();
            assert!(try_linear(&randn(&[17, 16], Kind::Float), &w, None).is_none()); // M > 16
            assert!(try_linear(&x, &w.tr().contiguous().tr(), None).is_none()); // strided w
            assert!(try_linear(&x, &w.to_kind(Kind::Double), None).is_none()); // dtype
            assert!(try_linear(&x.to_kind(Kind::BFloat16), &w, None).is_none()); // mixed dtypes
            assert!(try_linear(&x, &w.set_requires_grad(true), None).is_none());
        }
        // Grad mode on: libtorch records the graph.
        assert!(try_linear(&x, &w, None).is_none());
        let y = linear(&x, &w, None);
        assert!(max_rel_err(&y, &x.matmul(&w.tr())) < 1e-5);
    }
}
