//! Inclusion–exclusion hypervolume, O(d·2ⁿ): the brute-force oracle of docs/metrics.md, §2.
//!
//! HV(A; r) = Σ_{∅≠T⊆A} (−1)^{|T|+1} · vol(join(T), r), where join(T) is the component-wise
//! maximum (minimisation) of the points in T. Independent of every other code path, so the tests
//! use it to check them.

/// Largest n the oracle accepts (2²⁴ subsets).
pub(crate) const MAX_POINTS: usize = 24;

/// HV of flat minimisation rows of dimension `d` that all strictly dominate `r`.
pub(crate) fn inclusion_exclusion(data: &[f64], d: usize, r: &[f64]) -> f64 {
    let n = data.len() / d;
    let mut total = 0.0;
    let mut join = vec![f64::NEG_INFINITY; d];
    dfs(data, d, n, r, 0, 1.0, &mut join, &mut total);
    total
}

#[allow(clippy::too_many_arguments)]
fn dfs(
    data: &[f64],
    d: usize,
    n: usize,
    r: &[f64],
    start: usize,
    sign: f64,
    join: &mut Vec<f64>,
    total: &mut f64,
) {
    for k in start..n {
        let saved = join.clone();
        for (j, a) in join.iter_mut().zip(&data[k * d..(k + 1) * d]) {
            *j = j.max(*a);
        }
        let vol: f64 = join.iter().zip(r).map(|(a, b)| b - a).product();
        *total += sign * vol;
        dfs(data, d, n, r, k + 1, -sign, join, total);
        *join = saved;
    }
}
