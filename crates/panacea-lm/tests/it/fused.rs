//! `Llama::fuse_projections`: the fused q/k/v and gate/up buffers compute the
//! same logits as the per-projection layout (full forward, KV-cache decoding, batched greedy
//! generation, with q/k/v biases, with an adapter on), keep the variables' names, shapes and
//! values, and fall back safely once a dtype conversion replaces the variables.

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::{generate_ids, init_random, Adapter, CausalLm, GenerateConfig, KvCache, Llama};
use panacea_lm::{LlamaConfig, Sampling};
use rand::SeedableRng;
use tch::{nn, Device, Kind, Tensor};

use crate::common::{max_abs_diff, setup};

/// The same random weights twice: (plain, fused).
fn pair(cfg: &LlamaConfig, seed: i64) -> ((nn::VarStore, Llama), (nn::VarStore, Llama)) {
    setup();
    let mk = || {
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Llama::new(&vs.root(), None, cfg);
        init_random(&vs, seed);
        (vs, m)
    };
    let plain = mk();
    let (fvs, mut fused) = mk();
    fused.fuse_projections();
    assert!(fused.is_fused() && !plain.1.is_fused());
    (plain, (fvs, fused))
}

fn batch() -> (Tensor, Tensor) {
    let x = Tensor::from_slice(&[11i64, 12, 13, 14, 15, 16, 2, 2, 30, 31, 32, 33]).view([2, 6]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]).view([2, 6]);
    (x, mask)
}

#[test]
fn fused_projections_keep_names_shapes_and_values() {
    let ((pvs, _), (fvs, fused)) = pair(&LlamaConfig::tiny(), 21);
    let (pv, fv) = (pvs.variables(), fvs.variables());
    assert_eq!(pv.len(), fv.len());
    for (name, p) in &pv {
        let f = &fv[name];
        assert_eq!(p.size(), f.size(), "{name}");
        assert!(p.equal(f), "{name} changed value");
    }
    // q/k/v really are views of one buffer: k starts where q ends (rows of [Σ d_out, D] where
    // the small-M decode kernel runs, columns of [D, Σ d_out] elsewhere).
    let a = &fused.layers[0].self_attn;
    let (q_out, d_in) = (a.q_proj.weight.size()[0], a.q_proj.weight.size()[1]);
    let rows = panacea_core::small_gemm::kernel_active(Device::Cpu);
    let elt = 4; // f32
    let q_len = if rows { q_out * d_in } else { q_out };
    assert_eq!(
        a.k_proj.weight.data_ptr() as usize,
        a.q_proj.weight.data_ptr() as usize + (q_len * elt) as usize
    );
    assert_eq!(
        a.q_proj.weight.stride(),
        if rows { [d_in, 1] } else { [1, q_out + 2 * a.k_proj.weight.size()[0]] }
    );
}

#[test]
fn fused_logits_equal_unfused_logits() {
    for cfg in [LlamaConfig::tiny(), LlamaConfig { attention_bias: true, ..LlamaConfig::tiny() }] {
        let ((pvs, plain), (_fvs, fused)) = pair(&cfg, 22);
        if cfg.attention_bias {
            // init_random leaves nothing at zero, but make sure the biases matter.
            assert!(pvs.variables().contains_key("model.layers.0.self_attn.q_proj.bias"));
        }
        let (x, mask) = batch();
        let a = tch::no_grad(|| plain.logits(&x, &mask, Adapter::Off));
        let b = tch::no_grad(|| fused.logits(&x, &mask, Adapter::Off));
        let d = max_abs_diff(&a, &b);
        assert!(d < 1e-5, "bias {}: max |unfused − fused| = {d}", cfg.attention_bias);

        // Cached decoding on the fused model equals the unfused full forward.
        let mut cache = KvCache::new(&fused, 2, 6);
        let mut parts = Vec::new();
        tch::no_grad(|| {
            let h = fused.forward_cached(
                &x.narrow(1, 0, 3),
                &mask.narrow(1, 0, 3),
                &mut cache,
                Adapter::Off,
            );
            parts.push(fused.lm_head(&h.expect("prefill")));
            for t in 3..6 {
                let h = fused.forward_cached(
                    &x.narrow(1, t, 1),
                    &mask.narrow(1, 0, t + 1),
                    &mut cache,
                    Adapter::Off,
                );
                parts.push(fused.lm_head(&h.expect("step")));
            }
        });
        let cached = Tensor::cat(&parts, 1);
        let d0 = max_abs_diff(&a.get(0), &cached.get(0));
        let d1 = max_abs_diff(&a.get(1).narrow(0, 2, 4), &cached.get(1).narrow(0, 2, 4));
        assert!(d0 < 1e-5 && d1 < 1e-5, "max |unfused full − fused cached| = {d0}, {d1}");
    }
}

#[test]
fn fused_greedy_generation_equals_unfused() {
    let ((_pvs, plain), (_fvs, fused)) = pair(&LlamaConfig::tiny(), 23);
    let prompts = vec![vec![5i64, 6, 7, 8, 9], vec![40, 41], vec![7; 3]];
    let cfg = GenerateConfig {
        max_new_tokens: 8,
        sampling: Sampling::Greedy,
        eos_ids: Vec::new(),
        pad_id: 2,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let a = generate_ids(&plain, &prompts, Adapter::Off, &cfg, &mut rng).expect("plain");
    let b = generate_ids(&fused, &prompts, Adapter::Off, &cfg, &mut rng).expect("fused");
    assert!(a.response_ids.equal(&b.response_ids));
    assert!(max_abs_diff(&a.logprobs, &b.logprobs) < 1e-5);
}

#[test]
fn fused_base_with_adapter_on_equals_unfused() {
    // Every projection adapted (all per-projection paths), and only q/v adapted (the gate/up
    // group has no adapter term, so its fused GEMM runs under Adapter::On).
    let partial = SvdLoraConfig {
        target_modules: vec!["q_proj".to_owned(), "v_proj".to_owned()],
        ..SvdLoraConfig::new(2)
    };
    for acfg in [SvdLoraConfig::new(2), partial] {
        adapter_on_case(&acfg);
    }
}

fn adapter_on_case(acfg: &SvdLoraConfig) {
    let ((_pvs, plain), (_fvs, fused)) = pair(&LlamaConfig::tiny(), 24);
    // The same adapter values on both views.
    let (avs_p, avs_f) = (nn::VarStore::new(Device::Cpu), nn::VarStore::new(Device::Cpu));
    let vp = plain.with_adapter(Some((&avs_p.root(), acfg)));
    let vf = fused.with_adapter(Some((&avs_f.root(), acfg)));
    init_random(&avs_p, 5);
    init_random(&avs_f, 5);
    assert!(vf.is_fused(), "the view shares the fused buffers");
    let (x, mask) = batch();
    let prefs = Tensor::from_slice(&[0.8f32, 0.2, 0.1, 0.9]).view([2, 2]);
    let on = Adapter::On { pref: &prefs };
    let a = tch::no_grad(|| vp.logits(&x, &mask, on));
    let b = tch::no_grad(|| vf.logits(&x, &mask, on));
    let base = tch::no_grad(|| fused.logits(&x, &mask, Adapter::Off));
    assert!(max_abs_diff(&a, &base) > 1e-3, "the adapter must change the output");
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-5, "adapter on: max |unfused − fused| = {d}");
    // Gradients still reach the adapter through the fused base's views.
    let loss = vf.logits(&x, &mask, on).square().mean(Kind::Float);
    loss.backward();
    let grads: f64 = avs_f
        .trainable_variables()
        .iter()
        .map(|v| f64::try_from(v.grad().abs().sum(Kind::Double)).unwrap_or(0.0))
        .sum();
    assert!(grads > 0.0);
}

#[test]
fn a_dtype_conversion_falls_back_and_fusing_again_is_exact() {
    let ((mut pvs, plain), (mut fvs, mut fused)) = pair(&LlamaConfig::tiny(), 25);
    pvs.double();
    fvs.double();
    // The variables were replaced: the stale f32 buffers must not be used.
    assert!(!fused.is_fused());
    let (x, mask) = batch();
    let a = tch::no_grad(|| plain.logits(&x, &mask, Adapter::Off));
    let b = tch::no_grad(|| fused.logits(&x, &mask, Adapter::Off));
    assert!(max_abs_diff(&a, &b) < 1e-9, "fallback must be the per-projection path");
    fused.fuse_projections();
    assert!(fused.is_fused());
    let c = tch::no_grad(|| fused.logits(&x, &mask, Adapter::Off));
    assert!(max_abs_diff(&a, &c) < 1e-9);
}
