//! The one integration-test binary of panacea-dpo (one `mod` per topic).

mod common;
mod trainer;
