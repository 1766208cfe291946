//! The single integration-test binary of panacea-core (one binary per crate keeps link time
//! down on 2-core machines). One module per topic.

mod config;
mod device;
