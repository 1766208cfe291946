//! One seed per run, split into named, independent RNG streams.
//!
//! [`seed_everything`] seeds libtorch (CPU and CUDA) and returns a [`RunRng`] whose streams
//! `data`, `preference` and `sampling` are ChaCha12 generators with the same key and different
//! stream ids. Independent streams mean that changing the preference sampler (or drawing more
//! preferences) never changes the data order, and vice versa.
//!
//! The state is a few numbers ([`RunRngState`]: the seed and each stream's word position), so a
//! resumed run continues every stream exactly where it stopped.

use rand::SeedableRng;
use rand_chacha::ChaCha12Rng;
use serde::{Deserialize, Serialize};

/// ChaCha stream id of [`RunRng::data`].
const DATA_STREAM: u64 = 1;
/// ChaCha stream id of [`RunRng::preference`].
const PREFERENCE_STREAM: u64 = 2;
/// ChaCha stream id of [`RunRng::sampling`].
const SAMPLING_STREAM: u64 = 3;

/// The named RNG streams of a run. RNGs are parameters (`&mut rng.data`), never thread-local.
#[derive(Clone, Debug)]
pub struct RunRng {
    seed: u64,
    /// Data order: shuffling, batching, train/eval splits.
    pub data: ChaCha12Rng,
    /// Preference vectors drawn for training.
    pub preference: ChaCha12Rng,
    /// Anything else drawn on the host (e.g. sampling seeds handed to generation).
    pub sampling: ChaCha12Rng,
}

/// The resumable state of a [`RunRng`]: the seed and how far each stream has advanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRngState {
    /// The run's seed.
    pub seed: u64,
    /// Word position of the `data` stream.
    pub data_pos: u128,
    /// Word position of the `preference` stream.
    pub preference_pos: u128,
    /// Word position of the `sampling` stream.
    pub sampling_pos: u128,
}

fn stream(seed: u64, id: u64) -> ChaCha12Rng {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

impl RunRng {
    /// The streams for `seed`, without touching libtorch's generator.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            data: stream(seed, DATA_STREAM),
            preference: stream(seed, PREFERENCE_STREAM),
            sampling: stream(seed, SAMPLING_STREAM),
        }
    }

    /// The seed this run started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The state to save with a checkpoint.
    pub fn state(&self) -> RunRngState {
        RunRngState {
            seed: self.seed,
            data_pos: self.data.get_word_pos(),
            preference_pos: self.preference.get_word_pos(),
            sampling_pos: self.sampling.get_word_pos(),
        }
    }

    /// Rebuilds the streams from a saved state; they continue exactly where they stopped.
    pub fn from_state(state: &RunRngState) -> Self {
        let mut rng = Self::new(state.seed);
        rng.data.set_word_pos(state.data_pos);
        rng.preference.set_word_pos(state.preference_pos);
        rng.sampling.set_word_pos(state.sampling_pos);
        rng
    }
}

/// Seeds libtorch's CPU and CUDA generators with `seed` and returns the run's host streams.
/// libtorch's generator state is not part of [`RunRngState`]: on resume, call this again (with a
/// seed derived from the step, if device-side sampling must differ from the first run).
pub fn seed_everything(seed: u64) -> RunRng {
    // tch takes an i64; the bit pattern is what matters.
    tch::manual_seed(seed as i64);
    if tch::Cuda::is_available() {
        tch::Cuda::manual_seed_all(seed);
    }
    RunRng::new(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_differ_and_resume() {
        let mut a = RunRng::new(7);
        let x: u64 = a.data.gen();
        let y: u64 = a.preference.gen();
        assert_ne!(x, y, "streams must be independent");
        let state = a.state();
        let mut b = RunRng::from_state(&state);
        let next_a: [u64; 3] = [a.data.gen(), a.preference.gen(), a.sampling.gen()];
        let next_b: [u64; 3] = [b.data.gen(), b.preference.gen(), b.sampling.gen()];
        assert_eq!(next_a, next_b);
    }
}
