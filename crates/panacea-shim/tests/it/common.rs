//! The shim and tch agree on libtorch: same version, same tensor layout.

use tch::{Device, Kind, Tensor};

#[test]
fn the_shim_was_compiled_against_the_linked_libtorch() {
    // torch-sys pins libtorch 2.11.0 (workspace Cargo.toml); a shim compiled against other
    // headers would disagree on class layouts.
    assert_eq!(panacea_shim::torch_version(), (2, 11, 0));
}

#[test]
fn tch_tensors_cross_into_the_shim() {
    let t = Tensor::zeros([3, 5, 7], (Kind::Float, Device::Cpu));
    assert_eq!(panacea_shim::tensor_numel(&t).unwrap(), 105);
    let view = t.narrow(1, 1, 2);
    assert_eq!(panacea_shim::tensor_numel(&view).unwrap(), 42);
}

#[test]
fn a_cpp_exception_becomes_an_error_with_its_message() {
    // An undefined tensor fails a TORCH_CHECK, which throws a c10::Error in C++.
    let undefined = Tensor::new();
    let err = panacea_shim::tensor_numel(&undefined).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("tensor_numel: "), "{text}");
    assert!(text.contains("undefined"), "{text}");
}
