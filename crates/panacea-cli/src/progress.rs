//! The run's progress bar (indicatif): step, ETA and a message with per-objective scores and
//! KL. Hidden when stderr is not a terminal; log lines then go to stderr as plain lines.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar per run.
pub(crate) struct Progress {
    bar: ProgressBar,
    visible: bool,
}

impl Progress {
    /// A bar over `total` steps, already at `done`.
    pub(crate) fn new(total: u64, done: u64) -> Self {
        let visible = std::io::stderr().is_terminal();
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
        );
        let style = ProgressStyle::with_template(
            "{bar:30} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(done);
        Self { bar, visible }
    }

    /// Advances one step and shows `msg`.
    pub(crate) fn step(&self, msg: String) {
        self.bar.set_message(msg);
        self.bar.inc(1);
    }

    /// Prints a log line above the bar (or plainly when the bar is hidden).
    pub(crate) fn println(&self, line: &str) {
        if self.visible {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
