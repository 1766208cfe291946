//! Measured peak memory, to check estimates such as `panacea_lm::memory_plan` against:
//!
//! - on CUDA, libtorch's caching allocator's peak of allocated bytes
//!   ([`cuda_max_memory_allocated`], PyTorch's `torch.cuda.max_memory_allocated`): live tensors
//!   only, not the cache the allocator keeps reserved;
//! - on the CPU, the process's peak resident set (`VmHWM` of `/proc/self/status`, Linux), which
//!   [`reset_process_peak_rss`] sets back to the current resident set. libtorch's CPU tensors
//!   come from `malloc`, so the resident set is their bytes plus whatever the C library keeps
//!   mapped after a free, plus everything else the process holds (code, libtorch's own state).
//!
//! [`peak_bytes`] picks the measure that fits a device.

use tch::Device;

use crate::{check, ShimError};

extern "C" {
    fn panacea_shim_cuda_max_memory_allocated(device: i32, out: *mut i64) -> i32;
    fn panacea_shim_cuda_reset_peak_memory_stats(device: i32) -> i32;
}

/// The CUDA device index of `device`, or why CUDA statistics cannot be read there.
fn cuda_index(device: Device, what: &'static str) -> Result<i32, ShimError> {
    if let Some(why) = crate::graph::unavailable_reason(device) {
        let why = match device {
            Device::Cuda(_) => why,
            other => format!("the CUDA allocator's statistics need a CUDA device, not {other:?}"),
        };
        return Err(ShimError::NotAvailable { what, why });
    }
    match device {
        Device::Cuda(i) => Ok(i as i32),
        other => Err(ShimError::NotAvailable { what, why: format!("{other:?} is not CUDA") }),
    }
}

/// The peak bytes of live tensors on CUDA `device` since the process started or the last
/// [`cuda_reset_peak_memory_stats`]. [`ShimError::NotAvailable`] on the CPU, without CUDA in
/// this build or on this machine.
pub fn cuda_max_memory_allocated(device: Device) -> Result<u64, ShimError> {
    let index = cuda_index(device, "the CUDA allocator's peak")?;
    let mut out = 0i64;
    // SAFETY: `out` is a valid i64; the index names a visible CUDA device (checked above).
    let status = unsafe { panacea_shim_cuda_max_memory_allocated(index, &mut out) };
    check("cuda_max_memory_allocated", status)?;
    Ok(out.max(0) as u64)
}

/// Sets CUDA `device`'s peak statistics back to the current values.
pub fn cuda_reset_peak_memory_stats(device: Device) -> Result<(), ShimError> {
    let index = cuda_index(device, "resetting the CUDA allocator's peak")?;
    // SAFETY: the index names a visible CUDA device (checked above).
    let status = unsafe { panacea_shim_cuda_reset_peak_memory_stats(index) };
    check("cuda_reset_peak_memory_stats", status)
}

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
fn proc_status_bytes(field: &'static str) -> Result<u64, ShimError> {
    let unavailable = |why: String| ShimError::NotAvailable { what: field, why };
    let text = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| unavailable(format!("/proc/self/status cannot be read ({e}); Linux only")))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| unavailable(format!("/proc/self/status has no {field} line")))?;
    let kib: u64 = line
        .trim()
        .strip_suffix("kB")
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| unavailable(format!("unexpected {field} line {line:?}")))?;
    Ok(kib * 1024)
}

/// The process's resident set now, in bytes (`VmRSS`).
pub fn process_rss() -> Result<u64, ShimError> {
    proc_status_bytes("VmRSS")
}

/// The process's peak resident set, in bytes (`VmHWM`): since it started or since the last
/// [`reset_process_peak_rss`].
pub fn process_peak_rss() -> Result<u64, ShimError> {
    proc_status_bytes("VmHWM")
}

/// Sets the process's peak resident set back to its current one (writes `5` to
/// `/proc/self/clear_refs`, Linux 4.0 and later).
pub fn reset_process_peak_rss() -> Result<(), ShimError> {
    std::fs::write("/proc/self/clear_refs", "5").map_err(|e| ShimError::NotAvailable {
        what: "resetting the peak resident set",
        why: format!("/proc/self/clear_refs cannot be written ({e}); Linux 4.0 and later only"),
    })
}

/// The peak memory measure of `device`: the CUDA allocator's peak of allocated bytes on a CUDA
/// device, the process's peak resident set on the CPU (see the module docs for what each
/// counts).
pub fn peak_bytes(device: Device) -> Result<u64, ShimError> {
    match device {
        Device::Cuda(_) => cuda_max_memory_allocated(device),
        _ => process_peak_rss(),
    }
}
