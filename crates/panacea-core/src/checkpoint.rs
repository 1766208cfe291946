//! The native adapter folder and the PEFT LoRA export (docs/method.md, §2.5).
//!
//! A native folder holds
//!
//! - `adapter_config.json` ([`AdapterFolderConfig`]: type, format version, k, α, m, objective
//!   names, target modules, init std, base model name and hash), and
//! - `adapter_model.safetensors`: every variable of the adapter VarStore under its VarStore name
//!   (`model.layers.0.self_attn.q_proj.svd_lora_u`, …), f32.
//!
//! Both files are written atomically (temporary file in the same folder, then rename), so a crash
//! never leaves a half-written checkpoint under the final name. Loading is strict: a missing,
//! extra or mis-shaped tensor, another m, k, α or target list, other objective names, or a
//! different base-model hash is a [`CoreError::Checkpoint`] naming the file and the tensor.
//!
//! No NaN or ±∞ crosses the disk in either direction: [`write_safetensors_atomic`] (which every
//! saver here and in the trainers goes through) refuses a non-finite floating-point tensor
//! before it writes anything, and every reader here ([`read_adapter`], so [`load_adapter`] and
//! [`export_peft`]; [`load_var_store`]) refuses one it finds, naming the file and the tensor. A
//! diverged run therefore fails where it diverged instead of leaving checkpoints that load into
//! a model that answers nothing.
//!
//! The PEFT export folds the diagonal at a fixed λ into the factors of a plain LoRA of rank
//! R = k + m: `lora_B = U` [d_out, R] and `lora_A = diag(c·d(λ)) Vᵀ` [R, d_in] with
//! `lora_alpha = r`, so PEFT's α/r factor is 1 and `lora_B·lora_A = ΔW(λ)`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::adapter::{SvdLoraConfig, ADAPTER_VAR_SUFFIXES};
use crate::preference::PreferenceVector;
use crate::CoreError;

/// The `adapter_type` of a native folder.
pub const ADAPTER_TYPE: &str = "panacea_svd_lora";
/// The current native folder format.
pub const FORMAT_VERSION: u32 = 1;
/// The config file of a native or PEFT folder.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The tensor file of a native or PEFT folder.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The provenance file of a PEFT export (preference, objectives, base model).
pub const PEFT_PROVENANCE_FILE: &str = "panacea_export.json";

/// Which base model an adapter was trained on. The hash is computed by the model loader (e.g.
/// over the weight files); this crate only compares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModelId {
    /// Human-readable name, e.g. `SmolLM2-135M-Instruct`.
    pub name: String,
    /// Content hash of the base weights.
    pub hash: String,
}

/// `adapter_config.json` of a native adapter folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterFolderConfig {
    /// Always [`ADAPTER_TYPE`].
    pub adapter_type: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// k.
    pub rank: i64,
    /// α (c = α / k).
    pub alpha: f64,
    /// m.
    pub n_objectives: i64,
    /// The objective names, in preference order (length m).
    pub objectives: Vec<String>,
    /// Adapted module names (last path segment).
    pub target_modules: Vec<String>,
    /// Init std of U and V (provenance only).
    pub init_std: f64,
    /// The base model the adapter belongs to.
    pub base_model: BaseModelId,
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> CoreError {
    CoreError::Checkpoint { path: path.to_owned(), message: message.into() }
}

impl AdapterFolderConfig {
    /// The folder config of an adapter built from `cfg`, for `objectives` (one name per
    /// objective) on `base_model`.
    pub fn new(
        cfg: &SvdLoraConfig,
        objectives: &[String],
        base_model: BaseModelId,
    ) -> Result<Self, CoreError> {
        if objectives.len() as i64 != cfg.n_objectives {
            return Err(CoreError::Shape {
                what: "objective names (one per objective)".into(),
                expected: vec![cfg.n_objectives],
                got: vec![objectives.len() as i64],
            });
        }
        Ok(Self {
            adapter_type: ADAPTER_TYPE.to_owned(),
            format_version: FORMAT_VERSION,
            rank: cfg.rank,
            alpha: cfg.alpha,
            n_objectives: cfg.n_objectives,
            objectives: objectives.to_vec(),
            target_modules: cfg.target_modules.clone(),
            init_std: cfg.init_std,
            base_model,
        })
    }

    /// The layer settings recorded in this folder.
    pub fn svd_lora(&self) -> SvdLoraConfig {
        SvdLoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            n_objectives: self.n_objectives,
            target_modules: self.target_modules.clone(),
            init_std: self.init_std,
        }
    }

    /// c = α / k.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Lists every way `self` (read from `path`) is incompatible with `expected`.
    fn mismatches(&self, expected: &Self) -> Vec<String> {
        let mut out = Vec::new();
        if self.n_objectives != expected.n_objectives {
            out.push(format!(
                "the adapter has m = {} objectives, the model expects m = {}",
                self.n_objectives, expected.n_objectives
            ));
        }
        if self.rank != expected.rank {
            out.push(format!("rank k = {}, expected {}", self.rank, expected.rank));
        }
        if self.alpha != expected.alpha {
            out.push(format!("alpha = {}, expected {}", self.alpha, expected.alpha));
        }
        if self.objectives != expected.objectives {
            out.push(format!(
                "objectives {:?}, expected {:?} (same names in the same order)",
                self.objectives, expected.objectives
            ));
        }
        if self.target_modules != expected.target_modules {
            out.push(format!(
                "target_modules {:?}, expected {:?}",
                self.target_modules, expected.target_modules
            ));
        }
        if self.base_model.hash != expected.base_model.hash {
            out.push(format!(
                "it was trained on base model {} (hash {}), this model is {} (hash {}); hint: \
                 load the base model the adapter was trained on",
                self.base_model.name,
                self.base_model.hash,
                expected.base_model.name,
                expected.base_model.hash
            ));
        }
        out
    }
}

/// Writes `bytes` to `path` atomically: a temporary file next to it, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| ckpt_err(&tmp, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ckpt_err(path, format!("cannot move {} into place: {e}", tmp.display()))
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// `Ok` when the floating-point tensor `t` (named `name`, read from or bound for `path`) holds
/// only finite values; integer and boolean tensors always pass. `reading` picks the hint.
pub fn check_finite(path: &Path, name: &str, t: &Tensor, reading: bool) -> Result<(), CoreError> {
    if !t.is_floating_point() || t.numel() == 0 {
        return Ok(());
    }
    let not_finite = t.f_isfinite()?.f_logical_not()?;
    let bad = i64::try_from(not_finite.f_sum(Kind::Int64)?)?;
    if bad == 0 {
        return Ok(());
    }
    let nan = i64::try_from(t.f_isnan()?.f_sum(Kind::Int64)?)?;
    let hint = if reading {
        "hint: the run that wrote it diverged; use an earlier checkpoint of the run"
    } else {
        "hint: training diverged (a too large learning rate, or a non-finite setting); \
         nothing was written"
    };
    Err(ckpt_err(
        path,
        format!(
            "tensor {name} holds {bad} non-finite value(s) of {} ({nan} NaN, {} ±∞); {hint}",
            t.numel(),
            bad - nan
        ),
    ))
}

fn check_all_finite(
    path: &Path,
    tensors: &[(String, Tensor)],
    reading: bool,
) -> Result<(), CoreError> {
    tensors.iter().try_for_each(|(name, t)| check_finite(path, name, t, reading))
}

/// Writes named tensors to a safetensors file atomically. Refuses (before writing anything) a
/// floating-point tensor with a NaN or ±∞, naming it.
pub fn write_safetensors_atomic(
    path: &Path,
    tensors: &[(String, Tensor)],
) -> Result<(), CoreError> {
    check_all_finite(path, tensors, false)?;
    let tmp = temp_path(path);
    Tensor::write_safetensors(tensors, &tmp)
        .map_err(|e| ckpt_err(&tmp, format!("cannot write tensors: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ckpt_err(path, format!("cannot move {} into place: {e}", tmp.display()))
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), CoreError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| ckpt_err(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// Every variable of `vs`, sorted by name, detached, contiguous, on the CPU.
fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Saves every variable of the adapter VarStore `vs` and `config` as a native adapter folder
/// `dir` (created if needed).
pub fn save_adapter(
    dir: &Path,
    vs: &nn::VarStore,
    config: &AdapterFolderConfig,
) -> Result<(), CoreError> {
    let vars = sorted_variables(vs);
    if vars.is_empty() {
        return Err(ckpt_err(dir, "the adapter VarStore has no variables; nothing to save"));
    }
    std::fs::create_dir_all(dir).map_err(|e| ckpt_err(dir, format!("cannot create: {e}")))?;
    // Tensors first, config last: a folder with a config always has its tensors.
    write_safetensors_atomic(&dir.join(WEIGHTS_FILE), &vars)?;
    write_json(&dir.join(CONFIG_FILE), config)
}

/// Reads and checks `adapter_config.json` of the native folder `dir`.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterFolderConfig, CoreError> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ckpt_err(&path, format!("cannot read: {e}; hint: is {} an adapter folder?", dir.display()))
    })?;
    let config: AdapterFolderConfig = serde_json::from_str(&text)
        .map_err(|e| ckpt_err(&path, format!("not a Panacea adapter config: {e}")))?;
    if config.adapter_type != ADAPTER_TYPE {
        return Err(ckpt_err(
            &path,
            format!("adapter_type is {:?}, expected {ADAPTER_TYPE:?}", config.adapter_type),
        ));
    }
    if config.format_version != FORMAT_VERSION {
        return Err(ckpt_err(
            &path,
            format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                config.format_version
            ),
        ));
    }
    if config.objectives.len() as i64 != config.n_objectives {
        return Err(ckpt_err(
            &path,
            format!(
                "lists {} objective names for n_objectives = {}",
                config.objectives.len(),
                config.n_objectives
            ),
        ));
    }
    if config.rank < 1 || config.n_objectives < 1 || !(config.alpha.is_finite()) {
        return Err(ckpt_err(
            &path,
            format!(
                "invalid settings: rank {}, n_objectives {}, alpha {}",
                config.rank, config.n_objectives, config.alpha
            ),
        ));
    }
    Ok(config)
}

/// Reads a native adapter folder: its config and its tensors (sorted by name, on the CPU).
/// A tensor with a NaN or ±∞ is an error naming the file and the tensor.
pub fn read_adapter(dir: &Path) -> Result<(AdapterFolderConfig, Vec<(String, Tensor)>), CoreError> {
    let config = read_adapter_config(dir)?;
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors = Tensor::read_safetensors(&path)
        .map_err(|e| ckpt_err(&path, format!("cannot read tensors: {e}")))?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    check_all_finite(&path, &tensors, true)?;
    Ok((config, tensors))
}

/// Loads the native folder `dir` into the adapter VarStore `vs`, strictly: the folder's config
/// must match `expected` (m, k, α, objectives, targets, base-model hash), and the file must hold
/// exactly the variables of `vs`, each with the same shape. Nothing is copied unless every
/// check passes. Returns the folder's config.
pub fn load_adapter(
    dir: &Path,
    vs: &nn::VarStore,
    expected: &AdapterFolderConfig,
) -> Result<AdapterFolderConfig, CoreError> {
    let (config, tensors) = read_adapter(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let problems = config.mismatches(expected);
    if !problems.is_empty() {
        return Err(ckpt_err(&config_path, problems.join("; ")));
    }
    copy_into_var_store(&dir.join(WEIGHTS_FILE), tensors, vs)?;
    Ok(config)
}

/// Copies `tensors` (read from `path`) into the variables of `vs`, strictly: the names must be
/// exactly the VarStore's and every shape must match. Nothing is copied unless every check
/// passes.
fn copy_into_var_store(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    vs: &nn::VarStore,
) -> Result<(), CoreError> {
    let mut file: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut missing = Vec::new();
    for (name, var) in &vars {
        match file.get(name) {
            None => missing.push(name.clone()),
            Some(t) if t.size() != var.size() => {
                return Err(ckpt_err(
                    path,
                    format!(
                        "tensor {name} has shape {:?}, the model expects {:?}; hint: the adapter \
                         was built with other settings or another base model",
                        t.size(),
                        var.size()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if !missing.is_empty() {
        return Err(ckpt_err(
            path,
            format!(
                "missing tensor(s) {}; hint: was it saved from this model?",
                missing.join(", ")
            ),
        ));
    }
    let known: BTreeSet<&String> = vars.iter().map(|(n, _)| n).collect();
    let extra: Vec<&String> = file.keys().filter(|n| !known.contains(n)).collect();
    if !extra.is_empty() {
        let extra: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
        return Err(ckpt_err(
            path,
            format!(
                "unexpected tensor(s) {} not in the model; hint: check target_modules and the \
                 number of layers",
                extra.join(", ")
            ),
        ));
    }
    let _guard = tch::no_grad_guard();
    for (name, var) in &mut vars {
        let t = file.remove(name).expect("checked above: every variable is in the file");
        var.f_copy_(&t.to_kind(var.kind()).to_device(var.device()))
            .map_err(|e| ckpt_err(path, format!("cannot copy tensor {name}: {e}")))?;
    }
    Ok(())
}

/// Writes every variable of `vs` (sorted by name, on the CPU) to the safetensors file `path`,
/// atomically. The companion of [`load_var_store`] for state that is not an adapter folder
/// (critics, score heads).
pub fn save_var_store(path: &Path, vs: &nn::VarStore) -> Result<(), CoreError> {
    write_safetensors_atomic(path, &sorted_variables(vs))
}

/// Loads a file written by [`save_var_store`] into `vs` with the checks of [`load_adapter`]:
/// exactly the same names and shapes and finite values, or an error naming the tensor and
/// nothing copied.
pub fn load_var_store(path: &Path, vs: &nn::VarStore) -> Result<(), CoreError> {
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| ckpt_err(path, format!("cannot read tensors: {e}")))?;
    check_all_finite(path, &tensors, true)?;
    copy_into_var_store(path, tensors, vs)
}

/// One module of a PEFT LoRA export: `lora_B·lora_A = ΔW(λ)`.
#[derive(Debug)]
pub struct PeftModule {
    /// The module's path, e.g. `model.layers.0.self_attn.q_proj`.
    pub name: String,
    /// diag(c·d(λ)) Vᵀ: [R, d_in].
    pub lora_a: Tensor,
    /// U: [d_out, R].
    pub lora_b: Tensor,
}

/// Groups a native folder's tensors by module and folds the diagonal at `pref` into the
/// factors. Every module must have all four variables with consistent shapes.
pub fn peft_factors(
    config: &AdapterFolderConfig,
    tensors: &[(String, Tensor)],
    pref: &PreferenceVector,
    source: &Path,
) -> Result<Vec<PeftModule>, CoreError> {
    if pref.len() as i64 != config.n_objectives {
        return Err(CoreError::Preference {
            values: pref.as_slice().to_vec(),
            reason: format!(
                "the adapter has {} objectives {:?}; give one weight per objective",
                config.n_objectives, config.objectives
            ),
        });
    }
    let mut modules: BTreeMap<&str, [Option<&Tensor>; 4]> = BTreeMap::new();
    for (name, t) in tensors {
        for (slot, suffix) in ADAPTER_VAR_SUFFIXES.iter().enumerate() {
            if let Some(module) = name.strip_suffix(suffix).and_then(|m| m.strip_suffix('.')) {
                modules.entry(module).or_default()[slot] = Some(t);
            }
        }
    }
    if modules.is_empty() {
        return Err(ckpt_err(source, "no SVD-LoRA tensors (…svd_lora_u etc.) in the folder"));
    }
    let (k, r) = (config.rank, config.rank + config.n_objectives);
    let lambda = pref.to_tensor(tch::Device::Cpu).to_kind(Kind::Double); // [K]
    let mut out = Vec::with_capacity(modules.len());
    for (module, slots) in modules {
        let get = |i: usize| {
            slots[i].ok_or_else(|| {
                ckpt_err(source, format!("missing tensor {module}.{}", ADAPTER_VAR_SUFFIXES[i]))
            })
        };
        let (u, v, sigma, s) = (get(0)?, get(1)?, get(2)?, get(3)?);
        let shape_ok = u.dim() == 2
            && v.dim() == 2
            && u.size()[1] == r
            && v.size()[1] == r
            && sigma.size() == [k]
            && s.size() == [1];
        if !shape_ok {
            return Err(ckpt_err(
                source,
                format!(
                    "module {module}: shapes U {:?}, V {:?}, σ {:?}, s {:?} do not fit k = {k}, \
                     R = {r}",
                    u.size(),
                    v.size(),
                    sigma.size(),
                    s.size()
                ),
            ));
        }
        let (u, v) = (u.to_kind(Kind::Double), v.to_kind(Kind::Double));
        let d = Tensor::cat(&[sigma.to_kind(Kind::Double), s.to_kind(Kind::Double) * &lambda], 0); // [R]
        let cd = d * config.scale(); // [R]
        let lora_a = (v * cd.unsqueeze(0)).tr().contiguous().to_kind(Kind::Float); // [R, d_in]
        let lora_b = u.contiguous().to_kind(Kind::Float); // [d_out, R]
        out.push(PeftModule { name: module.to_owned(), lora_a, lora_b });
    }
    Ok(out)
}

/// What [`export_peft`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeftExportSummary {
    /// Number of adapted modules.
    pub modules: usize,
    /// PEFT rank r = k + m.
    pub rank: i64,
}

/// Exports the native folder `adapter_dir` at the fixed preference `pref` as a plain PEFT LoRA
/// folder `out_dir`: `adapter_model.safetensors` with
/// `base_model.model.<module>.lora_{A,B}.weight`, an `adapter_config.json` with
/// `peft_type: LORA`, `r = lora_alpha = k + m` and `base_model_name_or_path =
/// base_model_name_or_path`, and [`PEFT_PROVENANCE_FILE`] recording λ, the objectives and the
/// base model. PEFT loads the base from `base_model_name_or_path`, so it must be a folder with
/// the base's `config.json` and weights, or a hub id of exactly those weights; the short name
/// recorded in the adapter folder (e.g. `smollm2-135m`) is neither.
pub fn export_peft(
    adapter_dir: &Path,
    pref: &PreferenceVector,
    out_dir: &Path,
    base_model_name_or_path: &str,
) -> Result<PeftExportSummary, CoreError> {
    let (config, tensors) = read_adapter(adapter_dir)?;
    let modules = peft_factors(&config, &tensors, pref, &adapter_dir.join(WEIGHTS_FILE))?;
    let r = config.rank + config.n_objectives;
    let mut named = Vec::with_capacity(modules.len() * 2);
    for m in &modules {
        named
            .push((format!("base_model.model.{}.lora_A.weight", m.name), m.lora_a.shallow_clone()));
        named
            .push((format!("base_model.model.{}.lora_B.weight", m.name), m.lora_b.shallow_clone()));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| ckpt_err(out_dir, format!("cannot create: {e}")))?;
    write_safetensors_atomic(&out_dir.join(WEIGHTS_FILE), &named)?;
    let peft_config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": r,
        "lora_alpha": r,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "target_modules": config.target_modules,
    });
    write_json(&out_dir.join(CONFIG_FILE), &peft_config)?;
    // Provenance in a file of its own: PEFT warns about unknown keys in its config.
    let provenance = serde_json::json!({
        "preference": pref.as_slice(),
        "objectives": config.objectives,
        "base_model": config.base_model,
        "source_adapter_type": config.adapter_type,
        "rank": config.rank,
        "alpha": config.alpha,
    });
    write_json(&out_dir.join(PEFT_PROVENANCE_FILE), &provenance)?;
    Ok(PeftExportSummary { modules: modules.len(), rank: r })
}

/// Hex SHA-256 over every variable of `vs` in sorted name order: name, kind, shape and bytes.
/// Adapter folders record it as their base model's hash, so an adapter is never applied to
/// other weights by mistake. Reads all weights to the host once (about a second for 135M
/// parameters).
pub fn hash_var_store(vs: &nn::VarStore) -> Result<String, CoreError> {
    use sha2::{Digest, Sha256};
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut h = Sha256::new();
    for name in names {
        let t = vars[name].detach().to_device(tch::Device::Cpu).contiguous();
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut buf = vec![0u8; n];
        t.f_copy_data_u8(&mut buf, t.numel())?;
        h.update(&buf);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
