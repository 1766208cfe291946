//! `panacea doctor`: what libtorch this binary runs against and which devices it sees.

use std::process::ExitCode;

use panacea_core::device::DeviceChoice;

/// Flags of `panacea doctor`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Fail (exit 1) unless CUDA is available.
    #[arg(long)]
    require_cuda: bool,
    /// Run the probe op on this device too: auto, cpu, cuda or cuda:N (an explicit cuda
    /// fails with a hint when CUDA is not available).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let init = panacea_core::device::init_torch();
    let cuda = tch::Cuda::is_available();
    let devices = if cuda { tch::Cuda::device_count() } else { 0 };
    let threads = tch::get_num_threads();
    // A tiny op proves the library really runs, not just links, on the CPU and on --device.
    let device = args.device.resolve()?;
    for d in [tch::Device::Cpu, device] {
        let probe =
            tch::Tensor::arange(10, (tch::Kind::Float, d)).sum(tch::Kind::Float).double_value(&[]);
        anyhow::ensure!(
            probe == 45.0,
            "libtorch computed 0+1+...+9 = {probe} on {d:?}, expected 45"
        );
    }
    let libtorch_lib = libtorch_library_path();
    if args.json {
        let v = serde_json::json!({
            "libtorch_lib": libtorch_lib,
            "cuda_library_loaded": init.cuda_library_loaded,
            "cuda_available": cuda,
            "cudnn_available": tch::Cuda::cudnn_is_available(),
            "cuda_devices": devices,
            "probe_device": format!("{device:?}"),
            "threads": threads,
        });
        println!("{v}");
    } else {
        println!(
            "libtorch library  {}",
            libtorch_lib.as_deref().unwrap_or("(not found in /proc/self/maps)")
        );
        match &init.cuda_load_error {
            None => println!("libtorch_cuda.so  loaded"),
            Some(e) => println!("libtorch_cuda.so  not loaded ({e})"),
        }
        println!("CUDA available    {cuda} ({devices} device(s))");
        println!("probe device      {device:?} (ok)");
        println!("intra-op threads  {threads}");
    }
    if args.require_cuda && !cuda {
        eprintln!("error: CUDA is not available (hint: a CPU-only libtorch, or no GPU visible)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the dynamic loader really found libtorch_cpu.so, read from the process's own map.
fn libtorch_library_path() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(str::to_owned)
}
