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
//! - [`Front`], [`FrontReport`] (JSON, CSV, Markdown), [`plot_fronts`] (PNG, SVG),
//!   [`parse_points`] for user files, [`all_metrics`] for the `panacea metrics` command.
//!
//! Every function takes plain `f64` rows and an explicit [`Sense`]. Definitions and algorithms are
//! in `shared/spec/metrics.md`; internally everything is minimised.
#![warn(missing_docs)]

pub mod bench_fronts;
pub mod bootstrap;
pub mod compare;
pub mod control;
pub mod diversity;
pub mod error;
pub mod front;
pub mod hypervolume;
pub mod indicators;
pub mod pareto;
pub mod parse;
pub mod plot;
pub mod report;
mod rng;
pub mod sense;

pub use bootstrap::{
    bootstrap_ci, bootstrap_difference, mean_front, n_prompts, BootstrapOptions, ConfidenceInterval,
};
pub use compare::{differences_vs_first, DifferenceMetric, PairedDifference};
pub use control::{lambda_control, lambda_control_with_ci, spearman, LambdaControl};
pub use diversity::{expected_utility, inner_product, spacing, sparsity, SpacingVariant};
pub use error::{EvalError, Result};
pub use front::Front;
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
    all_metrics, FrontReport, MethodInput, MethodReport, PointMetrics, ReportOptions,
};
pub use sense::Sense;
