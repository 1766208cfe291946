//! `panacea-front`: the Pareto front of Panacea adapters across a λ grid, compared with the
//! base model and with the Rewarded Soups and DPS baselines, in one report.
//!
//! ```no_run
//! use panacea_front::{evaluate_front, AdapterSpec, FrontConfig, Method};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg: FrontConfig =
//!     panacea_core::config::load_config("configs/eval-front.yaml".as_ref(), &[])?;
//! let base = panacea_front::load_base(&cfg)?;
//! let panacea = Method::Adapter(AdapterSpec {
//!     label: "panacea".into(),
//!     adapter: "runs/my-run/checkpoints/step-000040".into(),
//! });
//! for m in evaluate_front(&cfg, &base, &[panacea])? {
//!     println!("{}: {:?}", m.name, m.front.points);
//! }
//! # Ok(()) }
//! ```
//!
//! How a front is measured:
//!
//! 1. the grid: `{ kind: grid2d, n }` for 2 objectives, the Das–Dennis lattice
//!    `{ kind: das_dennis, h }` for 3 or more;
//! 2. every (λ, prompt, sample) row of a method is generated in mixed-λ batches, one λ per
//!    row; each (prompt, sample) row samples from its own seeded stream, so every method, λ
//!    and batch layout sees the same draws (common random numbers, [`row_rng`]); the base
//!    (adapter off) answers once per (prompt, sample);
//! 3. every response is scored for each objective (`{name, kind: reward|cost, source}`, in
//!    λ order, named as the adapter names its objectives; [`FrontObjective`]); samples are
//!    averaged per prompt and prompts per point;
//! 4. panacea-eval computes the metrics: hypervolume against one reference point (auto over
//!    the union of every front, always reported), inner product, sparsity and spacing over
//!    distinct points, IGD+ against the non-dominated union, coverage and additive ε between
//!    every ordered pair of methods, per-λ control (Spearman ρ between λ_i and objective i
//!    with a bootstrap interval), and paired bootstrap intervals on the HV and IP differences
//!    of every Panacea method against every baseline;
//! 5. [`write_report`] writes `report.json`, `report.md`, `points.csv`, `front.json`,
//!    `front.png` and `front.svg` (a scatter-plot matrix for 3 or more objectives).
//!
//! Baselines ([`train_baselines`]) are trained by the Panacea run's own trainer from its typed
//! config at fixed λ and equal total compute; Rewarded Soups interpolate the merged ΔW of one
//! adapter per objective; DPS is reported at its members' λ.

pub mod baselines;
pub mod config;
pub mod error;
pub mod evaluate;
pub mod job;
pub mod method;
pub mod report;
pub mod runs;
pub mod sample;
pub mod scorer;

pub use baselines::{
    train_baselines, Baseline, Baselines, JobTrainer, MemberRun, MemberTrainer, RunConfig,
};
pub use config::{BootstrapConfig, FrontConfig, GenerationConfig, PromptSource, PromptsConfig};
pub use error::{Context, FrontError, Result};
pub use evaluate::{check_base_models, evaluate, evaluate_front, Evaluation, Example};
pub use job::{default_out_dir, execute, load_base, plan, run_front_job, FrontJob, Plan};
pub use method::{AdapterSpec, DpsSpec, Method, SoupSpec};
pub use report::{write_report, Written};
pub use runs::{latest_adapter, run_label, run_of_adapter, trained_objectives, RunJob};
pub use sample::row_rng;
pub use scorer::FrontObjective;
