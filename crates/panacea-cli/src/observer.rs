//! The terminal side of a whole job: [`ProgressObserver`] draws an indicatif progress bar (step,
//! ETA, the step's summary) and prints the job's messages above it (plain lines when stderr is
//! not a terminal); [`install_stop_flag`] turns Ctrl-C into the job's stop flag: the first SIGINT
//! or SIGTERM lets the job finish its step and checkpoint (the CLI then exits with 130), a second
//! one ends the process at once.

use std::io::IsTerminal;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use panacea_core::device::DeviceChoice;
use panacea_run::{human_bytes, Event, Observer, Silent, StopFlag};
use panacea_shim::dist::ProcessGroup;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// Shows a job's progress on stderr.
#[derive(Default)]
pub(crate) struct ProgressObserver {
    bar: Option<ProgressBar>,
    job: String,
    /// The device whose peak memory is measured after the first step, set against the job's
    /// estimate (the estimate's total, once the job sent it).
    memory: Option<(tch::Device, Option<u64>)>,
}

impl ProgressObserver {
    /// An observer with no bar yet; the job's `Started` event creates it.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// After the first step, also print the peak memory measured on `device` beside the job's
    /// memory estimate: the CUDA caching allocator's peak of allocated bytes, or on the CPU the
    /// process's peak resident set (`panacea_shim::memory`).
    pub(crate) fn measuring_memory_on(mut self, device: tch::Device) -> Self {
        self.memory = Some((device, None));
        self
    }

    /// The line comparing the measured peak with the estimate, once.
    fn report_peak_memory(&mut self) {
        let Some((device, Some(estimate))) = self.memory.take() else { return };
        let line = match panacea_shim::memory::peak_bytes(device) {
            Ok(peak) => {
                let what = match device {
                    tch::Device::Cuda(_) => "CUDA allocator's peak of allocated bytes",
                    _ => "the process's peak resident set, libraries and data included",
                };
                format!(
                    "measured peak memory after the first step: {} ({what}); estimated {} \
                     ({:.2}×)",
                    human_bytes(peak),
                    human_bytes(estimate),
                    peak as f64 / estimate.max(1) as f64
                )
            }
            Err(e) => format!("peak memory not measured: {e}"),
        };
        self.println(&line);
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
            Event::MemoryEstimate(estimate) => {
                self.println(&estimate.to_string());
                if let Some((_, total)) = &mut self.memory {
                    *total = Some(estimate.total_bytes());
                }
            }
            Event::Step { summary, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_message(summary.to_owned());
                    bar.inc(1);
                }
                self.report_peak_memory();
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

/// Runs `job` as this process's rank of a data-parallel run, or alone. Under torchrun or srun
/// (RANK, WORLD_SIZE, ... set) the process joins the group (`None` otherwise: the
/// single-process path); `device` picks the backend (NCCL for CUDA, Gloo for the CPU) unless
/// PANACEA_DIST_BACKEND names one. Rank 0 gets the progress bar, which reports memory on the
/// rank's own device (cuda:LOCAL_RANK under a group); the other ranks would repeat it and stay
/// silent.
pub(crate) fn as_rank<T>(
    device: DeviceChoice,
    job: impl FnOnce(&mut dyn Observer, Option<&ProcessGroup>) -> Result<T>,
) -> Result<T> {
    let device = device.resolve()?;
    let group =
        ProcessGroup::from_env_for(device).context("joining the data-parallel process group")?;
    let rank_device = group.as_ref().map_or(device, |g| g.device_for(device));
    if group.as_ref().is_some_and(|g| !g.is_main()) {
        return job(&mut Silent, group.as_ref());
    }
    job(&mut ProgressObserver::new().measuring_memory_on(rank_device), group.as_ref())
}
