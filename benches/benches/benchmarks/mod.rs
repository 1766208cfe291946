//! One module per benchmark topic; list each module's `benches` group in `bench_main.rs`.

pub(crate) mod host_parallel;
pub(crate) mod hypervolume;
pub(crate) mod lm_decode;
pub(crate) mod svd_lora;
