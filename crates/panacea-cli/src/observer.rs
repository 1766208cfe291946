//! The terminal side of a whole job: [`ProgressObserver`] draws an indicatif progress bar (step,
//! ETA, the step's summary) and prints the job's messages above it (plain lines when stderr is
//! not a terminal); [`install_stop_flag`] turns Ctrl-C into the job's stop flag: the first SIGINT
//! or SIGTERM lets the job finish its step and checkpoint (the CLI then exits with 130), a second
//! one ends the process at once.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use panacea_run::{Event, Observer, StopFlag};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Shows a job's progress on stderr.
#[derive(Default)]
pub(crate) struct ProgressObserver {
    bar: Option<ProgressBar>,
    job: String,
}

impl ProgressObserver {
    /// An observer with no bar yet; the job's `Started` event creates it.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

impl Observer for ProgressObserver {
    fn on_event(&mut self, event: &Event<'_>) {
        match *event {
            Event::Started { job, run_dir, start_step, total_steps } => {
                self.job = job.to_owned();
                let visible = std::io::stderr().is_terminal();
                let target = if visible {
                    ProgressDrawTarget::stderr()
                } else {
                    ProgressDrawTarget::hidden()
                };
                let bar = ProgressBar::with_draw_target(Some(total_steps), target);
                let style = ProgressStyle::with_template(
                    "{bar:30} step {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_position(start_step);
                self.bar = Some(bar);
                if start_step > 0 {
                    self.println(&format!("resuming {} from step {start_step}", run_dir.display()));
                }
                self.println(&format!("run folder: {}", run_dir.display()));
            }
            Event::Phase(line) | Event::Message(line) => self.println(line),
            Event::Warning(line) => self.println(&format!("warning: {line}")),
            Event::Step { summary, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(summary.to_owned());
                    bar.inc(1);
                }
            }
            Event::Checkpoint { dir, .. } => self.println(&format!("checkpoint {}", dir.display())),
            Event::Finished { run_dir, step, interrupted } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if interrupted {
                    eprintln!(
                        "interrupted after step {step}; continue with `panacea {} --resume {}`",
                        self.job,
                        run_dir.display()
                    );
                } else {
                    eprintln!("done: {}", run_dir.display());
                }
            }
            _ => {}
        }
    }
}

/// Installs the signal handlers and returns the flag they set.
pub(crate) fn install_stop_flag() -> Result<StopFlag> {
    let stop = StopFlag::new();
    for sig in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal.
        flag::register_conditional_shutdown(sig, 130, std::sync::Arc::clone(stop.as_atomic()))
            .context("installing the Ctrl-C handler")?;
        flag::register(sig, std::sync::Arc::clone(stop.as_atomic()))
            .context("installing the Ctrl-C handler")?;
    }
    Ok(stop)
}
