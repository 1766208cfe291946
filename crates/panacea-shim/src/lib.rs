//! A small C++ shim over libtorch for what tch 0.24 does not expose.
//!
//! The C++ side (`csrc/`) is compiled by `build.rs` against the same libtorch that torch-sys
//! links, so an `at::Tensor*` from tch can cross into it unchanged. Every C entry point returns
//! a status and keeps its message per thread; this crate turns that into [`ShimError`], so C++
//! exceptions never unwind into Rust.
//!
//! Modules, each one C++ file and one Rust file:
//! - build facts ([`built_with_cuda`], [`built_with_nccl`], [`torch_version`]), here;
//! - [`graph`]: CUDA graph capture and replay;
//! - [`dist`]: c10d's TCPStore rendezvous and its Gloo (`csrc/dist.cpp`) and NCCL
//!   (`csrc/dist_nccl.cpp`, compiled in only with NCCL's and CCCL's headers) process groups,
//!   for data-parallel training launched by torchrun or Slurm;
//! - [`memory`]: the CUDA caching allocator's peak (`csrc/memory.cpp`), and the process's peak
//!   resident set for CPU runs.
//!
//! See ARCHITECTURE.md ("The C++ shim") for how libtorch and the CUDA headers are found.

use std::ffi::c_char;

pub mod dist;
pub mod graph;
pub mod memory;

/// An error raised on the C++ side (a `c10::Error` or any other exception), or a misuse the
/// Rust side caught before calling it.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The C++ call failed; the message is libtorch's.
    #[error("{call}: {message}")]
    Cpp {
        /// The shim entry point that failed.
        call: &'static str,
        /// What libtorch (or the shim) said.
        message: String,
    },
    /// The feature needs CUDA, and this build or this machine has none.
    #[error("{what} is not available: {why}")]
    NotAvailable {
        /// The feature asked for.
        what: &'static str,
        /// Why not, with a hint.
        why: String,
    },
}

mod ffi {
    use std::ffi::c_char;
    use torch_sys::C_tensor;

    extern "C" {
        pub(crate) fn panacea_shim_last_error(buf: *mut c_char, len: usize) -> usize;
        pub(crate) fn panacea_shim_built_with_cuda() -> i32;
        pub(crate) fn panacea_shim_built_with_nccl() -> i32;
        pub(crate) fn panacea_shim_torch_version() -> i32;
        pub(crate) fn panacea_shim_tensor_numel(tensor: *const C_tensor, out: *mut i64) -> i32;
    }
}

/// Turns a shim status into a result, reading the thread's last error on failure.
pub(crate) fn check(call: &'static str, status: i32) -> Result<(), ShimError> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: a null buffer only asks for the length; the second call writes at most `len`
    // bytes, NUL included, into a buffer of that size.
    let message = unsafe {
        let len = ffi::panacea_shim_last_error(std::ptr::null_mut(), 0);
        let mut buf = vec![0u8; len + 1];
        ffi::panacea_shim_last_error(buf.as_mut_ptr() as *mut c_char, buf.len());
        buf.truncate(len);
        String::from_utf8_lossy(&buf).into_owned()
    };
    Err(ShimError::Cpp { call, message })
}

/// Whether the CUDA parts (graphs, the allocator's peak) were compiled in. Even then they run only where
/// `tch::Cuda::is_available()`.
pub fn built_with_cuda() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ffi::panacea_shim_built_with_cuda() == 1 }
}

/// Whether c10d's NCCL process group was compiled in (`csrc/dist_nccl.cpp`: it needs NCCL's
/// and CCCL's headers besides CUDA's; [`nccl_build_note`] says what was found). Even then it
/// runs only on CUDA devices.
pub fn built_with_nccl() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { ffi::panacea_shim_built_with_nccl() == 1 }
}

/// What the build script decided about NCCL and why: "compiled in", or "left out: <what was
/// missing>".
pub fn nccl_build_note() -> &'static str {
    env!("PANACEA_SHIM_NCCL_BUILD")
}

/// The libtorch version the shim was compiled against, as (major, minor, patch).
pub fn torch_version() -> (u32, u32, u32) {
    // SAFETY: no arguments, no state.
    let v = unsafe { ffi::panacea_shim_torch_version() } as u32;
    (v / 10000, v / 100 % 100, v % 100)
}

/// The element count of `tensor` as the C++ side sees it. Used to check that tch's tensor
/// handles and the shim agree on the `at::Tensor` layout.
pub fn tensor_numel(tensor: &tch::Tensor) -> Result<i64, ShimError> {
    let mut out = 0i64;
    // SAFETY: tch's `C_tensor` is an `at::Tensor*`, alive for the borrow of `tensor`; `out`
    // is a valid i64.
    let status = unsafe { ffi::panacea_shim_tensor_numel(tensor.as_ptr(), &mut out) };
    check("tensor_numel", status)?;
    Ok(out)
}
