//! Embeds libtorch's library folder, and the wheel's CUDA runtime beside it, as rpaths, as every
//! binary of the workspace does, so the program finds them when started directly: torch-sys
//! (links = "tch") exports the folder it linked against as DEP_TCH_LIBTORCH_LIB to packages that
//! depend on it directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // The wheel's CUDA runtime (site-packages/nvidia/cu13/lib): panacea-shim links it where
        // it was built with CUDA (graphs, NCCL), and the program would not start without it.
        let cuda_lib = std::path::Path::new(&lib).join("../../nvidia/cu13/lib");
        if cuda_lib.join("libcudart.so.13").exists() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda_lib.display());
        }
    }
}
