//! Safetensors writing and reading: round trip, sharded folders, and clear errors on truncated
//! or corrupt files.

use panacea_lm::safetensors::{parse, read, read_dir, write};
use panacea_lm::LmError;
use tch::{Device, Kind, Tensor};

fn tensors() -> Vec<(String, Tensor)> {
    vec![
        ("b.weight".into(), Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3])),
        ("a.bias".into(), Tensor::from_slice(&[1.5f32, -2.0]).to_kind(Kind::BFloat16)),
    ]
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("panacea-lm-st-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

#[test]
fn write_then_read_round_trips_names_shapes_dtypes_and_values() {
    crate::common::setup();
    let dir = tmp("roundtrip");
    let path = dir.join("model.safetensors");
    write(&path, &tensors()).expect("write");
    let back = read(&path).expect("read");
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].0, "a.bias");
    assert_eq!(back[0].1.kind(), Kind::BFloat16);
    assert!(back[0].1.equal(&tensors()[1].1));
    assert_eq!(back[1].1.size(), [2, 3]);
    assert!(back[1].1.equal(&tensors()[0].1));
    // read_dir finds model.safetensors.
    assert_eq!(read_dir(&dir).expect("dir").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sharded_index_is_followed() {
    crate::common::setup();
    let dir = tmp("sharded");
    let t = tensors();
    write(&dir.join("model-00001-of-00002.safetensors"), &t[..1]).expect("shard 1");
    write(&dir.join("model-00002-of-00002.safetensors"), &t[1..]).expect("shard 2");
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"b.weight": "model-00001-of-00002.safetensors",
            "a.bias": "model-00002-of-00002.safetensors"}}"#,
    )
    .expect("index");
    let back = read_dir(&dir).expect("sharded");
    assert_eq!(back.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a.bias", "b.weight"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_file_names_file_offset_and_tensor() {
    crate::common::setup();
    let dir = tmp("truncated");
    let path = dir.join("model.safetensors");
    write(&path, &tensors()).expect("write");
    let bytes = std::fs::read(&path).expect("bytes");
    let err = parse(&bytes[..bytes.len() - 4], &path).expect_err("truncated");
    let msg = err.to_string();
    assert!(matches!(err, LmError::Format { .. }));
    assert!(msg.contains("model.safetensors") && msg.contains(" at byte "), "{msg}");
    assert!(msg.contains("(tensor b.weight)") && msg.contains("truncated"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_headers_are_errors_not_panics() {
    crate::common::setup();
    let p = std::path::Path::new("x.safetensors");
    assert!(parse(&[], p).is_err());
    assert!(parse(&u64::MAX.to_le_bytes(), p).is_err());
    let mut b = 10u64.to_le_bytes().to_vec();
    b.extend(b"not json!!");
    assert!(parse(&b, p).expect_err("json").to_string().contains("JSON"));
    let header = br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header);
    b.extend([0u8; 8]);
    let msg = parse(&b, p).expect_err("size mismatch").to_string();
    assert!(msg.contains("(tensor w)") && msg.contains("needs"), "{msg}");
    let header = br#"{"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header);
    b.push(0);
    assert!(parse(&b, p).expect_err("dtype").to_string().contains("not supported"));
}
