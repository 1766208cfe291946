//! The single integration-test binary of panacea-rlhf (one binary per crate keeps link time down
//! on 2-core machines). One module per topic.

mod configs;
mod data_parallel;
mod jobs;
mod model_folder;
mod ppo;
mod pure;
mod score;
