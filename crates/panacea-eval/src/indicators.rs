//! Distance, ε, R2 and coverage indicators between an approximation set A and a reference set R
//! (docs/metrics.md, §3–§5). All but coverage are "lower is better" in either sense.
//!
//! - GD, IGD (moocore definitions with p = 1, Euclidean distance);
//! - IGD+ (Ishibuchi, Masuda, Tanigaki & Nojima, "Modified distance calculation in generational
//!   distance and inverted generational distance", EMO 2015, eq. (13)–(14));
//! - averaged Hausdorff Δ₁ = max(IGD, GD) (Schütze et al. 2012, with p = 1);
//! - additive and multiplicative ε (Zitzler, Thiele, Laumanns, Fonseca & da Fonseca,
//!   "Performance assessment of multiobjective optimizers", IEEE TEVC 7(2) 2003, §IV-C);
//! - coverage C(A, B), the share of B weakly dominated by A (Zitzler & Thiele, "Multiobjective
//!   evolutionary algorithms: a comparative case study and the strength Pareto approach",
//!   IEEE TEVC 3(4) 1999, the "C metric"; higher is better, and C(A, B) ≠ 1 − C(B, A));
//! - exact 2-D R2 with uniform weights on the segment (Brockhoff, Wagner & Trautmann, GECCO 2012,
//!   for the discrete R2; Schäpermeier & Kerschke for the exact integral).
//!
//! Points and reference sets are converted to minimisation form first, so for `Sense::Max`
//! ε₊ measures r_k − a_k and ε× measures r_k / a_k (docs/metrics.md, §4).

use crate::error::{EvalError, Result};
use crate::kdtree::{l2_squared, l2_squared_box, KdTree};
use crate::pareto::{nondominated_mask_min, Duplicates};
use crate::sense::{validate_vector, Matrix, Sense};

fn pair(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<(Matrix, Matrix)> {
    let a = Matrix::new("points", points, sense.sign(), None)?;
    let r = Matrix::new(
        "reference set",
        reference_set,
        sense.sign(),
        if a.n > 0 { Some(a.d) } else { None },
    )?;
    if a.n == 0 {
        return Err(EvalError::TooFewPoints { what: "points", min: 1, got: 0 });
    }
    if r.n == 0 {
        return Err(EvalError::TooFewPoints { what: "reference set", min: 1, got: 0 });
    }
    Ok((a, r))
}

/// For each row q of `from`, the smallest `value(q, p)` over the rows p of `to`, through a k-d
/// tree over `to`; `bound(q, lo, hi)` must not exceed `value(q, p)` for p in the box.
fn min_per_row(
    from: &Matrix,
    to: &Matrix,
    good_enough: f64,
    value: impl Fn(&[f64], &[f64]) -> f64,
    bound: impl Fn(&[f64], &[f64], &[f64]) -> f64,
) -> Vec<f64> {
    let tree = KdTree::new(&to.data, to.d);
    from.rows()
        .map(|q| tree.min_by(None, good_enough, |p| value(q, p), |lo, hi| bound(q, lo, hi)))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Mean over `from` of the Euclidean distance to the nearest row of `to`.
fn mean_nearest(from: &Matrix, to: &Matrix) -> f64 {
    let squared = min_per_row(from, to, f64::NEG_INFINITY, l2_squared, l2_squared_box);
    mean(&squared.into_iter().map(f64::sqrt).collect::<Vec<_>>())
}

/// The square of IGD+'s one-sided distance from a (approximation) to r (reference), in
/// minimisation form: only the coordinates where a is worse count.
fn plus_dist_squared(a: &[f64], r: &[f64]) -> f64 {
    a.iter().zip(r).map(|(x, y)| (x - y).max(0.0).powi(2)).sum::<f64>()
}

/// GD(A, R) = (1/|A|) Σ_a min_r ‖a − r‖₂.
pub fn gd(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(mean_nearest(&a, &r))
}

/// IGD(A, R) = (1/|R|) Σ_r min_a ‖a − r‖₂.
pub fn igd(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(mean_nearest(&r, &a))
}

/// IGD+(A, R) = (1/|R|) Σ_r min_a sqrt(Σ_k max(a_k − r_k, 0)²), in minimisation form.
pub fn igd_plus(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    // The distance only grows with each a_k, so the box's lower corner bounds it; it is never
    // below 0, so a point that weakly dominates r ends the search.
    let squared = min_per_row(
        &r,
        &a,
        0.0,
        |t, p| plus_dist_squared(p, t),
        |t, lo, _| plus_dist_squared(lo, t),
    );
    Ok(mean(&squared.into_iter().map(f64::sqrt).collect::<Vec<_>>()))
}

/// Averaged Hausdorff distance Δ₁(A, R) = max(IGD(A, R), GD(A, R)).
pub fn avg_hausdorff(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(mean_nearest(&r, &a).max(mean_nearest(&a, &r)))
}

/// max_k (p_k − t_k): p weakly dominates t (minimisation) exactly when this is ≤ 0, since the
/// rounded difference of two finite values has the sign of the exact one.
fn max_excess(p: &[f64], t: &[f64]) -> f64 {
    p.iter().zip(t).map(|(x, y)| x - y).fold(f64::NEG_INFINITY, f64::max)
}

/// Additive ε: max_r min_a max_k (a_k − r_k) in minimisation form.
pub fn epsilon_additive(
    points: &[Vec<f64>],
    reference_set: &[Vec<f64>],
    sense: Sense,
) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(min_per_row(
        &r,
        &a,
        f64::NEG_INFINITY,
        |t, p| max_excess(p, t),
        |t, lo, _| max_excess(lo, t),
    )
    .into_iter()
    .fold(f64::NEG_INFINITY, f64::max))
}

/// Coverage C(A, B) = |{b ∈ B : some a ∈ A weakly dominates b}| / |B| (ties count as
/// dominated), in [0, 1]: 1 means A covers all of B.
pub fn coverage(points: &[Vec<f64>], other: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, b) = pair(points, other, sense)?;
    // Some a weakly dominates q ⇔ min_a max_k (a_k − q_k) ≤ 0; the search stops at the first
    // such a.
    let covered = min_per_row(&b, &a, 0.0, |q, p| max_excess(p, q), |q, lo, _| max_excess(lo, q))
        .into_iter()
        .filter(|&v| v <= 0.0)
        .count();
    Ok(covered as f64 / b.n as f64)
}

/// Multiplicative ε: max_r min_a max_k (a_k / r_k) for minimisation, (r_k / a_k) for
/// maximisation. Every coordinate of both sets must be > 0.
pub fn epsilon_multiplicative(
    points: &[Vec<f64>],
    reference_set: &[Vec<f64>],
    sense: Sense,
) -> Result<f64> {
    let (a, r) = pair(points, reference_set, Sense::Min)?;
    for (what, m) in [("points", &a), ("reference set", &r)] {
        if let Some(pos) = m.data.iter().position(|&v| v <= 0.0) {
            return Err(EvalError::InvalidValue {
                what: "multiplicative epsilon",
                detail: format!(
                    "{what} row {}, column {} is {} but ε× needs every value > 0 (hint: shift the objectives or use the additive ε)",
                    pos / m.d,
                    pos % m.d,
                    m.data[pos]
                ),
            });
        }
    }
    let ratio = |p: &[f64], t: &[f64]| -> f64 {
        p.iter()
            .zip(t)
            .map(|(x, y)| match sense {
                Sense::Min => x / y,
                Sense::Max => y / x,
            })
            .fold(f64::NEG_INFINITY, f64::max)
    };
    // Every value is > 0, so x / y grows with x and y / x shrinks with x: the box corner that
    // makes each ratio smallest bounds it (the lower corner for Min, the upper one for Max).
    let bound = |t: &[f64], lo: &[f64], hi: &[f64]| match sense {
        Sense::Min => ratio(lo, t),
        Sense::Max => ratio(hi, t),
    };
    Ok(min_per_row(&r, &a, f64::NEG_INFINITY, |t, p| ratio(p, t), bound)
        .into_iter()
        .fold(f64::NEG_INFINITY, f64::max))
}

/// Exact 2-D R2 with uniform weights w ∈ [0, 1]:
/// ∫₀¹ min_a max(w·|a₁ − z₁|, (1 − w)·|a₂ − z₂|) dw.
///
/// With u_a = |a₁ − z₁| and v_a = |a₂ − z₂|, each integrand f_a(w) = max(w·u_a, (1 − w)·v_a)
/// grows with u_a and v_a, so only the points whose (u, v) are non-dominated (minimised) can
/// attain the minimum. Sorted by u ascending (v then descends), w·u_i rises and (1 − w)·v_i falls
/// along the sorted points, so at a given w the minimum is attained where they cross: with j the
/// first index where w·u_j ≥ (1 − w)·v_j, the envelope is min(w·u_j, (1 − w)·v_{j−1}). j changes
/// only at the kinks t_i = v_i / (u_i + v_i), and between two kinks the envelope is linear except
/// where w·u_j = (1 − w)·v_{j−1}, at s_j = v_{j−1} / (u_j + v_{j−1}). Between consecutive points
/// of {0, 1, t_i, s_j} the envelope is linear, so the trapezoid rule on each interval is exact.
/// O(n log n).
pub fn r2_exact_2d(points: &[Vec<f64>], ideal: &[f64], sense: Sense) -> Result<f64> {
    let a = Matrix::new("points", points, sense.sign(), None)?;
    if a.n == 0 {
        return Err(EvalError::TooFewPoints { what: "points", min: 1, got: 0 });
    }
    if a.d != 2 {
        return Err(EvalError::Unsupported {
            what: "exact R2",
            detail: format!("the exact integral is 2-D only, got {} objectives", a.d),
        });
    }
    let z = validate_vector("ideal point", ideal, 2, sense.sign())?;
    let uv: Vec<Vec<f64>> =
        a.rows().map(|p| vec![(p[0] - z[0]).abs(), (p[1] - z[1]).abs()]).collect();
    let uv = Matrix::new("points", &uv, 1.0, None)?;
    let mask = nondominated_mask_min(&uv, Duplicates::KeepOne);
    let mut front: Vec<(f64, f64)> =
        uv.rows().zip(&mask).filter(|(_, k)| **k).map(|(p, _)| (p[0], p[1])).collect();
    // Non-dominated and distinct: u strictly ascending means v strictly descending.
    front.sort_unstable_by(|p, q| p.0.total_cmp(&q.0));
    let mut breaks: Vec<f64> = vec![0.0, 1.0];
    for (i, &(u, v)) in front.iter().enumerate() {
        if u + v > 0.0 {
            breaks.push(v / (u + v));
        }
        if i > 0 {
            let v_prev = front[i - 1].1;
            if u + v_prev > 0.0 {
                breaks.push(v_prev / (u + v_prev));
            }
        }
    }
    breaks.sort_unstable_by(f64::total_cmp);
    breaks.dedup();
    let envelope = |w: f64| -> f64 {
        let j = front.partition_point(|&(u, v)| w * u < (1.0 - w) * v);
        let right = front.get(j).map_or(f64::INFINITY, |&(u, _)| w * u);
        let left = if j > 0 { (1.0 - w) * front[j - 1].1 } else { f64::INFINITY };
        right.min(left)
    };
    let mut total = 0.0;
    let mut prev_w = breaks[0];
    let mut prev_g = envelope(prev_w);
    for &w in &breaks[1..] {
        let g = envelope(w);
        total += 0.5 * (prev_g + g) * (w - prev_w);
        prev_w = w;
        prev_g = g;
    }
    Ok(total)
}
