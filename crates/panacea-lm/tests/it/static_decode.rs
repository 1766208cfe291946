//! `StaticDecoder`: decoding over a fixed-capacity cache and static step buffers (the shape a
//! CUDA graph captures) gives `generate_ids`'s tokens, with left padding, batch padding to the
//! bucket, per-row λ, prepared factors, `Adapter::Off`, EOS stops and sampling; on a CPU it
//! says why graphs are not available and runs its steps eagerly.

use panacea_lm::static_decode::{bucket_for, StaticDecoder};
use panacea_lm::{generate_ids, Adapter, GenerateConfig, Generation, Llama, Sampling};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::common::max_abs_diff;
use crate::grouped::{adapted, adapted_on};

const ALL: [&str; 7] =
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

fn greedy(max_new_tokens: i64, eos_ids: Vec<i64>) -> GenerateConfig {
    GenerateConfig { max_new_tokens, sampling: Sampling::Greedy, eos_ids, pad_id: 0 }
}

fn assert_same(got: &Generation, want: &Generation, what: &str) {
    assert_eq!(got.prompt_len, want.prompt_len, "{what}");
    assert!(
        got.response_ids.equal(&want.response_ids),
        "{what}: tokens differ\n{}\n{}",
        got.response_ids,
        want.response_ids
    );
    assert!(got.response_mask.equal(&want.response_mask), "{what}: masks differ");
    assert!(got.ids.equal(&want.ids) && got.attention_mask.equal(&want.attention_mask), "{what}");
    let lp = max_abs_diff(&got.logprobs, &want.logprobs);
    assert!(lp <= 1e-4, "{what}: log-probs differ by {lp}");
}

/// Both paths on `prompts` under every adapter mode, greedy.
fn compare_greedy(
    model: &mut Llama,
    decoder: &mut StaticDecoder,
    prompts: &[Vec<i64>],
    cfg: &GenerateConfig,
) {
    let b = prompts.len() as i64;
    let one = Tensor::from_slice(&[0.7f32, 0.3]);
    let w = Tensor::linspace(0.0, 1.0, b, (Kind::Float, Device::Cpu));
    let rows = Tensor::stack(&[&w, &(1.0 - &w)], 1); // [B, 2], every row its own λ
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    for (what, adapter) in [
        ("off", Adapter::Off),
        ("one λ", Adapter::On { pref: &one }),
        ("per-row λ", Adapter::On { pref: &rows }),
    ] {
        let want = generate_ids(model, prompts, adapter, cfg, &mut rng).unwrap();
        let got = decoder.generate_ids(model, prompts, adapter, cfg, &mut rng).unwrap();
        assert_same(&got, &want, what);
        assert_eq!(decoder.replayed_steps(), 0, "a CPU never replays");
    }
    // Prepared factors, as the PPO rollout uses them.
    let adapter = Adapter::On { pref: &rows };
    let want = generate_ids(model, prompts, adapter, cfg, &mut rng).unwrap();
    let got = model
        .with_prepared_adapter(&rows, |m| decoder.generate_ids(m, prompts, adapter, cfg, &mut rng))
        .unwrap()
        .unwrap();
    assert_same(&got, &want, "prepared per-row λ");
}

#[test]
fn static_steps_give_the_greedy_tokens_of_generate_ids() {
    let (_base, _adapter, mut model) = adapted(&ALL, 51);
    let mut decoder = StaticDecoder::new(24, false).unwrap();
    // Three left-padded rows run in bucket 4 (one padding row).
    let padded = vec![vec![11i64, 12, 13, 14, 15], vec![30, 31], vec![40, 41, 42, 43]];
    assert_eq!(bucket_for(3), Some(4));
    compare_greedy(&mut model, &mut decoder, &padded, &greedy(8, Vec::new()));
    // Equal lengths (generate_ids then builds no mask at all), one row (bucket 1).
    compare_greedy(
        &mut model,
        &mut decoder,
        &[vec![7, 8, 9], vec![20, 21, 22]],
        &greedy(6, Vec::new()),
    );
    compare_greedy(&mut model, &mut decoder, &[vec![5, 6]], &greedy(6, Vec::new()));
    // Rows that stop early: row 0's third greedy token is made an EOS (the other rows stop
    // wherever that token comes up for them, or run on).
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    let first =
        generate_ids(&model, &padded, Adapter::Off, &greedy(8, Vec::new()), &mut rng).unwrap();
    let eos = first.response_ids.int64_value(&[0, 2]);
    let stops = greedy(8, vec![eos, 99]);
    compare_greedy(&mut model, &mut decoder, &padded, &stops);
    let got = decoder.generate_ids(&model, &padded, Adapter::Off, &stops, &mut rng).unwrap();
    // Row 0 stops at the first occurrence of that token (it may come up before step 2).
    let row0: Vec<i64> = Vec::try_from(first.response_ids.get(0)).unwrap();
    let stop = row0.iter().position(|&t| t == eos).unwrap() as i64 + 1;
    assert!(stop <= 3);
    assert_eq!(
        got.response_mask.get(0).sum(Kind::Int64).int64_value(&[]),
        stop,
        "row 0 stops at its EOS"
    );
}

#[test]
fn static_steps_sample_the_tokens_of_generate_ids() {
    let (_base, _adapter, model) = adapted(&ALL, 53);
    let mut decoder = StaticDecoder::new(16, false).unwrap();
    let prompts = vec![vec![11i64, 12, 13], vec![30, 31], vec![40]];
    let cfg = GenerateConfig {
        max_new_tokens: 6,
        sampling: Sampling::Sample { temperature: 1.3, top_k: Some(200), top_p: Some(0.95) },
        eos_ids: Vec::new(),
        pad_id: 0,
    };
    let rows = Tensor::from_slice(&[0.1f32, 0.9, 0.5, 0.5, 0.8, 0.2]).view([3, 2]);
    let adapter = Adapter::On { pref: &rows };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let want = generate_ids(&model, &prompts, adapter, &cfg, &mut rng).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let got = decoder.generate_ids(&model, &prompts, adapter, &cfg, &mut rng).unwrap();
    assert_same(&got, &want, "sampled");
}

#[test]
fn on_a_cpu_graphs_are_not_available_and_steps_run_eagerly() {
    let (_base, _adapter, model) = adapted(&ALL, 55);
    let mut decoder = StaticDecoder::new(16, true).unwrap();
    let why = decoder.graphs_unavailable(Device::Cpu).expect("a CPU has no CUDA graphs");
    assert!(why.contains("need a CUDA device"), "{why}");
    assert!(StaticDecoder::new(16, false).unwrap().graphs_unavailable(Device::Cpu).is_none());
    let prompts = vec![vec![11i64, 12, 13], vec![30]];
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    let cfg = greedy(5, Vec::new());
    let want = generate_ids(&model, &prompts, Adapter::Off, &cfg, &mut rng).unwrap();
    let got = decoder.generate_ids(&model, &prompts, Adapter::Off, &cfg, &mut rng).unwrap();
    assert_same(&got, &want, "graphs asked for on a CPU");
    assert_eq!(decoder.replayed_steps(), 0);
    assert!(decoder.capture_error().is_none(), "nothing was captured, so nothing failed");
}

#[test]
fn static_decoder_refuses_what_does_not_fit() {
    let (_base, _adapter, model) = adapted(&ALL, 57);
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    let mut decoder = StaticDecoder::new(8, false).unwrap();
    let err = decoder
        .generate_ids(
            &model,
            &[vec![1, 2, 3, 4, 5]],
            Adapter::Off,
            &greedy(4, Vec::new()),
            &mut rng,
        )
        .unwrap_err();
    assert!(err.to_string().contains("capacity 8"), "{err}");
    let many = vec![vec![5i64]; 257];
    let err = decoder
        .generate_ids(&model, &many, Adapter::Off, &greedy(2, Vec::new()), &mut rng)
        .unwrap_err();
    assert!(err.to_string().contains("257 rows"), "{err}");
    assert!(StaticDecoder::new(1, false).is_err());
    assert_eq!(bucket_for(1), Some(1));
    assert_eq!(bucket_for(65), Some(128));
    assert_eq!(bucket_for(256), Some(256));
}

/// On a machine with CUDA: the replayed graph decodes `generate_ids`'s greedy tokens (per-row
/// λ, left padding, bucket padding). Skips elsewhere.
#[test]
fn replayed_graph_steps_give_the_eager_tokens() {
    let device = Device::Cuda(0);
    let probe = StaticDecoder::new(32, true).unwrap();
    if let Some(why) = probe.graphs_unavailable(device) {
        eprintln!("skipped: {why}");
        return;
    }
    let (_base, _adapter, model) = adapted_on(&ALL, 59, device, Kind::Float);
    let mut decoder = StaticDecoder::new(40, true).unwrap();
    let prompts = vec![vec![11i64, 12, 13, 14, 15], vec![30, 31], vec![40, 41, 42, 43]];
    let rows =
        Tensor::from_slice(&[0.1f32, 0.9, 0.5, 0.5, 0.8, 0.2]).view([3, 2]).to_device(device);
    let cfg = greedy(24, Vec::new());
    let mut rng = rand::rngs::mock::StepRng::new(0, 0);
    for adapter in [Adapter::Off, Adapter::On { pref: &rows }] {
        let want = generate_ids(&model, &prompts, adapter, &cfg, &mut rng).unwrap();
        let got = decoder.generate_ids(&model, &prompts, adapter, &cfg, &mut rng).unwrap();
        assert!(decoder.capture_error().is_none(), "{:?}", decoder.capture_error());
        assert!(decoder.replayed_steps() > 0, "no step was replayed");
        assert_same(&got, &want, "graph replay");
    }
}
