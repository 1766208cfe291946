//! The one integration-test binary of panacea-cli (one `mod` per topic). Tests run the built
//! `panacea` binary.

mod base_model;
mod bench_steering;
