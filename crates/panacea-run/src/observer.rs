//! How a job talks to whoever runs it: progress goes out through an [`Observer`], a stop request
//! comes in through a [`StopFlag`]. Libraries never print and never install signal handlers;
//! the `panacea` binary plugs a progress bar into the observer and Ctrl-C into the flag, a test
//! plugs in nothing ([`Silent`]) or a recorder.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Something that happened in a job, in the order it happens.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The run folder is ready and steps `start_step + 1 ..= total_steps` follow.
    Started {
        /// The job (`train-ppo`, `train-dpo`, ...).
        job: &'a str,
        /// The run folder.
        run_dir: &'a Path,
        /// Steps already done (0, or a resumed checkpoint's step).
        start_step: u64,
        /// The step the run ends at.
        total_steps: u64,
    },
    /// A phase that takes a while and is not a step (loading the model, evaluating).
    Phase(&'a str),
    /// Step `step` finished; `summary` is a one-line status (scores, KL) for a progress bar.
    Step {
        /// The step just finished (1-based).
        step: u64,
        /// A short status line.
        summary: &'a str,
    },
    /// A line worth keeping in the log: logged metrics in words, evaluation results.
    Message(&'a str),
    /// The memory one training step is estimated to need, for the run's model and settings
    /// (emitted once the model is loaded, before the first step).
    MemoryEstimate(&'a MemoryEstimate),
    /// Something the user should know that did not stop the job (data lines skipped, a
    /// hypervolume of 0 against the chosen reference point).
    Warning(&'a str),
    /// A complete checkpoint folder was written.
    Checkpoint {
        /// Its step.
        step: u64,
        /// The folder.
        dir: &'a Path,
    },
    /// The job stopped: after its last step, or early because the stop flag was set.
    Finished {
        /// The run folder.
        run_dir: &'a Path,
        /// The last step done.
        step: u64,
        /// True when the stop flag ended it early.
        interrupted: bool,
    },
}

/// What one training step of a job is estimated to hold in memory, by part (the parts and
/// their formula: `panacea_lm::memory_plan`). A planning number to set against a measured peak,
/// not a measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// What is estimated, in words: the forward's sequences and tokens, the dtype and whether
    /// activation checkpointing is on.
    pub shape: String,
    /// (part, bytes), e.g. ("base weights", 538_000_000).
    pub parts: Vec<(String, u64)>,
}

impl MemoryEstimate {
    /// An estimate of `shape` from (part, bytes) pairs (negative byte counts count as 0).
    pub fn new<'p>(shape: String, parts: impl IntoIterator<Item = (&'p str, i64)>) -> Self {
        let parts = parts.into_iter().map(|(name, b)| (name.to_owned(), b.max(0) as u64)).collect();
        Self { shape, parts }
    }

    /// All parts together, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}

/// A byte count in binary units with three significant figures: `512 B`, `1.50 KiB`,
/// `7.25 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value >= 100.0 => format!("{value:.0} {}", UNITS[unit]),
        _ if value >= 10.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.2} {}", UNITS[unit]),
    }
}

impl std::fmt::Display for MemoryEstimate {
    /// One line: `estimated memory of a step: 1.23 GiB (base weights 512 MiB, ...) for <shape>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> =
            self.parts.iter().map(|(name, b)| format!("{name} {}", human_bytes(*b))).collect();
        write!(
            f,
            "estimated memory of a step: {} ({}) for {}",
            human_bytes(self.total_bytes()),
            parts.join(", "),
            self.shape
        )
    }
}

/// Receives a job's [`Event`]s.
pub trait Observer {
    /// Called for each event, on the job's thread; keep it cheap.
    fn on_event(&mut self, event: &Event<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {
    fn on_event(&mut self, _event: &Event<'_>) {}
}

/// An observer that keeps the messages and warnings it sees (tests, and callers that want to
/// show them after the job).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// Every `Message` and `Phase` line, in order.
    pub messages: Vec<String>,
    /// Every `Warning` line, in order.
    pub warnings: Vec<String>,
    /// The steps reported by `Step` events.
    pub steps: Vec<u64>,
    /// The steps of the checkpoints written.
    pub checkpoints: Vec<u64>,
    /// Every memory estimate, in order.
    pub memory_estimates: Vec<MemoryEstimate>,
}

impl Observer for Recorder {
    fn on_event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Phase(m) | Event::Message(m) => self.messages.push(m.to_owned()),
            Event::Warning(w) => self.warnings.push(w.to_owned()),
            Event::Step { step, .. } => self.steps.push(step),
            Event::Checkpoint { step, .. } => self.checkpoints.push(step),
            Event::MemoryEstimate(e) => self.memory_estimates.push(e.clone()),
            Event::Started { .. } | Event::Finished { .. } => {}
        }
    }
}

/// A request to stop a job after its current step (with a checkpoint). Cheap to clone; every
/// clone shares one flag, so a signal handler can hold one clone and the job another.
#[derive(Debug, Default, Clone)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared boolean, for APIs that set a flag themselves (e.g. `signal_hook::flag`).
    pub fn as_atomic(&self) -> &Arc<AtomicBool> {
        &self.0
    }

    /// Asks the job to stop after its current step.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    /// Hand-computed: 1,536 B = 1.50 KiB; 3·2³⁰ + 2²⁸ B = 3.25 GiB; 150·2²⁰ B = 150 MiB.
    #[test]
    fn estimates_add_up_and_print_in_binary_units() {
        let e = MemoryEstimate::new(
            "8 sequences of 128 tokens".into(),
            [("base weights", 3 << 30), ("activations", 1 << 28), ("mask", -5)],
        );
        assert_eq!(e.total_bytes(), (3u64 << 30) + (1 << 28));
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(150 << 20), "150 MiB");
        assert_eq!(
            e.to_string(),
            "estimated memory of a step: 3.25 GiB (base weights 3.00 GiB, activations 256 MiB, \
             mask 0 B) for 8 sequences of 128 tokens"
        );
    }
}
