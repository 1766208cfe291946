//! CUDA graphs: replaying a capture recomputes from the static inputs; without CUDA the
//! capture says why and runs nothing.

use panacea_shim::graph::{unavailable_reason, CudaGraph};
use panacea_shim::ShimError;
use tch::{Device, Kind, Tensor};

#[test]
fn capture_on_the_cpu_is_not_available_and_runs_nothing() {
    let mut ran = false;
    let err = CudaGraph::capture(Device::Cpu, None, || ran = true).unwrap_err();
    assert!(!ran, "the body must not run when there is nothing to capture on");
    let ShimError::NotAvailable { why, .. } = &err else { panic!("{err}") };
    assert!(why.contains("need a CUDA device"), "{why}");
    assert!(unavailable_reason(Device::Cpu).is_some());
}

/// On a machine with CUDA: y = 2·x + 1 captured once, then x overwritten in place and the
/// graph replayed twice; y follows x each time (hand-computed values).
#[test]
fn a_replayed_graph_recomputes_from_its_static_input() {
    let device = Device::Cuda(0);
    if let Some(why) = unavailable_reason(device) {
        eprintln!("skipped: {why}");
        return;
    }
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(device);
    let _ = (&x * 2.0 + 1.0).sum(Kind::Float).double_value(&[]); // eager warm-up
    let (graph, y) = CudaGraph::capture(device, None, || &x * 2.0 + 1.0).expect("capture");
    for values in [[5.0f32, 6.0, 7.0], [-1.0, 0.0, 0.5]] {
        x.shallow_clone().copy_(&Tensor::from_slice(&values).to_device(device));
        graph.replay().expect("replay");
        let got: Vec<f32> = Vec::try_from(y.to_device(Device::Cpu)).expect("f32");
        let want: Vec<f32> = values.iter().map(|v| 2.0 * v + 1.0).collect();
        assert_eq!(got, want);
    }
}
