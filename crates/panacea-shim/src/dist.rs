//! Data-parallel training on c10d, PyTorch's distributed engine: a `TCPStore` rendezvous and a
//! Gloo process group (`csrc/dist.cpp`), launched the way every PyTorch job is.
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
//! | `GLOO_SOCKET_IFNAME` | network interface Gloo binds (default: the host name's address) | — |
//!
//! The torchrun names win when `WORLD_SIZE` is set; otherwise the Slurm names apply when
//! `SLURM_NTASKS` and `SLURM_PROCID` are set (start one task per process with `srun`). No
//! variables, or a world of one, is `None`: today's single-process path, no store, no sockets.
//!
//! **Collectives** are synchronous and bounded by the timeout. A peer that dies closes its
//! sockets, so the others fail at their next collective (or when the timeout passes) with an
//! error naming their rank and the world size; nothing hangs.
//!
//! **Backend.** Gloo. PyTorch documents Gloo's all-reduce and broadcast for CUDA tensors too
//! (not yet exercised here: no GPU in the tests). NCCL is not compiled in yet: its headers need
//! CCCL's, which the torch wheel does not ship.

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
}

/// The collective backend of a [`ProcessGroup`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Gloo over TCP.
    Gloo,
}

impl Backend {
    /// The name PyTorch uses (`gloo`), as recorded in run manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gloo => "gloo",
        }
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
    /// Number of processes (> 1).
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
        if world_size == 1 {
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

/// A c10d process group of more than one rank, joined through its store.
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut c_void,
    env: DistEnv,
    backend: Backend,
}

// SAFETY: the C++ group is a plain heap object; c10d's backends may be driven from any thread,
// and `ProcessGroup` is not `Sync`, so calls never overlap.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// The group the launcher's variables describe ([`DistEnv::from_env`]), or `None` for a
    /// single process (no variables, or a world of one): nothing is started then.
    pub fn from_env() -> Result<Option<Self>, DistError> {
        DistEnv::from_env()?.map(|env| Self::join(&env)).transpose()
    }

    /// Joins the world `env` describes: a TCPStore at `master_addr:master_port` (served by
    /// rank 0 unless `store_is_served`), then a Gloo group over it. Blocks until every rank has
    /// joined or the timeout passes.
    pub fn join(env: &DistEnv) -> Result<Self, DistError> {
        let addr = CString::new(env.master_addr.as_str())
            .map_err(|_| env_err("MASTER_ADDR", &env.master_addr, "contains a NUL byte"))?;
        let to_i32 = |v: usize, var: &'static str| {
            i32::try_from(v).map_err(|_| env_err(var, &v.to_string(), "too large"))
        };
        let timeout_ms = i64::try_from(env.timeout.as_millis()).unwrap_or(i64::MAX);
        let mut raw = std::ptr::null_mut();
        // SAFETY: `addr` is a NUL-terminated string alive for the call; `raw` receives an owned
        // pointer on success, freed in `Drop`.
        let status = unsafe {
            ffi::panacea_shim_dist_new_gloo(
                addr.as_ptr(),
                i32::from(env.master_port),
                to_i32(env.rank, "RANK")?,
                to_i32(env.world_size, "WORLD_SIZE")?,
                i32::from(env.store_is_served),
                timeout_ms,
                &mut raw,
            )
        };
        check("dist_new_gloo", status)?;
        Ok(Self { raw, env: env.clone(), backend: Backend::Gloo })
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

    /// This rank's device for a configured `device`: `cuda:LOCAL_RANK` for any CUDA device,
    /// the CPU otherwise.
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

    /// [`ProcessGroup::all_reduce`] of a few host numbers (f64 on the CPU).
    pub fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<(), DistError> {
        let t = Tensor::from_slice(values);
        self.all_reduce(&t, op)?;
        let out = Vec::<f64>::try_from(&t).map_err(|e| DistError::Usage(e.to_string()))?;
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Every rank's `values` (the same length on every rank), by rank.
    pub fn all_gather_f64(&self, values: &[f64]) -> Result<Vec<Vec<f64>>, DistError> {
        let t = self.all_gather(&Tensor::from_slice(values))?; // [world, n]
        Vec::<Vec<f64>>::try_from(&t).map_err(|e| DistError::Usage(e.to_string()))
    }

    /// `root`'s `bytes` on every rank (other ranks' `bytes` are ignored): its length, then the
    /// bytes.
    pub fn broadcast_bytes(&self, bytes: &[u8], root: usize) -> Result<Vec<u8>, DistError> {
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        self.broadcast(&len, root)?;
        let n = len.int64_value(&[0]);
        let data = if self.rank() == root {
            Tensor::from_slice(bytes)
        } else {
            Tensor::zeros([n], (Kind::Uint8, Device::Cpu))
        };
        if n > 0 {
            self.broadcast(&data, root)?;
        }
        Vec::<u8>::try_from(&data).map_err(|e| DistError::Usage(e.to_string()))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `panacea_shim_dist_new_gloo` and is freed once.
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
