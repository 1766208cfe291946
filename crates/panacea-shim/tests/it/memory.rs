//! Peak memory: the CUDA allocator's peak follows a tensor allocated after a reset (on a
//! machine with CUDA), the CPU answers "not available" for it, and the process's peak resident
//! set rises by a buffer that is written and then freed.

use panacea_shim::memory::{
    cuda_max_memory_allocated, cuda_reset_peak_memory_stats, peak_bytes, process_peak_rss,
    process_rss, reset_process_peak_rss,
};
use panacea_shim::ShimError;
use tch::{Device, Kind, Tensor};

#[test]
fn the_cuda_peak_on_the_cpu_is_not_available() {
    let err = cuda_max_memory_allocated(Device::Cpu).unwrap_err();
    let ShimError::NotAvailable { why, .. } = &err else { panic!("{err}") };
    assert!(why.contains("need a CUDA device"), "{why}");
    assert!(matches!(
        cuda_reset_peak_memory_stats(Device::Cpu),
        Err(ShimError::NotAvailable { .. })
    ));
}

/// 64 MiB written and freed raise the peak resident set by at least that much over the
/// resident set at the reset (other test threads may raise it further, never lower it).
#[test]
fn the_peak_resident_set_sees_a_freed_buffer() {
    const BYTES: usize = 64 << 20;
    reset_process_peak_rss().expect("reset");
    let before = process_rss().expect("rss");
    let buffer = vec![1u8; BYTES];
    assert_eq!(buffer.iter().map(|&b| b as usize).sum::<usize>(), BYTES);
    drop(buffer);
    let peak = process_peak_rss().expect("peak");
    assert!(peak >= before + BYTES as u64, "peak {peak} < {before} + {BYTES}");
    assert!(peak_bytes(Device::Cpu).expect("cpu peak") >= peak);
}

/// On a machine with CUDA: after a reset, a 32 MiB f32 tensor (8 Mi elements) raises the peak
/// by at least its size, and the peak stays after it is freed.
#[test]
fn the_cuda_peak_counts_a_tensor_after_a_reset() {
    let device = Device::Cuda(0);
    if let Some(why) = panacea_shim::graph::unavailable_reason(device) {
        eprintln!("skipped: {why}");
        return;
    }
    let _warm = Tensor::zeros([1], (Kind::Float, device));
    cuda_reset_peak_memory_stats(device).expect("reset");
    let base = cuda_max_memory_allocated(device).expect("peak");
    let t = Tensor::ones([8 << 20], (Kind::Float, device));
    assert_eq!(t.sum(Kind::Float).double_value(&[]), (8 << 20) as f64);
    drop(t);
    let peak = cuda_max_memory_allocated(device).expect("peak");
    assert!(peak >= base + (32 << 20), "peak {peak}, before {base}");
}
