//! Grouped adapters (`FoldedGroup`, `Llama::set_grouped_adapters`): on a fused model, q/k/v and
//! gate/up each add their adapters with one skinny GEMM pair. Logits and every adapter
//! gradient equal the per-projection path within f32 rounding, under one λ, per-row λ and
//! `Adapter::Off`, with all projections adapted or only some; prepared factors decode the same
//! tokens.

use panacea_core::adapter::{adapter_variables, SvdLoraConfig};
use panacea_lm::{generate_ids, init_random, Adapter, CausalLm, GenerateConfig, Llama};
use panacea_lm::{LlamaConfig, Sampling};
use tch::{nn, Device, Kind, Tensor};

use crate::common::{max_abs_diff, setup};

/// The tiny model with a random 2-objective adapter on `targets`, fused. σ and s start at 0
/// (the adapter would add nothing), so they get nonzero values here.
pub(crate) fn adapted(targets: &[&str], seed: i64) -> (nn::VarStore, nn::VarStore, Llama) {
    adapted_on(targets, seed, Device::Cpu, Kind::Float)
}

/// [`adapted`] in `kind` (base and adapter) on `device` (converted before fusing, so the fused
/// buffers are made of the converted variables).
pub(crate) fn adapted_on(
    targets: &[&str],
    seed: i64,
    device: Device,
    kind: Kind,
) -> (nn::VarStore, nn::VarStore, Llama) {
    setup();
    let mut base = nn::VarStore::new(Device::Cpu);
    let mut adapter = nn::VarStore::new(Device::Cpu);
    let mut cfg = SvdLoraConfig::new(2);
    cfg.target_modules = targets.iter().map(|t| t.to_string()).collect();
    let mut model = Llama::new(&base.root(), Some((&adapter.root(), &cfg)), &LlamaConfig::tiny());
    init_random(&base, seed);
    tch::no_grad(|| {
        for (i, (name, v)) in adapter_variables(&adapter).into_iter().enumerate() {
            let n = v.numel() as i64;
            // Deterministic values of the usual sizes (U, V: std 0.02 in training's init; larger
            // here so the adapter term is well above rounding).
            let t = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + i as f64).sin();
            let scale = if name.ends_with("svd_lora_u") || name.ends_with("svd_lora_v") {
                0.3
            } else {
                0.5
            };
            v.shallow_clone().copy_(&(t * scale).view(v.size().as_slice()));
        }
    });
    base.set_kind(kind);
    adapter.set_kind(kind);
    base.set_device(device);
    adapter.set_device(device);
    model.fuse_projections();
    // Grouping is opt-in; these tests (and the static decoder's) exercise the grouped path.
    model.set_grouped_adapters(true);
    (base, adapter, model)
}

/// Two left-padded rows: ids and mask [2, 6].
fn batch() -> (Tensor, Tensor) {
    let x = Tensor::from_slice(&[11i64, 12, 13, 14, 15, 16, 2, 2, 30, 31, 32, 33]).view([2, 6]);
    let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1]).view([2, 6]);
    (x, mask)
}

/// logits and the gradient of every adapter variable of a fixed scalar loss (Σ logits ⊙ w, w
/// a fixed pattern), by name.
fn logits_and_grads(
    model: &Llama,
    adapter_vs: &nn::VarStore,
    pref: Option<&Tensor>,
) -> (Tensor, Vec<(String, Tensor)>) {
    let (x, mask) = batch();
    let adapter = pref.map_or(Adapter::Off, |pref| Adapter::On { pref });
    let logits = model.logits(&x, &mask, adapter); // [2, 6, V]
    let n = logits.numel() as i64;
    let w = (Tensor::arange(n, (logits.kind(), Device::Cpu)) * 0.013)
        .cos()
        .view(logits.size().as_slice());
    let vars = adapter_variables(adapter_vs);
    for (_, v) in &vars {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
    if pref.is_some() {
        (&logits * w).sum(logits.kind()).backward();
    }
    let grads = vars.iter().map(|(name, v)| (name.clone(), v.grad().copy())).collect();
    (logits.detach(), grads)
}

/// Logits and gradients of both paths, in `kind`: f32 within f32 rounding (relative 1e-5 for
/// logits, 1e-3 of the largest adapter gradient for U's and V's gradients, which sum over 12
/// positions × 49,152 logits), f64 within 1e-10 of each gradient's own size for every gradient
/// (the same function, summed in another order).
fn grouped_equals_per_projection(targets: &[&str], groups_per_layer: usize, kind: Kind) {
    let (logit_tol, grad_tol) = if kind == Kind::Double { (1e-12, 1e-10) } else { (1e-5, 1e-3) };
    let (_base, adapter_vs, mut model) = adapted_on(targets, 41, Device::Cpu, kind);
    let one = Tensor::from_slice(&[0.7f32, 0.3]);
    let rows = Tensor::from_slice(&[0.2f32, 0.8, 0.9, 0.1]).view([2, 2]);
    let layers = model.layers.len();
    let off = tch::no_grad(|| model.logits(&batch().0, &batch().1, Adapter::Off));
    for pref in [Some(&one), Some(&rows), None] {
        let adapter = pref.map_or(Adapter::Off, |pref| Adapter::On { pref });
        model.set_grouped_adapters(true);
        let want_groups = if pref.is_some() { groups_per_layer * layers } else { 0 };
        assert_eq!(model.adapter_groups_in_use(adapter), want_groups);
        let (grouped, grouped_grads) = logits_and_grads(&model, &adapter_vs, pref);
        model.set_grouped_adapters(false);
        assert_eq!(model.adapter_groups_in_use(adapter), 0);
        let (single, single_grads) = logits_and_grads(&model, &adapter_vs, pref);
        let diff = max_abs_diff(&grouped, &single);
        let scale = f64::try_from(single.abs().max()).unwrap();
        assert!(
            diff <= logit_tol * scale.max(1.0),
            "{targets:?} {pref:?}: logits differ by {diff}"
        );
        if pref.is_none() {
            let base = max_abs_diff(&grouped, &off); // `off` ran without autograd
            assert!(base <= logit_tol * scale.max(1.0), "Adapter::Off must stay the base: {base}");
            continue;
        }
        // The adapter really acts, so equal logits are not equal base logits.
        assert!(max_abs_diff(&grouped, &off) > 1e-3, "{targets:?}: the adapter adds nothing");
        // In f32, rounding is relative to the largest gradients (k's gradient, say, is a small
        // difference of large terms through the softmax); in f64 each is held to its own size.
        let largest = single_grads
            .iter()
            .map(|(_, s)| f64::try_from(s.abs().max()).unwrap())
            .fold(0.0, f64::max);
        for ((name, g), (_, s)) in grouped_grads.iter().zip(&single_grads) {
            let own = f64::try_from(s.abs().max()).unwrap();
            assert!(own > 0.0, "{name}: no gradient");
            // (A gradient that is zero up to rounding, like s of k under one λ, ~1e-12 against
            // the largest ~1e2, is held to 1 % of the largest one's size.)
            let scale = if kind == Kind::Double { own.max(1e-2 * largest) } else { largest };
            // σ's and s's gradients sum thousands of terms that largely cancel, so in f32 their
            // rounding is relative to the terms, not to the small result: checked in f64.
            let scalar_like = name.ends_with("sigma") || name.ends_with("pref_scale");
            if kind == Kind::Float && scalar_like {
                continue;
            }
            let diff = max_abs_diff(g, s);
            assert!(
                diff <= grad_tol * scale,
                "{name} {pref:?}: gradient differs by {diff} (max {scale})"
            );
        }
    }
}

#[test]
fn grouped_adapters_match_the_per_projection_path_on_every_projection() {
    let all = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    grouped_equals_per_projection(&all, 2, Kind::Float);
    grouped_equals_per_projection(&all, 2, Kind::Double);
}

/// A group with unadapted members (k and gate here) gives them zero-width blocks.
#[test]
fn grouped_adapters_match_with_some_members_unadapted() {
    grouped_equals_per_projection(&["q_proj", "v_proj", "up_proj"], 2, Kind::Double);
    // Only o and down adapted: no group has an adapter, nothing is grouped.
    grouped_equals_per_projection(&["o_proj", "down_proj"], 0, Kind::Double);
}

/// Greedy decoding with prepared group factors (`with_prepared_adapter`) gives the tokens of
/// the unprepared grouped path and of the per-projection path, with left padding and
/// per-row λ.
#[test]
fn prepared_groups_decode_the_same_tokens() {
    let (_base, _adapter_vs, mut model) =
        adapted(&["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "o_proj"], 43);
    let prompts = vec![vec![11i64, 12, 13, 14, 15], vec![30, 31, 32]];
    let rows = Tensor::from_slice(&[0.2f32, 0.8, 0.9, 0.1]).view([2, 2]);
    let cfg = GenerateConfig {
        max_new_tokens: 6,
        sampling: Sampling::Greedy,
        eos_ids: Vec::new(),
        pad_id: 0,
    };
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    let adapter = Adapter::On { pref: &rows };
    let prepared = model
        .with_prepared_adapter(&rows, |m| generate_ids(m, &prompts, adapter, &cfg, &mut rng))
        .unwrap()
        .unwrap();
    let grouped = generate_ids(&model, &prompts, adapter, &cfg, &mut rng).unwrap();
    model.set_grouped_adapters(false);
    let single = generate_ids(&model, &prompts, adapter, &cfg, &mut rng).unwrap();
    assert!(prepared.response_ids.equal(&grouped.response_ids));
    assert!(grouped.response_ids.equal(&single.response_ids));
    let lp = max_abs_diff(&prepared.logprobs, &single.logprobs);
    assert!(lp <= 1e-4, "log-probs differ by {lp}");
}
