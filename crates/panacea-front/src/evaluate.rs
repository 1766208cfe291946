//! Evaluating methods over the λ grid: every (λ, prompt, sample) row of a method is generated
//! in mixed-λ batches (one λ per row, `Adapter::On { pref }` with pref [B, K]); the base
//! (`Adapter::Off`) once per (prompt, sample); soups merged for one λ at a time; DPS members
//! at their own λ. Scores are averaged per prompt over samples ([point][prompt][D]) and per
//! point over prompts.

use std::path::Path;

use panacea_core::checkpoint::{load_adapter, read_adapter_config, AdapterFolderConfig};
use panacea_core::{PreferenceVector, SvdLoraLinear};
use panacea_data::Scorer;
use panacea_eval::{Front, MethodInput};
use panacea_lm::{Llama, LoadedModel};
use panacea_run::{Event, Observer, Silent};
use tch::nn;

use crate::config::FrontConfig;
use crate::error::{ensure, Context, FrontError, Result};
use crate::method::{AdapterSpec, DpsSpec, Method, SoupSpec};
use crate::sample::{per_prompt_means, rows_at, Row, Sampler, Scored};

/// An example response for the report: the first prompt's first sample at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The method.
    pub method: String,
    /// The point (`Off` for the base, else λ).
    pub point: String,
    /// The prompt.
    pub prompt: String,
    /// The response.
    pub response: String,
}

/// Everything one evaluation measured: per method (base first) its front and per-prompt
/// samples.
#[derive(Debug)]
pub struct Evaluation {
    /// Objective names (λ order).
    pub objectives: Vec<String>,
    /// Each objective's scorer range.
    pub ranges: Vec<(f64, f64)>,
    /// Base first, then one per method, in the order given.
    pub methods: Vec<MethodInput>,
    /// True for the methods that are baselines (soups, DPS), base first (false).
    pub baseline: Vec<bool>,
    /// Adapter folder(s) per method, in words (None for the base).
    pub sources: Vec<Option<String>>,
    /// The prompts answered.
    pub prompts: Vec<String>,
    /// One example response per point.
    pub examples: Vec<Example>,
    /// Generated rows.
    pub rows: usize,
    /// Wall time of generation + scoring.
    pub seconds: f64,
}

/// Evaluates the base and `methods` on the bundled prompts of `cfg`: base first, then one
/// [`MethodInput`] per method, each with its per-prompt samples.
pub fn evaluate_front(
    cfg: &FrontConfig,
    base: &LoadedModel,
    methods: &[Method],
) -> Result<Vec<MethodInput>> {
    let prompts = cfg.load_prompts()?;
    Ok(evaluate(cfg, base, methods, &prompts, &mut Silent)?.methods)
}

/// [`evaluate_front`] on given prompts, with everything the report needs and progress sent to
/// `observer`.
pub fn evaluate(
    cfg: &FrontConfig,
    base: &LoadedModel,
    methods: &[Method],
    prompts: &[String],
    observer: &mut dyn Observer,
) -> Result<Evaluation> {
    ensure(!prompts.is_empty(), || "no prompts to evaluate on".to_owned())?;
    let t0 = std::time::Instant::now();
    let (model, tokenizer) = (&base.model, &base.tokenizer);
    let device = panacea_lm::CausalLm::device(model);
    let objectives = cfg.objective_names();
    let grid = cfg.grid_points()?;
    let scorers: Vec<Box<dyn Scorer>> = cfg
        .objectives
        .iter()
        .map(|o| o.build(tokenizer, &base.chat_template, model, device))
        .collect::<Result<_>>()?;
    let ranges = scorers.iter().map(|s| s.range()).collect();
    // The model's own template (or ChatML for a model without one), as the PPO and score-model
    // jobs render their prompts.
    let template = &base.chat_template;
    let system = cfg.generation.system.as_deref();
    let rendered: Vec<String> = prompts
        .iter()
        .map(|p| {
            if cfg.generation.chat_template {
                template.user_prompt_with_system(system, p).map_err(|e| {
                    FrontError::Invalid(format!(
                        "prompt {p:?}: the chat template refuses it: {e}; hint: set \
                         generation.chat_template: false"
                    ))
                })
            } else {
                Ok(p.clone())
            }
        })
        .collect::<Result<_>>()?;
    let sampler =
        Sampler { tokenizer, rendered: &rendered, prompts, cfg, scorers: &scorers, device };
    let ctx = Ctx { base: model, sampler: &sampler, grid: &grid, objectives: &objectives };
    let mut ev = Evaluation {
        objectives: objectives.clone(),
        ranges,
        methods: Vec::new(),
        baseline: Vec::new(),
        sources: Vec::new(),
        prompts: prompts.to_vec(),
        examples: Vec::new(),
        rows: 0,
        seconds: 0.0,
    };

    // The untrained base: one point, no preference.
    let rows: Vec<Row<'_>> = rows_at(None, prompts.len(), cfg.samples_per_prompt).collect();
    let scored = sampler.generate_and_score("base", model, &rows, observer)?;
    ev.rows += rows.len();
    ev.examples.push(Example {
        method: "base".into(),
        point: "Off".into(),
        prompt: prompts[0].clone(),
        response: scored.1[0].clone(),
    });
    let pp = per_prompt_means(&scored.0, 1, prompts.len(), cfg.samples_per_prompt);
    let front =
        Front { prefs: vec![], points: panacea_eval::mean_front(&pp)?, labels: objectives.clone() };
    observer.on_event(&Event::Message(&format!("base: {:?}", front.points[0])));
    ev.methods.push(MethodInput { name: "base".into(), front, per_prompt: Some(pp) });
    ev.baseline.push(false);
    ev.sources.push(None);

    for method in methods {
        let (points, scored, source) = match method {
            Method::Adapter(a) => {
                let scored = ctx.adapter(a, observer)?;
                (grid.clone(), scored, a.adapter.display().to_string())
            }
            Method::Soup(s) => {
                let scored = ctx.soup(s, observer)?;
                let names: Vec<String> =
                    s.adapters.iter().map(|a| a.display().to_string()).collect();
                (grid.clone(), scored, format!("soup of {}", names.join(" + ")))
            }
            Method::Dps(d) => {
                let scored = ctx.dps(d, observer)?;
                let names: Vec<String> =
                    d.members.iter().map(|(l, a)| format!("{} at λ = {l}", a.display())).collect();
                let prefs = d.members.iter().map(|(l, _)| l.clone()).collect();
                (prefs, scored, format!("DPS of {}", names.join(", ")))
            }
        };
        ev.rows += scored.0.len();
        ev.methods.push(ctx.front(method.label(), &points, &scored, &mut ev.examples)?);
        ev.baseline.push(method.is_baseline());
        ev.sources.push(Some(source));
    }
    ev.seconds = t0.elapsed().as_secs_f64();
    Ok(ev)
}

/// What every method's evaluation shares.
struct Ctx<'a> {
    /// The loaded base model (soups merge into its weights and restore them).
    base: &'a Llama,
    sampler: &'a Sampler<'a>,
    grid: &'a [PreferenceVector],
    objectives: &'a [String],
}

impl Ctx<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.sampler.prompts.len(), self.sampler.cfg.samples_per_prompt)
    }

    /// A method's front at `points` from its scored rows (in [point][prompt][sample] order),
    /// and one example response per point (the first prompt's first sample) for the report.
    fn front(
        &self,
        label: &str,
        points: &[PreferenceVector],
        (scores, texts): &Scored,
        examples: &mut Vec<Example>,
    ) -> Result<MethodInput> {
        let (np, ns) = self.shape();
        for (i, l) in points.iter().enumerate() {
            examples.push(Example {
                method: label.to_owned(),
                point: l.to_string(),
                prompt: self.sampler.prompts[0].clone(),
                response: texts[i * np * ns].clone(),
            });
        }
        let pp = per_prompt_means(scores, points.len(), np, ns);
        let front = Front {
            prefs: points.iter().map(|l| l.as_slice().to_vec()).collect(),
            points: panacea_eval::mean_front(&pp)?,
            labels: self.objectives.to_vec(),
        };
        Ok(MethodInput { name: label.to_owned(), front, per_prompt: Some(pp) })
    }

    /// Loads the adapter folder `dir` onto the base: its folder config, the store holding its
    /// weights, and the model view that applies it. Strict: names and shapes must match.
    fn load(&self, dir: &Path, what: &str) -> Result<(AdapterFolderConfig, nn::VarStore, Llama)> {
        let folder = read_adapter_config(dir)
            .context_with(|| format!("reading {what} adapter {}", dir.display()))?;
        let vs = nn::VarStore::new(self.sampler.device);
        let view = self.base.with_adapter(Some((&vs.root(), &folder.svd_lora())));
        load_adapter(dir, &vs, &folder)
            .context_with(|| format!("loading {what} adapter {}", dir.display()))?;
        Ok((folder, vs, view))
    }

    /// A Panacea adapter at every grid λ, rows in [λ][prompt][sample] order: consecutive rows
    /// mix λs once a batch spans more than one λ's rows, one λ per row either way.
    fn adapter(&self, a: &AdapterSpec, observer: &mut dyn Observer) -> Result<Scored> {
        let (folder, _vs, policy) = self.load(&a.adapter, "the")?;
        check_adapter_objectives(&folder, self.objectives, &a.adapter)?;
        observer.on_event(&Event::Message(&format!(
            "{}: adapter {} (k = {}, base {} {})",
            a.label,
            a.adapter.display(),
            folder.rank,
            folder.base_model.name,
            folder.base_model.hash
        )));
        let (np, ns) = self.shape();
        let rows: Vec<Row<'_>> = self.grid.iter().flat_map(|l| rows_at(Some(l), np, ns)).collect();
        self.sampler.generate_and_score(&a.label, &policy, &rows, observer)
    }

    /// The soup θ(λ) = W0 + Σ_i λ_i ΔW_i at every grid λ, one λ per batch (merged weights),
    /// rows in [λ][prompt][sample] order. The base weights are restored exactly.
    fn soup(&self, soup: &SoupSpec, observer: &mut dyn Observer) -> Result<Scored> {
        let k = self.objectives.len();
        ensure(soup.adapters.len() == k, || {
            format!(
                "soup {} has {} adapters for {k} objectives\nhint: give one adapter per \
                 objective, trained at λ = e_i, in λ order",
                soup.label,
                soup.adapters.len()
            )
        })?;
        let device = self.sampler.device;
        let mut stores = Vec::with_capacity(k);
        let mut views = Vec::with_capacity(k);
        let mut prefs = Vec::with_capacity(k);
        for (i, dir) in soup.adapters.iter().enumerate() {
            let (folder, vs, view) = self.load(dir, "soup")?;
            let pref = match folder.n_objectives {
                1 => PreferenceVector::new(vec![1.0])?,
                m if m as usize == k => PreferenceVector::vertex(k, i)?,
                m => {
                    return Err(FrontError::Invalid(format!(
                        "soup adapter {} has m = {m} objectives; expected 1 or {k}",
                        dir.display()
                    )))
                }
            };
            observer.on_event(&Event::Message(&format!(
                "{}: ingredient {i} = {} at λ = {pref}",
                soup.label,
                dir.display()
            )));
            stores.push(vs);
            views.push(view);
            prefs.push(pref.to_tensor(device));
        }
        let model = self.base;
        let base: Vec<&SvdLoraLinear> = model.linears().collect();
        let parts: Vec<Vec<&SvdLoraLinear>> = views.iter().map(|v| v.linears().collect()).collect();
        let originals: Vec<tch::Tensor> = base.iter().map(|p| p.weight.copy()).collect();
        let (np, ns) = self.shape();
        let rows: Vec<Row<'_>> = rows_at(None, np, ns).collect();
        let mut scores = Vec::with_capacity(self.grid.len() * rows.len());
        let mut texts = Vec::with_capacity(self.grid.len() * rows.len());
        let restore = || {
            tch::no_grad(|| {
                for (p, w0) in base.iter().zip(&originals) {
                    p.weight.shallow_clone().copy_(w0);
                }
            })
        };
        for l in self.grid {
            tch::no_grad(|| {
                for (j, (p, w0)) in base.iter().zip(&originals).enumerate() {
                    // A fresh buffer: `to_kind` to the same kind aliases, and `+=` would then
                    // overwrite the kept original.
                    let mut w = w0.to_kind(tch::Kind::Float).copy(); // [d_out, d_in]
                    for ((part, pref), li) in parts.iter().zip(&prefs).zip(l.as_slice()) {
                        if let Some(lora) = &part[j].lora {
                            w += lora.delta_weight(pref) * *li; // [d_out, d_in]
                        }
                    }
                    p.weight.shallow_clone().copy_(&w.to_kind(w0.kind()));
                }
            });
            let label = format!("{} λ={l}", soup.label);
            let result = self.sampler.generate_and_score(&label, model, &rows, observer);
            restore();
            let (s, t) = result?;
            scores.extend(s);
            texts.extend(t);
        }
        drop(stores);
        Ok((scores, texts))
    }

    /// DPS: each member answers every prompt under `Adapter::On` at its own training λ; rows
    /// in [member][prompt][sample] order.
    fn dps(&self, set: &DpsSpec, observer: &mut dyn Observer) -> Result<Scored> {
        ensure(!set.members.is_empty(), || format!("DPS {} has no members", set.label))?;
        let (np, ns) = self.shape();
        let mut scores = Vec::with_capacity(set.members.len() * np * ns);
        let mut texts = Vec::with_capacity(set.members.len() * np * ns);
        for (j, (pref, dir)) in set.members.iter().enumerate() {
            let (folder, _vs, view) = self.load(dir, "DPS")?;
            check_adapter_objectives(&folder, self.objectives, dir)?;
            observer.on_event(&Event::Message(&format!(
                "{}: member {j} = {} at λ = {pref}",
                set.label,
                dir.display()
            )));
            let rows: Vec<Row<'_>> = rows_at(Some(pref), np, ns).collect();
            let label = format!("{} λ={pref}", set.label);
            let (s, t) = self.sampler.generate_and_score(&label, &view, &rows, observer)?;
            scores.extend(s);
            texts.extend(t);
        }
        Ok((scores, texts))
    }
}

/// Fails unless every adapter folder in `dirs` records `base_hash` as its base model's hash
/// (the base hash covers the weights and their dtype). Every command that loads an adapter onto
/// a base calls it: eval-front and `generate`.
pub fn check_base_models(dirs: &[&Path], model: &str, base_hash: &str) -> Result<()> {
    for dir in dirs {
        let folder = read_adapter_config(dir)
            .context_with(|| format!("reading adapter {}", dir.display()))?;
        ensure(folder.base_model.hash == base_hash, || {
            format!(
                "adapter {} was trained on base model {} (hash {}), but this command loads \
                 {model} (hash {base_hash})\nhint: use the base the adapter was trained on, \
                 with the dtype it was trained with (`model` in the config, or --model)",
                dir.display(),
                folder.base_model.name,
                folder.base_model.hash
            )
        })?;
    }
    Ok(())
}

/// Fails unless the adapter has one objective per λ dimension and, where it records its
/// objectives' names, they are the config's objective names in the same order.
fn check_adapter_objectives(
    folder: &AdapterFolderConfig,
    objectives: &[String],
    dir: &Path,
) -> Result<()> {
    ensure(folder.n_objectives as usize == objectives.len(), || {
        format!(
            "adapter {} has m = {} objectives {:?}, the config scores {} {:?}\nhint: list one \
             objective per adapter objective, in the adapter's order",
            dir.display(),
            folder.n_objectives,
            folder.objectives,
            objectives.len(),
            objectives
        )
    })?;
    ensure(folder.objectives.is_empty() || folder.objectives == objectives, || {
        format!(
            "adapter {} was trained on objectives {:?}, but the config names {:?}\nhint: name \
             each config objective as the adapter does, in its order, and choose what measures \
             it with `source`, e.g. {{name: {}, kind: reward, source: {{kind: harmless}}}}",
            dir.display(),
            folder.objectives,
            objectives,
            folder.objectives.first().map_or("helpful", String::as_str)
        )
    })
}
