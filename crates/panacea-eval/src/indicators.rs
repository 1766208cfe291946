//! Distance, ε, R2 and coverage indicators between an approximation set A and a reference set R
//! (metrics.md §1.3–1.5). All but coverage are "lower is better" in either sense.
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
//! ε₊ measures r_k − a_k and ε× measures r_k / a_k, as metrics.md §1.4 asks.

use crate::error::{EvalError, Result};
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

fn euclid(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

fn plus_dist(a: &[f64], r: &[f64]) -> f64 {
    a.iter().zip(r).map(|(x, y)| (x - y).max(0.0).powi(2)).sum::<f64>().sqrt()
}

fn mean_min(from: &Matrix, to: &Matrix, dist: fn(&[f64], &[f64]) -> f64) -> f64 {
    from.rows().map(|f| to.rows().map(|t| dist(t, f)).fold(f64::INFINITY, f64::min)).sum::<f64>()
        / from.n as f64
}

/// GD(A, R) = (1/|A|) Σ_a min_r ‖a − r‖₂.
pub fn gd(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(mean_min(&a, &r, euclid))
}

/// IGD(A, R) = (1/|R|) Σ_r min_a ‖a − r‖₂.
pub fn igd(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(mean_min(&r, &a, euclid))
}

/// IGD+(A, R) = (1/|R|) Σ_r min_a sqrt(Σ_k max(a_k − r_k, 0)²), in minimisation form.
pub fn igd_plus(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    // mean over r of min over a of plus_dist(a, r): `mean_min` calls dist(to_row, from_row).
    Ok(mean_min(&r, &a, plus_dist))
}

/// Averaged Hausdorff distance Δ₁(A, R) = max(IGD(A, R), GD(A, R)).
pub fn avg_hausdorff(points: &[Vec<f64>], reference_set: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(mean_min(&r, &a, euclid).max(mean_min(&a, &r, euclid)))
}

/// Additive ε: max_r min_a max_k (a_k − r_k) in minimisation form.
pub fn epsilon_additive(
    points: &[Vec<f64>],
    reference_set: &[Vec<f64>],
    sense: Sense,
) -> Result<f64> {
    let (a, r) = pair(points, reference_set, sense)?;
    Ok(r.rows()
        .map(|t| {
            a.rows()
                .map(|p| p.iter().zip(t).map(|(x, y)| x - y).fold(f64::NEG_INFINITY, f64::max))
                .fold(f64::INFINITY, f64::min)
        })
        .fold(f64::NEG_INFINITY, f64::max))
}

/// Coverage C(A, B) = |{b ∈ B : some a ∈ A weakly dominates b}| / |B| (ties count as
/// dominated), in [0, 1]: 1 means A covers all of B.
pub fn coverage(points: &[Vec<f64>], other: &[Vec<f64>], sense: Sense) -> Result<f64> {
    let (a, b) = pair(points, other, sense)?;
    let weakly = |p: &[f64], q: &[f64]| p.iter().zip(q).all(|(x, y)| x <= y); // minimisation form
    let covered = b.rows().filter(|q| a.rows().any(|p| weakly(p, q))).count();
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
    Ok(r.rows()
        .map(|t| a.rows().map(|p| ratio(p, t)).fold(f64::INFINITY, f64::min))
        .fold(f64::NEG_INFINITY, f64::max))
}

/// Exact 2-D R2 with uniform weights w ∈ [0, 1] (metrics.md §1.5):
/// ∫₀¹ min_a max(w·|a₁ − z₁|, (1 − w)·|a₂ − z₂|) dw.
///
/// Each integrand f_a(w) is piecewise linear with its kink at v_a / (u_a + v_a); two pieces
/// w·u_a and (1 − w)·v_b cross at v_b / (u_a + v_b). Between consecutive breakpoints the lower
/// envelope is a single linear function, so the trapezoid rule on each interval is exact.
/// O(n³) for n points, fine for fronts of up to a few hundred points.
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
    let uv: Vec<(f64, f64)> =
        a.rows().map(|p| ((p[0] - z[0]).abs(), (p[1] - z[1]).abs())).collect();
    let mut breaks: Vec<f64> = vec![0.0, 1.0];
    for &(u, _) in &uv {
        for &(_, v) in &uv {
            if u + v > 0.0 {
                breaks.push(v / (u + v));
            }
        }
    }
    breaks.sort_unstable_by(f64::total_cmp);
    breaks.dedup();
    let envelope = |w: f64| -> f64 {
        uv.iter().map(|&(u, v)| (w * u).max((1.0 - w) * v)).fold(f64::INFINITY, f64::min)
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
