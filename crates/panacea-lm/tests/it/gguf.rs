//! The GGUF reader on hand-built files: values, dequantisation through the directory, clear
//! errors on truncation, corruption and unknown types, and a seeded fuzz loop (no panics).

use std::path::Path;

use half::f16;
use panacea_lm::dequant::GgmlType;
use panacea_lm::gguf::{dequantize_tensor, GgufHeader, GgufValue};
use panacea_lm::LmError;
use rand::{Rng, SeedableRng};

/// A little GGUF writer (the layout of docs/models.md, §1.2).
#[derive(Default)]
struct Writer {
    kv: Vec<u8>,
    n_kv: u64,
    dir: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

impl Writer {
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        put_str(&mut self.kv, k);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn kv_f32(&mut self, k: &str, v: f32) -> &mut Self {
        put_str(&mut self.kv, k);
        self.kv.extend(6u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        put_str(&mut self.kv, k);
        self.kv.extend(8u32.to_le_bytes());
        put_str(&mut self.kv, v);
        self.n_kv += 1;
        self
    }
    fn kv_strs(&mut self, k: &str, v: &[&str]) -> &mut Self {
        put_str(&mut self.kv, k);
        self.kv.extend(9u32.to_le_bytes());
        self.kv.extend(8u32.to_le_bytes());
        self.kv.extend((v.len() as u64).to_le_bytes());
        for s in v {
            put_str(&mut self.kv, s);
        }
        self.n_kv += 1;
        self
    }
    fn kv_i32s(&mut self, k: &str, v: &[i32]) -> &mut Self {
        put_str(&mut self.kv, k);
        self.kv.extend(9u32.to_le_bytes());
        self.kv.extend(5u32.to_le_bytes());
        self.kv.extend((v.len() as u64).to_le_bytes());
        for x in v {
            self.kv.extend(x.to_le_bytes());
        }
        self.n_kv += 1;
        self
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, bytes: &[u8]) -> &mut Self {
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        put_str(&mut self.dir, name);
        self.dir.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.dir.extend(d.to_le_bytes());
        }
        self.dir.extend(ty.to_le_bytes());
        self.dir.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.n_tensors += 1;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(self.n_tensors.to_le_bytes());
        b.extend(self.n_kv.to_le_bytes());
        b.extend(&self.kv);
        b.extend(&self.dir);
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(&self.data);
        b
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small valid file: metadata of each kind, an F32 [3, 2] tensor, an F16 [4] and a Q8_0 [32].
fn sample() -> Vec<u8> {
    let mut q8 = f16::from_f32(0.5).to_le_bytes().to_vec();
    q8.extend((0..32).map(|j| (j as i8 - 10) as u8));
    let f16s: Vec<u8> =
        [1.0f32, -2.0, 0.5, 3.0].iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect();
    Writer::default()
        .kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_f32("llama.rope.freq_base", 100000.0)
        .kv_strs("tokenizer.ggml.tokens", &["a", "b", "ab"])
        .tensor("w32", &[2, 3], 0, &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        .tensor("w16", &[4], 1, &f16s)
        .tensor("wq8", &[32], 8, &q8)
        .bytes()
}

fn parse(bytes: &[u8]) -> Result<GgufHeader, LmError> {
    GgufHeader::parse(bytes, Path::new("test.gguf"))
}

#[test]
fn parses_metadata_and_tensors_of_a_valid_file() {
    crate::common::setup();
    let bytes = sample();
    let h = parse(&bytes).expect("valid file");
    assert_eq!(h.version, 3);
    assert_eq!(h.metadata["general.architecture"], GgufValue::Str("llama".into()));
    assert_eq!(h.metadata["llama.block_count"].as_i64(), Some(1));
    assert_eq!(h.metadata["llama.rope.freq_base"].as_f64(), Some(100000.0));
    assert_eq!(h.metadata["tokenizer.ggml.tokens"].as_array().map(<[_]>::len), Some(3));
    let w32 = h.tensor("w32").expect("w32");
    assert_eq!(w32.shape(), [3, 2], "dims are reversed into the HF shape");
    let t = dequantize_tensor(&h, &bytes, w32).expect("f32");
    assert_eq!(
        Vec::<f32>::try_from(t.flatten(0, -1)).ok(),
        Some(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    );
    let t = dequantize_tensor(&h, &bytes, h.tensor("w16").expect("w16")).expect("f16");
    assert_eq!(Vec::<f32>::try_from(t).ok(), Some(vec![1.0, -2.0, 0.5, 3.0]));
    let q = h.tensor("wq8").expect("wq8");
    assert_eq!(q.ty, GgmlType::Q8_0);
    let t = dequantize_tensor(&h, &bytes, q).expect("q8");
    let v = Vec::<f32>::try_from(t).expect("values");
    assert_eq!(v[0], -5.0);
    assert_eq!(v[31], 10.5);
}

#[track_caller]
fn assert_format_error(
    res: Result<GgufHeader, LmError>,
    offset: bool,
    tensor: Option<&str>,
    text: &str,
) {
    match res {
        Err(e @ LmError::Format { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("test.gguf"), "names the file: {msg}");
            assert!(msg.contains(text), "mentions {text:?}: {msg}");
            if offset {
                assert!(msg.contains(" at byte "), "names the offset: {msg}");
            }
            if let Some(t) = tensor {
                assert!(msg.contains(&format!("(tensor {t})")), "names the tensor: {msg}");
            }
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[test]
fn truncated_tensor_data_names_file_offset_and_tensor() {
    crate::common::setup();
    let bytes = sample();
    let cut = &bytes[..bytes.len() - 10];
    assert_format_error(parse(cut), true, Some("wq8"), "truncated");
}

#[test]
fn truncated_header_is_an_error() {
    crate::common::setup();
    let bytes = sample();
    for len in [0, 3, 7, 20, 40, 100] {
        assert_format_error(parse(&bytes[..len]), true, None, "");
    }
}

#[test]
fn bad_magic_and_version_are_named() {
    crate::common::setup();
    let mut bytes = sample();
    bytes[0] = b'X';
    assert_format_error(parse(&bytes), true, None, "not a GGUF file");
    let mut bytes = sample();
    bytes[4] = 9;
    assert_format_error(parse(&bytes), true, None, "version 9");
}

#[test]
fn unknown_quantisation_type_lists_the_supported_ones() {
    crate::common::setup();
    let bytes = Writer::default().tensor("odd", &[32], 2, &[0u8; 18]).bytes(); // 2 = Q4_0
    assert_format_error(parse(&bytes), true, Some("odd"), "unsupported ggml type 2");
    let msg = parse(&bytes).expect_err("unsupported").to_string();
    for name in ["F32", "F16", "BF16", "Q8_0", "Q4_1", "Q4_K", "Q6_K"] {
        assert!(msg.contains(name), "{msg}");
    }
}

#[test]
fn huge_counts_do_not_allocate_or_panic() {
    crate::common::setup();
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(u64::MAX.to_le_bytes());
    bytes.extend(u64::MAX.to_le_bytes());
    assert_format_error(parse(&bytes), true, None, "cannot fit");
    // A string length of 2^63 inside an otherwise valid file.
    let mut w = Writer::default();
    w.kv_str("k", "v");
    let mut bytes = w.bytes();
    bytes[24..32].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert_format_error(parse(&bytes), true, None, "truncated");
}

#[test]
fn fuzzed_headers_never_panic() {
    crate::common::setup();
    let valid = sample();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2402_02030);
    let mut errors = 0;
    for i in 0..4000 {
        let bytes: Vec<u8> = match i % 3 {
            // Pure noise behind a valid magic and version.
            0 => {
                let mut b = b"GGUF\x03\0\0\0".to_vec();
                let n = rng.gen_range(0..256);
                b.extend((0..n).map(|_| rng.gen::<u8>()));
                b
            }
            // The valid file with a few bytes flipped.
            1 => {
                let mut b = valid.clone();
                for _ in 0..rng.gen_range(1..6) {
                    let at = rng.gen_range(0..b.len());
                    b[at] = rng.gen();
                }
                b
            }
            // The valid file cut at a random length.
            _ => valid[..rng.gen_range(0..valid.len())].to_vec(),
        };
        match parse(&bytes) {
            Ok(h) => {
                // Whatever parsed must also decode without panicking.
                for t in &h.tensors {
                    let _ = dequantize_tensor(&h, &bytes, t);
                }
            }
            Err(_) => errors += 1,
        }
    }
    assert!(errors > 2000, "most corrupt inputs must be rejected, got {errors} errors");
}

/// HF rows → GGUF rows: GGUF row head·h + 2i + j holds HF row head·h + j·h/2 + i
/// (llama.cpp's converter permutation, docs/models.md, §1.6).
fn permute_rows(hf: &[f32], n_heads: usize, rows: usize, cols: usize) -> Vec<f32> {
    let h = rows / n_heads;
    let mut out = vec![0f32; rows * cols];
    for head in 0..n_heads {
        for i in 0..h / 2 {
            for j in 0..2 {
                let g = head * h + 2 * i + j;
                let f = head * h + j * (h / 2) + i;
                out[g * cols..(g + 1) * cols].copy_from_slice(&hf[f * cols..(f + 1) * cols]);
            }
        }
    }
    out
}

#[test]
fn a_tiny_llama_gguf_loads_with_unpermuted_qk_config_and_tokenizer() {
    crate::common::setup();
    use panacea_lm::{Adapter, CausalLm, Pretrained};
    // D = 8, 2 heads of 4, 1 KV head, FFN 16, 1 layer, 4 tokens.
    let seq = |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|v| v as f32 * scale).collect() };
    let q_hf = seq(64, 0.01);
    let k_hf = seq(32, -0.02);
    let mut w = Writer::default();
    w.kv_str("general.architecture", "llama")
        .kv_u32("llama.block_count", 1)
        .kv_u32("llama.embedding_length", 8)
        .kv_u32("llama.feed_forward_length", 16)
        .kv_u32("llama.attention.head_count", 2)
        .kv_u32("llama.attention.head_count_kv", 1)
        .kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .kv_f32("llama.rope.freq_base", 10000.0)
        .kv_str("tokenizer.ggml.model", "gpt2")
        .kv_str("tokenizer.ggml.pre", "smollm")
        .kv_strs("tokenizer.ggml.tokens", &["a", "b", "ab", "<|im_end|>"])
        .kv_i32s("tokenizer.ggml.token_type", &[1, 1, 1, 3])
        .kv_strs("tokenizer.ggml.merges", &["a b"])
        .kv_u32("tokenizer.ggml.eos_token_id", 3)
        .kv_str(
            "tokenizer.chat_template",
            "{% for m in messages %}{{ m.content.strip() }}{{ eos_token }}{% endfor %}",
        )
        .tensor("token_embd.weight", &[8, 4], 0, &f32_bytes(&seq(32, 0.03)))
        .tensor("output_norm.weight", &[8], 0, &f32_bytes(&[1.0; 8]))
        .tensor("blk.0.attn_norm.weight", &[8], 0, &f32_bytes(&[1.0; 8]))
        .tensor("blk.0.ffn_norm.weight", &[8], 0, &f32_bytes(&[1.0; 8]))
        .tensor("blk.0.attn_q.weight", &[8, 8], 0, &f32_bytes(&permute_rows(&q_hf, 2, 8, 8)))
        .tensor("blk.0.attn_k.weight", &[8, 4], 0, &f32_bytes(&permute_rows(&k_hf, 1, 4, 8)))
        .tensor("blk.0.attn_v.weight", &[8, 4], 0, &f32_bytes(&seq(32, 0.01)))
        .tensor("blk.0.attn_output.weight", &[8, 8], 0, &f32_bytes(&seq(64, 0.001)))
        .tensor("blk.0.ffn_gate.weight", &[8, 16], 0, &f32_bytes(&seq(128, 0.001)))
        .tensor("blk.0.ffn_up.weight", &[8, 16], 0, &f32_bytes(&seq(128, 0.002)))
        .tensor("blk.0.ffn_down.weight", &[16, 8], 0, &f32_bytes(&seq(128, -0.001)));
    let path = std::env::temp_dir().join(format!("panacea-lm-tiny-{}.gguf", std::process::id()));
    std::fs::write(&path, w.bytes()).expect("write gguf");
    let pre = Pretrained::from_gguf(&path).expect("tiny gguf loads");
    let _ = std::fs::remove_file(&path);
    let c = &pre.config;
    assert_eq!((c.hidden_size, c.num_attention_heads, c.kv_heads(), c.vocab_size), (8, 2, 1, 4));
    assert!(c.tie_word_embeddings, "no output.weight → tied");
    assert_eq!(c.eos_token_id, Some(3));
    let get = |n: &str| {
        let t = &pre.tensors.iter().find(|(name, _)| name == n).expect(n).1;
        (t.size(), Vec::<f32>::try_from(t.flatten(0, -1)).expect("values"))
    };
    assert_eq!(get("model.layers.0.self_attn.q_proj.weight"), (vec![8, 8], q_hf));
    assert_eq!(get("model.layers.0.self_attn.k_proj.weight"), (vec![4, 8], k_hf));
    assert_eq!(get("model.layers.0.mlp.down_proj.weight").0, vec![8, 16]);
    // Tokenizer from metadata: BPE merge "a b" → "ab"; the CONTROL token is special.
    assert_eq!(pre.tokenizer.encode("ab").expect("encode"), vec![2]);
    assert_eq!(pre.tokenizer.encode("ba<|im_end|>").expect("encode"), vec![1, 0, 3]);
    assert_eq!(pre.tokenizer.eos_id, 3);
    // The chat template comes from `tokenizer.chat_template`, with the EOS token's text.
    let msgs = [panacea_lm::Message::new(panacea_lm::Role::User, " ab ")];
    assert_eq!(pre.chat_template.render(&msgs, true).expect("render"), "ab<|im_end|>");
    // Every variable of the model gets a weight, and the forward runs.
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = pre.build(&mut vs, None, tch::Kind::Float).expect("build");
    let x = tch::Tensor::from_slice(&[0i64, 1, 2]).view([1, 3]);
    let logits = model.logits(&x, &x.ones_like(), Adapter::Off);
    assert_eq!(logits.size(), [1, 3, 4]);
    // Saved as safetensors + config.json + tokenizer.json, it loads back identically.
    let dir = std::env::temp_dir().join(format!("panacea-lm-tiny-{}", std::process::id()));
    pre.save_dir(&dir).expect("save");
    let back = Pretrained::from_dir(&dir).expect("reload");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(back.config, pre.config);
    // The template and the EOS ids travel with the folder (tokenizer_config.json,
    // generation_config.json).
    assert_eq!(back.chat_template.render(&msgs, true).expect("render"), "ab<|im_end|>");
    assert_eq!(back.tokenizer.eos_ids, vec![3]);
    assert_eq!(back.tensors.len(), pre.tensors.len());
    for ((n1, t1), (n2, t2)) in back.tensors.iter().zip(&pre.tensors) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2), "{n1}");
    }
}
