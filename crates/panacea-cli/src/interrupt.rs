//! Ctrl-C for the training loops: the first SIGINT (or SIGTERM) only sets a flag, the loop
//! finishes its step, writes a checkpoint and exits with code 130; a second one ends the
//! process at once (for a loop stuck in a long step).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// The interrupt flag of one training run.
#[derive(Debug, Clone)]
pub(crate) struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers. A signal arriving while the flag is already set terminates the
    /// process with exit code 130.
    pub(crate) fn install() -> Result<Self> {
        let requested = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as it was before this signal.
            flag::register_conditional_shutdown(sig, 130, Arc::clone(&requested))
                .context("installing the Ctrl-C handler")?;
            flag::register(sig, Arc::clone(&requested)).context("installing the Ctrl-C handler")?;
        }
        Ok(Self(requested))
    }

    /// True once a signal arrived.
    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
