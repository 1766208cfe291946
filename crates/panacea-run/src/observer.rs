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
}

impl Observer for Recorder {
    fn on_event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Phase(m) | Event::Message(m) => self.messages.push(m.to_owned()),
            Event::Warning(w) => self.warnings.push(w.to_owned()),
            Event::Step { step, .. } => self.steps.push(step),
            Event::Checkpoint { step, .. } => self.checkpoints.push(step),
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
