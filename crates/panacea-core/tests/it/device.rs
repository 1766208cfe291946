//! The libtorch start-up hook.

use panacea_core::device::{init_torch, DeviceChoice};
use tch::{Device, Kind, Tensor};

#[test]
fn init_torch_is_harmless_without_cuda() {
    let first = init_torch().clone();
    // Idempotent: a second call returns the same record and loads nothing twice.
    assert_eq!(&first, init_torch());
    // Tensor ops still work on the CPU afterwards.
    let x = Tensor::arange(4, (Kind::Float, Device::Cpu));
    assert_eq!(x.sum(Kind::Float).double_value(&[]), 6.0);
    if !first.cuda_library_loaded {
        // A CPU machine: the failure was recorded with the loader's message, and CUDA is off.
        assert!(first.cuda_load_error.as_deref().is_some_and(|m| m.contains("libtorch_cuda")));
        assert!(!tch::Cuda::is_available());
    }
    // `auto` never fails: it falls back to the CPU when CUDA is absent.
    let auto = DeviceChoice::Auto.resolve().expect("auto resolves");
    assert_eq!(auto == Device::Cpu, !tch::Cuda::is_available());
    if !tch::Cuda::is_available() {
        let err = DeviceChoice::Cuda(0).resolve().expect_err("no CUDA here");
        assert!(err.to_string().contains("--device cpu"), "{err}");
    }
}
