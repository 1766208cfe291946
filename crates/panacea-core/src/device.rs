//! libtorch start-up and the user's device and dtype choices.
//!
//! rustc links with `--as-needed`, which drops `libtorch_cuda.so` from binaries because no Rust
//! symbol refers to it; libtorch then never registers its CUDA backend and
//! `tch::Cuda::is_available()` reports false even on a GPU machine. [`init_torch`] loads that
//! library by hand (RTLD_NOW | RTLD_GLOBAL) before the first tensor op. Every binary and test
//! that uses tch calls it first.

use std::ffi::CString;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::CoreError;

/// What [`init_torch`] found, for `doctor` output and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchInit {
    /// Whether `libtorch_cuda.so` was found and loaded.
    pub cuda_library_loaded: bool,
    /// The loader's message when it was not (normal on a CPU-only machine).
    pub cuda_load_error: Option<String>,
}

static INIT: OnceLock<TorchInit> = OnceLock::new();

/// Loads libtorch's CUDA backend when it exists. Idempotent and harmless on CPU-only machines:
/// a missing library is recorded, not an error.
pub fn init_torch() -> &'static TorchInit {
    INIT.get_or_init(|| {
        // The bare name is resolved through the binary's RUNPATH, which the build scripts set to
        // libtorch's folder, and then through LD_LIBRARY_PATH.
        let name = CString::new("libtorch_cuda.so").unwrap_or_default();
        // SAFETY: dlopen is called with a valid NUL-terminated string; the handle is kept
        // open for the life of the process on purpose (the CUDA hooks must stay registered).
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            // SAFETY: dlerror returns a thread-local C string or null.
            let msg = unsafe {
                let e = libc::dlerror();
                if e.is_null() {
                    "unknown dlopen error".to_owned()
                } else {
                    std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned()
                }
            };
            TorchInit { cuda_library_loaded: false, cuda_load_error: Some(msg) }
        } else {
            TorchInit { cuda_library_loaded: true, cuda_load_error: None }
        }
    })
}

/// A device as the user names it on the command line or in a config: `auto`, `cpu`, `cuda`
/// or `cuda:N`. Only the CLI resolves it; libraries take a `tch::Device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when available, else the CPU.
    Auto,
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl DeviceChoice {
    /// Resolves the choice to a device, failing with a hint when CUDA was asked for and is
    /// absent or the ordinal is out of range.
    pub fn resolve(self) -> Result<tch::Device, CoreError> {
        init_torch();
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Auto => {
                Ok(if tch::Cuda::is_available() { tch::Device::Cuda(0) } else { tch::Device::Cpu })
            }
            DeviceChoice::Cuda(n) => {
                if !tch::Cuda::is_available() {
                    return Err(CoreError::Device {
                        device: self.to_string(),
                        reason: "CUDA is not available: libtorch_cuda.so was not loaded or no GPU \
                                 is visible (hint: run `cargo xtask doctor`, or use --device cpu)"
                            .into(),
                    });
                }
                let count = tch::Cuda::device_count() as usize;
                if n >= count {
                    return Err(CoreError::Device {
                        device: self.to_string(),
                        reason: format!("only {count} CUDA device(s) are visible"),
                    });
                }
                Ok(tch::Device::Cuda(n))
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        let bad = |reason: &str| CoreError::Device { device: s.to_owned(), reason: reason.into() };
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(DeviceChoice::Cuda)
                    .map_err(|_| bad("expected cuda:N with N a device number, e.g. cuda:0")),
                None => Err(bad("expected one of auto, cpu, cuda, cuda:N")),
            },
        }
    }
}

impl<'de> serde::Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The floating-point type the frozen base model runs in. Adapters, critics and optimiser
/// state stay f32 whatever this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float (the default, and what tests use).
    #[default]
    F32,
    /// bfloat16, for GPUs.
    Bf16,
}

impl DType {
    /// The libtorch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            DType::F32 => tch::Kind::Float,
            DType::Bf16 => tch::Kind::BFloat16,
        }
    }
}

impl FromStr for DType {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            _ => Err(CoreError::Device {
                device: s.to_owned(),
                reason: "unknown dtype: expected f32 or bf16".into(),
            }),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choice_parses_every_form() {
        assert_eq!("auto".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Auto));
        assert_eq!("CPU".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cpu));
        assert_eq!("cuda".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cuda(0)));
        assert_eq!("cuda:3".parse::<DeviceChoice>().ok(), Some(DeviceChoice::Cuda(3)));
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn dtype_parses() {
        assert_eq!("bf16".parse::<DType>().ok(), Some(DType::Bf16));
        assert_eq!("f32".parse::<DType>().ok(), Some(DType::F32));
        assert!("f16".parse::<DType>().is_err());
    }
}
