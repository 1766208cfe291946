//! CUDA graphs: record the kernels a closure launches once, then relaunch them all with one call.
//!
//! A decode step of a small model is hundreds of tiny kernels whose launch cost, not their
//! work, sets the step time. A graph replays them in one launch. The rules are PyTorch's:
//! inputs and outputs are static tensors allocated before the capture and updated in place
//! between replays; the captured code must not synchronise with the host or allocate tensors
//! that outlive it (the graph's private memory pool holds its temporaries); warm the code up
//! eagerly once first, so that lazy initialisations (cuBLAS handles, autotuning) are not
//! captured. Where CUDA is missing, [`CudaGraph::capture`] answers [`ShimError::NotAvailable`]
//! and callers keep their eager path.

use std::ptr::NonNull;

use tch::Device;

use crate::{check, ShimError};

#[repr(C)]
struct RawGraph {
    _private: [u8; 0],
}

extern "C" {
    fn panacea_shim_graph_capture_begin(
        device: i32,
        share_pool_with: *mut RawGraph,
        out: *mut *mut RawGraph,
    ) -> i32;
    fn panacea_shim_graph_capture_end(graph: *mut RawGraph) -> i32;
    fn panacea_shim_graph_replay(graph: *mut RawGraph) -> i32;
    fn panacea_shim_graph_free(graph: *mut RawGraph);
}

/// A captured CUDA graph (`at::cuda::CUDAGraph` with its side stream), freed on drop.
pub struct CudaGraph {
    raw: NonNull<RawGraph>,
    device: usize,
}

// SAFETY: the graph is an owned C++ object with no thread affinity; replay from another thread
// launches on that thread's current stream. It is not Sync: one replay at a time.
unsafe impl Send for CudaGraph {}

impl std::fmt::Debug for CudaGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaGraph").field("device", &self.device).finish()
    }
}

/// Why graphs cannot run on `device`, if they cannot.
pub fn unavailable_reason(device: Device) -> Option<String> {
    match device {
        Device::Cuda(_) if !crate::built_with_cuda() => Some(
            "panacea-shim was built without CUDA (hint: build against the PyPI torch wheel, whose \
             nvidia packages carry the CUDA headers)"
                .into(),
        ),
        Device::Cuda(_) if !tch::Cuda::is_available() => {
            Some("no CUDA device is visible to libtorch".into())
        }
        Device::Cuda(_) => None,
        other => Some(format!("CUDA graphs need a CUDA device, not {other:?}")),
    }
}

impl CudaGraph {
    /// Records what `body` launches on `device` into a new graph (nothing runs yet) and
    /// returns it with `body`'s result, typically the static output tensors. `share_pool_with`
    /// lets graphs that are never replayed concurrently (one per batch-size bucket) share one
    /// memory pool.
    pub fn capture<T>(
        device: Device,
        share_pool_with: Option<&CudaGraph>,
        body: impl FnOnce() -> T,
    ) -> Result<(CudaGraph, T), ShimError> {
        if let Some(why) = unavailable_reason(device) {
            return Err(ShimError::NotAvailable { what: "CUDA graph capture", why });
        }
        let Device::Cuda(index) = device else { unreachable!("checked above") };
        let pool = share_pool_with.map_or(std::ptr::null_mut(), |g| g.raw.as_ptr());
        let mut raw = std::ptr::null_mut();
        // SAFETY: `pool` is null or a live graph; `raw` receives a new graph on success.
        check("graph_capture_begin", unsafe {
            panacea_shim_graph_capture_begin(index as i32, pool, &mut raw)
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| ShimError::Cpp {
            call: "graph_capture_begin",
            message: "returned no graph".into(),
        })?;
        let graph = CudaGraph { raw, device: index };
        // The capture must end whatever `body` does, or the stream stays in capture mode.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        // SAFETY: the graph is live and capturing.
        let ended =
            check("graph_capture_end", unsafe { panacea_shim_graph_capture_end(raw.as_ptr()) });
        match result {
            Ok(value) => ended.map(|()| (graph, value)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Launches the recorded kernels on the current stream; returns without waiting for them.
    pub fn replay(&self) -> Result<(), ShimError> {
        // SAFETY: the graph is live and its capture ended (only `capture` builds one).
        check("graph_replay", unsafe { panacea_shim_graph_replay(self.raw.as_ptr()) })
    }

    /// The CUDA device index the graph was captured on.
    pub fn device(&self) -> usize {
        self.device
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: owned, freed once.
        unsafe { panacea_shim_graph_free(self.raw.as_ptr()) }
    }
}
