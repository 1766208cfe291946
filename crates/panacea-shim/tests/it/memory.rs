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

/// A 64 MiB buffer written and then freed stays in the peak resident set: the peak read after
/// the free is at least the resident set measured while the buffer was held (which other test
/// threads may raise or lower, but the peak since the reset bounds it either way).
#[test]
fn the_peak_resident_set_sees_a_freed_buffer() {
    const BYTES: usize = 64 << 20;
    reset_process_peak_rss().expect("reset");
    let buffer = vec![1u8; BYTES];
    assert_eq!(buffer.iter().map(|&b| b as usize).sum::<usize>(), BYTES);
    let during = process_rss().expect("rss");
    assert!(during >= BYTES as u64, "resident set {during} while holding {BYTES} bytes");
    drop(buffer);
    let peak = process_peak_rss().expect("peak");
    // The kernel counts resident pages per thread in batches and folds them into the peak
    // lazily, so the two readings can disagree by a few hundred KiB (measured: 264 KiB); 8 MiB
    // of slack is still far below the 64 MiB buffer the peak must have seen.
    const SLACK: u64 = 8 << 20;
    assert!(
        peak + SLACK >= during,
        "peak {peak} < {during} − 8 MiB, the resident set while the buffer was held"
    );
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
