//! [`train_score_models`]: a whole `train-rm` job as one library call — one score model per
//! objective (a pair-file dimension) on preference pairs: the LM backbone with its own adapter
//! plus a scalar head, Bradley–Terry loss (a cost model learns C(loser) > C(winner), with
//! safe-rlhf's sign terms when the file has safety labels), Adam(0.9, 0.95), and the held-out
//! pairwise accuracy. Each model is saved as `score-<name>/` in the run folder, which a PPO
//! objective uses through `source: { kind: score_model, path: ... }`.

use std::path::Path;

use panacea_core::config::to_yaml;
use panacea_core::{seed_everything, ObjectiveKind};
use panacea_data::{load_pair_file, PairRecord, ReadOptions};
use panacea_lm::{Pretrained, PromptTemplate, Tokenizer};
use panacea_run::{sha256_file, Event, Manifest, Observer, RunDir, RunOptions, Trained};
use rand::seq::SliceRandom;
use tch::nn::{self, OptimizerConfig};

use crate::config::TrainRmConfig;
use crate::error::ensure_finite;
use crate::score::{
    pair_loss, pair_loss_checkpointed, save_score_model, LmScoreModel, ScoreModelMeta,
    ScorePairBatch,
};
use crate::RlhfError;

/// The job name recorded in a score-model run's manifest.
pub const RM_JOB: &str = "train-rm";

/// The folder of objective `name`'s score model inside a `train-rm` run folder.
pub fn score_model_dir(run_dir: &Path, name: &str) -> std::path::PathBuf {
    run_dir.join(format!("score-{name}"))
}

/// Token ids of (response 0, response 1) of one pair, prompt included.
pub type EncodedPair = (Vec<i64>, Vec<i64>);

/// (winner ids, loser ids, (winner is safe, loser is safe)) of one labelled pair.
type LabelledPair = (Vec<i64>, Vec<i64>, Option<(bool, bool)>);

/// Trains every score model `cfg` names, in turn, in a new run folder under `opts.runs_dir`.
/// Pairs whose two responses are identical teach nothing and are dropped (a `Warning` event
/// gives the count); so are reported label keys of the file that no objective names (a typo
/// such as `helpfull` would otherwise leave a dimension silently unlabelled).
pub fn train_score_models(
    cfg: &TrainRmConfig,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Trained, RlhfError> {
    if let Some(dir) = &opts.resume {
        return Err(RlhfError::Invalid {
            what: dir.display().to_string(),
            reason: "score-model runs cannot be resumed (each model trains in minutes); hint: \
                     start a new run"
                .into(),
        });
    }
    if cfg.threads > 0 {
        tch::set_num_threads(cfg.threads as i32);
    }
    let device = cfg.device.resolve()?;
    let mut rng = seed_everything(cfg.seed);

    // The frozen base and the tokenizer.
    observer.on_event(&Event::Phase(&format!("loading {}", cfg.model)));
    let (_base_vs, base, tok, template) = if cfg.model == panacea_lm::TINY_RANDOM {
        // In cfg.dtype before the score models take their views of the base.
        let loaded = panacea_lm::tiny_random_model(device, cfg.seed as i64, cfg.dtype.kind())?;
        (loaded.base_vs, loaded.model, loaded.tokenizer, loaded.chat_template)
    } else {
        let mut base_vs = nn::VarStore::new(device);
        let pre = Pretrained::load(&cfg.model)?;
        let m = pre.build(&mut base_vs, None, cfg.dtype.kind())?;
        base_vs.freeze();
        (base_vs, m, pre.tokenizer.clone(), pre.chat_template.clone())
    };
    if cfg.data.chat_template && template.is_fallback() {
        observer.on_event(&Event::Message(&format!(
            "{} has no chat template of its own: prompts are rendered as ChatML",
            cfg.model
        )));
    }

    // Pairs → token ids of prompt + response (+ EOS), split by a seeded shuffle.
    let names: Vec<String> = cfg.objectives.iter().map(|o| o.name.clone()).collect();
    let mut records = read_pairs(cfg, &names, observer)?;
    records.shuffle(&mut rng.data);
    let n_eval = ((records.len() as f64 * cfg.data.eval_fraction).round() as usize).max(1);
    if records.len() < n_eval + 1 {
        return Err(RlhfError::Invalid {
            what: cfg.data.train.to_string(),
            reason: format!(
                "{} usable pairs are too few to hold out {n_eval} for evaluation and train on \
                 the rest",
                records.len()
            ),
        });
    }
    let encoded = encode_pairs(cfg, &tok, &template, &records)?;

    // (winner, loser) token ids of the pairs labelled in each objective's dimension, with the
    // pair's (winner is safe, loser is safe) labels where the file has them.
    let labelled = |d: usize, range: std::ops::Range<usize>| -> Vec<LabelledPair> {
        range
            .filter_map(|i| {
                let (a, b) = &encoded[i];
                let s = records[i].safety;
                match records[i].labels[d] {
                    1 => Some((a.clone(), b.clone(), s.map(|s| (s[0], s[1])))),
                    -1 => Some((b.clone(), a.clone(), s.map(|s| (s[1], s[0])))),
                    _ => None,
                }
            })
            .collect()
    };
    let mut splits = Vec::with_capacity(names.len());
    for (d, name) in names.iter().enumerate() {
        let (train, eval) = (labelled(d, n_eval..records.len()), labelled(d, 0..n_eval));
        if train.is_empty() || eval.is_empty() {
            return Err(RlhfError::Invalid {
                what: format!("objective {name}"),
                reason: format!(
                    "{} train and {} eval labelled pairs; hint: check that the pair file labels \
                     the dimension `{name}`",
                    train.len(),
                    eval.len()
                ),
            });
        }
        splits.push((train, eval));
    }
    let steps_of = |n: usize| (n.div_ceil(cfg.train.batch_size) * cfg.train.epochs) as u64;
    let total_steps: u64 = splits.iter().map(|(train, _)| steps_of(train.len())).sum();

    let name = opts.name.as_deref().unwrap_or(RM_JOB);
    let mut run = RunDir::create(&opts.runs_dir, name, &to_yaml(cfg)?, &opts.command)?;
    let mut manifest = Manifest::now(RM_JOB, format!("{device:?}"), cfg.seed);
    for file in cfg.pair_files() {
        manifest.data_hashes.push((file.path.display().to_string(), sha256_file(&file.path)?));
    }
    run.write_manifest(&manifest)?;
    observer.on_event(&Event::MemoryEstimate(&cfg.memory_estimate(&base.config)));
    observer.on_event(&Event::Started {
        job: RM_JOB,
        run_dir: run.path(),
        start_step: 0,
        total_steps,
    });

    let mut done = 0u64;
    for ((target, (mut train, eval)), name) in cfg.objectives.iter().zip(splits).zip(&names) {
        // A cost model uses safe-rlhf's cost loss with the safety-sign terms when every pair
        // has safety labels (PKU-SafeRLHF's is_response_*_safe); otherwise Bradley–Terry on
        // costs, said once here.
        let sign_terms =
            target.kind == ObjectiveKind::Cost && train.iter().chain(&eval).all(|p| p.2.is_some());
        if target.kind == ObjectiveKind::Cost && !sign_terms {
            observer.on_event(&Event::Warning(&format!(
                "{name}: some pairs have no safety labels, so the cost model trains with \
                 Bradley–Terry only (no sign terms); PKU-SafeRLHF files carry them"
            )));
        }
        let vs = nn::VarStore::new(device);
        let model = LmScoreModel::new(&base, &vs.root(), &cfg.adapter);
        let mut opt = nn::Adam { beta1: 0.9, beta2: 0.95, wd: 0.0, ..Default::default() }
            .build(&vs, cfg.optim.lr)?;
        // Reward: the winner scores higher (BT). Cost with sign terms: `cost_loss(safer,
        // unsafer)` takes the winner (the safer response) first. Cost without: BT with the
        // loser (the less safe response) as the higher-scoring side.
        let batch_of = |pairs: &[LabelledPair]| -> Result<ScorePairBatch, RlhfError> {
            let w: Vec<Vec<i64>> = pairs.iter().map(|p| p.0.clone()).collect();
            let l: Vec<Vec<i64>> = pairs.iter().map(|p| p.1.clone()).collect();
            if sign_terms {
                let safety: Vec<(bool, bool)> = pairs.iter().filter_map(|p| p.2).collect();
                return ScorePairBatch::from_tokens(&w, &l, Some(&safety), tok.pad_id, device);
            }
            let (hi, lo) = match target.kind {
                ObjectiveKind::Reward => (w, l),
                ObjectiveKind::Cost => (l, w),
            };
            ScorePairBatch::from_tokens(&hi, &lo, None, tok.pad_id, device)
        };
        let eval_batch = batch_of(&eval)?;
        let mut step = 0u64;
        for epoch in 1..=cfg.train.epochs {
            train.shuffle(&mut rng.data);
            for chunk in train.chunks(cfg.train.batch_size) {
                step += 1;
                done += 1;
                let batch = batch_of(chunk)?;
                let (out, checkpoints) = if cfg.train.activation_checkpointing {
                    let (out, cks) = pair_loss_checkpointed(&model, &batch, cfg.train.eta);
                    (out, Some(cks))
                } else {
                    (pair_loss(&model, &batch, cfg.train.eta), None)
                };
                let loss = ensure_finite(
                    step,
                    &format!("score model `{name}` loss"),
                    out.loss.double_value(&[]),
                )?;
                opt.zero_grad();
                out.loss.backward();
                // Checkpointed layers: recompute and backpropagate them now.
                for ck in checkpoints.into_iter().flatten() {
                    ck.backward();
                }
                opt.clip_grad_norm(cfg.optim.max_grad_norm);
                opt.step();
                let accuracy = out.accuracy.double_value(&[]);
                run.log_metrics(&serde_json::json!({
                    "step": step,
                    format!("rm/loss/{name}"): loss,
                    format!("rm/accuracy/{name}"): accuracy,
                }))?;
                observer.on_event(&Event::Step {
                    step: done,
                    summary: &format!("{name} loss {loss:.3} accuracy {accuracy:.2}"),
                });
                if opts.stop.is_requested() {
                    observer.on_event(&Event::Warning(&format!(
                        "stopped while training `{name}`; its model was not saved"
                    )));
                    observer.on_event(&Event::Finished {
                        run_dir: run.path(),
                        step: done,
                        interrupted: true,
                    });
                    return Ok(Trained {
                        run_dir: run.path().to_owned(),
                        step: done,
                        checkpoint: None,
                        interrupted: true,
                    });
                }
            }
            let ev = tch::no_grad(|| pair_loss(&model, &eval_batch, 0.0));
            let acc = ev.accuracy.double_value(&[]);
            let sign_acc = ev.sign_accuracy.as_ref().map(|t| t.double_value(&[]));
            observer.on_event(&Event::Message(&format!(
                "{name} epoch {epoch}: eval loss {:.4}, pairwise accuracy {:.3}{} on {} held-out pairs",
                ev.loss.double_value(&[]),
                acc,
                sign_acc.map_or(String::new(), |a| format!(", sign accuracy {a:.3}")),
                eval.len()
            )));
            if epoch == cfg.train.epochs {
                let dir = score_model_dir(run.path(), name);
                let meta = ScoreModelMeta {
                    adapter: cfg.adapter.clone(),
                    kind: target.kind,
                    base_model: cfg.model.clone(),
                    eval_accuracy: Some(acc),
                    eval_sign_accuracy: sign_acc,
                };
                save_score_model(&dir, &vs, &meta)?;
                run.log_metrics(&serde_json::json!({
                    format!("rm/eval_accuracy/{name}"): acc,
                    format!("rm/eval_sign_accuracy/{name}"): sign_acc,
                    "folder": dir.display().to_string(),
                }))?;
                observer.on_event(&Event::Message(&format!("saved {}", dir.display())));
            }
        }
    }
    observer.on_event(&Event::Finished { run_dir: run.path(), step: done, interrupted: false });
    Ok(Trained { run_dir: run.path().to_owned(), step: done, checkpoint: None, interrupted: false })
}

/// Reads the pair files of `data.train` in order (each with its `format`, `file_format` and
/// `labels`, or the section's; `names` are the objectives, in order), reporting per file the
/// skipped malformed lines, label keys no objective names, and pairs whose two responses are
/// identical (dropped) through `observer`.
pub fn read_pairs(
    cfg: &TrainRmConfig,
    names: &[String],
    observer: &mut dyn Observer,
) -> Result<Vec<PairRecord>, RlhfError> {
    let mut records = Vec::new();
    let (mut total, mut identical) = (0, 0);
    for file in cfg.pair_files() {
        let opts = ReadOptions {
            format: file.format,
            dims: names.to_vec(),
            skip_invalid: cfg.data.skip_invalid,
        };
        let (mut part, report) = load_pair_file(&file.path, file.file_format, &file.labels, opts)?;
        report_read(&file.path, &report, names, observer);
        total += part.len() + report.dropped_identical;
        identical += report.dropped_identical;
        records.append(&mut part);
    }
    if records.is_empty() {
        return Err(RlhfError::Invalid {
            what: cfg.data.train.to_string(),
            reason: format!(
                "none of its {total} pairs is usable ({identical} have identical responses); \
                 hint: each pair needs two different responses"
            ),
        });
    }
    Ok(records)
}

/// The warnings of one pair file's read report: skipped lines, unknown label keys, dropped
/// pairs with identical responses.
fn report_read(
    path: &Path,
    report: &panacea_data::ReadReport,
    names: &[String],
    observer: &mut dyn Observer,
) {
    if report.skipped > 0 {
        let mut lines = vec![format!(
            "{}: skipped {} malformed line(s) of {}; first:",
            path.display(),
            report.skipped,
            report.records + report.skipped + report.blank_lines
        )];
        lines.extend(report.first_errors.iter().map(|e| format!("  {e}")));
        observer.on_event(&Event::Warning(&lines.join("\n")));
    }
    // The reader drops pairs with identical responses and lists label keys no objective names
    // (one rule for every reader, panacea_data::same_responses); this job only reports them.
    if !report.unknown_label_keys.is_empty() {
        let listed: Vec<String> = report
            .unknown_label_keys
            .iter()
            .map(|u| {
                let key = u.field.rsplit('.').next().unwrap_or(&u.field);
                let hint =
                    u.did_you_mean.as_deref().map_or(String::new(), |d| format!(" (`{d}`?)"));
                format!("`{key}` ({} pairs), first on line {}{hint}", u.records, u.first_line)
            })
            .collect();
        observer.on_event(&Event::Warning(&format!(
            "{}: label key(s) {} name no objective and are not used (objectives: {}); hint: a \
             typo in the file or in `objectives`?",
            path.display(),
            listed.join(", "),
            names.join(", ")
        )));
    }
    let identical = report.dropped_identical;
    if identical > 0 {
        observer.on_event(&Event::Warning(&format!(
            "{}: dropped {identical} of {} pairs whose two responses are identical (they \
             carry no preference)",
            path.display(),
            report.records + identical
        )));
    }
}

/// Token ids of prompt + response + EOS for both responses of every pair, each cut from the
/// left to `data.max_len` tokens (keeping the response's end, where the score is read). With
/// `data.chat_template` the prompt is one user turn through `template` (the model's own, or
/// ChatML), as PPO renders its prompts, so the score model sees what the policy generates from.
pub fn encode_pairs(
    cfg: &TrainRmConfig,
    tok: &Tokenizer,
    template: &PromptTemplate,
    records: &[PairRecord],
) -> Result<Vec<EncodedPair>, RlhfError> {
    let encode = |prompt: &str, response: &str| -> Result<Vec<i64>, RlhfError> {
        let p = if cfg.data.chat_template {
            template.user_prompt(prompt).map_err(|e| RlhfError::Invalid {
                what: format!("{} (prompt {prompt:?})", cfg.data.train),
                reason: format!(
                    "the chat template refuses it: {e}; hint: set data.chat_template: false to \
                     tokenise prompts as they are"
                ),
            })?
        } else {
            prompt.into()
        };
        let mut ids = tok.encode(&format!("{p}{response}"))?;
        ids.push(tok.eos_id);
        let cut = ids.len().saturating_sub(cfg.data.max_len);
        Ok(ids[cut..].to_vec())
    };
    records
        .iter()
        .map(|r| Ok((encode(&r.prompt, &r.response_0)?, encode(&r.prompt, &r.response_1)?)))
        .collect()
}
