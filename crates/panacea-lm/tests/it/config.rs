//! Reading Hugging Face `config.json`: both transformers 4.x and 5.x RoPE layouts, the Llama 3
//! frequency scaling against hand-computed values, and an error naming the key for every
//! setting the model does not implement.

use panacea_lm::{LlamaConfig, RopeScaling};
use serde_json::{json, Value};

fn base(model_type: &str) -> Value {
    json!({
        "model_type": model_type, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 100, "max_position_embeddings": 4096, "hidden_act": "silu",
    })
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn parse(v: &Value) -> Result<LlamaConfig, String> {
    LlamaConfig::from_hf_json(&v.to_string())
}

fn error(v: &Value) -> String {
    parse(v).expect_err("must be refused")
}

#[test]
fn rope_theta_is_read_from_both_transformers_layouts() {
    let v4 = with(base("qwen2"), "rope_theta", json!(1e6));
    assert_eq!(parse(&v4).expect("4.x").rope_theta, 1e6);
    let v5 =
        with(base("qwen2"), "rope_parameters", json!({"rope_type": "default", "rope_theta": 1e6}));
    let c5 = parse(&v5).expect("5.x");
    assert_eq!(c5.rope_theta, 1e6);
    assert_eq!(c5.rope_scaling, None);
    // Both given and different: which one is meant is unknowable.
    let both = with(v5, "rope_theta", json!(1e4));
    assert!(error(&both).contains("rope_parameters.rope_theta"), "{}", error(&both));
}

#[test]
fn llama3_scaling_is_read_from_both_layouts_and_scales_three_bands() {
    let params = json!({"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 64, "rope_type": "llama3"});
    let v4 =
        with(with(base("llama"), "rope_theta", json!(500000.0)), "rope_scaling", params.clone());
    let mut p5 = params;
    p5["rope_theta"] = json!(500000.0);
    let v5 = with(base("llama"), "rope_parameters", p5);
    let (c4, c5) = (parse(&v4).expect("4.x"), parse(&v5).expect("5.x"));
    assert_eq!(c4, c5);
    assert!(matches!(c4.rope_scaling, Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0));
    // head_dim 16, θ = 5e5 (by hand, HF `_compute_llama3_parameters`): f_i = θ^(-2i/16),
    // wavelength 2π/f_i = 6.28, 32.4, 167.1 for i = 0, 1, 2; bands at 64/4 = 16 and 64/1 = 64.
    // i = 0 is kept (1.0); i = 1 is blended with s = (64/32.4 − 1)/3:
    // (1 − s)·f_1/8 + s·f_1 = 0.0794030; i = 2 is divided by 8: 0.0376060/8 = 0.00470075.
    let f = c4.scaled_inv_freq().expect("scaled");
    assert_eq!(f.len(), 8);
    assert_eq!(f[0], 1.0);
    assert!((f[1] - 0.079_403_009_179_208_2).abs() < 1e-12, "{}", f[1]);
    assert!((f[2] - 0.004_700_753_866_357_992).abs() < 1e-12, "{}", f[2]);
}

#[test]
fn an_unsupported_model_type_names_the_supported_ones() {
    let e = error(&base("gemma2"));
    assert!(e.contains("\"gemma2\"") && e.contains("llama, mistral, qwen2, qwen3"), "{e}");
}

#[test]
fn unimplemented_settings_are_errors_naming_the_key() {
    let cases = [
        (
            with(base("llama"), "rope_scaling", json!({"rope_type": "yarn", "factor": 4.0})),
            "rope_scaling.rope_type",
        ),
        (
            with(base("llama"), "rope_scaling", json!({"type": "dynamic", "factor": 2.0})),
            "rope_scaling.rope_type",
        ),
        (
            with(
                base("qwen2"),
                "rope_parameters",
                json!({"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1]}),
            ),
            "rope_parameters.mrope_section",
        ),
        (with(base("mistral"), "sliding_window", json!(1024)), "sliding_window"),
        (
            with(
                with(base("qwen2"), "sliding_window", json!(1024)),
                "use_sliding_window",
                json!(true),
            ),
            "sliding_window",
        ),
        (
            with(base("llama"), "layer_types", json!(["full_attention", "sliding_attention"])),
            "layer_types",
        ),
        (with(base("llama"), "final_logit_softcapping", json!(30.0)), "final_logit_softcapping"),
        (with(base("llama"), "attn_logit_softcapping", json!(50.0)), "attn_logit_softcapping"),
        (with(base("llama"), "mlp_bias", json!(true)), "mlp_bias"),
        (with(base("llama"), "hidden_act", json!("gelu")), "hidden_act"),
        (with(base("llama"), "partial_rotary_factor", json!(0.5)), "partial_rotary_factor"),
        (
            with(base("llama"), "quantization_config", json!({"quant_method": "gptq"})),
            "quantization_config",
        ),
        (with(base("llama"), "hidden_size", json!("64")), "hidden_size"),
    ];
    for (v, key) in cases {
        let e = error(&v);
        assert!(e.contains(key), "{key}: {e}");
    }
    // Problems are reported together, not one per run.
    let two =
        with(with(base("llama"), "mlp_bias", json!(true)), "final_logit_softcapping", json!(1.0));
    let e = error(&two);
    assert!(e.contains("mlp_bias") && e.contains("final_logit_softcapping"), "{e}");
}

#[test]
fn windows_that_are_never_in_effect_are_accepted() {
    // Qwen2/Qwen3 ship a window with use_sliding_window false; Mistral v0.2+ sets it to null;
    // a window as long as the context never restricts anything.
    for v in [
        with(
            with(base("qwen2"), "sliding_window", json!(1024)),
            "use_sliding_window",
            json!(false),
        ),
        with(
            with(base("qwen3"), "sliding_window", json!(1024)),
            "use_sliding_window",
            json!(false),
        ),
        with(base("mistral"), "sliding_window", Value::Null),
        with(base("mistral"), "sliding_window", json!(4096)),
        with(base("qwen2"), "layer_types", json!(["full_attention", "full_attention"])),
    ] {
        parse(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

#[test]
fn eos_token_id_may_be_a_list() {
    let v = with(base("llama"), "eos_token_id", json!([128001, 128008, 128009]));
    assert_eq!(parse(&v).expect("list").eos_token_id, Some(128001));
}

#[test]
fn a_bare_safetensors_file_says_a_folder_is_needed() {
    let dir = std::env::temp_dir().join(format!("panacea-lm-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let file = dir.join("model.safetensors");
    std::fs::write(&file, b"\x08\0\0\0\0\0\0\0{}      ").expect("write");
    let e = panacea_lm::Pretrained::load(file.to_str().expect("utf-8")).expect_err("a file");
    let text = e.to_string();
    assert!(
        text.contains("folder") && text.contains("config.json") && text.contains("tokenizer.json"),
        "{text}"
    );
    assert!(!text.contains("not a GGUF"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
