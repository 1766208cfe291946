//! The relevant scorer: cosine similarity between the all-MiniLM-L6-v2 embeddings of the prompt
//! and of the response (docs/models.md, §3.3), with the encoder of [`crate::minilm`].

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::minilm::MiniLmEncoder;
use crate::scorer::{check_batch, Scorer};
use crate::DataError;

/// cos(embed(prompt), embed(response)). Range `[−1, 1]`; higher means the response is closer in
/// meaning to the prompt (all-MiniLM-L6-v2 gives about 0.5 for an on-topic answer and under 0.1
/// for an unrelated sentence; `data/fixtures/minilm_expected.json`).
#[derive(Debug)]
pub struct RelevantScorer {
    encoder: MiniLmEncoder,
    batch_size: usize,
}

impl RelevantScorer {
    /// Wraps an encoder; texts are embedded `batch_size` at a time (≥ 1).
    pub fn new(encoder: MiniLmEncoder, batch_size: usize) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::Setting {
                setting: "relevant.batch_size".to_owned(),
                message: "must be at least 1\nhint: 32 suits a CPU".to_owned(),
            });
        }
        Ok(Self { encoder, batch_size })
    }

    /// The encoder.
    pub fn encoder(&self) -> &MiniLmEncoder {
        &self.encoder
    }

    /// Embeddings of `texts`, [N, D] on the CPU, each distinct text embedded once. Texts are
    /// sorted by length before batching so that little compute goes into padding.
    pub fn embed_all(&self, texts: &[&str]) -> Result<Tensor, DataError> {
        let mut unique: Vec<&str> = Vec::new();
        let mut slot: HashMap<&str, usize> = HashMap::new();
        let index: Vec<i64> = texts
            .iter()
            .map(|t| {
                *slot.entry(t).or_insert_with(|| {
                    unique.push(t);
                    unique.len() - 1
                }) as i64
            })
            .collect();
        let mut order: Vec<usize> = (0..unique.len()).collect();
        order.sort_by_key(|&i| (unique[i].len(), i));
        let mut parts = Vec::new();
        for chunk in order.chunks(self.batch_size) {
            let batch: Vec<&str> = chunk.iter().map(|&i| unique[i]).collect();
            parts.push(self.encoder.embed(&batch)?.to_device(tch::Device::Cpu));
            // [b, D]
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros([0, 0], (Kind::Float, tch::Device::Cpu)));
        }
        let sorted = Tensor::cat(&parts, 0); // [U, D], in `order`
        let mut inverse = vec![0i64; order.len()];
        for (pos, &u) in order.iter().enumerate() {
            inverse[u] = pos as i64;
        }
        let by_unique = sorted.index_select(0, &Tensor::from_slice(&inverse)); // [U, D]
        Ok(by_unique.index_select(0, &Tensor::from_slice(&index))) // [N, D]
    }
}

impl Scorer for RelevantScorer {
    fn name(&self) -> &str {
        "relevant"
    }

    fn range(&self) -> (f64, f64) {
        (-1.0, 1.0)
    }

    fn score(&self, prompts: &[&str], responses: &[&str]) -> Result<Vec<f64>, DataError> {
        check_batch(self.name(), prompts, responses)?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let mut all: Vec<&str> = prompts.to_vec();
        all.extend_from_slice(responses);
        let e = self.embed_all(&all)?; // [2N, D]
        let n = prompts.len() as i64;
        let cos = (e.narrow(0, 0, n) * e.narrow(0, n, n)).sum_dim_intlist(1, false, Kind::Double); // [N]
        Ok(Vec::<f64>::try_from(&cos)?.into_iter().map(|c| c.clamp(-1.0, 1.0)).collect())
    }
}
