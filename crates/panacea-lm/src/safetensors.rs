//! Reading and writing Hugging Face safetensors files: `u64 header length | JSON header |
//! data`, the header mapping each name to `{dtype, shape, data_offsets}`. The reader checks
//! every length and offset against the file, so a truncated or corrupt file gives an error
//! naming the file, offset and tensor. F32, F16 and BF16 tensors are supported.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::error::LmError;

fn format_err(path: &Path, offset: Option<u64>, tensor: Option<&str>, message: String) -> LmError {
    LmError::Format { path: path.to_owned(), offset, tensor: tensor.map(str::to_owned), message }
}

fn kind_of(dtype: &str) -> Option<(Kind, usize)> {
    Some(match dtype {
        "F32" => (Kind::Float, 4),
        "F16" => (Kind::Half, 2),
        "BF16" => (Kind::BFloat16, 2),
        _ => return None,
    })
}

/// Parses safetensors bytes (the whole file) into named tensors on the CPU, in file order of
/// names (sorted). `path` only labels errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Vec<(String, Tensor)>, LmError> {
    let err = |offset: u64, tensor: Option<&str>, message: String| {
        format_err(path, Some(offset), tensor, message)
    };
    let Some(len) = bytes.get(..8) else {
        return Err(err(
            0,
            None,
            format!("truncated: {} bytes, no 8-byte header length", bytes.len()),
        ));
    };
    let mut l = [0u8; 8];
    l.copy_from_slice(len);
    let n = u64::from_le_bytes(l);
    let header_end = n.checked_add(8).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| {
        err(
            0,
            None,
            format!(
                "header length {n} exceeds the file size {} (truncated or not safetensors)",
                bytes.len()
            ),
        )
    })? as usize;
    let header: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| err(8, None, format!("header is not a JSON object: {e}")))?;
    let data = &bytes[header_end..];
    let mut out = Vec::with_capacity(header.len());
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |m: String| err(header_end as u64, Some(name), m);
        let dtype = info.get("dtype").and_then(Value::as_str).unwrap_or("?");
        let (kind, elem) = kind_of(dtype).ok_or_else(|| {
            bad(format!("dtype {dtype} is not supported (supported: F32, F16, BF16)"))
        })?;
        let shape: Vec<i64> = info
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_i64().filter(|&d| d >= 0)).collect::<Option<_>>())
            .ok_or_else(|| bad("missing or invalid shape".to_owned()))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<_>>())
            .filter(|o: &Vec<u64>| o.len() == 2 && o[0] <= o[1])
            .ok_or_else(|| bad("missing or invalid data_offsets".to_owned()))?;
        let (s, e) = (offsets[0], offsets[1]);
        let numel = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let want = numel.and_then(|n| n.checked_mul(elem as u64));
        if want != Some(e - s) {
            return Err(bad(format!(
                "data_offsets [{s}, {e}] hold {} bytes but shape {shape:?} of {dtype} needs {want:?}",
                e - s
            )));
        }
        if e > data.len() as u64 {
            return Err(err(
                header_end as u64 + s,
                Some(name),
                format!(
                    "data [{s}, {e}) runs past the end of the data section ({} bytes); the file \
                     is truncated (hint: convert or download it again)",
                    data.len()
                ),
            ));
        }
        let t = Tensor::f_from_data_size(&data[s as usize..e as usize], &shape, kind)?;
        out.push((name.clone(), t));
    }
    Ok(out)
}

/// Reads one safetensors file.
pub fn read(path: &Path) -> Result<Vec<(String, Tensor)>, LmError> {
    let bytes = std::fs::read(path).map_err(|e| LmError::io(path, e))?;
    parse(&bytes, path)
}

/// Reads `model.safetensors`, or every shard listed by `model.safetensors.index.json`, in `dir`.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, Tensor)>, LmError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return read(&single);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(format_err(
            dir,
            None,
            None,
            "neither model.safetensors nor model.safetensors.index.json is here".to_owned(),
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| LmError::io(&index, e))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format_err(&index, None, None, format!("not JSON: {e}")))?;
    let map = doc
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| format_err(&index, None, None, "no weight_map object".to_owned()))?;
    let mut shards: Vec<PathBuf> = Vec::new();
    for (name, file) in map {
        let file =
            file.as_str().filter(|f| !f.contains('/') && !f.contains('\\')).ok_or_else(|| {
                format_err(&index, None, Some(name), format!("bad shard file name {file}"))
            })?;
        let p = dir.join(file);
        if !shards.contains(&p) {
            shards.push(p);
        }
    }
    shards.sort();
    let mut out = Vec::new();
    for shard in &shards {
        out.extend(read(shard)?);
    }
    for name in map.keys() {
        if !out.iter().any(|(n, _)| n == name) {
            return Err(format_err(
                &index,
                None,
                Some(name),
                "listed in weight_map but in no shard".to_owned(),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes named tensors (F32, F16 or BF16, any device) as one safetensors file, names sorted,
/// through a temporary file renamed into place so a crash never leaves a half-written file.
pub fn write(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), LmError> {
    let mut sorted: Vec<&(String, Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".to_owned(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for (name, t) in &sorted {
        let (dtype, elem) = match t.kind() {
            Kind::Float => ("F32", 4),
            Kind::Half => ("F16", 2),
            Kind::BFloat16 => ("BF16", 2),
            k => {
                return Err(format_err(
                    path,
                    None,
                    Some(name),
                    format!("cannot write dtype {k:?} (F32, F16, BF16 only)"),
                ))
            }
        };
        let n = t.numel() as u64 * elem;
        header.insert(
            name.clone(),
            json!({"dtype": dtype, "shape": t.size(), "data_offsets": [offset, offset + n]}),
        );
        offset += n;
    }
    let mut h = serde_json::to_vec(&Value::Object(header))
        .map_err(|e| format_err(path, None, None, e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let tmp = path.with_extension("safetensors.tmp");
    let io = |e| LmError::io(&tmp, e);
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&h).map_err(io)?;
    let mut buf = Vec::new();
    for (_, t) in &sorted {
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let n = t.numel();
        buf.resize(n * t.kind().elt_size_in_bytes(), 0);
        t.f_copy_data_u8(&mut buf, n)?;
        w.write_all(&buf).map_err(io)?;
    }
    w.into_inner().map_err(|e| LmError::io(&tmp, e.into_error()))?.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| LmError::io(path, e))
}
