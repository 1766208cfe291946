//! Generation and scoring of rows: (λ or the base, prompt, sample) triples generated in
//! batches and scored by every gold scorer.
//!
//! Common random numbers: row (prompt p, sample s) samples its tokens from its own ChaCha12
//! stream, derived from (seed, p, s) alone ([`row_rng`]). So the same row draws the same
//! uniforms in every method, at every λ and in any batch, and differences between methods come
//! from the models, not from sampling. Batch size and order change speed, and results only
//! through the last bits of batched matrix products: a draw that falls within ~1e-7 of a
//! boundary of the token CDF can then pick the neighbouring token, which is rare with a peaked
//! distribution (top-p/top-k) and not rare with a near-uniform one.

use panacea_core::PreferenceVector;
use panacea_data::Scorer;
use panacea_lm::{Adapter, GenerateConfig, Llama, Tokenizer};
use panacea_run::{Event, Observer};
use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;

use crate::config::FrontConfig;
use crate::error::{ensure, Context, Result};

/// ChaCha stream ids of rows start here, above the run streams of `panacea_core::RunRng`.
const ROW_STREAM_BASE: u64 = 1 << 62;
/// Samples per prompt that fit a row's stream id (prompt index in the bits above).
const MAX_SAMPLES: u64 = 1 << 24;

/// The sampling stream of row (prompt, sample): key from `seed`, stream id from the row.
pub fn row_rng(seed: u64, prompt: usize, sample: usize) -> ChaCha12Rng {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_stream(ROW_STREAM_BASE | ((prompt as u64) * MAX_SAMPLES + sample as u64));
    rng
}

/// One generated row: under λ (`None`: the base, adapter off), for prompt `prompt`, sample
/// `sample`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    pub(crate) pref: Option<&'a PreferenceVector>,
    pub(crate) prompt: usize,
    pub(crate) sample: usize,
}

/// Rows for every prompt and sample under `pref`, in [prompt][sample] order.
pub(crate) fn rows_at<'a>(
    pref: Option<&'a PreferenceVector>,
    n_prompts: usize,
    n_samples: usize,
) -> impl Iterator<Item = Row<'a>> {
    (0..n_prompts)
        .flat_map(move |prompt| (0..n_samples).map(move |sample| Row { pref, prompt, sample }))
}

/// One score vector [D] per generated row, and the rows' response texts.
pub(crate) type Scored = (Vec<Vec<f64>>, Vec<String>);

/// What every row's generation and scoring shares.
pub(crate) struct Sampler<'a> {
    pub(crate) tokenizer: &'a Tokenizer,
    /// Prompts as the model sees them (ChatML when configured).
    pub(crate) rendered: &'a [String],
    /// Prompts as the scorers see them.
    pub(crate) prompts: &'a [String],
    pub(crate) cfg: &'a FrontConfig,
    pub(crate) scorers: &'a [Box<dyn Scorer>],
    pub(crate) device: tch::Device,
}

impl Sampler<'_> {
    /// Generates `rows` with `model` in `batch_size` chunks (each chunk all base rows or all
    /// adapter rows, one λ per row) and scores them: one score vector [D] per row.
    pub(crate) fn generate_and_score(
        &self,
        label: &str,
        model: &Llama,
        rows: &[Row<'_>],
        observer: &mut dyn Observer,
    ) -> Result<Scored> {
        let Sampler { tokenizer, rendered, prompts, cfg, scorers, device } = *self;
        let gen_cfg = GenerateConfig {
            sampling: cfg.sampling(),
            ..GenerateConfig::greedy(tokenizer, cfg.generation.max_new_tokens)
        };
        let mut texts = Vec::with_capacity(rows.len());
        let n_batches = rows.len().div_ceil(cfg.batch_size);
        for (i, chunk) in rows.chunks(cfg.batch_size).enumerate() {
            let t0 = std::time::Instant::now();
            let batch: Vec<String> = chunk.iter().map(|r| rendered[r.prompt].clone()).collect();
            let mut rngs: Vec<ChaCha12Rng> =
                chunk.iter().map(|r| row_rng(cfg.seed, r.prompt, r.sample)).collect();
            let g = if chunk[0].pref.is_none() {
                ensure(chunk.iter().all(|r| r.pref.is_none()), || {
                    format!("{label}: a batch mixes base and adapter rows")
                })?;
                panacea_lm::generate_per_row(
                    model,
                    tokenizer,
                    &batch,
                    Adapter::Off,
                    &gen_cfg,
                    &mut rngs,
                )?
            } else {
                let prefs: Vec<PreferenceVector> = chunk
                    .iter()
                    .map(|r| {
                        r.pref.cloned().ok_or_else(|| {
                            crate::FrontError::Invalid(format!(
                                "{label}: a base row in an adapter batch"
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                let pref = PreferenceVector::stack(&prefs, device)?; // [B, K]
                panacea_lm::generate_per_row(
                    model,
                    tokenizer,
                    &batch,
                    Adapter::On { pref: &pref },
                    &gen_cfg,
                    &mut rngs,
                )?
            };
            texts.extend(g.texts);
            observer.on_event(&Event::Message(&format!(
                "{label}: batch {}/{n_batches} ({} rows) generated in {:.1} s",
                i + 1,
                chunk.len(),
                t0.elapsed().as_secs_f64()
            )));
        }
        let row_prompts: Vec<&str> = rows.iter().map(|r| prompts[r.prompt].as_str()).collect();
        let row_texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut scores = vec![Vec::with_capacity(scorers.len()); rows.len()];
        for s in scorers {
            let col = s
                .score(&row_prompts, &row_texts)
                .context_with(|| format!("scoring with {}", s.name()))?;
            ensure(col.len() == rows.len(), || {
                format!("scorer {} returned {} scores for {} rows", s.name(), col.len(), rows.len())
            })?;
            for (row, v) in scores.iter_mut().zip(col) {
                ensure(v.is_finite(), || {
                    format!("scorer {} returned a non-finite score {v}", s.name())
                })?;
                row.push(v);
            }
        }
        Ok((scores, texts))
    }
}

/// Mean over samples of rows laid out as [point][prompt][sample] → [point][prompt][D].
pub(crate) fn per_prompt_means(
    scores: &[Vec<f64>],
    n_points: usize,
    n_prompts: usize,
    n_samples: usize,
) -> Vec<Vec<Vec<f64>>> {
    let d = scores.first().map_or(0, Vec::len);
    (0..n_points)
        .map(|k| {
            (0..n_prompts)
                .map(|p| {
                    let mut mean = vec![0.0; d];
                    for s in 0..n_samples {
                        let row = &scores[(k * n_prompts + p) * n_samples + s];
                        mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
                    }
                    mean.iter_mut().for_each(|m| *m /= n_samples as f64);
                    mean
                })
                .collect()
        })
        .collect()
}
