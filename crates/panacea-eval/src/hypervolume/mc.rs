//! Opt-in Monte Carlo hypervolume estimate (docs/metrics.md, §2): S uniform samples in the
//! bounding box [min A, r] from a seeded RNG; HV ≈ V_box · h / S with standard error
//! V_box · sqrt(p̂(1 − p̂) / S), where h counts the samples dominated by some point (the estimator
//! of Bader & Zitzler's HypE, and the plain estimator compared in Deng & Zhang, IEEE TEVC 23(5)
//! 2019). Never the default: exact HV is cheaper in 2–5-D.

use crate::rng::Rng;

/// Estimate and standard error for flat minimisation rows that all strictly dominate `r`.
pub(crate) fn monte_carlo(
    data: &[f64],
    d: usize,
    r: &[f64],
    samples: u64,
    seed: u64,
) -> (f64, f64) {
    let n = data.len() / d;
    if n == 0 || samples == 0 {
        return (0.0, 0.0);
    }
    let mut lo = vec![f64::INFINITY; d];
    for p in data.chunks_exact(d) {
        for (l, a) in lo.iter_mut().zip(p) {
            *l = l.min(*a);
        }
    }
    let v_box: f64 = lo.iter().zip(r).map(|(a, b)| b - a).product();
    let mut rng = Rng::seed_from_u64(seed);
    let mut x = vec![0.0; d];
    let mut hits = 0u64;
    for _ in 0..samples {
        for ((xi, l), b) in x.iter_mut().zip(&lo).zip(r) {
            *xi = l + (b - l) * rng.next_f64();
        }
        if data.chunks_exact(d).any(|p| p.iter().zip(&x).all(|(a, xi)| a <= xi)) {
            hits += 1;
        }
    }
    let p_hat = hits as f64 / samples as f64;
    (v_box * p_hat, v_box * (p_hat * (1.0 - p_hat) / samples as f64).sqrt())
}
