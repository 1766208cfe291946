//! Compiles every `csrc/*.cpp` into one static library against the libtorch that torch-sys linked.
//!
//! libtorch is found the way torch-sys finds it: the `LIBTORCH` folder, else the library folder
//! torch-sys exports (`DEP_TCH_LIBTORCH_LIB`, its parent is the libtorch root). The PyPI wheel's
//! layout puts the CUDA runtime headers beside it in `site-packages/nvidia/cu13/include`, and
//! `crt/host_config.h`, which that folder lacks, in `site-packages/triton/backends/nvidia/include`.
//! When libtorch_cuda and those headers are present the CUDA parts are compiled in
//! (`PANACEA_SHIM_CUDA`); otherwise they report "built without CUDA" at run time.
//!
//! c10d's NCCL group (`csrc/dist_nccl.cpp`) needs two more header sets in that site-packages:
//! `nccl.h` from the wheel's `nvidia/nccl/include`, and CCCL's `nv/target` (the CUDA 13 headers
//! include it), which the wheel lacks and `cargo xtask setup` installs (PyPI `nvidia-cuda-cccl`,
//! under `nvidia/cu13/include/cccl`). With CUDA and both present the file is compiled with
//! `USE_C10D_NCCL` (ProcessGroupNCCL.hpp hides its class without it), `PANACEA_SHIM_NCCL` is
//! defined for every file, and Rust sees `cfg(shim_nccl)`; otherwise the file is left out and
//! NCCL reports "built without NCCL". `PANACEA_SHIM_NCCL=0` leaves it out even then (to check
//! that build, or to skip the file's ~30 s of compiling).
use std::path::{Path, PathBuf};

fn main() {
    for var in ["LIBTORCH", "DEP_TCH_LIBTORCH_LIB", "PANACEA_SHIM_NCCL"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=vendor");

    let torch = torch_root();
    let lib = torch.join("lib");
    let site_packages = torch.parent().map(Path::to_path_buf).unwrap_or_default();

    let mut sources: Vec<PathBuf> = std::fs::read_dir("csrc")
        .expect("csrc/ is part of the crate")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cpp"))
        .filter(|p| !p.ends_with(NCCL_SOURCE))
        .collect();
    sources.sort();

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .include("csrc")
        // c10d's Gloo process group (csrc/dist.cpp) is declared behind USE_C10D_GLOO and
        // includes Gloo's headers, which the wheel lacks: vendor/gloo (see its README).
        .define("USE_C10D_GLOO", None)
        .include("vendor/gloo")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"));

    let cuda_include = site_packages.join("nvidia/cu13/include");
    let crt_include = site_packages.join("triton/backends/nvidia/include");
    let cuda_lib = site_packages.join("nvidia/cu13/lib");
    let cuda = lib.join("libtorch_cuda.so").exists()
        && cuda_include.join("cuda_runtime_api.h").exists()
        && crt_include.join("crt/host_config.h").exists()
        && cuda_lib.join("libcudart.so.13").exists();
    if cuda {
        build.define("PANACEA_SHIM_CUDA", "1").include(&cuda_include).include(&crt_include);
    }
    let nccl_include = site_packages.join("nvidia/nccl/include");
    // `cargo xtask setup` adds CCCL's headers under cuda_include after a first build: watching
    // the folder (Cargo scans it for newer files) picks NCCL up without a `cargo clean`. Only
    // folders that exist are watched; a missing path would rerun this script on every build.
    for dir in [&cuda_include, &nccl_include] {
        if dir.is_dir() {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    let cccl_include = CCCL_INCLUDE_DIRS
        .iter()
        .map(|dir| site_packages.join(dir))
        .find(|dir| dir.join("nv/target").is_file());
    let nccl_wanted = std::env::var("PANACEA_SHIM_NCCL").map_or(true, |v| v.trim() != "0");
    let nccl = match &cccl_include {
        Some(cccl) if cuda && nccl_wanted && nccl_include.join("nccl.h").is_file() => {
            build.define("PANACEA_SHIM_NCCL", "1");
            Some(cccl.clone())
        }
        _ => None,
    };
    if let Some(cccl) = &nccl {
        // One more file with its own flags: USE_C10D_NCCL and the two include folders stay out
        // of the other files, which must not depend on them.
        let mut nccl_build = build.clone();
        nccl_build
            .define("USE_C10D_NCCL", None)
            .include(&nccl_include)
            .include(cccl)
            .file(Path::new("csrc").join(NCCL_SOURCE));
        // Its objects join the one static library with the other files'.
        build.objects(nccl_build.compile_intermediates());
    }
    build.files(&sources).compile("panacea_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if cuda {
        println!("cargo:rustc-link-search=native={}", cuda_lib.display());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda_lib.display());
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib:+verbatim=libcudart.so.13");
    }
    println!("cargo:rustc-check-cfg=cfg(shim_cuda)");
    if cuda {
        println!("cargo:rustc-cfg=shim_cuda");
    }
    println!("cargo:rustc-check-cfg=cfg(shim_nccl)");
    if nccl.is_some() {
        println!("cargo:rustc-cfg=shim_nccl");
    }
    // What was found, for `panacea_shim::nccl_build_note` and the test that the compiled-in
    // code agrees with it.
    let note = match (&nccl, cuda, nccl_wanted, &cccl_include) {
        (Some(_), ..) => "compiled in".to_owned(),
        (None, false, ..) => "left out: libtorch_cuda or the CUDA headers are missing".to_owned(),
        (None, true, false, _) => "left out: PANACEA_SHIM_NCCL=0".to_owned(),
        (None, true, true, None) => format!(
            "left out: CCCL's nv/target is not under {} in {}",
            CCCL_INCLUDE_DIRS.join(" or "),
            site_packages.display()
        ),
        (None, true, true, Some(_)) => {
            format!("left out: {} is missing", nccl_include.join("nccl.h").display())
        }
    };
    println!("cargo:rustc-env=PANACEA_SHIM_NCCL_BUILD={note}");
}

/// The NCCL process group's source, compiled only when its headers are found.
const NCCL_SOURCE: &str = "dist_nccl.cpp";

/// Where CCCL's headers may sit, relative to site-packages: nvidia-cuda-cccl 13.0 installs them
/// under `cccl/` and a copy of `nv/` beside the CUDA headers. Keep in step with
/// `CCCL_INCLUDE_DIRS` in xtask/src/libtorch.rs, which installs the package.
const CCCL_INCLUDE_DIRS: &[&str] = &["nvidia/cu13/include/cccl", "nvidia/cu13/include"];

fn torch_root() -> PathBuf {
    if let Some(root) = std::env::var_os("LIBTORCH").filter(|v| !v.is_empty()) {
        return PathBuf::from(root);
    }
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        if let Some(root) = Path::new(&lib).parent() {
            return root.to_path_buf();
        }
    }
    panic!(
        "panacea-shim: libtorch not found (hint: build through `cargo xtask`, which sets LIBTORCH, \
         or set LIBTORCH to the torch folder holding include/ and lib/)"
    );
}
