//! Compiles every `csrc/*.cpp` into one static library against the libtorch that torch-sys linked.
//!
//! libtorch is found the way torch-sys finds it: the `LIBTORCH` folder, else the library folder
//! torch-sys exports (`DEP_TCH_LIBTORCH_LIB`, its parent is the libtorch root). The PyPI wheel's
//! layout puts the CUDA runtime headers beside it in `site-packages/nvidia/cu13/include`, and
//! `crt/host_config.h`, which that folder lacks, in `site-packages/triton/backends/nvidia/include`.
//! When libtorch_cuda and those headers are present the CUDA parts are compiled in
//! (`PANACEA_SHIM_CUDA`); otherwise they report "built without CUDA" at run time.
use std::path::{Path, PathBuf};

fn main() {
    for var in ["LIBTORCH", "DEP_TCH_LIBTORCH_LIB"] {
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
        .include(torch.join("include/torch/csrc/api/include"))
        .files(&sources);

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
    build.compile("panacea_shim");

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
}

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
