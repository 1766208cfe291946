//! Hypervolume: exact (2-D sweep, 3-D HV3D sweep, 4-D HV4D-style sweep, 5-D sweep over 4-D
//! contributions, WFG for d ≥ 6), an inclusion–exclusion oracle and an opt-in seeded Monte Carlo
//! estimate; docs/metrics.md, §2.
//!
//! Every value is returned together with the reference point it was computed against, in the
//! caller's sense. Points that do not strictly dominate the reference point are dropped (not an
//! error); an empty set has HV 0.

mod hv2d;
mod hv3d;
mod hv4d;
mod hv5d;
mod mc;
mod oracle;
mod wfg;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::sense::{validate_vector, Matrix, Sense};

/// How the reference point is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefPoint {
    /// The project default (docs/metrics.md, §0): the nadir of the points pushed out by 5 % of the
    /// range (see [`auto_reference_point`]).
    Auto,
    /// An explicit point, in the same sense as the objective values.
    Explicit(Vec<f64>),
}

impl std::str::FromStr for RefPoint {
    type Err = EvalError;
    /// `auto`, or comma-separated finite numbers such as `-1,-1.5`.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(RefPoint::Auto);
        }
        let values = t
            .split(',')
            .map(|v| {
                let v = v.trim();
                match v.parse::<f64>() {
                    Ok(x) if x.is_finite() => Ok(x),
                    _ => Err(EvalError::InvalidValue {
                        what: "reference point",
                        detail: format!(
                            "{v:?} in {s:?} is not a finite number (hint: use auto or r1,r2,...)"
                        ),
                    }),
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        Ok(RefPoint::Explicit(values))
    }
}

/// Which exact algorithm computes HV; `Auto` picks the fastest for the dimension. The others
/// exist so tests and benches can check every code path against each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvAlgorithm {
    /// 1-D closed form, 2-D sweep, 3-D HV3D, 4-D HV4D sweep, 5-D sweep, WFG with the 5-D sweep as
    /// base case for d ≥ 6.
    Auto,
    /// The 2-D sweep (d = 2 only).
    Sweep2d,
    /// The 3-D HV3D sweep (d = 3 only).
    Sweep3d,
    /// The 4-D sweep (d = 4 only).
    Sweep4d,
    /// The 5-D sweep over 4-D contributions (d = 5 only).
    Sweep5d,
    /// Generic WFG recursing down to the 2-D sweep (any d ≥ 2).
    Wfg,
    /// Inclusion–exclusion brute force (n ≤ 24 points after filtering).
    InclusionExclusion,
}

/// A hypervolume value with everything needed to interpret it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypervolume {
    /// The hypervolume (or its Monte Carlo estimate).
    pub value: f64,
    /// The reference point, in the caller's sense.
    pub reference_point: Vec<f64>,
    /// The sense of the points and the reference point.
    pub sense: Sense,
    /// Number of objectives.
    pub dim: usize,
    /// Number of points given.
    pub n_points: usize,
    /// Number of points that strictly dominate (are strictly better than) the reference point.
    pub n_contributing: usize,
    /// `"exact"` or `"monte_carlo"`.
    pub method: String,
    /// Monte Carlo only: the standard error of the estimate.
    pub std_error: Option<f64>,
    /// Monte Carlo only: the number of samples.
    pub samples: Option<u64>,
    /// Monte Carlo only: the RNG seed.
    pub seed: Option<u64>,
}

/// The project's automatic reference point (docs/metrics.md, §0), in the caller's sense, from the
/// union of all compared fronts. In maximisation form z_j = min_j − 0.05·(max_j − min_j), with the
/// margin 0.05·max(1, |min_j|) when the range is 0; for minimisation the mirror image
/// z_j = max_j + margin.
pub fn auto_reference_point(fronts: &[&[Vec<f64>]], sense: Sense) -> Result<Vec<f64>> {
    let mut dim: Option<usize> = None;
    let mut lo: Vec<f64> = Vec::new();
    let mut hi: Vec<f64> = Vec::new();
    for front in fronts {
        let m = Matrix::new("points", front, 1.0, dim)?;
        if m.n == 0 {
            continue;
        }
        if dim.is_none() {
            dim = Some(m.d);
            lo = vec![f64::INFINITY; m.d];
            hi = vec![f64::NEG_INFINITY; m.d];
        }
        for p in m.rows() {
            for k in 0..m.d {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
    }
    if dim.is_none() {
        return Err(EvalError::TooFewPoints { what: "auto reference point", min: 1, got: 0 });
    }
    Ok(lo
        .iter()
        .zip(&hi)
        .map(|(&l, &h)| {
            let range = h - l;
            match sense {
                Sense::Max => {
                    let margin = if range > 0.0 { 0.05 * range } else { 0.05 * l.abs().max(1.0) };
                    l - margin
                }
                Sense::Min => {
                    let margin = if range > 0.0 { 0.05 * range } else { 0.05 * h.abs().max(1.0) };
                    h + margin
                }
            }
        })
        .collect())
}

/// Validated minimisation-form points that strictly dominate the reference point.
struct Prepared {
    data: Vec<f64>,
    d: usize,
    r: Vec<f64>,
    reference_user: Vec<f64>,
    n_points: usize,
}

fn prepare(points: &[Vec<f64>], sense: Sense, reference: &RefPoint) -> Result<Prepared> {
    let m = Matrix::new("points", points, sense.sign(), None)?;
    let reference_user = match reference {
        RefPoint::Explicit(r) => r.clone(),
        RefPoint::Auto => auto_reference_point(&[points], sense)?,
    };
    let d = if m.n == 0 { reference_user.len() } else { m.d };
    let r = validate_vector("reference point", &reference_user, d, sense.sign())?;
    let mut data = Vec::with_capacity(m.data.len());
    for p in m.rows() {
        if p.iter().zip(&r).all(|(a, b)| a < b) {
            data.extend_from_slice(p);
        }
    }
    Ok(Prepared { data, d, r, reference_user, n_points: m.n })
}

/// Exact hypervolume of `points` in the given sense against `reference` (docs/metrics.md, §2).
///
/// ```
/// use panacea_eval::{hypervolume, RefPoint, Sense};
/// let pts = vec![vec![0.0, 1.0], vec![0.5, 0.5], vec![1.0, 0.0]];
/// let hv = hypervolume(&pts, Sense::Min, &RefPoint::Explicit(vec![2.0, 2.0])).unwrap();
/// assert_eq!(hv.value, 3.25);
/// assert_eq!(hv.reference_point, vec![2.0, 2.0]);
/// ```
pub fn hypervolume(points: &[Vec<f64>], sense: Sense, reference: &RefPoint) -> Result<Hypervolume> {
    let mut prep = prepare(points, sense, reference)?;
    let n_contributing = prep.data.len() / prep.d.max(1);
    let value = exact_min(&mut prep.data, prep.d, &prep.r, HvAlgorithm::Auto)?;
    Ok(Hypervolume {
        value,
        reference_point: prep.reference_user,
        sense,
        dim: prep.d,
        n_points: prep.n_points,
        n_contributing,
        method: "exact".to_string(),
        std_error: None,
        samples: None,
        seed: None,
    })
}

/// Monte Carlo estimate of the hypervolume with `samples` uniform draws from a RNG seeded with
/// `seed`; the result carries the standard error, sample count and seed.
pub fn hypervolume_monte_carlo(
    points: &[Vec<f64>],
    sense: Sense,
    reference: &RefPoint,
    samples: u64,
    seed: u64,
) -> Result<Hypervolume> {
    if samples == 0 {
        return Err(EvalError::InvalidValue {
            what: "Monte Carlo hypervolume",
            detail: "samples must be at least 1 (hint: 10⁵–10⁶ samples give 3-digit estimates)"
                .into(),
        });
    }
    let prep = prepare(points, sense, reference)?;
    let n_contributing = prep.data.len() / prep.d.max(1);
    let (value, se) = mc::monte_carlo(&prep.data, prep.d, &prep.r, samples, seed);
    Ok(Hypervolume {
        value,
        reference_point: prep.reference_user,
        sense,
        dim: prep.d,
        n_points: prep.n_points,
        n_contributing,
        method: "monte_carlo".to_string(),
        std_error: Some(se),
        samples: Some(samples),
        seed: Some(seed),
    })
}

/// Exact HV of minimisation points against an explicit reference point with a chosen algorithm.
/// Used by the tests and benches to compare code paths; most callers want [`hypervolume`].
pub fn hypervolume_min_with(
    points: &[Vec<f64>],
    reference: &[f64],
    algorithm: HvAlgorithm,
) -> Result<f64> {
    let mut prep = prepare(points, Sense::Min, &RefPoint::Explicit(reference.to_vec()))?;
    exact_min(&mut prep.data, prep.d, &prep.r, algorithm)
}

/// Dispatches on the algorithm; `data` holds only points that strictly dominate `r`.
fn exact_min(data: &mut Vec<f64>, d: usize, r: &[f64], algorithm: HvAlgorithm) -> Result<f64> {
    let n = data.len() / d.max(1);
    let need = |want: usize, name: &'static str| -> Result<()> {
        if d == want {
            Ok(())
        } else {
            Err(EvalError::Unsupported {
                what: name,
                detail: format!("needs {want} objectives, got {d} (hint: use HvAlgorithm::Auto)"),
            })
        }
    };
    if n == 0 {
        return Ok(0.0);
    }
    Ok(match algorithm {
        HvAlgorithm::Auto => match d {
            1 => r[0] - data.iter().copied().fold(f64::INFINITY, f64::min),
            2 => hv2d::hv2d_flat(data, 2, r),
            3 => hv3d::hv3d_flat(data, 3, r),
            4 => hv4d::hv4d_flat(data, 4, r),
            5 => hv5d::hv5d_flat(data, 5, r),
            _ => {
                crate::pareto::filter_nondominated_flat(data, d);
                wfg::wfg(data, d, r, 5)
            }
        },
        HvAlgorithm::Sweep2d => {
            need(2, "2-D sweep")?;
            hv2d::hv2d_flat(data, 2, r)
        }
        HvAlgorithm::Sweep3d => {
            need(3, "3-D sweep")?;
            hv3d::hv3d_flat(data, 3, r)
        }
        HvAlgorithm::Sweep4d => {
            need(4, "4-D sweep")?;
            hv4d::hv4d_flat(data, 4, r)
        }
        HvAlgorithm::Sweep5d => {
            need(5, "5-D sweep")?;
            hv5d::hv5d_flat(data, 5, r)
        }
        HvAlgorithm::Wfg => {
            crate::pareto::filter_nondominated_flat(data, d);
            wfg::wfg(data, d, r, 2)
        }
        HvAlgorithm::InclusionExclusion => {
            if n > oracle::MAX_POINTS {
                return Err(EvalError::Unsupported {
                    what: "inclusion–exclusion hypervolume",
                    detail: format!(
                        "{n} points exceed the oracle's limit of {} (it costs 2ⁿ; hint: use HvAlgorithm::Auto)",
                        oracle::MAX_POINTS
                    ),
                });
            }
            oracle::inclusion_exclusion(data, d, r)
        }
    })
}
