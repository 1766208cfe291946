//! The models a front evaluation compares with the base: Panacea adapters (one model, any λ),
//! Rewarded Soups (one adapter per objective, interpolated) and DPS sets (one adapter per
//! trained λ).

use std::path::PathBuf;

use panacea_core::PreferenceVector;

/// One method to evaluate besides the base model.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// A Panacea adapter, evaluated at every grid λ.
    Adapter(AdapterSpec),
    /// Rewarded Soups, evaluated at every grid λ.
    Soup(SoupSpec),
    /// A discrete policy set, evaluated at its members' λ.
    Dps(DpsSpec),
}

impl Method {
    /// The method's name in the report.
    pub fn label(&self) -> &str {
        match self {
            Method::Adapter(a) => &a.label,
            Method::Soup(s) => &s.label,
            Method::Dps(d) => &d.label,
        }
    }

    /// Every adapter folder the method loads.
    pub fn adapter_folders(&self) -> Vec<&std::path::Path> {
        match self {
            Method::Adapter(a) => vec![a.adapter.as_path()],
            Method::Soup(s) => s.adapters.iter().map(PathBuf::as_path).collect(),
            Method::Dps(d) => d.members.iter().map(|(_, a)| a.as_path()).collect(),
        }
    }

    /// True for the methods a Panacea run is compared against (soups and DPS sets).
    pub fn is_baseline(&self) -> bool {
        !matches!(self, Method::Adapter(_))
    }
}

/// A native Panacea adapter folder.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    /// Table name.
    pub label: String,
    /// Native adapter folder.
    pub adapter: PathBuf,
}

/// A Rewarded Soups baseline: one adapter folder per objective, in λ order. The soup at λ is
/// θ(λ) = W0 + Σ_i λ_i ΔW_i with the **merged** ΔW_i (an m-objective Panacea adapter read at
/// e_i, a single-objective one at [1]), which is exactly linear in λ.
#[derive(Debug, Clone, PartialEq)]
pub struct SoupSpec {
    /// Table name.
    pub label: String,
    /// Adapter i was trained at λ = e_i.
    pub adapters: Vec<PathBuf>,
}

/// A DPS baseline: one scalarised model per λ of a small set. Its front is reported at its
/// members' λ, one point per member: answering every grid λ with the nearest member would
/// repeat points and so flatter spacing and sparsity.
#[derive(Debug, Clone, PartialEq)]
pub struct DpsSpec {
    /// Table name.
    pub label: String,
    /// (training λ, adapter folder) per member.
    pub members: Vec<(PreferenceVector, PathBuf)>,
}
