//! Embeds libtorch's library folder as an rpath so this package's tests find libtorch when
//! started directly from target/, without LD_LIBRARY_PATH. torch-sys (links = "tch") exports
//! the folder it linked against as DEP_TCH_LIBTORCH_LIB to packages that depend on it directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // The wheel's CUDA runtime (site-packages/nvidia/cu13/lib), which panacea-shim's graph
        // code links where it was built with CUDA: without it a binary that reaches that code
        // would not start.
        let cuda_lib = std::path::Path::new(&lib).join("../../nvidia/cu13/lib");
        if cuda_lib.join("libcudart.so.13").exists() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda_lib.display());
        }
    }
}
