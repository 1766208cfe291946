//! The native adapter folder (strict loading) and the PEFT export.

use std::path::Path;

use panacea_core::adapter::{Adapter, SvdLoraConfig, SvdLoraLinear};
use panacea_core::checkpoint::{
    export_peft, load_adapter, load_var_store, read_adapter_config, save_adapter, save_var_store,
    AdapterFolderConfig, BaseModelId, CONFIG_FILE, PEFT_PROVENANCE_FILE, WEIGHTS_FILE,
};
use panacea_core::preference::PreferenceVector;
use panacea_core::CoreError;
use tch::{nn, Device, Kind, Tensor};

use crate::{setup, temp_dir};

/// A two-layer "model": `layers` adapted projections named like HF Llama modules.
struct Model {
    _base: nn::VarStore,
    adapter: nn::VarStore,
    layers: Vec<SvdLoraLinear>,
}

fn model(cfg: &SvdLoraConfig, n_layers: usize, d: i64) -> Model {
    let base = nn::VarStore::new(Device::Cpu);
    let adapter = nn::VarStore::new(Device::Cpu);
    let mut layers = Vec::new();
    for i in 0..n_layers {
        for name in ["q_proj", "v_proj"] {
            let bp = base.root() / "model" / "layers" / i / "self_attn" / name;
            let ap = adapter.root() / "model" / "layers" / i / "self_attn" / name;
            layers.push(SvdLoraLinear::new(&bp, Some((&ap, cfg)), d, d, false));
        }
    }
    // Non-zero diagonals so that ΔW(λ) is not trivially 0.
    tch::no_grad(|| {
        for l in &layers {
            let lora = l.lora.as_ref().expect("adapted");
            let mut sigma = lora.sigma.shallow_clone();
            sigma.copy_(&sigma.randn_like());
            let mut s = lora.pref_scale.shallow_clone();
            s.copy_(&(s.randn_like() + 2.0));
        }
    });
    Model { _base: base, adapter, layers }
}

fn meta(cfg: &SvdLoraConfig, hash: &str) -> AdapterFolderConfig {
    let names: Vec<String> = (0..cfg.n_objectives)
        .map(|i| ["helpful", "harmless", "concise"][i as usize].into())
        .collect();
    AdapterFolderConfig::new(cfg, &names, BaseModelId { name: "tiny".into(), hash: hash.into() })
        .expect("one name per objective")
}

fn cfg(m: i64) -> SvdLoraConfig {
    SvdLoraConfig { rank: 3, alpha: 6.0, n_objectives: m, ..SvdLoraConfig::new(m) }
}

#[track_caller]
fn checkpoint_error(result: Result<AdapterFolderConfig, CoreError>, file: &str, needles: &[&str]) {
    match result {
        Err(CoreError::Checkpoint { path, message }) => {
            assert!(path.ends_with(file), "error names {}, expected {file}", path.display());
            for n in needles {
                assert!(message.contains(n), "`{message}` lacks `{n}`");
            }
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

fn only_final_files(dir: &Path, want: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, want, "no temporary files may remain");
}

#[test]
fn save_then_load_round_trips_exactly() {
    setup();
    let c = cfg(2);
    let dir = temp_dir("roundtrip");
    let a = model(&c, 2, 8);
    save_adapter(&dir, &a.adapter, &meta(&c, "abc")).expect("save");
    only_final_files(&dir, &[CONFIG_FILE, WEIGHTS_FILE]);
    let b = model(&c, 2, 8);
    let x = Tensor::randn([2, 3, 8], (Kind::Float, Device::Cpu));
    let pref = Tensor::from_slice(&[0.3f32, 0.7]);
    let before = b.layers[1].forward(&x, Adapter::On { pref: &pref });
    let read = load_adapter(&dir, &b.adapter, &meta(&c, "abc")).expect("load");
    assert_eq!(read.objectives, ["helpful", "harmless"]);
    for (la, lb) in a.layers.iter().zip(&b.layers) {
        let (ua, ub) = (&la.lora.as_ref().expect("a").u, &lb.lora.as_ref().expect("b").u);
        assert!(ua.equal(ub));
    }
    let after = b.layers[1].forward(&x, Adapter::On { pref: &pref });
    let want = a.layers[1].forward(&x, Adapter::On { pref: &pref });
    assert!(after.equal(&want));
    assert!(!after.equal(&before));
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).expect("config");
    for key in ["\"adapter_type\"", "\"rank\": 3", "\"n_objectives\": 2", "\"hash\": \"abc\""] {
        assert!(text.contains(key), "{text}");
    }
    assert_eq!(read_adapter_config(&dir).expect("config").svd_lora(), c);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn strict_loading_names_the_problem() {
    setup();
    let c = cfg(2);
    let dir = temp_dir("strict");
    let saved = model(&c, 2, 8);
    save_adapter(&dir, &saved.adapter, &meta(&c, "abc")).expect("save");

    // Missing: the loading model has a third layer the file lacks.
    let bigger = model(&c, 3, 8);
    checkpoint_error(
        load_adapter(&dir, &bigger.adapter, &meta(&c, "abc")),
        WEIGHTS_FILE,
        &["missing", "model.layers.2.self_attn.q_proj.svd_lora_u"],
    );
    // Extra: the file has a layer the loading model lacks.
    let smaller = model(&c, 1, 8);
    checkpoint_error(
        load_adapter(&dir, &smaller.adapter, &meta(&c, "abc")),
        WEIGHTS_FILE,
        &["unexpected", "model.layers.1.self_attn.q_proj.svd_lora_u"],
    );
    // Mis-shaped: another hidden size.
    let wider = model(&c, 2, 12);
    checkpoint_error(
        load_adapter(&dir, &wider.adapter, &meta(&c, "abc")),
        WEIGHTS_FILE,
        &["model.layers.0.self_attn.q_proj.svd_lora_u", "[8, 5]", "[12, 5]"],
    );
    // Wrong m.
    let c3 = cfg(3);
    let three = model(&c3, 2, 8);
    checkpoint_error(
        load_adapter(&dir, &three.adapter, &meta(&c3, "abc")),
        CONFIG_FILE,
        &["m = 2", "m = 3"],
    );
    // Another base model.
    let same = model(&c, 2, 8);
    let u_before = same.layers[0].lora.as_ref().expect("a").u.copy();
    checkpoint_error(
        load_adapter(&dir, &same.adapter, &meta(&c, "xyz")),
        CONFIG_FILE,
        &["hash abc", "hash xyz"],
    );
    // A failed load copies nothing.
    assert!(same.layers[0].lora.as_ref().expect("a").u.equal(&u_before));
    // A folder that is not an adapter.
    let empty = temp_dir("strict-empty");
    checkpoint_error(
        load_adapter(&empty, &same.adapter, &meta(&c, "abc")),
        CONFIG_FILE,
        &["cannot read"],
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn peft_export_reproduces_delta_w() {
    setup();
    let c = cfg(2);
    let dir = temp_dir("peft-src");
    let out = temp_dir("peft-out");
    let a = model(&c, 2, 8);
    save_adapter(&dir, &a.adapter, &meta(&c, "abc")).expect("save");
    let pref: PreferenceVector = "0.7,0.3".parse().expect("valid");
    let base = "/models/smollm2-135m";
    let summary = export_peft(&dir, &pref, &out, base).expect("export");
    assert_eq!((summary.modules, summary.rank), (4, 5));
    only_final_files(&out, &[CONFIG_FILE, WEIGHTS_FILE, PEFT_PROVENANCE_FILE]);
    let tensors: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(out.join(WEIGHTS_FILE)).expect("read").into_iter().collect();
    assert_eq!(tensors.len(), 8);
    let p = pref.to_tensor(Device::Cpu);
    for (i, layer) in a.layers.iter().enumerate() {
        let name = format!("model.layers.{}.self_attn.{}", i / 2, ["q_proj", "v_proj"][i % 2]);
        let la = &tensors[&format!("base_model.model.{name}.lora_A.weight")]; // [R, d_in]
        let lb = &tensors[&format!("base_model.model.{name}.lora_B.weight")]; // [d_out, R]
        assert_eq!((la.size(), lb.size()), (vec![5, 8], vec![8, 5]));
        let want = layer.lora.as_ref().expect("adapted").delta_weight(&p).detach();
        let got = lb.matmul(la);
        let diff = (got - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-5 * (1.0 + want.abs().max().double_value(&[])), "{name}: {diff}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(CONFIG_FILE)).expect("read"))
            .expect("json");
    assert_eq!(config["peft_type"], "LORA");
    // PEFT loads the base from here: the folder given, not the adapter's short name ("tiny").
    assert_eq!(config["base_model_name_or_path"], base);
    assert_eq!(config["r"], 5);
    assert_eq!(config["lora_alpha"], 5);
    assert_eq!(config["target_modules"], serde_json::json!(c.target_modules));
    let provenance: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(PEFT_PROVENANCE_FILE)).expect("read"),
    )
    .expect("json");
    assert_eq!(provenance["preference"], serde_json::json!([0.7, 0.3]));
    // A preference of the wrong length is refused.
    let three = PreferenceVector::uniform(3).expect("valid");
    assert!(matches!(export_peft(&dir, &three, &out, base), Err(CoreError::Preference { .. })));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn non_finite_adapters_are_neither_saved_nor_loaded() {
    // Issue 18: a diverged DPO run saved all-NaN checkpoints, and export-peft and generate
    // used them with exit 0.
    setup();
    let c = cfg(2);
    let sigma_name = "model.layers.1.self_attn.v_proj.svd_lora_sigma";
    let poisoned = model(&c, 2, 8);
    tch::no_grad(|| {
        let sigma = poisoned.layers[3].lora.as_ref().expect("adapted").sigma.shallow_clone();
        let _ = sigma.get(1).fill_(f64::NAN);
        let _ = sigma.get(2).fill_(f64::INFINITY);
    });

    // Saving is refused before anything is written, naming the tensor.
    let dir = temp_dir("nan-save");
    let err = save_adapter(&dir, &poisoned.adapter, &meta(&c, "abc")).map(|()| meta(&c, "abc"));
    checkpoint_error(err, WEIGHTS_FILE, &[sigma_name, "2 non-finite value(s) of 3", "1 NaN"]);
    only_final_files(&dir, &[]);
    let err =
        save_var_store(&dir.join("state.safetensors"), &poisoned.adapter).map(|()| meta(&c, "abc"));
    checkpoint_error(err, "state.safetensors", &[sigma_name]);
    only_final_files(&dir, &[]);

    // A file that holds one anyway (written by another tool, or by an older build) is refused
    // by every reader, naming the file and the tensor, and nothing is copied.
    let good = model(&c, 2, 8);
    save_adapter(&dir, &good.adapter, &meta(&c, "abc")).expect("save finite");
    let mut tensors = Tensor::read_safetensors(dir.join(WEIGHTS_FILE)).expect("read");
    for (name, t) in &mut tensors {
        if name == sigma_name {
            *t = t.fill(f64::NAN);
        }
    }
    Tensor::write_safetensors(&tensors, dir.join(WEIGHTS_FILE)).expect("write poisoned");
    let target = model(&c, 2, 8);
    let u_before = target.layers[0].lora.as_ref().expect("a").u.copy();
    checkpoint_error(
        load_adapter(&dir, &target.adapter, &meta(&c, "abc")),
        WEIGHTS_FILE,
        &[sigma_name, "3 NaN", "earlier checkpoint"],
    );
    assert!(target.layers[0].lora.as_ref().expect("a").u.equal(&u_before));
    let pref: PreferenceVector = "0.5,0.5".parse().expect("valid");
    let out = temp_dir("nan-peft");
    let err = export_peft(&dir, &pref, &out, "base").map(|_| meta(&c, "abc"));
    checkpoint_error(err, WEIGHTS_FILE, &[sigma_name]);
    only_final_files(&out, &[]);
    let err = load_var_store(&dir.join(WEIGHTS_FILE), &target.adapter).map(|()| meta(&c, "abc"));
    checkpoint_error(err, WEIGHTS_FILE, &[sigma_name]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}
