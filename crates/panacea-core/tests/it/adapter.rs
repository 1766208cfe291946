//! The SVD-LoRA layer: gradients, the zero-diagonal start, per-row λ, the fused forward,
//! merge/unmerge and weight-decay groups.

use panacea_core::adapter::{
    adapter_variables, count_parameters, Adapter, SvdLoraConfig, SvdLoraLinear, NO_DECAY_GROUP,
};
use panacea_core::config::{Validate, Validator};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::setup;

/// One adapted layer with a random base (W0, b0 ~ N(0, 0.5²)), its two VarStores, in `kind`.
struct Layer {
    base_vs: nn::VarStore,
    adapter_vs: nn::VarStore,
    layer: SvdLoraLinear,
}

fn cfg(k: i64, m: i64, alpha: f64) -> SvdLoraConfig {
    SvdLoraConfig { rank: k, alpha, n_objectives: m, ..SvdLoraConfig::new(m) }
}

fn layer(cfg: &SvdLoraConfig, d_in: i64, d_out: i64, kind: Kind) -> Layer {
    let mut base_vs = nn::VarStore::new(Device::Cpu);
    let mut adapter_vs = nn::VarStore::new(Device::Cpu);
    let layer = SvdLoraLinear::new(
        &(base_vs.root() / "proj"),
        Some((&(adapter_vs.root() / "proj"), cfg)),
        d_in,
        d_out,
        true,
    );
    tch::no_grad(|| {
        for (_, mut t) in base_vs.variables() {
            t.copy_(&(t.randn_like() * 0.5));
        }
    });
    if kind == Kind::Double {
        base_vs.double();
        adapter_vs.double();
    }
    Layer { base_vs, adapter_vs, layer }
}

/// Gives σ and s non-zero values (the state after some training).
fn randomise_diagonal(l: &Layer) {
    let lora = l.layer.lora.as_ref().expect("adapted");
    tch::no_grad(|| {
        let mut sigma = lora.sigma.shallow_clone();
        sigma.copy_(&(sigma.randn_like() * 0.7));
        let mut s = lora.pref_scale.shallow_clone();
        s.copy_(&Tensor::from_slice(&[1.3]).to_kind(s.kind()));
    });
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn trainable_parameter_count_matches_method_formula() {
    setup();
    // docs/method.md, §2.2: (d_in + d_out)·R + k + 1 per matrix.
    let c = cfg(8, 2, 512.0);
    let l = layer(&c, 24, 40, Kind::Float);
    let vars = adapter_variables(&l.adapter_vs);
    assert_eq!(count_parameters(&vars), (24 + 40) * 10 + 8 + 1);
    assert_eq!(c.params_per_matrix(24, 40), (24 + 40) * 10 + 8 + 1);
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["proj.svd_lora_pref_scale", "proj.svd_lora_sigma", "proj.svd_lora_u", "proj.svd_lora_v"]
    );
    // The base store holds only frozen tensors.
    assert!(l.base_vs.trainable_variables().is_empty());
    assert_eq!(l.adapter_vs.trainable_variables().len(), 4);
}

#[test]
fn config_validation_lists_every_problem() {
    let bad = SvdLoraConfig {
        rank: 0,
        alpha: -1.0,
        n_objectives: 0,
        target_modules: vec![],
        init_std: 0.0,
    };
    let mut v = Validator::new();
    bad.validate(&mut v);
    let keys: Vec<&str> = v.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["rank", "n_objectives", "alpha", "init_std", "target_modules"]);
    let mut v = Validator::new();
    SvdLoraConfig::new(2).validate(&mut v);
    assert!(v.problems().is_empty());
}

#[test]
fn adapted_equals_base_at_init_for_every_preference() {
    setup();
    // σ = 0 and s = 0 at init, so ΔW = 0 and the output must equal the base bit for bit.
    let c = SvdLoraConfig::new(3); // c = 64: a large scale must still add exact zeros
    let l = layer(&c, 16, 12, Kind::Float);
    let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
    let base = l.layer.forward(&x, Adapter::Off);
    for pref in [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.3, 0.5], [1.0 / 3.0; 3]] {
        let p = Tensor::from_slice(&pref).to_kind(Kind::Float);
        let y = l.layer.forward(&x, Adapter::On { pref: &p });
        assert!(y.equal(&base), "λ = {pref:?}: adapted differs from base at init");
        let y_ref = l.layer.forward_reference(&x, Adapter::On { pref: &p });
        assert!(y_ref.equal(&base));
    }
    let rows = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.1, 0.1, 0.8]).view([2, 3]);
    assert!(l.layer.forward(&x, Adapter::On { pref: &rows }).equal(&base));
}

#[test]
fn only_the_diagonal_gets_gradient_at_init() {
    setup();
    // docs/method.md, §2.3: with d = 0 the gradients of U and V are exactly zero; σ and s are not.
    let c = cfg(4, 2, 8.0);
    let l = layer(&c, 10, 6, Kind::Float);
    let x = Tensor::randn([3, 4, 10], (Kind::Float, Device::Cpu));
    let p = Tensor::from_slice(&[0.6f32, 0.4]);
    let loss = l.layer.forward(&x, Adapter::On { pref: &p }).square().sum(Kind::Float);
    loss.backward();
    let lora = l.layer.lora.as_ref().expect("adapted");
    assert_eq!(lora.u.grad().abs().max().double_value(&[]), 0.0);
    assert_eq!(lora.v.grad().abs().max().double_value(&[]), 0.0);
    assert!(lora.sigma.grad().abs().max().double_value(&[]) > 0.0);
    assert!(lora.pref_scale.grad().abs().max().double_value(&[]) > 0.0);
}

/// Central finite differences of `loss` with respect to a few entries of `param`, compared with
/// the analytic gradient, in f64.
fn check_grad(name: &str, param: &Tensor, loss: &dyn Fn() -> Tensor) {
    let analytic = param.grad().copy();
    let n = param.numel() as i64;
    let flat_len = n.min(6);
    let eps = 1e-6;
    for j in 0..flat_len {
        let idx = (j * 7919) % n; // spread the probes over the tensor
        let mut flat = param.detach().view([-1]);
        let orig = flat.double_value(&[idx]);
        let eval_at = |v: f64, flat: &mut Tensor| {
            tch::no_grad(|| {
                let _ = flat.get(idx).fill_(v);
            });
            tch::no_grad(loss).double_value(&[])
        };
        let plus = eval_at(orig + eps, &mut flat);
        let minus = eval_at(orig - eps, &mut flat);
        tch::no_grad(|| {
            let _ = flat.get(idx).fill_(orig);
        });
        let numeric = (plus - minus) / (2.0 * eps);
        let got = analytic.view([-1]).double_value(&[idx]);
        let tol = 1e-6 * (1.0 + numeric.abs());
        assert!((numeric - got).abs() < tol, "{name}[{idx}]: numeric {numeric}, analytic {got}");
    }
}

#[test]
fn finite_difference_gradients_match_in_f64() {
    setup();
    let c = cfg(3, 2, 6.0);
    let l = layer(&c, 7, 5, Kind::Double);
    randomise_diagonal(&l);
    let x = Tensor::randn([2, 3, 7], (Kind::Double, Device::Cpu));
    let g = Tensor::randn([2, 3, 5], (Kind::Double, Device::Cpu));
    // Mixed-λ batch: the per-row path is checked too.
    let pref = Tensor::from_slice(&[0.3f64, 0.7, 1.0, 0.0]).view([2, 2]);
    let loss = || (l.layer.forward(&x, Adapter::On { pref: &pref }) * &g).sum(Kind::Double);
    loss().backward();
    let lora = l.layer.lora.as_ref().expect("adapted");
    check_grad("U", &lora.u, &loss);
    check_grad("V", &lora.v, &loss);
    check_grad("sigma", &lora.sigma, &loss);
    check_grad("s", &lora.pref_scale, &loss);
    // λ is an argument, not a variable: it never requires grad, gets none, and is not in the
    // adapter store.
    assert!(!pref.requires_grad());
    assert!(!pref.grad().defined());
    assert!(adapter_variables(&l.adapter_vs).iter().all(|(n, _)| !n.contains("pref_diag")));
    // The frozen base gets no gradient either.
    assert!(!l.layer.weight.requires_grad());
}

#[test]
fn fused_forward_matches_reference_formula() {
    setup();
    let c = cfg(4, 3, 16.0);
    let l = layer(&c, 12, 9, Kind::Double);
    randomise_diagonal(&l);
    let x = Tensor::randn([3, 4, 12], (Kind::Double, Device::Cpu));
    let single = Tensor::from_slice(&[0.2f64, 0.5, 0.3]);
    let rows = Tensor::from_slice(&[0.2f64, 0.5, 0.3, 1.0, 0.0, 0.0, 0.0, 0.1, 0.9]).view([3, 3]);
    for pref in [&single, &rows] {
        let fused = l.layer.forward(&x, Adapter::On { pref });
        let reference = l.layer.forward_reference(&x, Adapter::On { pref });
        assert!(max_abs_diff(&fused, &reference) < 1e-12);
    }
    // 2-D input [N, d_in] with per-row λ.
    let x2 = Tensor::randn([3, 12], (Kind::Double, Device::Cpu));
    let fused = l.layer.forward(&x2, Adapter::On { pref: &rows });
    let reference = l.layer.forward_reference(&x2, Adapter::On { pref: &rows });
    assert!(max_abs_diff(&fused, &reference) < 1e-12);
}

#[test]
fn per_row_preferences_equal_separate_runs() {
    setup();
    let c = cfg(4, 2, 8.0);
    let l = layer(&c, 10, 8, Kind::Double);
    randomise_diagonal(&l);
    let x = Tensor::randn([3, 5, 10], (Kind::Double, Device::Cpu));
    let prefs = [[1.0, 0.0], [0.25, 0.75], [0.5, 0.5]];
    let flat: Vec<f64> = prefs.iter().flatten().copied().collect();
    let rows = Tensor::from_slice(&flat).view([3, 2]);
    let mixed = l.layer.forward(&x, Adapter::On { pref: &rows }); // [3, 5, 8]
    for (b, pref) in prefs.iter().enumerate() {
        let p = Tensor::from_slice(pref);
        let alone = l.layer.forward(&x.narrow(0, b as i64, 1), Adapter::On { pref: &p });
        let diff = max_abs_diff(&mixed.narrow(0, b as i64, 1), &alone);
        assert!(diff < 1e-12, "row {b}: {diff}");
    }
}

#[test]
fn merged_equals_unmerged_and_never_drifts() {
    setup();
    let c = cfg(8, 2, 64.0);
    let mut l = layer(&c, 32, 24, Kind::Float);
    randomise_diagonal(&l);
    let x = Tensor::randn([2, 6, 32], (Kind::Float, Device::Cpu));
    let w0 = l.layer.weight.copy();
    let pref = Tensor::from_slice(&[0.7f32, 0.3]);
    let other = Tensor::from_slice(&[0.1f32, 0.9]);
    let _guard = tch::no_grad_guard();
    let unmerged = l.layer.forward(&x, Adapter::On { pref: &pref });
    let base = l.layer.forward(&x, Adapter::Off);
    l.layer.merge(&pref).expect("merge");
    assert!(l.layer.is_merged());
    let merged = l.layer.forward(&x, Adapter::On { pref: &pref });
    let diff = max_abs_diff(&merged, &unmerged);
    assert!(diff < 1e-5, "merged vs unmerged: {diff}");
    // A copy of λ (another tensor, same values) also hits the cache.
    let merged_copy = l.layer.forward(&x, Adapter::On { pref: &pref.copy() });
    assert!(merged_copy.equal(&merged));
    // Adapter::Off is still the base while merged.
    assert!(l.layer.forward(&x, Adapter::Off).equal(&base));
    // Another λ while merged falls back to the exact unmerged path.
    l.layer.unmerge();
    let other_unmerged = l.layer.forward(&x, Adapter::On { pref: &other });
    l.layer.merge(&pref).expect("merge");
    assert!(l.layer.forward(&x, Adapter::On { pref: &other }).equal(&other_unmerged));
    l.layer.unmerge();
    // 100 merge/unmerge cycles at changing λ: W0 is untouched and outputs are unchanged.
    for i in 0..100 {
        let p = if i % 2 == 0 { &pref } else { &other };
        l.layer.merge(p).expect("merge");
        l.layer.unmerge();
    }
    assert!(l.layer.weight.equal(&w0), "W0 drifted");
    assert!(l.layer.forward(&x, Adapter::On { pref: &pref }).equal(&unmerged));
    l.layer.merge(&pref).expect("merge");
    assert!(l.layer.forward(&x, Adapter::On { pref: &pref }).equal(&merged));
}

#[test]
fn prepared_factors_give_the_unprepared_output_exactly_and_only_for_that_tensor() {
    setup();
    let c = cfg(6, 2, 16.0);
    let mut l = layer(&c, 20, 12, Kind::Float);
    randomise_diagonal(&l);
    let x = Tensor::randn([3, 5, 20], (Kind::Float, Device::Cpu));
    let rows = Tensor::from_slice(&[0.9f32, 0.1, 0.5, 0.5, 0.2, 0.8]).view([3, 2]);
    let shared = Tensor::from_slice(&[0.3f32, 0.7]);
    for pref in [&rows, &shared] {
        let _guard = tch::no_grad_guard();
        let want = l.layer.forward(&x, Adapter::On { pref });
        l.layer.prepare(pref).expect("prepare");
        assert!(l.layer.is_prepared());
        assert!(l.layer.forward(&x, Adapter::On { pref }).equal(&want), "prepared ≠ unprepared");
        // The factors are a snapshot: after σ changes, the prepared path still gives the old
        // output (proving it was taken), while another tensor with the same values recomputes.
        let sigma = l.layer.lora.as_ref().expect("adapted").sigma.shallow_clone();
        let old_sigma = sigma.copy();
        let _ = sigma.shallow_clone().g_add_scalar_(0.5);
        assert!(l.layer.forward(&x, Adapter::On { pref }).equal(&want));
        let fresh = l.layer.forward(&x, Adapter::On { pref: &pref.copy() });
        assert!(
            max_abs_diff(&fresh, &want) > 1e-3,
            "a copy of λ must not hit the prepared factors"
        );
        l.layer.unprepare();
        assert!(l.layer.forward(&x, Adapter::On { pref }).equal(&fresh));
        sigma.shallow_clone().copy_(&old_sigma);
    }
    // Grad mode ignores prepared factors: the adapter still gets its gradient.
    l.layer.prepare(&rows).expect("prepare");
    let u = l.layer.lora.as_ref().expect("adapted").u.shallow_clone();
    l.layer.forward(&x, Adapter::On { pref: &rows }).sum(Kind::Float).backward();
    assert!(u.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    let wrong_k = Tensor::from_slice(&[0.2f32, 0.3, 0.5]);
    assert!(l.layer.prepare(&wrong_k).is_err());
}

#[test]
fn merge_rejects_mixed_preference_batches() {
    setup();
    let c = cfg(4, 2, 8.0);
    let mut l = layer(&c, 6, 6, Kind::Float);
    let rows = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
    let err = l.layer.merge(&rows).expect_err("[B, K] cannot be merged");
    assert!(err.to_string().contains("mixed-λ"), "{err}");
    let wrong_k = Tensor::from_slice(&[0.2f32, 0.3, 0.5]);
    assert!(l.layer.merge(&wrong_k).is_err());
    assert!(!l.layer.is_merged());
}

#[test]
fn training_while_merged_still_gets_exact_gradients() {
    setup();
    // A merged layer under grad mode takes the unmerged path, so forgetting to unmerge before
    // a training step cannot silently drop the adapter's gradient.
    let c = cfg(4, 2, 8.0);
    let mut l = layer(&c, 8, 8, Kind::Float);
    randomise_diagonal(&l);
    let x = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu));
    let pref = Tensor::from_slice(&[0.4f32, 0.6]);
    let lora_u = l.layer.lora.as_ref().expect("adapted").u.shallow_clone();
    l.layer.forward(&x, Adapter::On { pref: &pref }).sum(Kind::Float).backward();
    let want = lora_u.grad().copy();
    let mut u_grad = lora_u.grad();
    let _ = u_grad.zero_();
    l.layer.merge(&pref).expect("merge");
    l.layer.forward(&x, Adapter::On { pref: &pref }).sum(Kind::Float).backward();
    assert!(lora_u.grad().equal(&want));
}

#[test]
fn sigma_and_scale_are_excluded_from_weight_decay() {
    setup();
    let c = cfg(4, 2, 8.0);
    let l = layer(&c, 6, 5, Kind::Float);
    randomise_diagonal(&l);
    let lora = l.layer.lora.as_ref().expect("adapted");
    let (u0, sigma0, s0) = (lora.u.copy(), lora.sigma.copy(), lora.pref_scale.copy());
    let mut opt =
        nn::Sgd { wd: 0.5, ..Default::default() }.build(&l.adapter_vs, 0.1).expect("optimiser");
    opt.set_weight_decay_group(NO_DECAY_GROUP, 0.0);
    // A zero loss: every change comes from weight decay alone.
    let x = Tensor::randn([2, 6], (Kind::Float, Device::Cpu));
    let pref = Tensor::from_slice(&[0.5f32, 0.5]);
    let loss = l.layer.forward(&x, Adapter::On { pref: &pref }).sum(Kind::Float) * 0.0;
    opt.backward_step(&loss);
    assert!(lora.sigma.equal(&sigma0), "σ was decayed");
    assert!(lora.pref_scale.equal(&s0), "s was decayed");
    // U ← U − lr·wd·U = 0.95·U.
    assert!(max_abs_diff(&lora.u, &(u0 * 0.95)) < 1e-7, "U should be decayed");
}

#[test]
fn adapter_master_weights_stay_f32_under_a_bf16_base() {
    setup();
    let c = cfg(4, 2, 8.0);
    let mut l = layer(&c, 16, 8, Kind::Float);
    randomise_diagonal(&l);
    l.base_vs.bfloat16();
    let x = Tensor::randn([2, 3, 16], (Kind::BFloat16, Device::Cpu));
    let pref = Tensor::from_slice(&[0.3f32, 0.7]);
    let y = l.layer.forward(&x, Adapter::On { pref: &pref });
    assert_eq!(y.kind(), Kind::BFloat16);
    y.to_kind(Kind::Float).sum(Kind::Float).backward();
    let lora = l.layer.lora.as_ref().expect("adapted");
    for (name, t) in adapter_variables(&l.adapter_vs) {
        assert_eq!(t.kind(), Kind::Float, "{name} must stay f32");
    }
    assert_eq!(lora.u.grad().kind(), Kind::Float);
    // The bf16 result agrees with the f32 formula to bf16 precision.
    let x32 = x.to_kind(Kind::Float);
    let bias32 = l.layer.bias.as_ref().map(|b| b.to_kind(Kind::Float));
    let want = tch::no_grad(|| {
        x32.linear(&l.layer.weight.to_kind(Kind::Float), bias32.as_ref())
            + lora.forward(&x32, &pref)
    });
    let y32 = y.to_kind(Kind::Float);
    let rel =
        (&y32 - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]).max(1e-6);
    assert!(rel < 3e-2, "bf16 vs f32: relative {rel}");
    // Merging a bf16 base rounds once from W0 and keeps W0 untouched.
    let w0 = l.layer.weight.copy();
    tch::no_grad(|| l.layer.merge(&pref)).expect("merge");
    l.layer.unmerge();
    assert!(l.layer.weight.equal(&w0));
}

/// The shared and preference strengths, by hand: one adapted [3, 2] matrix with k = 1 shared
/// value and m = 1 objective, c = α/k = 2. Column norms ‖u_0‖ = 5 (3, 4, 0), ‖v_0‖ = 1, ‖u_1‖ = 2,
/// ‖v_1‖ = 3; σ = −0.5, s = 0.25: shared 2·0.5·5·1 = 5, preference 2·0.25·2·3 = 3. The gradient
/// share of the preference part is its squared gradient norm over the total.
#[test]
fn adapter_stats_measure_shared_and_preference_terms() {
    use panacea_core::adapter_stats::{preference_gradient_share, AdapterStats};
    setup();
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = SvdLoraConfig { rank: 1, alpha: 2.0, ..SvdLoraConfig::new(1) };
    let mut lora = panacea_core::adapter::SvdLora::new(&vs.root().sub("layer"), &cfg, 2, 3);
    tch::no_grad(|| {
        lora.u.copy_(&Tensor::from_slice(&[3.0f32, 0.0, 4.0, 2.0, 0.0, 0.0]).view([3, 2]));
        lora.v.copy_(&Tensor::from_slice(&[1.0f32, 0.0, 0.0, 3.0]).view([2, 2]));
        lora.sigma.copy_(&Tensor::from_slice(&[-0.5f32]));
        lora.pref_scale.copy_(&Tensor::from_slice(&[0.25f32]));
    });
    let stats = AdapterStats::of(&vs, 1, cfg.scale());
    assert_eq!(stats.matrices, 1);
    assert!((stats.shared_strength - 5.0).abs() < 1e-6, "{stats:?}");
    assert!((stats.preference_strength - 3.0).abs() < 1e-6, "{stats:?}");
    assert!((stats.sigma_abs - 0.5).abs() < 1e-7 && (stats.pref_scale_abs - 0.25).abs() < 1e-7);
    // No gradients yet: share 0. Then a loss on the preference column of U alone:
    // d/du_{0,1} of 3·u_{0,1} is 3, nothing else has a gradient → share 1.
    assert_eq!(preference_gradient_share(&vs, 1), 0.0);
    (lora.u.get(0).get(1) * 3.0).backward();
    assert!((preference_gradient_share(&vs, 1) - 1.0).abs() < 1e-12);
    // Add a shared gradient of the same size on σ: 9 / (9 + 9) = 0.5.
    (lora.sigma.get(0) * 3.0).backward();
    assert!((preference_gradient_share(&vs, 1) - 0.5).abs() < 1e-12);
}
