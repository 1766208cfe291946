//! `panacea-eval`: Pareto-front metrics, plots and reports in pure Rust (no libtorch).
//!
//! - [`hypervolume`] (exact: 2-D sweep, 3-D HV3D, 4-D HV4D-style sweep, WFG for d ≥ 5; opt-in
//!   [`hypervolume_monte_carlo`]); the reference point is explicit or [`RefPoint::Auto`] and is
//!   always returned with the value;
//! - [`nondominated_mask`], [`pareto_ranks`];
//! - [`igd`], [`igd_plus`], [`gd`], [`avg_hausdorff`], [`epsilon_additive`],
//!   [`epsilon_multiplicative`], [`r2_exact_2d`];
//! - [`spacing`], [`sparsity`], [`inner_product`], [`expected_utility`];
//! - [`bootstrap_ci`] from per-prompt samples, and [`bootstrap_difference`] /
//!   [`differences_vs_first`] for paired intervals on differences between methods;
//! - [`spearman`] and [`lambda_control`]: does objective i rise with λ_i over the grid;
//! - [`steering_report`]: does each vertex e_i beat the base and the other vertices on its own
//!   objective, with paired intervals;
//! - [`Front`], [`FrontReport`] (JSON, CSV, Markdown), [`plot_fronts`] (PNG, SVG),
//!   [`parse_points`] for user files, [`all_metrics`] for the `panacea metrics` command;
//! - [`FrontView`]: the interactive front page (SVG drawn by its own script, λ and a sample
//!   answer per point) of eval-front's `report.html` and `panacea serve --report`.
//!
//! Every function takes plain `f64` rows and an explicit [`Sense`]. Definitions and algorithms are
//! in the repository's `docs/metrics.md`; internally everything is minimised.
//!
//! ```no_run
//! use panacea_eval::{hypervolume, sparsity, spacing, RefPoint, Sense, SpacingVariant};
//!
//! // Three objective vectors (higher is better), e.g. one per preference of a λ grid.
//! let front = vec![vec![0.2, 0.9], vec![0.6, 0.6], vec![0.9, 0.1]];
//! let hv = hypervolume(&front, Sense::Max, &RefPoint::Explicit(vec![0.0, 0.0]))?;
//! let sp = spacing(&front, SpacingVariant::L1Nminus1)?;
//! let sparse = sparsity(&front, Sense::Max, true)?;
//! println!("HV {} (reference {:?}), spacing {sp}, sparsity {sparse}", hv.value, hv.reference_point);
//! # Ok::<(), panacea_eval::EvalError>(())
//! ```
#![warn(missing_docs)]

pub mod bench_fronts;
pub mod bootstrap;
pub mod compare;
pub mod control;
pub mod diversity;
pub mod error;
pub mod front;
pub mod front_view;
pub mod hypervolume;
pub mod indicators;
mod kdtree;
pub mod pareto;
pub mod parse;
pub mod plot;
pub mod report;
mod rng;
pub mod sense;
pub mod steering;

pub use bootstrap::{
    bootstrap_ci, bootstrap_difference, mean_front, n_prompts, BootstrapOptions, ConfidenceInterval,
};
pub use compare::{
    details_markdown, differences_vs_first, dominance, dominance_markdown, method_details,
    points_markdown, DifferenceMetric, Dominance, MethodDetail, PairedDifference, PointRow,
};
pub use control::{lambda_control, lambda_control_with_ci, spearman, LambdaControl};
pub use diversity::{
    expected_utility, inner_product, spacing, spacing_all_variants, sparsity, SpacingVariant,
};
pub use error::{EvalError, Result};
pub use front::Front;
pub use front_view::{FrontView, SampleAnswer, ViewMethod, ViewPoint};
pub use hypervolume::{
    auto_reference_point, hypervolume, hypervolume_min_with, hypervolume_monte_carlo, HvAlgorithm,
    Hypervolume, RefPoint,
};
pub use indicators::{
    avg_hausdorff, coverage, epsilon_additive, epsilon_multiplicative, gd, igd, igd_plus,
    r2_exact_2d,
};
pub use pareto::{nondominated, nondominated_mask, pareto_ranks, Duplicates};
pub use parse::parse_points;
pub use plot::{plot_fronts, PlotOptions};
pub use report::{
    all_metrics, FrontReport, MethodInput, MethodReport, MetricWarning, PointMetrics, ReportOptions,
};
pub use sense::Sense;
pub use steering::{seeds_markdown, steering_report, SteeringReport, VertexCheck};
