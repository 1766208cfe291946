//! Embeds libtorch's library folder as an rpath so this package's tests find libtorch when
//! started directly from target/, without LD_LIBRARY_PATH. torch-sys (links = "tch") exports
//! the folder it linked against as DEP_TCH_LIBTORCH_LIB to packages that depend on it directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
