//! Backend choice and c10d's NCCL group. On the CPU: the choice and its refusals, the parsing of
//! `PANACEA_DIST_BACKEND`, a group of one, and whether NCCL was compiled in as the build script
//! says (with the NCCL of the headers equal to the library's). On a GPU machine: a world of one
//! all-reduces over NCCL.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use panacea_shim::dist::{
    collective_device, loopback_launch_vars, nccl_versions, Backend, DistEnv, DistError,
    ProcessGroup, ReduceOp,
};
use panacea_shim::{built_with_nccl, nccl_build_note, ShimError};
use tch::{Device, Kind, Tensor};

fn parse(vars: &[(&str, &str)]) -> Result<Option<DistEnv>, DistError> {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    DistEnv::from_vars(|k| map.get(k).map(|v| (*v).to_owned()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[test]
fn the_backend_follows_the_device_unless_named() {
    assert_eq!(Backend::default_for(Device::Cpu), Backend::Gloo);
    assert_eq!(Backend::default_for(Device::Cuda(3)), Backend::Nccl);
    for backend in [Backend::Gloo, Backend::Nccl] {
        assert_eq!(Backend::from_name(backend.name()), Some(backend));
    }
    assert_eq!(Backend::from_name(" NCCL "), Some(Backend::Nccl));
    assert_eq!(Backend::from_name("mpi"), None);
    let env = parse(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
        ("PANACEA_DIST_BACKEND", "gloo"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(env.backend, Some(Backend::Gloo));
}

#[test]
fn a_bad_backend_name_is_an_error_naming_the_variable_and_value() {
    // Even without launcher variables: a typo must not pass silently.
    for vars in [
        &[("PANACEA_DIST_BACKEND", "mpi")][..],
        &[("PANACEA_DIST_BACKEND", "mpi"), ("WORLD_SIZE", "2"), ("RANK", "0")][..],
    ] {
        let err = parse(vars).unwrap_err();
        assert!(matches!(err, DistError::Env { var: "PANACEA_DIST_BACKEND", .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("PANACEA_DIST_BACKEND=\"mpi\""), "{text}");
        assert!(text.contains("`gloo` or `nccl`"), "{text}");
    }
}

#[test]
fn a_world_of_one_is_a_group_only_when_a_backend_is_named() {
    let one = [("WORLD_SIZE", "1"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "7")];
    assert_eq!(parse(&one).unwrap(), None);
    let mut named = one.to_vec();
    named.push(("PANACEA_DIST_BACKEND", "nccl"));
    let env = parse(&named).unwrap().expect("a group of one");
    assert_eq!((env.rank, env.world_size, env.backend), (0, 1, Some(Backend::Nccl)));
    // No launcher at all stays the single-process path.
    assert_eq!(parse(&[("PANACEA_DIST_BACKEND", "nccl")]).unwrap(), None);
}

#[test]
fn nccl_on_the_cpu_is_refused_with_its_reason_before_any_connection() {
    let err = collective_device(Backend::Nccl, Device::Cpu, 0).unwrap_err();
    let DistError::BackendUnavailable { backend: Backend::Nccl, reason } = &err else {
        panic!("{err}")
    };
    assert!(reason.contains("NCCL runs on CUDA devices only"), "{reason}");
    assert!(reason.contains("PANACEA_DIST_BACKEND=gloo"), "{reason}");
    assert!(err.to_string().starts_with("the nccl backend cannot run here: "), "{err}");
    assert_eq!(collective_device(Backend::Gloo, Device::Cpu, 0).unwrap(), Device::Cpu);

    // Rank 1 of 2 would wait for a store nobody serves; the refusal must come first, at once.
    let port = free_port().to_string();
    let env = parse(&[
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", &port),
        ("PANACEA_DIST_TIMEOUT_S", "30"),
    ])
    .unwrap()
    .unwrap();
    let start = Instant::now();
    let err = ProcessGroup::join_with(&env, Backend::Nccl, Device::Cpu).unwrap_err();
    assert!(matches!(err, DistError::BackendUnavailable { .. }), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn built_with_nccl_agrees_with_the_build_script_and_the_library() {
    let note = nccl_build_note();
    // build.rs compiled dist_nccl.cpp exactly when it says "compiled in"; the C side reports
    // whether PANACEA_SHIM_NCCL was defined, the Rust side whether cfg(shim_nccl) was set.
    assert_eq!(built_with_nccl(), note == "compiled in", "build script: {note}");
    assert_eq!(built_with_nccl(), cfg!(shim_nccl), "build script: {note}");
    if built_with_nccl() {
        // Calls into libtorch_cuda (c10d::getNcclVersionTuple, then libnccl's ncclGetVersion):
        // a missing symbol or a library other than the headers' fails here.
        let v = nccl_versions().expect("the NCCL library answers without a GPU");
        eprintln!("NCCL compiled in: {v:?}");
        assert!(v.headers.0 >= 2, "{v:?}");
        assert_eq!((v.headers.0, v.headers.1), (v.library.0, v.library.1), "{v:?}");
    } else {
        assert!(note.starts_with("left out: "), "{note}");
        let err = nccl_versions().unwrap_err();
        assert!(matches!(err, ShimError::NotAvailable { what: "NCCL", .. }), "{err}");
        // Where CUDA runs, the refusal names the build and the fix.
        let err = collective_device(Backend::Nccl, Device::Cuda(0), 0).unwrap_err().to_string();
        assert!(err.contains("built without NCCL") && err.contains("cargo xtask setup"), "{err}");
    }
}

/// A group of one, started by `PANACEA_DIST_BACKEND=gloo` alone, runs every collective: the
/// path a one-GPU NCCL check takes, here on the CPU. In a child process, whose environment
/// carries the launcher's variables (Gloo reads GLOO_SOCKET_IFNAME from it).
#[test]
fn a_named_backend_makes_a_world_of_one_a_group() {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "nccl::alone_rank_checks_collectives", "--ignored", "--nocapture"])
        .envs(loopback_launch_vars(0, 1, free_port()))
        .env("PANACEA_DIST_BACKEND", "gloo")
        .env("PANACEA_DIST_TIMEOUT_S", "60")
        .output()
        .expect("child runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

/// Checks every collective in a group of one on `device`: each leaves the values as they were
/// (Σ and mean over one rank are the rank's own), host helpers included.
fn check_group_of_one(pg: &ProcessGroup, device: Device) {
    assert_eq!((pg.rank(), pg.world_size()), (0, 1));
    let values = [1.5f32, -2.0, 3.25];
    let host = |t: &Tensor| Vec::<f32>::try_from(t.to_device(Device::Cpu)).expect("f32");
    for op in [ReduceOp::Sum, ReduceOp::Average, ReduceOp::Max, ReduceOp::Min] {
        let t = Tensor::from_slice(&values).to_device(device);
        pg.all_reduce(&t, op).expect("all_reduce");
        assert_eq!(host(&t), values, "{op:?}");
    }
    // 0 + 1 + … + (n − 1) = n(n − 1)/2, summed in f64 (exact: every term is an exact f32).
    let n = 1i64 << 16;
    let t = Tensor::arange(n, (Kind::Float, device));
    pg.broadcast(&t, 0).expect("broadcast");
    assert_eq!(t.sum(Kind::Double).double_value(&[]), (n * (n - 1) / 2) as f64);
    let gathered = pg.all_gather(&Tensor::from_slice(&values).to_device(device)).expect("gather");
    assert_eq!(gathered.size(), [1, 3]);
    assert_eq!(host(&gathered.squeeze_dim(0)), values);
    let mut v = [0.25, 7.0];
    pg.all_reduce_f64(&mut v, ReduceOp::Sum).expect("f64");
    assert_eq!(v, [0.25, 7.0]);
    assert_eq!(pg.all_gather_f64(&[4.0, 5.0]).expect("f64 gather"), [[4.0, 5.0]]);
    assert_eq!(pg.broadcast_bytes(b"runs/x", 0).expect("bytes"), b"runs/x");
    pg.barrier().expect("barrier");
}

/// The child of [`a_named_backend_makes_a_world_of_one_a_group`].
#[test]
#[ignore = "run as a child process by a_named_backend_makes_a_world_of_one_a_group"]
fn alone_rank_checks_collectives() {
    let pg = ProcessGroup::from_env().expect("joins").expect("a group of one");
    assert_eq!(pg.backend(), Backend::Gloo);
    check_group_of_one(&pg, Device::Cpu);
}

/// On a machine with a GPU and a build with NCCL: a world of one over NCCL on cuda:0, every
/// collective and the host helpers (which must move their values to the GPU and back).
#[test]
fn a_world_of_one_runs_collectives_over_nccl_on_a_gpu() {
    if let Err(why) = collective_device(Backend::Nccl, Device::Cuda(0), 0) {
        eprintln!("skipped: {why}");
        return;
    }
    let port = free_port().to_string();
    let env = parse(&[
        ("WORLD_SIZE", "1"),
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", &port),
        ("PANACEA_DIST_BACKEND", "nccl"),
        ("PANACEA_DIST_TIMEOUT_S", "60"),
    ])
    .unwrap()
    .unwrap();
    let pg = ProcessGroup::join_with(&env, Backend::Nccl, Device::Cuda(0)).expect("joins");
    assert_eq!((pg.backend().name(), pg.collective_device()), ("nccl", Device::Cuda(0)));
    check_group_of_one(&pg, Device::Cuda(0));
}
