//! A warm decode timer for paired measurements (`scripts/lm_decode_paired.py`): loads the model
//! once like `panacea generate` does (f32, or bf16 with `PANACEA_DTYPE=bf16`; fused
//! projections), then for every line `B` read from stdin runs greedy `generate_ids` on the
//! first B bench prompts (ChatML, 64 new tokens, EOS ignored) and prints `B <wall seconds> <prompt tokens per row> <CPU seconds>` (the
//! process's user + system time from /proc/self/stat, 10 ms resolution: on a shared machine
//! it measures the work done, where wall time also counts the time others held the cores).
//!
//! `OMP_NUM_THREADS=1 cargo run -p panacea-lm --example decode_timer [-- smollm2-135m]`
//! (`PANACEA_PRINT_IDS=1` also prints the generated ids to stderr; `PANACEA_THREADS=N` sets
//! libtorch's intra-op threads, 1 by default).
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use std::io::BufRead;
use std::time::Instant;

use panacea_lm::bench_prompts::DECODE_BENCH_PROMPTS as PROMPTS;
use panacea_lm::{generate_ids, load_model, Adapter, ChatTemplate, GenerateConfig};
use rand::SeedableRng;
use tch::{Device, Kind};

/// utime + stime of this process in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // rest starts at field 3 (state, not a number), so field 14 is f[10] after the filter.
    (f.get(10).copied().unwrap_or(0.0) + f.get(11).copied().unwrap_or(0.0)) / 100.0
}

fn main() {
    let spec = std::env::args().nth(1).unwrap_or_else(|| "smollm2-135m".into());
    // One intra-op thread unless PANACEA_THREADS says otherwise (the paired script's setting).
    let threads = std::env::var("PANACEA_THREADS").ok().and_then(|t| t.parse().ok());
    tch::set_num_threads(threads.unwrap_or(1));
    let kind = match std::env::var("PANACEA_DTYPE").as_deref() {
        Ok("bf16") => Kind::BFloat16,
        _ => Kind::Float,
    };
    let m = load_model(&spec, Device::Cpu, kind).unwrap();
    let t = ChatTemplate::default();
    let ids: Vec<Vec<i64>> =
        PROMPTS.iter().map(|p| m.tokenizer.encode(&t.user_prompt(p)).unwrap()).collect();
    let mut cfg = GenerateConfig::greedy(&m.tokenizer, 64);
    cfg.eos_ids.clear();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    println!("ready fused={} dtype={kind:?}", m.model.is_fused());
    for line in std::io::stdin().lock().lines() {
        let Ok(b) = line.unwrap().trim().parse::<usize>() else { break };
        let prompts = &ids[..b.clamp(1, 8)];
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let g = generate_ids(&m.model, prompts, Adapter::Off, &cfg, &mut rng).unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        assert_eq!(g.response_ids.size(), [b as i64, 64]);
        if std::env::var_os("PANACEA_PRINT_IDS").is_some() {
            // The generated tokens, for comparing builds (stderr: the script reads stdout).
            eprintln!(
                "ids b={b} {:?}",
                Vec::<i64>::try_from(g.response_ids.flatten(0, -1)).unwrap()
            );
        }
        let lens: Vec<String> = prompts.iter().map(|p| p.len().to_string()).collect();
        println!("{b} {secs:.4} {} {cpu:.2}", lens.join(","));
    }
}
