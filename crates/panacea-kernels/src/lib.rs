//! panacea-kernels: hand-written CPU kernels on plain slices, for the hot loops libtorch's
//! CPU BLAS leaves slow. No dependencies; the tensor glue (which cases may use them) lives in
//! `panacea_core::small_gemm`.
//!
//! Today one kernel: `y = x·Wᵀ` for the few rows x of a decode step (M ≤ ~16) against a weight
//! in `nn.Linear`'s layout [N, K] with contiguous rows, f32 or bf16 weights, f32 accumulation.
//! A decode step is bound by streaming the weights; this kernel reads each tile of 3 weight
//! rows from memory once (prefetched one tile ahead) and multiplies it by up to 4 rows of x
//! held in L1, with AVX2 FMA where the CPU has it (detected at run time) and a scalar loop
//! otherwise. bf16 weights are widened to f32 in registers (a 16-bit shift), so a bf16 model
//! streams half the bytes and needs no bf16 arithmetic units.
//!
//! Why a crate of its own: its entry points are not generic and not `#[inline]`, so they are
//! compiled with this crate's profile, which the workspace sets to `opt-level = 3` without
//! debug assertions or overflow checks even in dev builds: with them the inner loop ran 3–5×
//! slower (checked index arithmetic and pointer preconditions), slower than libtorch. The
//! slice bounds are still checked, once per call, with `assert!`.
//!
//! ```no_run
//! // y = x·Wᵀ for 2 rows of x against a 3 × 4 weight in nn.Linear's [N, K] layout.
//! let x = [1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
//! let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
//! let mut y = [0.0f32; 6];
//! panacea_kernels::matmul_nt_f32(2, 3, 4, &x, &w, &mut y);
//! assert_eq!(y, [1.0, 5.0, 9.0, 2.0, 6.0, 10.0]);
//! ```

/// Whether the AVX2+FMA kernels can run on this CPU (detected once, then cached by std).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A bf16 value as libtorch stores it: the upper 16 bits of an f32 (so a `&[u16]` view of a
/// bf16 tensor's data is a `&[Bf16]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(transparent)]
pub struct Bf16(pub u16);

/// y [M, N] = x [M, K] · w [N, K]ᵀ for f32 weights; all row-major and contiguous.
///
/// # Panics
/// If a slice is shorter than its M·K, N·K or M·N elements.
pub fn matmul_nt_f32(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], y: &mut [f32]) {
    matmul_nt(m, n, k, x, w, y);
}

/// [`matmul_nt_f32`] for bf16 weights (x and y stay f32; each weight is widened exactly).
///
/// # Panics
/// If a slice is shorter than its M·K, N·K or M·N elements.
pub fn matmul_nt_bf16(m: usize, n: usize, k: usize, x: &[f32], w: &[Bf16], y: &mut [f32]) {
    matmul_nt(m, n, k, x, w, y);
}

/// A weight element the kernels widen to f32.
trait WeightElem: Copy {
    fn to_f32(self) -> f32;
    /// Eight consecutive elements at `p`, widened to f32 lanes.
    ///
    /// # Safety
    /// `p..p + 8` must be readable; the CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl WeightElem for Bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        // 8 × u16 → 8 × u32, shifted into the upper half: exactly the f32 with those bits.
        let h = _mm_loadu_si128(p.cast::<__m128i>());
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// y [M, N] = x [M, K] · w [N, K]ᵀ, all row-major and contiguous; AVX2+FMA where the CPU has
/// them, the scalar loop otherwise.
fn matmul_nt<W: WeightElem>(m: usize, n: usize, k: usize, x: &[f32], w: &[W], y: &mut [f32]) {
    // checked_mul: overflow checks are off in this crate (see the crate docs).
    let fits = |len: usize, a: usize, b: usize| a.checked_mul(b).is_some_and(|ab| len >= ab);
    assert!(fits(x.len(), m, k) && fits(w.len(), n, k) && fits(y.len(), m, n), "short slices");
    #[cfg(target_arch = "x86_64")]
    if simd_available() {
        // SAFETY: the slices hold at least M·K, N·K and M·N elements (asserted above), which
        // is every address `avx2::matmul_nt` touches (prefetches aside, which never fault),
        // and AVX2+FMA were detected at run time.
        unsafe { avx2::matmul_nt(m, n, k, x.as_ptr(), w.as_ptr(), y.as_mut_ptr()) };
        return;
    }
    matmul_nt_scalar(m, n, k, x, w, y);
}

/// The portable reference of [`matmul_nt`] (also its fallback without AVX2+FMA).
fn matmul_nt_scalar<W: WeightElem>(
    m: usize,
    n: usize,
    k: usize,
    x: &[f32],
    w: &[W],
    y: &mut [f32],
) {
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)).take(m) {
        for (yv, wr) in yr.iter_mut().zip(w.chunks_exact(k)) {
            *yv = xr.iter().zip(wr).map(|(a, b)| a * b.to_f32()).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! Register tiles: MR ≤ 4 rows of x × NR = 3 rows of w, 12 accumulators of 8 lanes along
    //! K (+ 3 weight vectors + 1 x vector = the 16 ymm registers). W is the stream from memory;
    //! the x rows (M·K·4 bytes, 18 KB at M = 8, K = 576) and the current weight tile stay in L1
    //! while the tile is reused for the next 4 rows of x.
    use super::WeightElem;
    use std::arch::x86_64::*;

    /// Weight rows per tile.
    const NR: usize = 3;
    /// Rows of x per tile.
    const MR: usize = 4;

    /// # Safety
    /// x: M·K, w: N·K, y: M·N readable (y writable) f32 / `W` elements; AVX2 and FMA present.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn matmul_nt<W: WeightElem>(
        m: usize,
        n: usize,
        k: usize,
        x: *const f32,
        w: *const W,
        y: *mut f32,
    ) {
        let mut n0 = 0;
        while n0 + NR <= n {
            rows::<W, NR>(m, n, k, x, w.add(n0 * k), y.add(n0));
            n0 += NR;
        }
        while n0 < n {
            rows::<W, 1>(m, n, k, x, w.add(n0 * k), y.add(n0));
            n0 += 1;
        }
    }

    /// All rows of x against the NR weight rows at `w`; y points at column n0 of row 0.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<W: WeightElem, const R: usize>(
        m: usize,
        n: usize,
        k: usize,
        x: *const f32,
        w: *const W,
        y: *mut f32,
    ) {
        let mut m0 = 0;
        while m0 < m {
            let (xp, yp) = (x.add(m0 * k), y.add(m0 * n));
            // Only the first pass over this weight tile reads it from memory, so only it
            // prefetches the next tile.
            let first = m0 == 0;
            match (m - m0, first) {
                (1, true) => tile::<W, 1, R, true>(n, k, xp, w, yp),
                (1, false) => tile::<W, 1, R, false>(n, k, xp, w, yp),
                (2, true) => tile::<W, 2, R, true>(n, k, xp, w, yp),
                (2, false) => tile::<W, 2, R, false>(n, k, xp, w, yp),
                (3, true) => tile::<W, 3, R, true>(n, k, xp, w, yp),
                (3, false) => tile::<W, 3, R, false>(n, k, xp, w, yp),
                (_, true) => tile::<W, MR, R, true>(n, k, xp, w, yp),
                (_, false) => tile::<W, MR, R, false>(n, k, xp, w, yp),
            }
            m0 += MR;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    /// y[i, j] = Σ_k x[i, k]·w[j, k] for i < M, j < R (rows of y are n apart).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<W: WeightElem, const M: usize, const R: usize, const PREFETCH: bool>(
        n: usize,
        k: usize,
        x: *const f32,
        w: *const W,
        y: *mut f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); R]; M];
        let k8 = k / 8 * 8;
        let mut kk = 0;
        while kk < k8 {
            let mut wv = [_mm256_setzero_ps(); R];
            for (j, v) in wv.iter_mut().enumerate() {
                if PREFETCH {
                    // The same offset in the next tile's rows (one tile ≈ 7 KB ahead at
                    // K = 576): the hardware prefetcher alone left the loop waiting on memory
                    // (~1.4× slower at M = 8 on the bench machine). A prefetch past the end
                    // of w is harmless: it never faults.
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add((R + j) * k + kk).cast::<i8>());
                }
                *v = W::load8(w.add(j * k + kk));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.add(i * k + kk));
                for (aj, wj) in a.iter_mut().zip(&wv) {
                    *aj = _mm256_fmadd_ps(xv, *wj, *aj);
                }
            }
            kk += 8;
        }
        for (i, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                let mut s = hsum(*v);
                for t in k8..k {
                    s += *x.add(i * k + t) * (*w.add(j * k + t)).to_f32();
                }
                *y.add(i * n + j) = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(p, q)| (p - q).abs() <= 1e-4 * p.abs().max(1.0))
    }

    /// The SIMD kernel (where the CPU has it) matches the scalar reference for every row count
    /// 1..=16 and sizes that are not multiples of the tiles (3 weight rows, 8 lanes, 4 x rows),
    /// f32 and bf16. The values are exact in bf16, so both weight types see the same numbers.
    #[test]
    fn simd_matches_scalar_reference() {
        for &(n, k) in &[(1, 1), (2, 7), (29, 37), (64, 8), (31, 100)] {
            for m in 1..=16 {
                let x: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
                let w: Vec<f32> = (0..n * k).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
                let wb: Vec<Bf16> = w.iter().map(|v| Bf16((v.to_bits() >> 16) as u16)).collect();
                let (mut want, mut got) = (vec![0.0; m * n], vec![f32::NAN; m * n]);
                matmul_nt_scalar(m, n, k, &x, &w, &mut want);
                matmul_nt_f32(m, n, k, &x, &w, &mut got);
                assert!(close(&want, &got), "f32 m={m} n={n} k={k}");
                got.fill(f32::NAN);
                matmul_nt_bf16(m, n, k, &x, &wb, &mut got);
                assert!(close(&want, &got), "bf16 m={m} n={n} k={k}");
            }
        }
    }

    /// Slices shorter than the shapes say are refused before any unsafe read.
    #[test]
    #[should_panic(expected = "short slices")]
    fn short_slices_panic() {
        let mut y = [0.0; 4];
        matmul_nt_f32(2, 2, 3, &[0.0; 5], &[0.0; 6], &mut y);
    }
}
