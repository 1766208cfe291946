//! Preference pairs as the DPO trainer consumes them.
//!
//! A pair is tokenised as `ChatML(prompt) + response + EOS` for each of its two responses. The
//! EOS is appended and **counted** in the sequence log-prob, as safe-rlhf does when it tokenises
//! prompt + answer + EOS, so "stop here" is part of what the model learns. Both sequences share
//! the prompt's ids exactly (prompt and response are tokenised separately), so the response of
//! each row starts at the same position.
//!
//! Sequence log-prob ([`SeqLogp`]): the default is the **sum over the response tokens**
//! (EOS included). safe-rlhf instead sums from the **divergence index**, the first position
//! where the two sequences differ. For a causal LM the shared prefix contributes identical terms
//! to both responses, so h_0 − h_1 and hence the loss, its gradient and the accuracy are the
//! same either way; only the logged per-response implicit rewards differ.
//!
//! Pairs whose two responses are identical (after tokenisation and truncation) carry no signal
//! and would make the divergence range empty: they are dropped and counted in [`EncodeReport`],
//! as are pairs without any label and pairs whose prompt alone exceeds the length limit.

use panacea_data::PairRecord;
use panacea_lm::chat::{Message, PromptTemplate, Role};
use panacea_lm::tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::DpoError;

/// Which response tokens enter the sequence log-prob. A serde enum: `response_sum` or
/// `from_divergence`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeqLogp {
    /// Every response token, EOS included (default, [ours]).
    #[default]
    ResponseSum,
    /// From the first token where the two responses differ to the end (safe-rlhf) [ref].
    FromDivergence,
}

/// One tokenised pair: `seqs[j] = prompt ids ++ response j ids ++ [EOS]` (possibly truncated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedPair {
    /// Position of the pair in its source list (the reference log-prob cache is keyed by it).
    pub index: usize,
    /// Number of prompt tokens at the start of both sequences.
    pub prompt_len: usize,
    /// The two full sequences, response 0 first.
    pub seqs: [Vec<i64>; 2],
    /// t_k ∈ {+1, −1, 0} per dimension (+1: response 0 wins).
    pub labels: Vec<i8>,
}

/// Why a pair could not be encoded (it is dropped and counted, not an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The two responses are identical.
    IdenticalResponses,
    /// No dimension has a label.
    Unlabelled,
    /// The prompt leaves no room for a response token within the length limit.
    PromptTooLong,
}

impl EncodedPair {
    /// Builds a pair from token ids. Each response gets `eos` appended; when the prompt, the
    /// response and the EOS exceed `max_len` tokens, the response is cut at the limit (and then
    /// has no EOS). `Ok(Err(reason))` when the pair must be dropped; an error when a label is
    /// not in {+1, −1, 0}.
    pub fn new(
        index: usize,
        prompt: &[i64],
        responses: [&[i64]; 2],
        eos: i64,
        labels: Vec<i8>,
        max_len: usize,
    ) -> Result<Result<Self, DropReason>, DpoError> {
        if let Some(bad) = labels.iter().find(|t| !matches!(t, -1..=1)) {
            return Err(DpoError::Pair {
                index,
                message: format!("label {bad} is not one of +1, −1, 0"),
            });
        }
        if labels.iter().all(|&t| t == 0) {
            return Ok(Err(DropReason::Unlabelled));
        }
        if prompt.len() + 1 > max_len {
            return Ok(Err(DropReason::PromptTooLong));
        }
        let build = |r: &[i64]| {
            let mut s = Vec::with_capacity(prompt.len() + r.len() + 1);
            s.extend_from_slice(prompt);
            s.extend_from_slice(r);
            s.push(eos);
            s.truncate(max_len);
            s
        };
        let seqs = [build(responses[0]), build(responses[1])];
        if panacea_data::same_responses(&seqs[0], &seqs[1]) {
            return Ok(Err(DropReason::IdenticalResponses));
        }
        Ok(Ok(Self { index, prompt_len: prompt.len(), seqs, labels }))
    }

    /// The first position where the two sequences differ (a position past the shorter one
    /// counts as different). Always ≥ `prompt_len` and within both sequences' span + 1.
    pub fn divergence_index(&self) -> usize {
        let [a, b] = &self.seqs;
        a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
    }

    /// Number of response tokens of sequence `j` (EOS included when it fits).
    pub fn response_len(&self, j: usize) -> usize {
        self.seqs[j].len() - self.prompt_len
    }
}

/// What [`encode_pairs`] kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EncodeReport {
    /// Pairs kept.
    pub kept: usize,
    /// Dropped: identical responses.
    pub dropped_identical: usize,
    /// Dropped: no label in any dimension.
    pub dropped_unlabelled: usize,
    /// Dropped: the prompt alone reaches the length limit.
    pub dropped_prompt_too_long: usize,
    /// Kept pairs with at least one response cut at the length limit.
    pub truncated: usize,
    /// Kept pairs labelled in each dimension.
    pub labelled_per_obj: Vec<usize>,
}

impl EncodeReport {
    /// All pairs dropped, for any reason.
    pub fn dropped(&self) -> usize {
        self.dropped_identical + self.dropped_unlabelled + self.dropped_prompt_too_long
    }
}

/// Tokenises records: the prompt through `template` (the model's own chat template, or ChatML
/// for a model without one) as one user turn (or, where the record has one, its whole
/// conversation) with the generation prompt, each response as plain
/// text followed by the tokenizer's EOS. Every record must have `k` labels. `index` of each
/// kept pair is its position in `records`.
pub fn encode_pairs(
    records: &[PairRecord],
    k: usize,
    tokenizer: &Tokenizer,
    template: &PromptTemplate,
    max_len: usize,
) -> Result<(Vec<EncodedPair>, EncodeReport), DpoError> {
    let tok_err = |index: usize, e: panacea_lm::LmError| DpoError::Pair {
        index,
        message: format!("cannot tokenise: {e}"),
    };
    let mut pairs = Vec::with_capacity(records.len());
    let mut report = EncodeReport { labelled_per_obj: vec![0; k], ..Default::default() };
    for (index, r) in records.iter().enumerate() {
        if r.labels.len() != k {
            return Err(DpoError::Pair {
                index,
                message: format!(
                    "(line {}) has {} labels but the run has {k} objectives; hint: read the file \
                     with one dimension name per objective",
                    r.line,
                    r.labels.len()
                ),
            });
        }
        let prompt_text = match &r.chat {
            // A conversation (TRL's conversational form with several turns) is rendered whole.
            Some(turns) => template.render(&chat_messages(turns), true),
            None => template.user_prompt(&r.prompt),
        }
        .map_err(|e| DpoError::Pair {
            index,
            message: format!(
                "(line {}) the chat template refuses its prompt: {e}; hint: a template may \
                 refuse roles it does not know or turns out of order",
                r.line
            ),
        })?;
        let prompt = tokenizer.encode(&prompt_text).map_err(|e| tok_err(index, e))?;
        let r0 = tokenizer.encode(&r.response_0).map_err(|e| tok_err(index, e))?;
        let r1 = tokenizer.encode(&r.response_1).map_err(|e| tok_err(index, e))?;
        match EncodedPair::new(
            index,
            &prompt,
            [&r0, &r1],
            tokenizer.eos_id,
            r.labels.clone(),
            max_len,
        )? {
            Ok(p) => {
                if p.seqs[0].len() < prompt.len() + r0.len() + 1
                    || p.seqs[1].len() < prompt.len() + r1.len() + 1
                {
                    report.truncated += 1;
                }
                for (count, &t) in report.labelled_per_obj.iter_mut().zip(&p.labels) {
                    *count += usize::from(t != 0);
                }
                pairs.push(p);
            }
            Err(DropReason::IdenticalResponses) => report.dropped_identical += 1,
            Err(DropReason::Unlabelled) => report.dropped_unlabelled += 1,
            Err(DropReason::PromptTooLong) => report.dropped_prompt_too_long += 1,
        }
    }
    report.kept = pairs.len();
    Ok((pairs, report))
}

/// A pair file's conversation as chat-template messages.
fn chat_messages(turns: &[panacea_data::ChatTurn]) -> Vec<Message> {
    turns
        .iter()
        .map(|t| {
            let role = match t.role {
                panacea_data::ChatRole::System => Role::System,
                panacea_data::ChatRole::User => Role::User,
                panacea_data::ChatRole::Assistant => Role::Assistant,
            };
            Message::new(role, t.content.clone())
        })
        .collect()
}

/// A batch of B pairs, concatenated so that both responses go through one forward:
/// rows 0..B are the pairs' response 0, rows B..2B their response 1. Right-padded.
#[derive(Debug)]
pub struct PairBatch {
    /// [`EncodedPair::index`] of each pair, in row order (length B).
    pub index: Vec<usize>,
    /// Token ids: [2B, T] (i64; padding positions hold `pad_id`).
    pub ids: Tensor,
    /// 1 for tokens, 0 for right padding: [2B, T] (i64).
    pub attention_mask: Tensor,
    /// Which next-token predictions enter the sequence log-prob: [2B, A] (bool), A = T − 1;
    /// position a predicts token a + 1.
    pub response_mask: Tensor,
    /// t ∈ {+1, −1, 0}: [B, K] (f32).
    pub labels: Tensor,
}

impl PairBatch {
    /// Collates `pairs` (each with `k` labels) on `device`.
    pub fn collate(
        pairs: &[&EncodedPair],
        k: usize,
        pad_id: i64,
        variant: SeqLogp,
        device: Device,
    ) -> Result<Self, DpoError> {
        if pairs.is_empty() {
            return Err(DpoError::Data("cannot collate an empty batch of pairs".into()));
        }
        let b = pairs.len();
        let t = pairs.iter().flat_map(|p| p.seqs.iter().map(Vec::len)).max().unwrap_or(0);
        if t < 2 {
            return Err(DpoError::Data(format!("sequences of {t} token(s) have nothing to score")));
        }
        let a = t - 1;
        let mut ids = vec![pad_id; 2 * b * t];
        let mut attn = vec![0i64; 2 * b * t];
        let mut resp = vec![false; 2 * b * a];
        let mut labels = Vec::with_capacity(b * k);
        for (i, p) in pairs.iter().enumerate() {
            if p.labels.len() != k {
                return Err(DpoError::Pair {
                    index: p.index,
                    message: format!("has {} labels, the batch {k}", p.labels.len()),
                });
            }
            labels.extend(p.labels.iter().map(|&x| f32::from(x)));
            let start = match variant {
                SeqLogp::ResponseSum => p.prompt_len,
                SeqLogp::FromDivergence => p.divergence_index(),
            };
            for (j, seq) in p.seqs.iter().enumerate() {
                let row = j * b + i;
                ids[row * t..row * t + seq.len()].copy_from_slice(seq);
                attn[row * t..row * t + seq.len()].fill(1);
                // Token positions start..len are scored; they are predicted at start−1..len−1.
                let lo = start.max(1) - 1;
                let hi = seq.len() - 1;
                if lo < hi {
                    resp[row * a + lo..row * a + hi].fill(true);
                }
            }
        }
        let (b2, t, a, k) = (2 * b as i64, t as i64, a as i64, k as i64);
        Ok(Self {
            index: pairs.iter().map(|p| p.index).collect(),
            ids: Tensor::from_slice(&ids).view([b2, t]).to_device(device), // [2B, T]
            attention_mask: Tensor::from_slice(&attn).view([b2, t]).to_device(device), // [2B, T]
            response_mask: Tensor::from_slice(&resp).view([b2, a]).to_device(device), // [2B, A]
            labels: Tensor::from_slice(&labels).view([b as i64, k]).to_device(device), // [B, K]
        })
    }

    /// B, the number of pairs.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Always false: a batch holds at least one pair.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// K, the number of objectives.
    pub fn n_objectives(&self) -> usize {
        self.labels.size()[1] as usize
    }

    /// Pairs `start..start + len` as a batch of their own (both halves), with trailing
    /// all-padding columns removed. Right padding means a real token never attends to a
    /// removed column, so log-probs are unchanged.
    pub fn slice(&self, start: usize, len: usize) -> PairBatch {
        let b = self.len() as i64;
        let (s, l) = (start as i64, len as i64);
        let rows = Tensor::cat(
            &[
                Tensor::arange_start(s, s + l, (Kind::Int64, self.ids.device())),
                Tensor::arange_start(b + s, b + s + l, (Kind::Int64, self.ids.device())),
            ],
            0,
        ); // [2l]
        let attn = self.attention_mask.index_select(0, &rows); // [2l, T]
        let t = i64::try_from(attn.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64).max())
            .expect("a scalar")
            .max(2);
        PairBatch {
            index: self.index[start..start + len].to_vec(),
            ids: self.ids.index_select(0, &rows).narrow(1, 0, t), // [2l, t]
            attention_mask: attn.narrow(1, 0, t),                 // [2l, t]
            response_mask: self.response_mask.index_select(0, &rows).narrow(1, 0, t - 1), // [2l, t−1]
            labels: self.labels.narrow(0, s, l),                                          // [l, K]
        }
    }
}

/// Epoch-wise shuffled batches over a list of pairs. The order comes from the caller's RNG
/// (the run's `data` stream); the position is plain data so a resumed run continues the epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairLoader {
    order: Vec<usize>,
    pos: usize,
    epoch: usize,
    batch_size: usize,
}

impl PairLoader {
    /// A loader over `n` pairs; the first epoch is shuffled on the first call.
    pub fn new(n: usize, batch_size: usize) -> Result<Self, DpoError> {
        if n == 0 || batch_size == 0 {
            return Err(DpoError::Data(format!(
                "a loader needs pairs and a batch size > 0 (got {n} pairs, batch size {batch_size})"
            )));
        }
        Ok(Self { order: Vec::new(), pos: 0, epoch: 0, batch_size: batch_size.min(n) })
    }

    /// Completed epochs.
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// The next `batch_size` positions into the pair list. An epoch that cannot fill a whole
    /// batch is reshuffled (its remainder is skipped), so every batch has the same size.
    pub fn next_batch<R: Rng + ?Sized>(&mut self, n: usize, rng: &mut R) -> Vec<usize> {
        if self.order.len() != n || self.pos + self.batch_size > n {
            if !self.order.is_empty() {
                self.epoch += 1;
            }
            self.order = (0..n).collect();
            self.order.shuffle(rng);
            self.pos = 0;
        }
        let out = self.order[self.pos..self.pos + self.batch_size].to_vec();
        self.pos += self.batch_size;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(index: usize, prompt: &[i64], r0: &[i64], r1: &[i64], labels: &[i8]) -> EncodedPair {
        EncodedPair::new(index, prompt, [r0, r1], 2, labels.to_vec(), 64)
            .expect("valid labels")
            .expect("kept")
    }

    fn bools(t: &Tensor) -> Vec<bool> {
        Vec::<bool>::try_from(t.flatten(0, -1)).expect("host")
    }

    #[test]
    fn eos_is_appended_and_identical_or_unlabelled_pairs_are_dropped() {
        let p = pair(0, &[10, 11], &[5], &[6, 7], &[1, 0]);
        assert_eq!(p.seqs, [vec![10, 11, 5, 2], vec![10, 11, 6, 7, 2]]);
        assert_eq!(p.divergence_index(), 2);
        let same = EncodedPair::new(1, &[10], [&[5], &[5]], 2, vec![1], 64).expect("ok");
        assert_eq!(same, Err(DropReason::IdenticalResponses));
        let none = EncodedPair::new(1, &[10], [&[5], &[6]], 2, vec![0, 0], 64).expect("ok");
        assert_eq!(none, Err(DropReason::Unlabelled));
        let long = EncodedPair::new(1, &[10, 11, 12], [&[5], &[6]], 2, vec![1], 3).expect("ok");
        assert_eq!(long, Err(DropReason::PromptTooLong));
        assert!(EncodedPair::new(1, &[10], [&[5], &[6]], 2, vec![2], 64).is_err());
    }

    #[test]
    fn response_mask_covers_response_and_eos_only() {
        // Pair 0: prompt [10, 11], responses [5] and [6, 7]; T = 5, A = 4.
        // Row 0: 10 11 5 2 pad → scored tokens at positions 2, 3 → predicted at a = 1, 2.
        // Row 1: 10 11 6 7 2   → tokens 2, 3, 4 → a = 1, 2, 3.
        let p = pair(0, &[10, 11], &[5], &[6, 7], &[1, -1]);
        let b = PairBatch::collate(&[&p], 2, 0, SeqLogp::ResponseSum, Device::Cpu).expect("batch");
        assert_eq!(b.ids.size(), [2, 5]);
        assert_eq!(
            bools(&b.response_mask),
            [
                false, true, true, false, // row 0
                false, true, true, true, // row 1
            ]
        );
        assert_eq!(
            Vec::<i64>::try_from(b.attention_mask.flatten(0, -1)).expect("host"),
            [1, 1, 1, 1, 0, 1, 1, 1, 1, 1]
        );
    }

    #[test]
    fn divergence_variant_starts_at_the_first_differing_token() {
        // Responses [5, 6, 7] and [5, 6, 8] share two tokens: divergence index 2 + 2 = 4.
        // T = 6, A = 5; both rows score tokens 4, 5 → a = 3, 4.
        let p = pair(0, &[10, 11], &[5, 6, 7], &[5, 6, 8], &[1]);
        assert_eq!(p.divergence_index(), 4);
        let b =
            PairBatch::collate(&[&p], 1, 0, SeqLogp::FromDivergence, Device::Cpu).expect("batch");
        assert_eq!(
            bools(&b.response_mask),
            [
                false, false, false, true, true, // row 0
                false, false, false, true, true, // row 1
            ]
        );
    }

    #[test]
    fn slice_takes_both_halves_and_trims_padding() {
        let p0 = pair(3, &[10], &[5, 5, 5, 5], &[6], &[1]);
        let p1 = pair(7, &[10], &[5], &[6], &[-1]);
        let b = PairBatch::collate(&[&p0, &p1], 1, 0, SeqLogp::ResponseSum, Device::Cpu)
            .expect("batch");
        assert_eq!(b.ids.size(), [4, 6]);
        let s = b.slice(1, 1);
        assert_eq!(s.index, [7]);
        // Rows: pair 1's response 0 ([10, 5, 2]) and response 1 ([10, 6, 2]); T trimmed to 3.
        assert_eq!(Vec::<i64>::try_from(s.ids.flatten(0, -1)).expect("host"), [10, 5, 2, 10, 6, 2]);
        assert_eq!(Vec::<f32>::try_from(s.labels.flatten(0, -1)).expect("host"), [-1.0]);
    }

    #[test]
    fn loader_visits_every_pair_once_per_epoch() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(0);
        let mut l = PairLoader::new(6, 2).expect("loader");
        let mut seen: Vec<usize> = (0..3).flat_map(|_| l.next_batch(6, &mut rng)).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
        assert_eq!(l.epoch(), 0);
        let _ = l.next_batch(6, &mut rng);
        assert_eq!(l.epoch(), 1);
    }
}
