//! The Python packages the test suite drives the project with (not libtorch's venv): the
//! official `openai` client, which panacea-serve's protocol test runs against the server.
//!
//! They go into their own venv, `$PANACEA_CACHE/python-tools`, so that the user's Python is
//! never touched; the test looks there (after `$PANACEA_PYTHON`) and skips with a printed
//! reason where neither has them. A failed install is reported, not fatal: only that test skips.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// The packages, pinned to a major version whose API the scripts use.
const PACKAGES: &[&str] = &["openai>=1.40,<3"];

/// The venv's Python.
pub(crate) fn python() -> Result<PathBuf> {
    Ok(crate::libtorch::cache_root()?.join("python-tools").join("bin").join("python"))
}

fn has_packages(python: &PathBuf) -> bool {
    Command::new(python).args(["-c", "import openai"]).output().is_ok_and(|o| o.status.success())
}

/// Creates the venv and installs [`PACKAGES`] unless they are already importable.
pub(crate) fn ensure() -> Result<()> {
    let py = python()?;
    if has_packages(&py) {
        return Ok(());
    }
    let venv = crate::libtorch::cache_root()?.join("python-tools");
    if !py.exists() {
        eprintln!("xtask: creating a Python venv for test tools at {}", venv.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .context("running python3 -m venv")?;
        ensure!(status.success(), "`python3 -m venv {}` failed", venv.display());
    }
    eprintln!("xtask: installing {} into {}", PACKAGES.join(" "), venv.display());
    let status = Command::new(&py)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
        .args(PACKAGES)
        .status()
        .context("running pip")?;
    ensure!(status.success(), "pip install {} failed", PACKAGES.join(" "));
    Ok(())
}
