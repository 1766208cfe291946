//! Structural tests of the Llama forward on a tiny random-init model: KV-cache decoding equals
//! a full re-forward, left padding changes nothing, the adapter view shares the base.

use panacea_core::adapter::SvdLoraConfig;
use panacea_lm::{Adapter, CausalLm, KvCache};
use tch::{nn, Device, Kind, Tensor};

use crate::common::{max_abs_diff, tiny};

fn ids(rows: &[&[i64]]) -> Tensor {
    let t = rows[0].len() as i64;
    let flat: Vec<i64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, t])
}

#[test]
fn logits_have_the_expected_shape_and_are_finite() {
    let (_vs, model) = tiny(0);
    let x = ids(&[&[5, 6, 7], &[8, 9, 10]]);
    let logits = model.logits(&x, &x.ones_like(), Adapter::Off);
    assert_eq!(logits.size(), [2, 3, 49_152]);
    assert_eq!(logits.kind(), Kind::Float);
    assert!(bool::try_from(logits.isfinite().all()).unwrap_or(false));
}

#[test]
fn kv_cache_decoding_equals_full_forward() {
    let (_vs, model) = tiny(2);
    // Row 1 is left-padded by 3 so the cache path also sees padding.
    let x =
        ids(&[&[11, 12, 13, 14, 15, 16, 17, 18, 19, 20], &[2, 2, 2, 30, 31, 32, 33, 34, 35, 36]]);
    let mask = ids(&[&[1; 10], &[0, 0, 0, 1, 1, 1, 1, 1, 1, 1]]);
    let full = tch::no_grad(|| model.logits(&x, &mask, Adapter::Off)); // [2, 10, V]
    let mut cache = KvCache::new(&model, 2, 10);
    let mut parts = Vec::new();
    tch::no_grad(|| {
        // A 4-token prefill, then one token at a time.
        let h = model.forward_cached(
            &x.narrow(1, 0, 4),
            &mask.narrow(1, 0, 4),
            &mut cache,
            Adapter::Off,
        );
        parts.push(model.lm_head(&h.expect("prefill")));
        for t in 4..10 {
            let h = model.forward_cached(
                &x.narrow(1, t, 1),
                &mask.narrow(1, 0, t + 1),
                &mut cache,
                Adapter::Off,
            );
            parts.push(model.lm_head(&h.expect("step")));
        }
    });
    let cached = Tensor::cat(&parts, 1); // [2, 10, V]

    // Compare the real (unpadded) positions: row 0 all, row 1 from position 3.
    let d0 = max_abs_diff(&full.get(0), &cached.get(0));
    let d1 = max_abs_diff(&full.get(1).narrow(0, 3, 7), &cached.get(1).narrow(0, 3, 7));
    assert!(d0 < 1e-4 && d1 < 1e-4, "max |full − cached| = {d0}, {d1}");
    assert_eq!(cache.len(), 10);
}

#[test]
fn unpadded_cache_path_equals_full_forward_for_prefill_chunks_and_single_tokens() {
    // The mask-free path: prefill (SDPA is_causal), a 3-token chunk over a filled cache (an
    // explicit causal mask) and single tokens (no mask at all) must all match the full forward.
    let (_vs, model) = tiny(5);
    let x = ids(&[
        &[11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
        &[30, 31, 32, 33, 34, 35, 36, 37, 38, 39],
    ]);
    let full = tch::no_grad(|| model.logits(&x, &x.ones_like(), Adapter::Off)); // [2, 10, V]
    let mut cache = KvCache::new(&model, 2, 10);
    let mut parts = Vec::new();
    tch::no_grad(|| {
        for (start, len) in [(0, 3), (3, 3), (6, 1), (7, 1), (8, 1), (9, 1)] {
            let h =
                model.forward_cached_unpadded(&x.narrow(1, start, len), &mut cache, Adapter::Off);
            parts.push(model.lm_head(&h.expect("cached step")));
        }
    });
    let d = max_abs_diff(&full, &Tensor::cat(&parts, 1));
    assert!(d < 1e-4, "max |full − unpadded cached| = {d}");
    let mut small = KvCache::new(&model, 2, 2);
    assert!(model.forward_cached_unpadded(&x.narrow(1, 0, 3), &mut small, Adapter::Off).is_err());
}

#[test]
fn kv_cache_rejects_overflow_and_bad_masks() {
    let (_vs, model) = tiny(3);
    let mut cache = KvCache::new(&model, 1, 4);
    let x = ids(&[&[1, 2, 3, 4, 5]]);
    assert!(model.forward_cached(&x, &x.ones_like(), &mut cache, Adapter::Off).is_err());
    let x = ids(&[&[1, 2]]);
    let bad_mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
    assert!(model.forward_cached(&x, &bad_mask, &mut cache, Adapter::Off).is_err());
}

#[test]
fn left_padding_does_not_change_a_rows_logits() {
    let (_vs, model) = tiny(4);
    let alone = ids(&[&[40, 41, 42, 43, 44]]);
    let padded = ids(&[&[2, 2, 2, 2, 40, 41, 42, 43, 44]]);
    let mask = ids(&[&[0, 0, 0, 0, 1, 1, 1, 1, 1]]);
    let a = tch::no_grad(|| model.logits(&alone, &alone.ones_like(), Adapter::Off));
    let b = tch::no_grad(|| model.logits(&padded, &mask, Adapter::Off)).narrow(1, 4, 5);
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-4, "max |alone − padded| = {d}");
}

#[test]
fn second_adapter_view_shares_the_base_and_starts_equal() {
    let (vs, model) = tiny(1);
    let avs = nn::VarStore::new(Device::Cpu);
    let cfg = SvdLoraConfig::new(2);
    let view = model.with_adapter(Some((&avs.root(), &cfg)));
    // Same storage: no second copy of the weights.
    assert_eq!(model.embed_tokens.data_ptr(), view.embed_tokens.data_ptr());
    assert_eq!(
        model.layers[1].mlp.down_proj.weight.data_ptr(),
        view.layers[1].mlp.down_proj.weight.data_ptr()
    );
    assert!(vs.variables().len() > 10);
    assert!(avs.variables().contains_key("model.layers.0.self_attn.q_proj.svd_lora_u"));
    assert_eq!(avs.variables().len(), 2 * 7 * 4, "2 layers × 7 projections × (U, V, σ, s)");
    let x = ids(&[&[11, 12, 13, 14]]);
    let pref = Tensor::from_slice(&[0.3f32, 0.7]);
    let a = model.logits(&x, &x.ones_like(), Adapter::Off);
    let b = view.logits(&x, &x.ones_like(), Adapter::On { pref: &pref });
    // σ and s start at 0, so the adapted model equals the base at init.
    let d = max_abs_diff(&a, &b);
    assert!(d < 1e-6, "max diff {d}");
}

#[test]
fn adapter_changes_the_output_once_its_diagonal_is_nonzero() {
    let (_vs, model) = tiny(5);
    let avs = nn::VarStore::new(Device::Cpu);
    let cfg = SvdLoraConfig::new(2);
    let view = model.with_adapter(Some((&avs.root(), &cfg)));
    tch::no_grad(|| {
        for (name, v) in avs.variables() {
            if name.ends_with("svd_lora_pref_scale") {
                let _ = v.shallow_clone().fill_(1.0);
            }
        }
    });
    let x = ids(&[&[11, 12, 13, 14], &[11, 12, 13, 14]]);
    let prefs = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
    let y = tch::no_grad(|| view.logits(&x, &x.ones_like(), Adapter::On { pref: &prefs }));
    // Same tokens, different per-row preferences → different logits; Off is unchanged.
    assert!(max_abs_diff(&y.get(0), &y.get(1)) > 1e-6);
    let off = tch::no_grad(|| view.logits(&x, &x.ones_like(), Adapter::Off));
    let base = tch::no_grad(|| model.logits(&x, &x.ones_like(), Adapter::Off));
    assert!(max_abs_diff(&off, &base) < 1e-7);
}
