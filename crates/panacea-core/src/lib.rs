//! panacea-core: the pieces of Panacea (Zhong et al., "Panacea: Pareto Alignment via Preference
//! Adaptation for LLMs", arXiv 2402.02030) that do not depend on a particular language model.
//!
//! - [`adapter`]: the SVD-LoRA layer `W0 + c·U diag(σ, s·λ) Vᵀ` ([`adapter::SvdLoraLinear`]),
//!   the [`adapter::Adapter`] switch (`On { pref }` / `Off`), merge/unmerge, weight-decay groups.
//! - [`checkpoint`]: the native adapter folder (strict save/load) and the PEFT LoRA export.
//! - [`preference`]: validated preference vectors and the training/evaluation samplers.
//! - [`aggregation`]: linear and Tchebycheff scalarisation of utilities and of losses.
//! - [`objective`]: rewards vs costs; the project's only negation of costs.
//! - [`ops`]: token log-probs, masked means and whitening shared by the trainers.
//! - [`optim`]: AdamW whose moments can be saved and restored exactly (bit-exact resume).
//! - [`seed`]: one seed, named RNG streams, resumable state.
//! - [`small_gemm`]: `x·Wᵀ` for the few rows of a CPU decode step (AVX2/FMA, f32 or bf16 weights).
//! - [`device`]: the libtorch start-up hook ([`device::init_torch`]) and device/dtype choices.
//! - [`config`]: strict YAML configs with `--set a.b=c` overrides and one validation pass.
//! - [`error`]: the crate's typed error.
//!
//! Tensors in, tensors out: this crate reads no files except configs and checkpoints and never
//! prints.
//!
//! ```no_run
//! use panacea_core::adapter::{Adapter, SvdLoraConfig, SvdLoraLinear};
//! use panacea_core::PreferenceVector;
//! use tch::{nn, Device, Kind, Tensor};
//!
//! // A frozen 16 → 8 linear layer with an SVD-LoRA adapter for two objectives.
//! let (base_vs, adapter_vs) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
//! let cfg = SvdLoraConfig::new(2);
//! let layer = SvdLoraLinear::new(&base_vs.root(), Some((&adapter_vs.root(), &cfg)), 16, 8, false);
//! let x = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
//! let pref: PreferenceVector = "0.7,0.3".parse()?;
//! let steered = layer.forward(&x, Adapter::On { pref: &pref.to_tensor(Device::Cpu) });
//! let reference = layer.forward(&x, Adapter::Off); // the base model, same weights
//! assert_eq!(steered.size(), reference.size());
//! # Ok::<(), panacea_core::CoreError>(())
//! ```
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

pub mod adapter;
pub mod adapter_stats;
pub mod aggregation;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod error;
pub mod objective;
pub mod ops;
pub mod optim;
pub mod preference;
pub mod seed;
pub mod small_gemm;

pub use adapter::{Adapter, SvdLoraConfig, SvdLoraLinear};
pub use aggregation::Aggregation;
pub use error::CoreError;
pub use objective::{Objective, ObjectiveKind};
pub use preference::{PreferenceSampler, PreferenceVector, StepPreference};
pub use seed::{seed_everything, RunRng};
