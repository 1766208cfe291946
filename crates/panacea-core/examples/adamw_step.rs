//! Time of one zero_grad + clip_grad_norm + step of [`AdamW`] over the SmolLM2-135M adapter's
//! 840 tensors (30 layers × 7 projections × U, V, σ, s; rank 8 + 2), flat layout against the
//! per-tensor loop. The flat layout exists for launch-bound GPUs; on a CPU the loop's cost is
//! libtorch's per-op overhead.
//!
//!     cargo run --release -p panacea-core --example adamw_step [-- loop]

use panacea_core::optim::{AdamW, AdamWConfig};
use tch::{nn, Kind, Tensor};

fn main() {
    panacea_core::device::init_torch();
    tch::set_num_threads(1);
    let vs = nn::VarStore::new(tch::Device::Cpu);
    // (d_in, d_out) of q, k, v, o, gate, up, down.
    let dims =
        [(576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)];
    let mut vars = Vec::new();
    for l in 0..30 {
        for (j, (d_in, d_out)) in dims.iter().enumerate() {
            let p = vs.root() / format!("l{l}") / format!("p{j}");
            vars.push(p.var("u", &[*d_out, 10], nn::Init::Randn { mean: 0.0, stdev: 0.02 }));
            vars.push(p.var("v", &[*d_in, 10], nn::Init::Randn { mean: 0.0, stdev: 0.02 }));
            vars.push(p.var("sigma", &[8], nn::Init::Const(0.1)));
            vars.push(p.var("s", &[1], nn::Init::Const(0.1)));
        }
    }
    let per_tensor = std::env::args().nth(1).as_deref() == Some("loop");
    let mut opt = AdamW::new(&vs, AdamWConfig::default(), 1e-3);
    if per_tensor {
        opt.use_per_tensor_loop();
    }
    vars.iter().map(|v| v.sum(Kind::Float)).fold(Tensor::from(0.0f32), |a, b| a + b).backward();
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let t = std::time::Instant::now();
            opt.zero_grad();
            opt.clip_grad_norm(1.0);
            opt.step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    let layout = if per_tensor { "per-tensor loop" } else { "flat" };
    println!(
        "{layout}, {} tensors: zero_grad + clip + step, median of 20: {:.2} ms",
        opt.len(),
        ms[10]
    );
}
