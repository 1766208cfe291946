//! A training step at fixed shapes, captured once per shape as a CUDA graph and replayed
//! ([`GraphedStep`]), and the length buckets that give it fixed shapes ([`bucket_len`]).
//!
//! A training step of a small adapter is thousands of small kernels (about 28 per adapted
//! linear layer, plus the optimiser), and on a GPU their launches set the step time. A graph
//! relaunches a recorded step in one call, under PyTorch's rules (`panacea_shim::graph`): the
//! step reads its inputs from static tensors allocated before the capture and written in place
//! before each replay, allocates nothing that outlives it except its outputs (which live in
//! the graph's pool and are rewritten by each replay), and never reads a device value on the
//! host. Forward, backward and the optimiser are captured together (PyTorch's whole-network
//! capture): the backward accumulates into the optimiser's flat gradient buffer in place
//! (autograd adds to a defined gradient), and the capture-safe AdamW step
//! (`panacea_core::optim::AdamW::clip_and_step_on_device`) reads its per-step numbers from
//! device scalars.
//!
//! Shapes come from the data (sequence lengths), so the caller pads them up to buckets, and
//! keeps one graph per bucket key; the graphs share one memory pool, which is safe because
//! they are replayed one at a time.
//!
//! [`GraphedStep::run`] for a key it has not captured yet runs the step eagerly a few times
//! first with the update switched off (the caller's `prepare` gets `real = false`): the first
//! runs create the gradients and lazily initialise cuBLAS and the autograd engine, which must
//! not happen inside a capture. Then it captures, and replays the capture for this and every
//! later step of that key. Where graphs are not available (a CPU, a build without CUDA) or
//! the capture failed, it runs the same step eagerly through the same static buffers and
//! says why ([`GraphedStep::unavailable_reason`], [`GraphedStep::capture_error`]).

use std::collections::BTreeMap;
use std::fmt::Display;

use panacea_shim::graph::{unavailable_reason, CudaGraph};
use panacea_shim::ShimError;
use tch::Device;

/// The bucket a length of `n` ≥ 1 positions is padded to: at least 16, then four steps per
/// power of two (for n in (2ᵏ, 2ᵏ⁺¹]: the next multiple of 2ᵏ⁻², so 17 → 20, 129 → 160).
///
/// Why this rule: padding costs compute in proportion (at most 25 % here; powers of two would
/// waste up to 50 %), and every bucket costs a capture (about three eager steps) and the graph's
/// memory; four buckets per doubling keeps both small for the lengths of chat pairs (a few
/// dozen to a few hundred tokens: about a dozen buckets).
pub fn bucket_len(n: i64) -> i64 {
    let n = n.max(1);
    if n <= 16 {
        return 16;
    }
    let below = 1i64 << (63 - (n - 1).leading_zeros()); // 2ᵏ, the largest power of two < n
    let step = below / 4;
    (n + step - 1) / step * step
}

/// How [`GraphedStep::run`] ran the step: replayed from a graph (its outputs are the graph's
/// static tensors, valid until the next replay of the same key) or eagerly.
#[derive(Debug)]
pub enum StepRun<'a, O> {
    /// Replayed; the outputs are the captured ones, rewritten by the replay.
    Replayed(&'a O),
    /// Run eagerly (graphs unavailable or the capture failed).
    Eager(O),
}

impl<O> StepRun<'_, O> {
    /// The step's outputs.
    pub fn outputs(&self) -> &O {
        match self {
            StepRun::Replayed(o) => o,
            StepRun::Eager(o) => o,
        }
    }

    /// Whether the step was replayed from a CUDA graph.
    pub fn replayed(&self) -> bool {
        matches!(self, StepRun::Replayed(_))
    }
}

struct Entry<S, O> {
    statics: S,
    captured: Option<(CudaGraph, O)>,
    /// The capture of this key failed once; it runs eagerly from now on.
    failed: bool,
}

/// One training step per bucket key `K`: its static inputs `S` and, on CUDA, its captured
/// graph with the static outputs `O` (see the module docs).
pub struct GraphedStep<K, S, O> {
    device: Device,
    warmups: usize,
    entries: BTreeMap<K, Entry<S, O>>,
    /// The key whose graph owns the memory pool the others share.
    pool_owner: Option<K>,
    capture_error: Option<String>,
    replays: u64,
}

impl<K: std::fmt::Debug, S, O> std::fmt::Debug for GraphedStep<K, S, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphedStep")
            .field("device", &self.device)
            .field("keys", &self.entries.keys().collect::<Vec<_>>())
            .field("replays", &self.replays)
            .field("capture_error", &self.capture_error)
            .finish()
    }
}

/// Eager warm-up runs before a capture. PyTorch's whole-network capture example warms up for 3
/// iterations; here the first creates the gradients and initialises the libraries, and the
/// second runs in the steady state the capture records (gradients defined and accumulated in
/// place), so two suffice.
pub const DEFAULT_WARMUPS: usize = 2;

impl<K: Ord + Clone, S, O> GraphedStep<K, S, O> {
    /// Steps on `device`, with `warmups` eager runs before each capture (at least 1).
    pub fn new(device: Device, warmups: usize) -> Self {
        Self {
            device,
            warmups: warmups.max(1),
            entries: BTreeMap::new(),
            pool_owner: None,
            capture_error: None,
            replays: 0,
        }
    }

    /// Why steps on this device run eagerly (`None`: they are captured and replayed).
    pub fn unavailable_reason(&self) -> Option<String> {
        unavailable_reason(self.device)
    }

    /// Why the last failed capture failed (its key then runs eagerly).
    pub fn capture_error(&self) -> Option<&str> {
        self.capture_error.as_deref()
    }

    /// Steps replayed from a graph so far.
    pub fn replays(&self) -> u64 {
        self.replays
    }

    /// Graphs captured so far (one per bucket key).
    pub fn graphs(&self) -> usize {
        self.entries.values().filter(|e| e.captured.is_some()).count()
    }

    /// Runs the step of bucket `key`. `make` allocates the key's static inputs on first use;
    /// `prepare(statics, real)` writes this step's inputs into them before every run, outside
    /// any capture (`real` is false for the warm-ups, whose update must not apply); `body`
    /// is the step itself, reading only the statics and device state, returning its outputs.
    pub fn run<E: From<ShimError> + Display>(
        &mut self,
        key: K,
        make: impl FnOnce() -> Result<S, E>,
        mut prepare: impl FnMut(&S, bool) -> Result<(), E>,
        mut body: impl FnMut(&S) -> Result<O, E>,
    ) -> Result<StepRun<'_, O>, E> {
        if !self.entries.contains_key(&key) {
            let entry = Entry { statics: make()?, captured: None, failed: false };
            self.entries.insert(key.clone(), entry);
        }
        let graphs = unavailable_reason(self.device).is_none();
        let entry = &self.entries[&key];
        let mut captured = None;
        if graphs && entry.captured.is_none() && !entry.failed {
            for _ in 0..self.warmups {
                prepare(&entry.statics, false)?;
                body(&entry.statics)?;
            }
            let pool = self.pool_owner.as_ref().and_then(|k| self.entries.get(k));
            let pool = pool.and_then(|e| e.captured.as_ref()).map(|(g, _)| g);
            captured = Some(match CudaGraph::capture(self.device, pool, || body(&entry.statics)) {
                Ok((graph, Ok(outputs))) => Ok((graph, outputs)),
                // An error inside the capture (a host read, an unsupported call): the graph is
                // incomplete, so it is dropped.
                Ok((_, Err(e))) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            });
        }
        let entry = self.entries.get_mut(&key).expect("inserted above");
        match captured {
            Some(Ok(graph)) => {
                entry.captured = Some(graph);
                if self.pool_owner.is_none() {
                    self.pool_owner = Some(key.clone());
                }
            }
            Some(Err(why)) => {
                entry.failed = true;
                self.capture_error = Some(why);
            }
            None => {}
        }
        let entry = &self.entries[&key];
        prepare(&entry.statics, true)?;
        match &entry.captured {
            Some((graph, outputs)) => {
                graph.replay()?;
                self.replays += 1;
                Ok(StepRun::Replayed(outputs))
            }
            None => Ok(StepRun::Eager(body(&entry.statics)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_at_least_the_length_and_waste_at_most_a_quarter() {
        assert_eq!(
            [1, 16, 17, 20, 21, 33, 129, 160, 161, 256, 257].map(bucket_len),
            [16, 16, 20, 20, 24, 40, 160, 160, 192, 256, 320]
        );
        for n in 1..5000 {
            let b = bucket_len(n);
            assert!(b >= n && (b <= 16 || (b - n) * 4 < b), "{n} → {b}");
        }
    }

    #[test]
    fn on_a_cpu_the_step_runs_eagerly_through_the_statics_and_says_why() {
        panacea_core::device::init_torch();
        let mut step: GraphedStep<i64, tch::Tensor, tch::Tensor> =
            GraphedStep::new(Device::Cpu, DEFAULT_WARMUPS);
        assert!(step.unavailable_reason().is_some_and(|r| r.contains("CUDA")));
        let mut made = 0;
        for x in [1.0f32, 2.0, 3.0] {
            let run = step
                .run(
                    4,
                    || {
                        made += 1;
                        Ok::<_, ShimError>(tch::Tensor::zeros([1], (tch::Kind::Float, Device::Cpu)))
                    },
                    |s, real| {
                        assert!(real, "no warm-ups without graphs");
                        let _ = s.shallow_clone().fill_(f64::from(x));
                        Ok(())
                    },
                    |s| Ok(s * 2.0),
                )
                .expect("eager run");
            assert!(!run.replayed());
            assert_eq!(f64::try_from(run.outputs()).expect("scalar"), 2.0 * f64::from(x));
        }
        assert_eq!((made, step.replays(), step.graphs()), (1, 0, 0));
        assert!(step.capture_error().is_none());
    }
}
