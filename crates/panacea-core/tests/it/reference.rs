//! Parity with the PyTorch reference: `scripts/svd_lora_reference.py` computes the layer's
//! forward, its gradients, ΔW(λ) and grouped LS/Tchebycheff loss aggregation in float64 and
//! writes `tests/fixtures/svd_lora_reference.json`; these tests recompute them here.

use panacea_core::adapter::{Adapter, SvdLoraConfig, SvdLoraLinear};
use panacea_core::aggregation::Aggregation;
use serde_json::Value;
use tch::{nn, Device, Kind, Tensor};

use crate::setup;

/// The fixture version this test understands (`VERSION` in the script).
const FIXTURE_VERSION: u64 = 1;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/svd_lora_reference.json");
    let text = std::fs::read_to_string(path).expect("fixture exists");
    let v: Value = serde_json::from_str(&text).expect("fixture is JSON");
    assert_eq!(
        v["version"].as_u64(),
        Some(FIXTURE_VERSION),
        "stale fixture {path}; regenerate with `python3 scripts/svd_lora_reference.py`"
    );
    v
}

fn tensor(v: &Value, shape: &[i64]) -> Tensor {
    let values: Vec<f64> =
        v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect();
    Tensor::from_slice(&values).view(shape)
}

#[track_caller]
fn assert_close(got: &Tensor, want: &Tensor, tol: f64) {
    assert_eq!(got.size(), want.size());
    let diff = (got - want).abs().max().double_value(&[]);
    assert!(diff < tol, "max |diff| = {diff}");
}

#[test]
fn layer_matches_pytorch_reference() {
    setup();
    let f = fixture();
    let c = &f["layer"];
    let n = |k: &str| c[k].as_i64().expect("int");
    let (d_in, d_out, k, m) = (n("d_in"), n("d_out"), n("rank"), n("n_objectives"));
    let r = k + m;
    let cfg = SvdLoraConfig {
        rank: k,
        alpha: c["alpha"].as_f64().expect("alpha"),
        n_objectives: m,
        ..SvdLoraConfig::new(m)
    };
    let mut base = nn::VarStore::new(Device::Cpu);
    let mut adapter = nn::VarStore::new(Device::Cpu);
    let layer = SvdLoraLinear::new(
        &(base.root() / "proj"),
        Some((&(adapter.root() / "proj"), &cfg)),
        d_in,
        d_out,
        true,
    );
    base.double();
    adapter.double();
    let lora = layer.lora.as_ref().expect("adapted");
    tch::no_grad(|| {
        for (dst, key, shape) in [
            (&layer.weight, "weight", vec![d_out, d_in]),
            (layer.bias.as_ref().expect("bias"), "bias", vec![d_out]),
            (&lora.u, "u", vec![d_out, r]),
            (&lora.v, "v", vec![d_in, r]),
            (&lora.sigma, "sigma", vec![k]),
            (&lora.pref_scale, "pref_scale", vec![1]),
        ] {
            dst.shallow_clone().copy_(&tensor(&c[key], &shape));
        }
    });
    let x_shape: Vec<i64> =
        c["x_shape"].as_array().expect("shape").iter().map(|v| v.as_i64().expect("int")).collect();
    let x = tensor(&c["x"], &x_shape); // [2, 3, d_in]
    let g = tensor(&c["grad_out"], &[x_shape[0], x_shape[1], d_out]);
    let pref_rows = tensor(&c["pref_rows"], &[2, m]);
    let y = layer.forward(&x, Adapter::On { pref: &pref_rows });
    assert_close(&y, &tensor(&c["y"], &[x_shape[0], x_shape[1], d_out]), 1e-12);
    (y * g).sum(Kind::Double).backward();
    assert_close(&lora.u.grad(), &tensor(&c["grad_u"], &[d_out, r]), 1e-12);
    assert_close(&lora.v.grad(), &tensor(&c["grad_v"], &[d_in, r]), 1e-12);
    assert_close(&lora.sigma.grad(), &tensor(&c["grad_sigma"], &[k]), 1e-12);
    assert_close(&lora.pref_scale.grad(), &tensor(&c["grad_pref_scale"], &[1]), 1e-12);
    let pref = tensor(&c["pref"], &[m]);
    let delta = tch::no_grad(|| lora.delta_weight(&pref));
    assert_close(&delta, &tensor(&c["delta_w"], &[d_out, d_in]), 1e-12);
}

#[test]
fn aggregation_matches_pytorch_reference() {
    setup();
    let f = fixture();
    let a = &f["aggregation"];
    let mask = tensor(&a["mask"], &[6, 3]);
    let prefs = tensor(&a["prefs"], &[6, 3]);
    for (agg, key) in
        [(Aggregation::Linear, "linear"), (Aggregation::tchebycheff_zero(3), "tchebycheff")]
    {
        let losses = tensor(&a["losses"], &[6, 3]).set_requires_grad(true);
        let loss = agg.aggregate_losses(&losses, &mask, &prefs).expect("shapes");
        let want = a[key].as_f64().expect("number");
        assert!((loss.double_value(&[]) - want).abs() < 1e-6, "{key}: {loss} vs {want}");
        loss.backward();
        assert_close(&losses.grad(), &tensor(&a[&format!("{key}_grad")], &[6, 3]), 1e-6);
    }
}
