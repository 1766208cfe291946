//! Data-parallel training on c10d, PyTorch's distributed engine: a `TCPStore` rendezvous and a
//! Gloo (`csrc/dist.cpp`) or NCCL (`csrc/dist_nccl.cpp`) process group, launched the way every
//! PyTorch job is.
//!
//! **Launch.** [`DistEnv::from_env`] reads the launcher's variables:
//!
//! | variable | meaning | Slurm (`srun`) fallback |
//! |---|---|---|
//! | `RANK` | this process, 0..`WORLD_SIZE` | `SLURM_PROCID` |
//! | `WORLD_SIZE` | number of processes | `SLURM_NTASKS` |
//! | `LOCAL_RANK` | this process on its machine (picks `cuda:LOCAL_RANK`) | `SLURM_LOCALID` |
//! | `MASTER_ADDR` | host of rank 0's store | first host of `SLURM_JOB_NODELIST` |
//! | `MASTER_PORT` | port of the store | 29500 (c10d's default) |
//! | `TORCHELASTIC_USE_AGENT_STORE` | `True` under torchrun: its agent already serves the store, so every rank connects as a client | — |
//! | `PANACEA_DIST_TIMEOUT_S` | seconds a rendezvous or collective may wait (default 1800, c10d's) | — |
//! | `PANACEA_DIST_BACKEND` | `gloo` or `nccl`: overrides the backend picked from the device (see **Backend**); set, it makes a world of one a group too | — |
//! | `GLOO_SOCKET_IFNAME` | network interface Gloo binds (default: the host name's address) | — |
//!
//! The torchrun names win when `WORLD_SIZE` is set; otherwise the Slurm names apply when
//! `SLURM_NTASKS` and `SLURM_PROCID` are set (start one task per process with `srun`). No
//! variables, or a world of one, is `None`: today's single-process path, no store, no sockets.
//! The one exception is a world of one with `PANACEA_DIST_BACKEND` set, which joins a group of
//! one, so that a backend can be exercised on a single GPU.
//!
//! **Collectives** are synchronous and bounded by the timeout. A peer that dies closes its
//! sockets, so the others fail at their next collective (or when the timeout passes) with an
//! error naming their rank and the world size; nothing hangs.
//!
//! **Backend.** [`ProcessGroup::from_env_for`] picks it from the run's device, as PyTorch's
//! `init_process_group` does: NCCL for a CUDA device, Gloo for the CPU. `PANACEA_DIST_BACKEND`
//! overrides the choice (Gloo also reduces CUDA tensors, through host copies). Under NCCL every
//! rank runs on `cuda:LOCAL_RANK` (one GPU per rank: NCCL refuses two ranks on one GPU) and
//! every tensor handed to a collective must live there; the host-value helpers
//! ([`ProcessGroup::all_reduce_f64`], [`ProcessGroup::all_gather_f64`],
//! [`ProcessGroup::broadcast_bytes`]) move their values to the group's device and back.
//! NCCL is compiled in only when the build found NCCL's header (shipped in the torch wheel) and
//! CCCL's (`nv/target`, PyPI `nvidia-cuda-cccl`, which `cargo xtask setup` installs into the
//! project's torch venv); [`crate::built_with_nccl`] says whether it was. Asking for NCCL where
//! it cannot run (a CPU device, a build without it, no visible GPU, `LOCAL_RANK` beyond the
//! GPUs) is [`DistError::BackendUnavailable`], naming the reason, before any connection is made.
//! Timeouts are the same under both: every collective waits at most the timeout; under NCCL
//! PyTorch's watchdog also aborts a collective that runs past it (and, by c10d's default
//! `TORCH_NCCL_ASYNC_ERROR_HANDLING`, ends the process), so a dead peer still means an exit
//! within the timeout, not a hang.

use std::ffi::{c_void, CString};
use std::time::Duration;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::{check, ShimError};

/// c10d's default store port, used under Slurm when `MASTER_PORT` is unset.
pub const DEFAULT_PORT: u16 = 29500;
/// c10d's default collective timeout (30 minutes), used when `PANACEA_DIST_TIMEOUT_S` is unset.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What can go wrong setting up or running a process group.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable is missing or malformed.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value (empty when unset).
        value: String,
        /// What is wrong, with a hint.
        reason: String,
    },
    /// The rendezvous or a collective failed on the C++ side.
    #[error(transparent)]
    Shim(#[from] ShimError),
    /// A value handed to a collective does not fit it.
    #[error("{0}")]
    Usage(String),
    /// The backend asked for cannot run in this process.
    #[error("the {} backend cannot run here: {reason}", backend.name())]
    BackendUnavailable {
        /// The backend.
        backend: Backend,
        /// Why not, with a hint.
        reason: String,
    },
}

/// The collective backend of a [`ProcessGroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Gloo over TCP; host tensors (and CUDA tensors through host copies).
    Gloo,
    /// NVIDIA's NCCL; tensors on the rank's CUDA device.
    Nccl,
}

impl Backend {
    /// The name PyTorch uses (`gloo`, `nccl`), as recorded in run manifests and read from
    /// `PANACEA_DIST_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gloo => "gloo",
            Self::Nccl => "nccl",
        }
    }

    /// PyTorch's choice for a device: NCCL for CUDA, Gloo otherwise.
    pub fn default_for(device: Device) -> Self {
        match device {
            Device::Cuda(_) => Self::Nccl,
            _ => Self::Gloo,
        }
    }

    /// Reads a backend name as [`Backend::name`] writes it (case and surrounding spaces
    /// ignored); `None` for any other text.
    pub fn from_name(text: &str) -> Option<Self> {
        [Self::Gloo, Self::Nccl].into_iter().find(|b| text.trim().eq_ignore_ascii_case(b.name()))
    }
}

/// Which launcher's variables [`DistEnv`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launcher {
    /// `RANK`, `WORLD_SIZE`, ... (torchrun, or set by hand).
    Torch,
    /// `SLURM_PROCID`, `SLURM_NTASKS`, ... (`srun`).
    Slurm,
}

/// The launcher's description of this process's place in a world of more than one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    /// This process, 0..world_size.
    pub rank: usize,
    /// Number of processes (> 1, or 1 when `backend` is set).
    pub world_size: usize,
    /// This process on its machine.
    pub local_rank: usize,
    /// Host of the store.
    pub master_addr: String,
    /// Port of the store.
    pub master_port: u16,
    /// Whether someone else (torchrun's agent) serves the store, so rank 0 connects as a
    /// client too.
    pub store_is_served: bool,
    /// Bound on the rendezvous and on every collective.
    pub timeout: Duration,
    /// Where the variables came from.
    pub launcher: Launcher,
    /// The backend `PANACEA_DIST_BACKEND` asks for; `None` to pick it from the device.
    pub backend: Option<Backend>,
}

/// The variables a launcher gives `rank` of a `world_size`-rank group on this one machine:
/// torchrun's `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR` (127.0.0.1) and `MASTER_PORT`,
/// plus `GLOO_SOCKET_IFNAME=lo` so that Gloo stays on loopback. For tests and hand-made
/// launchers that start the ranks as child processes; [`DistEnv::from_vars`] reads them back.
pub fn loopback_launch_vars(
    rank: usize,
    world_size: usize,
    port: u16,
) -> [(&'static str, String); 6] {
    [
        ("RANK", rank.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("WORLD_SIZE", world_size.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_owned()),
        ("MASTER_PORT", port.to_string()),
        ("GLOO_SOCKET_IFNAME", "lo".to_owned()),
    ]
}

fn env_err(var: &'static str, value: &str, reason: impl Into<String>) -> DistError {
    DistError::Env { var, value: value.to_owned(), reason: reason.into() }
}

fn parse_num<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T, DistError> {
    value.trim().parse().map_err(|_| {
        env_err(var, value, "not a non-negative integer; hint: check the launcher's settings")
    })
}

impl DistEnv {
    /// Reads this process's environment; see the module docs for the variables.
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`DistEnv::from_env`] over any variable source (`get(name)` is the value, `None` when
    /// unset): pure parsing, for tests.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        // Read first, so that a typo is reported even where no group is started.
        let backend = match get("PANACEA_DIST_BACKEND") {
            Some(text) => Some(Backend::from_name(&text).ok_or_else(|| {
                env_err(
                    "PANACEA_DIST_BACKEND",
                    &text,
                    "not a backend; hint: `gloo` or `nccl`, or unset it to pick by device \
                     (NCCL for CUDA, Gloo for the CPU)",
                )
            })?),
            None => None,
        };
        let (launcher, rank_var, world_var, local_var) = if get("WORLD_SIZE").is_some() {
            (Launcher::Torch, "RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if get("SLURM_NTASKS").is_some() && get("SLURM_PROCID").is_some() {
            (Launcher::Slurm, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        } else {
            return Ok(None);
        };
        let world_text = get(world_var).unwrap_or_default();
        let world_size: usize = parse_num(world_var, &world_text)?;
        if world_size == 0 {
            return Err(env_err(world_var, &world_text, "a world needs at least one process"));
        }
        // A world of one is the single-process path unless a backend was asked for by name.
        if world_size == 1 && backend.is_none() {
            return Ok(None);
        }
        let rank_text = get(rank_var).ok_or_else(|| {
            env_err(rank_var, "", format!("unset while {world_var}={world_size}; hint: set both"))
        })?;
        let rank: usize = parse_num(rank_var, &rank_text)?;
        if rank >= world_size {
            return Err(env_err(
                rank_var,
                &rank_text,
                format!("must be below {world_var}={world_size}"),
            ));
        }
        let local_rank = match get(local_var) {
            Some(text) => parse_num(local_var, &text)?,
            None => 0,
        };
        let master_addr = match (get("MASTER_ADDR"), launcher) {
            (Some(addr), _) => addr.trim().to_owned(),
            (None, Launcher::Slurm) => {
                let list = get("SLURM_JOB_NODELIST").ok_or_else(|| {
                    env_err(
                        "MASTER_ADDR",
                        "",
                        "unset, and so is SLURM_JOB_NODELIST to take the first host from",
                    )
                })?;
                first_slurm_host(&list)?
            }
            (None, Launcher::Torch) => {
                return Err(env_err(
                    "MASTER_ADDR",
                    "",
                    format!("unset while {world_var}={world_size}; hint: the host of rank 0"),
                ))
            }
        };
        let master_port = match (get("MASTER_PORT"), launcher) {
            (Some(text), _) => {
                let port: u16 = parse_num("MASTER_PORT", &text)?;
                if port == 0 {
                    return Err(env_err("MASTER_PORT", &text, "port 0 is not a port to meet at"));
                }
                port
            }
            (None, Launcher::Slurm) => DEFAULT_PORT,
            (None, Launcher::Torch) => {
                return Err(env_err(
                    "MASTER_PORT",
                    "",
                    format!("unset while {world_var}={world_size}; hint: a free TCP port"),
                ))
            }
        };
        let store_is_served = get("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let timeout = match get("PANACEA_DIST_TIMEOUT_S") {
            Some(text) => {
                let secs: u64 = parse_num("PANACEA_DIST_TIMEOUT_S", &text)?;
                if secs == 0 {
                    return Err(env_err("PANACEA_DIST_TIMEOUT_S", &text, "must be at least 1"));
                }
                Duration::from_secs(secs)
            }
            None => DEFAULT_TIMEOUT,
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            store_is_served,
            timeout,
            launcher,
            backend,
        }))
    }
}

/// The first host of a Slurm node list: `node[03-05,9],gpu1` → `node03`, `a,b` → `a`,
/// `rack1-[2-3]-ib` → `rack1-2-ib`.
pub fn first_slurm_host(nodelist: &str) -> Result<String, DistError> {
    let bad = |reason: &str| env_err("SLURM_JOB_NODELIST", nodelist, reason);
    let text = nodelist.trim();
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0i32;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(bad("a `]` without its `[`"));
        }
    }
    let entry = &text[..end];
    let host = match entry.find('[') {
        None => entry.to_owned(),
        Some(open) => {
            let close = entry[open..]
                .find(']')
                .map(|c| open + c)
                .ok_or_else(|| bad("a `[` without its `]`"))?;
            let first = entry[open + 1..close].split(',').next().unwrap_or_default();
            let first = first.split('-').next().unwrap_or_default();
            if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("a bracket range that does not start with a number"));
            }
            format!("{}{first}{}", &entry[..open], &entry[close + 1..])
        }
    };
    if host.is_empty() {
        return Err(bad("no host in the list"));
    }
    Ok(host)
}

/// How [`ProcessGroup::all_reduce`] combines the ranks' values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Σ over ranks.
    Sum,
    /// Σ over ranks / world size.
    Average,
    /// Element-wise maximum.
    Max,
    /// Element-wise minimum.
    Min,
}

mod ffi {
    use std::ffi::{c_char, c_void};
    use torch_sys::C_tensor;

    extern "C" {
        pub(crate) fn panacea_shim_dist_new_gloo(
            addr: *const c_char,
            port: i32,
            rank: i32,
            world: i32,
            store_is_served: i32,
            timeout_ms: i64,
            out: *mut *mut c_void,
        ) -> i32;
        #[cfg(shim_nccl)]
        #[allow(clippy::too_many_arguments)] // the C signature: one plain value each
        pub(crate) fn panacea_shim_dist_new_nccl(
            addr: *const c_char,
            port: i32,
            rank: i32,
            world: i32,
            store_is_served: i32,
            timeout_ms: i64,
            device: i32,
            out: *mut *mut c_void,
        ) -> i32;
        #[cfg(shim_nccl)]
        pub(crate) fn panacea_shim_nccl_versions(headers: *mut i32, library: *mut i32) -> i32;
        pub(crate) fn panacea_shim_dist_free(group: *mut c_void);
        pub(crate) fn panacea_shim_dist_all_reduce(
            group: *mut c_void,
            tensor: *mut C_tensor,
            op: i32,
        ) -> i32;
        pub(crate) fn panacea_shim_dist_broadcast(
            group: *mut c_void,
            tensor: *mut C_tensor,
            root: i32,
        ) -> i32;
        pub(crate) fn panacea_shim_dist_all_gather(
            group: *mut c_void,
            input: *const C_tensor,
            output: *mut C_tensor,
        ) -> i32;
        pub(crate) fn panacea_shim_dist_barrier(group: *mut c_void) -> i32;
    }
}

/// A c10d process group, joined through its store.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut c_void,
    env: DistEnv,
    backend: Backend,
    /// Where the backend takes tensors: the CPU for Gloo, `cuda:LOCAL_RANK` for NCCL.
    device: Device,
}

// SAFETY: the C++ group is a plain heap object; c10d's backends may be driven from any thread,
// and `ProcessGroup` is not `Sync`, so calls never overlap.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// [`ProcessGroup::from_env_for`] a CPU run: Gloo unless `PANACEA_DIST_BACKEND` says
    /// otherwise.
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_env_for(Device::Cpu)
    }

    /// The group the launcher's variables describe ([`DistEnv::from_env`]) for a run on
    /// `device`, or `None` for a single process (no variables, or a world of one): nothing is
    /// started then. The backend is `PANACEA_DIST_BACKEND`'s, else [`Backend::default_for`]
    /// `device`.
    pub fn from_env_for(device: Device) -> Result<Option<Self>, DistError> {
        let Some(env) = DistEnv::from_env()? else { return Ok(None) };
        let backend = env.backend.unwrap_or(Backend::default_for(device));
        Self::join_with(&env, backend, device).map(Some)
    }

    /// Joins the world `env` describes over Gloo (a CPU run).
    pub fn join(env: &DistEnv) -> Result<Self, DistError> {
        Self::join_with(env, Backend::Gloo, Device::Cpu)
    }

    /// Joins the world `env` describes: checks that `backend` can run for `device` (see
    /// [`collective_device`]), then a TCPStore at `master_addr:master_port` (served by rank 0
    /// unless `store_is_served`) and a `backend` group over it. Blocks until every rank has
    /// joined or the timeout passes.
    pub fn join_with(env: &DistEnv, backend: Backend, device: Device) -> Result<Self, DistError> {
        let collective_device = collective_device(backend, device, env.local_rank)?;
        let addr = CString::new(env.master_addr.as_str())
            .map_err(|_| env_err("MASTER_ADDR", &env.master_addr, "contains a NUL byte"))?;
        let to_i32 = |v: usize, var: &'static str| {
            i32::try_from(v).map_err(|_| env_err(var, &v.to_string(), "too large"))
        };
        let timeout_ms = i64::try_from(env.timeout.as_millis()).unwrap_or(i64::MAX);
        let (port, rank, world) = (
            i32::from(env.master_port),
            to_i32(env.rank, "RANK")?,
            to_i32(env.world_size, "WORLD_SIZE")?,
        );
        let served = i32::from(env.store_is_served);
        let mut raw = std::ptr::null_mut();
        let (call, status) = match (backend, collective_device) {
            // SAFETY: `addr` is a NUL-terminated string alive for the call; `raw` receives an
            // owned pointer on success, freed in `Drop`.
            (Backend::Gloo, _) => ("dist_new_gloo", unsafe {
                ffi::panacea_shim_dist_new_gloo(
                    addr.as_ptr(),
                    port,
                    rank,
                    world,
                    served,
                    timeout_ms,
                    &mut raw,
                )
            }),
            #[cfg(shim_nccl)]
            (Backend::Nccl, Device::Cuda(index)) => {
                let index = to_i32(index, "LOCAL_RANK")?;
                // SAFETY: as for Gloo.
                ("dist_new_nccl", unsafe {
                    ffi::panacea_shim_dist_new_nccl(
                        addr.as_ptr(),
                        port,
                        rank,
                        world,
                        served,
                        timeout_ms,
                        index,
                        &mut raw,
                    )
                })
            }
            // `collective_device` refused every other case (a build without NCCL included).
            (Backend::Nccl, other) => {
                return Err(DistError::BackendUnavailable {
                    backend,
                    reason: format!("no NCCL group for {other:?}"),
                })
            }
        };
        check(call, status)?;
        Ok(Self { raw, env: env.clone(), backend, device: collective_device })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.env.world_size
    }

    /// This process on its machine.
    pub fn local_rank(&self) -> usize {
        self.env.local_rank
    }

    /// Whether this is rank 0, the one that writes.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    /// The collective backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The launcher description it was joined with.
    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    /// Where the backend takes tensors: the CPU for Gloo, `cuda:LOCAL_RANK` for NCCL.
    pub fn collective_device(&self) -> Device {
        self.device
    }

    /// This rank's device for a configured `device`: `cuda:LOCAL_RANK` for any CUDA device,
    /// the CPU otherwise. Under NCCL this is the group's own device, where the trainers' model,
    /// and so every tensor they hand to a collective, lives.
    pub fn device_for(&self, device: Device) -> Device {
        match device {
            Device::Cuda(_) => Device::Cuda(self.env.local_rank),
            other => other,
        }
    }

    /// Reduces `tensor` over all ranks in place (every rank ends with the result).
    pub fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<(), DistError> {
        let op = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Average => 1,
            ReduceOp::Max => 2,
            ReduceOp::Min => 3,
        };
        // SAFETY: `raw` is a live group; the tensor pointer is tch's `at::Tensor*`, alive for
        // the borrow. The C++ side writes into the tensor's storage, not the handle.
        let status = unsafe {
            ffi::panacea_shim_dist_all_reduce(self.raw, tensor.as_ptr() as *mut C_tensor, op)
        };
        Ok(check("all_reduce", status)?)
    }

    /// Copies `root`'s `tensor` into every other rank's `tensor` (same shape and kind).
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<(), DistError> {
        let root = i32::try_from(root).map_err(|_| DistError::Usage(format!("root {root}")))?;
        // SAFETY: as in `all_reduce`.
        let status = unsafe {
            ffi::panacea_shim_dist_broadcast(self.raw, tensor.as_ptr() as *mut C_tensor, root)
        };
        Ok(check("broadcast", status)?)
    }

    /// Every rank's `tensor` stacked by rank: [world, ...shape].
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Tensor, DistError> {
        let mut shape = vec![self.world_size() as i64];
        shape.extend(tensor.size());
        let input = tensor.contiguous();
        let output = Tensor::empty(shape.as_slice(), (input.kind(), input.device()));
        // SAFETY: both pointers are live tch tensors for the call.
        let status = unsafe {
            ffi::panacea_shim_dist_all_gather(
                self.raw,
                input.as_ptr(),
                output.as_ptr() as *mut C_tensor,
            )
        };
        check("all_gather", status)?;
        Ok(output)
    }

    /// Waits until every rank has reached this point.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: `raw` is a live group.
        let status = unsafe { ffi::panacea_shim_dist_barrier(self.raw) };
        Ok(check("barrier", status)?)
    }

    /// A host slice as a tensor on the collective device (a copy to the GPU under NCCL, which
    /// cannot read host memory).
    fn to_collective<T: tch::kind::Element>(&self, values: &[T]) -> Tensor {
        Tensor::from_slice(values).to_device(self.device)
    }

    /// [`ProcessGroup::all_reduce`] of a few host numbers (f64, on the collective device).
    pub fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        let t = self.to_collective(values);
        self.all_reduce(&t, op)?;
        let out = Vec::<f64>::try_from(&t.to_device(Device::Cpu))
            .map_err(|e| DistError::Usage(e.to_string()))?;
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Every rank's `values` (the same length on every rank), by rank.
    pub fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>, DistError> {
        let t = self.all_gather(&self.to_collective(values))?; // [world, n]
        Vec::<Vec<f64>>::try_from(&t.to_device(Device::Cpu))
            .map_err(|e| DistError::Usage(e.to_string()))
    }

    /// `root`'s `bytes` on every rank (other ranks' `bytes` are ignored): its length, then the
    /// bytes.
    pub fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>, DistError> {
        let len = self.to_collective(&[bytes.len() as i64]);
        self.broadcast(&len, root)?;
        let n = len.int64_value(&[0]);
        let data = if self.rank() == root {
            self.to_collective(bytes)
        } else {
            Tensor::zeros([n], (Kind::Uint8, self.device))
        };
        if n > 0 {
            self.broadcast(&data, root)?;
        }
        Vec::<u8>::try_from(&data.to_device(Device::Cpu))
            .map_err(|e| DistError::Usage(e.to_string()))
    }
}

/// Where `backend` takes tensors for a run on `device` by the rank with `local_rank`, or why it
/// cannot run in this process. Gloo runs anywhere (on the CPU); NCCL needs a CUDA device, a
/// build with NCCL, a visible GPU and one GPU for each rank on the machine.
pub fn collective_device(
    backend: Backend,
    device: Device,
    local_rank: usize,
) -> Result<Device, DistError> {
    let unavailable = |reason: String| DistError::BackendUnavailable { backend, reason };
    match backend {
        Backend::Gloo => Ok(Device::Cpu),
        Backend::Nccl => {
            if !matches!(device, Device::Cuda(_)) {
                return Err(unavailable(format!(
                    "NCCL runs on CUDA devices only, and this run's device is {device:?}; \
                     hint: train with --device cuda, or set PANACEA_DIST_BACKEND=gloo"
                )));
            }
            if !crate::built_with_nccl() {
                return Err(unavailable(format!(
                    "panacea-shim was built without NCCL ({}); hint: run `cargo xtask setup`, \
                     which installs CCCL's headers into the project's torch venv, then rebuild \
                     (or set PANACEA_DIST_BACKEND=gloo)",
                    crate::nccl_build_note()
                )));
            }
            if !tch::Cuda::is_available() {
                return Err(unavailable(
                    "this process sees no CUDA device; hint: check the driver and \
                     CUDA_VISIBLE_DEVICES, or set PANACEA_DIST_BACKEND=gloo"
                        .to_owned(),
                ));
            }
            let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if local_rank >= count {
                return Err(unavailable(format!(
                    "LOCAL_RANK={local_rank} needs cuda:{local_rank}, but this process sees \
                     {count} CUDA device(s), and NCCL runs one rank per GPU; hint: start at most \
                     {count} rank(s) per machine (torchrun --nproc-per-node {count})"
                )));
            }
            Ok(Device::Cuda(local_rank))
        }
    }
}

/// The NCCL version of the headers the shim was compiled with and of the library libtorch
/// loaded, each (major, minor, patch). A disagreement means the build and the run see different
/// NCCLs. Needs no GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NcclVersions {
    /// From `nccl.h` at build time.
    pub headers: (u32, u32, u32),
    /// From the loaded `libnccl` (`ncclGetVersion`).
    pub library: (u32, u32, u32),
}

/// [`NcclVersions`] of this build; `NotAvailable` when it has no NCCL.
pub fn nccl_versions() -> Result<NcclVersions, ShimError> {
    #[cfg(shim_nccl)]
    {
        let (mut headers, mut library) = (0i32, 0i32);
        // SAFETY: two valid i32 out-pointers.
        let status = unsafe { ffi::panacea_shim_nccl_versions(&mut headers, &mut library) };
        check("nccl_versions", status)?;
        let split = |v: i32| {
            let v = v.max(0) as u32;
            (v / 10000, v / 100 % 100, v % 100)
        };
        Ok(NcclVersions { headers: split(headers), library: split(library) })
    }
    #[cfg(not(shim_nccl))]
    Err(ShimError::NotAvailable {
        what: "NCCL",
        why: format!(
            "panacea-shim was built without NCCL ({}); hint: `cargo xtask setup`, then rebuild",
            crate::nccl_build_note()
        ),
    })
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `panacea_shim_dist_new_gloo` or `_nccl` and is freed once.
        unsafe { ffi::panacea_shim_dist_free(self.raw) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<DistEnv>, DistError> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn loopback_launch_vars_read_back_as_that_rank() {
        let vars = loopback_launch_vars(1, 2, 29611);
        let env = parse(&vars.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
            .expect("valid")
            .expect("a world of 2");
        assert_eq!((env.rank, env.world_size, env.local_rank), (1, 2, 1));
        assert_eq!((env.master_addr.as_str(), env.master_port), ("127.0.0.1", 29611));
        assert_eq!(env.launcher, Launcher::Torch);
    }

    #[test]
    fn no_variables_or_a_world_of_one_is_single_process() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        assert_eq!(parse(&[("SLURM_NTASKS", "1"), ("SLURM_PROCID", "0")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let env = parse(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.7"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("PANACEA_DIST_TIMEOUT_S", "20"),
            // Slurm's names lose to torchrun's.
            ("SLURM_NTASKS", "8"),
            ("SLURM_PROCID", "5"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            env,
            DistEnv {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                master_addr: "10.0.0.7".into(),
                master_port: 29400,
                store_is_served: true,
                timeout: Duration::from_secs(20),
                launcher: Launcher::Torch,
                backend: None,
            }
        );
    }

    #[test]
    fn slurm_variables_map_to_rank_world_and_the_first_node() {
        let env = parse(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[017-020,031],login1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((env.rank, env.world_size, env.local_rank), (5, 8, 1));
        assert_eq!((env.master_addr.as_str(), env.master_port), ("gpu017", DEFAULT_PORT));
        assert!(!env.store_is_served);
        assert_eq!(env.timeout, DEFAULT_TIMEOUT);
        assert_eq!(env.launcher, Launcher::Slurm);
        // MASTER_ADDR / MASTER_PORT, when exported in the batch script, win.
        let env = parse(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "a,b"),
            ("MASTER_ADDR", "head"),
            ("MASTER_PORT", "1234"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((env.master_addr.as_str(), env.master_port), ("head", 1234));
    }

    #[test]
    fn slurm_node_lists_give_their_first_host() {
        for (list, first) in [
            ("node1", "node1"),
            ("node1,node2", "node1"),
            ("node[03-05,9],gpu1", "node03"),
            ("gpu[7]", "gpu7"),
            ("rack1-[2-3]-ib,x", "rack1-2-ib"),
            (" a[10-11] ", "a10"),
        ] {
            assert_eq!(first_slurm_host(list).unwrap(), first, "{list}");
        }
        for bad in ["", "node[", "node]1", "node[x-y]", "[]"] {
            let err = first_slurm_host(bad).unwrap_err().to_string();
            assert!(err.contains("SLURM_JOB_NODELIST"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 8] = [
            (&[("WORLD_SIZE", "two")], "WORLD_SIZE=\"two\""),
            (&[("WORLD_SIZE", "0")], "WORLD_SIZE=\"0\""),
            (&[("WORLD_SIZE", "2")], "RANK=\"\""),
            (&[("WORLD_SIZE", "2"), ("RANK", "2")], "RANK=\"2\": must be below WORLD_SIZE=2"),
            (&[("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "-1")], "LOCAL_RANK=\"-1\""),
            (&[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "1")], "MASTER_ADDR"),
            (
                &[
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT=\"70000\"",
            ),
            (
                &[
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "1"),
                    ("PANACEA_DIST_TIMEOUT_S", "0"),
                ],
                "PANACEA_DIST_TIMEOUT_S=\"0\"",
            ),
        ];
        for (vars, expected) in cases {
            let err = parse(vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{vars:?}: {err}");
        }
    }
}
