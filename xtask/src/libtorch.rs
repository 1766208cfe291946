//! Finding libtorch 2.11.0, or installing it from PyPI into the project cache.
//!
//! Order: the `LIBTORCH` environment variable; the cache's finished install; else a fresh
//! Python venv in the cache with `pip install torch==2.11.0`. The install writes its `READY`
//! marker last (atomically), so an interrupted install is simply resumed by the next call.
//!
//! The cache's venv also gets NVIDIA's CCCL headers ([`CCCL_REQUIREMENT`]) when its torch has
//! CUDA: c10d's NCCL process group includes CUDA 13 headers that include CCCL's `nv/target`,
//! which the torch wheel does not ship. With them panacea-shim compiles NCCL in; without them
//! it builds anyway and reports "built without NCCL" at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The libtorch version tch 0.24 is built for.
pub(crate) const TORCH_VERSION: &str = "2.11.0";

/// Where a usable libtorch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The `LIBTORCH` environment variable.
    Env,
    /// The project cache (a venv with PyPI torch).
    Cache,
}

/// A libtorch that tch can build against.
#[derive(Debug, Clone)]
pub(crate) struct Libtorch {
    /// Folder holding `lib/` and `include/` (for PyPI torch: `site-packages/torch`).
    pub(crate) root: PathBuf,
    /// Its version, e.g. `2.11.0+cu130`.
    pub(crate) version: String,
    /// How it was found.
    pub(crate) source: Source,
}

impl Libtorch {
    /// The environment torch-sys's build script reads. `LIBTORCH_CXX11_ABI=1`: PyPI wheels of
    /// torch 2.11 and the official libtorch archives both use the C++11 ABI.
    pub(crate) fn cargo_env(&self) -> Vec<(&'static str, String)> {
        let root = self.root.display().to_string();
        vec![
            ("LIBTORCH", root.clone()),
            ("LIBTORCH_INCLUDE", root.clone()),
            ("LIBTORCH_LIB", root),
            ("LIBTORCH_CXX11_ABI", "1".to_owned()),
        ]
    }

    /// The folder with libtorch's shared libraries.
    pub(crate) fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }
}

/// The cache root: `$PANACEA_CACHE`, else `~/.cache/panacea`.
pub(crate) fn cache_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PANACEA_CACHE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("neither PANACEA_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache").join("panacea"))
}

/// The cache folder of this libtorch version.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    Ok(cache_root()?.join(format!("libtorch-{TORCH_VERSION}")))
}

/// Finds libtorch without installing anything.
pub(crate) fn find() -> Result<Option<Libtorch>> {
    if let Some(p) = std::env::var_os("LIBTORCH").filter(|p| !p.is_empty()) {
        return from_dir(Path::new(&p), Source::Env)
            .with_context(|| {
                format!("LIBTORCH={} is not a usable libtorch", Path::new(&p).display())
            })
            .map(Some);
    }
    let marker = cache_dir()?.join("READY");
    if !marker.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&marker)
        .with_context(|| format!("reading {}", marker.display()))?;
    let root = text.lines().find_map(|l| l.strip_prefix("root=")).with_context(|| {
        format!("{} has no root= line (delete it to reinstall)", marker.display())
    })?;
    match from_dir(Path::new(root), Source::Cache) {
        Ok(lt) => Ok(Some(lt)),
        // The marker points at a removed or damaged install: treat the cache as empty.
        Err(_) => Ok(None),
    }
}

/// Finds libtorch, installing it into the cache when absent; a cache install also gets the
/// CCCL headers ([`ensure_cccl`]). Failing that is only a warning here, since everything builds
/// without NCCL (offline with a cached torch, say); `cargo xtask setup` makes it an error.
pub(crate) fn ensure() -> Result<Libtorch> {
    let lt = match find()? {
        Some(lt) => lt,
        None => install(&cache_dir()?)?,
    };
    if let Err(e) = ensure_cccl(&lt) {
        eprintln!("xtask: warning: {e:#}; panacea-shim will build without NCCL");
    }
    Ok(lt)
}

/// The PyPI package with CCCL's headers (`nv/target`, CUB, Thrust) for CUDA 13.0, the CUDA of
/// torch 2.11.0's wheel. It installs them under `site-packages/nvidia/cu13/include/cccl`.
pub(crate) const CCCL_REQUIREMENT: &str = "nvidia-cuda-cccl==13.0.*";

/// Where panacea-shim's build script looks for CCCL's `nv/target` header, relative to the
/// site-packages folder that holds torch (keep the two lists in step).
pub(crate) const CCCL_INCLUDE_DIRS: &[&str] = &["nvidia/cu13/include/cccl", "nvidia/cu13/include"];

/// Whether CCCL's headers sit beside `lt` (in the same site-packages).
pub(crate) fn cccl_present(lt: &Libtorch) -> bool {
    let Some(site_packages) = lt.root.parent() else { return false };
    CCCL_INCLUDE_DIRS.iter().any(|dir| site_packages.join(dir).join("nv/target").is_file())
}

/// For `cargo xtask setup`: an error when [`ensure`] left the cache venv of a CUDA torch without
/// the CCCL headers (its warning above says why), so that set-up does not pass half done.
pub(crate) fn check_cccl(lt: &Libtorch) -> Result<()> {
    let needed = lt.source == Source::Cache && lt.lib_dir().join("libtorch_cuda.so").exists();
    ensure!(
        !needed || cccl_present(lt),
        "the CCCL headers ({CCCL_REQUIREMENT}) are missing from the cache venv, so panacea-shim \
         would build without NCCL; hint: fix the pip error above and rerun `cargo xtask setup`"
    );
    Ok(())
}

/// Installs [`CCCL_REQUIREMENT`] into the cache's venv when its torch has CUDA and the headers
/// are not there yet. Idempotent: once the header exists, pip is not run at all, so this works
/// offline and costs a file check (an already-satisfied `pip install` also exits 0, but only
/// after starting Python and pip, ~15 s on the 2-core machine). A `LIBTORCH` install is the
/// user's: it is never changed, only reported on.
pub(crate) fn ensure_cccl(lt: &Libtorch) -> Result<()> {
    // A CPU-only torch has no libtorch_cuda, so NCCL cannot be compiled in whatever headers exist.
    if cccl_present(lt) || !lt.lib_dir().join("libtorch_cuda.so").exists() {
        return Ok(());
    }
    if lt.source == Source::Env {
        eprintln!(
            "xtask: note: LIBTORCH has CUDA but no CCCL headers beside it, so panacea-shim builds \
             without NCCL (hint: `pip install '{CCCL_REQUIREMENT}'` into the Python that holds \
             {}, or unset LIBTORCH to use the project's cache)",
            lt.root.display()
        );
        return Ok(());
    }
    let python = cache_dir()?.join("venv").join("bin").join("python");
    eprintln!("xtask: installing {CCCL_REQUIREMENT} (CCCL headers for NCCL, about 17 MB) into the cache venv");
    // pip's progress goes to stderr, so that `cargo xtask env` keeps a clean stdout.
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet"])
        .arg(CCCL_REQUIREMENT)
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running pip of {}", python.display()))?;
    ensure!(
        status.success(),
        "pip install '{CCCL_REQUIREMENT}' into {} failed (see its output above); hint: check \
         that PyPI is reachable, or install it by hand with `{} -m pip install \
         '{CCCL_REQUIREMENT}'`",
        python.display(),
        python.display()
    );
    ensure!(
        cccl_present(lt),
        "{CCCL_REQUIREMENT} installed, but no nv/target header appeared under {} in {} \
         (hint: the package's layout changed; update CCCL_INCLUDE_DIRS here and in \
         crates/panacea-shim/build.rs)",
        CCCL_INCLUDE_DIRS.join(" or "),
        lt.root.parent().unwrap_or(&lt.root).display()
    );
    Ok(())
}

fn from_dir(root: &Path, source: Source) -> Result<Libtorch> {
    let lib = root.join("lib").join("libtorch_cpu.so");
    ensure!(lib.exists(), "{} does not exist", lib.display());
    ensure!(
        root.join("include").join("torch").is_dir(),
        "{}/include/torch is missing",
        root.display()
    );
    let version =
        read_version(root).with_context(|| format!("reading the version of {}", root.display()))?;
    let plain = version.split('+').next().unwrap_or_default();
    ensure!(
        plain == TORCH_VERSION,
        "libtorch at {} is version {version}, but tch 0.24 needs {TORCH_VERSION} \
         (hint: unset LIBTORCH to let `cargo xtask setup` install the right one)",
        root.display()
    );
    Ok(Libtorch { root: root.to_owned(), version, source })
}

/// Official archives carry `build-version`; PyPI's package carries `version.py`.
fn read_version(root: &Path) -> Result<String> {
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return Ok(v.trim().to_owned());
    }
    let py = std::fs::read_to_string(root.join("version.py"))
        .context("neither build-version nor version.py found")?;
    py.lines()
        .find_map(|l| l.strip_prefix("__version__"))
        .and_then(|rest| rest.split(['\'', '"']).nth(1))
        .map(str::to_owned)
        .context("version.py has no __version__")
}

fn install(dir: &Path) -> Result<Libtorch> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let venv = dir.join("venv");
    let python = venv.join("bin").join("python");
    let venv_works = Command::new(&python)
        .args(["-c", "import sys"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !venv_works {
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("removing the broken venv {}", venv.display()))?;
        }
        eprintln!("xtask: creating a Python venv at {}", venv.display());
        let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().context(
            "running python3 (hint: install Python 3 with its venv module, or set LIBTORCH)",
        )?;
        ensure!(status.success(), "`python3 -m venv {}` failed", venv.display());
    }
    eprintln!(
        "xtask: installing torch=={TORCH_VERSION} from PyPI into {} (about 4.6 GB, 1-2 minutes)",
        venv.display()
    );
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .arg(format!("torch=={TORCH_VERSION}"))
        .status()
        .context("running pip")?;
    ensure!(status.success(), "pip install torch=={TORCH_VERSION} failed (see its output above)");
    let out = Command::new(&python)
        .args(["-c", "import torch, os; print(os.path.dirname(torch.__file__))"])
        .output()
        .context("asking the venv where torch lives")?;
    if !out.status.success() {
        bail!(
            "`import torch` failed in {}: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lt = from_dir(&root, Source::Cache)?;
    // Written last and atomically: its presence means the install is complete.
    let marker = dir.join("READY");
    let tmp = dir.join("READY.tmp");
    std::fs::write(&tmp, format!("root={}\nversion={}\n", root.display(), lt.version))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &marker).with_context(|| format!("writing {}", marker.display()))?;
    Ok(lt)
}
