//! Integration tests for `panacea-eval`: the shared known-answer files, hypervolume properties
//! against an inclusion–exclusion oracle, file parsing, reports and plots.

mod common;
mod compare;
mod control;
mod diversity;
mod errors;
mod hv_properties;
mod indicators;
mod parse;
mod plot_report;
mod shared_cases;
