//! TensorBoard event files, written by hand: every run folder gets
//! `events.out.tfevents.<secs>.panacea`, which `tensorboard --logdir runs/` reads as scalar
//! curves beside `metrics.jsonl`.
//!
//! Why by hand: the format is small and frozen (a TFRecord stream of `Event` protocol buffers
//! with three fields used), while the Rust TensorBoard crates pull in a protobuf toolchain or
//! are unmaintained. The writer covers scalars only.
//!
//! ```text
//! record  = u64 len (LE) · u32 masked_crc32c(len bytes) · data · u32 masked_crc32c(data)
//! Event   = 1: wall_time (double) · 2: step (int64) · 3: file_version (string) | 5: Summary
//! Summary = 1: repeated Value;  Value = 1: tag (string) · 2: simple_value (float)
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{io, Result};

/// An open event file.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` (a resumed run adds a second file; TensorBoard merges
    /// the files of a folder) and writes the version record.
    pub fn create(dir: &Path, wall_time: f64) -> Result<Self> {
        let mut path = dir.join(format!("events.out.tfevents.{}.panacea", wall_time as u64));
        let mut n = 2;
        while path.exists() {
            path = dir.join(format!("events.out.tfevents.{}.panacea-{n}", wall_time as u64));
            n += 1;
        }
        let file = File::create(&path).map_err(io("creating", &path))?;
        let mut w = Self { path, out: BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time);
        put_bytes(&mut event, 3, b"brain.Event:2");
        w.record(&event)?;
        Ok(w)
    }

    /// Writes one event holding every `(tag, value)` at `step`, and flushes it.
    pub fn scalars(&mut self, step: i64, wall_time: f64, values: &[(String, f32)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, tag.as_bytes());
            put_key(&mut value, 2, 5);
            value.extend_from_slice(&v.to_le_bytes());
            put_bytes(&mut summary, 1, &value);
        }
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time);
        put_key(&mut event, 2, 0);
        put_varint(&mut event, step as u64);
        put_bytes(&mut event, 5, &summary);
        self.record(&event)
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&buf).and_then(|()| self.out.flush()).map_err(io("writing", &self.path))
    }
}

/// The numeric fields of a flat metrics object as scalars (`step` is the x-axis, not a curve;
/// strings, booleans and nested values are left to metrics.jsonl).
pub fn scalars_of(value: &serde_json::Value) -> Option<(i64, Vec<(String, f32)>)> {
    let obj = value.as_object()?;
    let step = obj.get("step")?.as_i64()?;
    let values = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "step")
        .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x as f32)))
        .collect();
    Some((step, values))
}

/// Drops every event after `max_step` from the event files in `dir` (a resumed run continues
/// from its checkpoint's step, and the steps after it are logged again). Records without a step
/// (the version record) stay; a torn record at the end of a file (a process killed mid-write)
/// is dropped too. Files are rewritten atomically. Returns the number of events dropped.
pub fn truncate_event_files(dir: &Path, max_step: i64) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    let mut dropped = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if !entry.file_name().to_string_lossy().starts_with("events.out.tfevents.") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        let mut kept = Vec::with_capacity(bytes.len());
        let mut i = 0;
        let mut changed = false;
        while let Some((data, next)) = next_record(&bytes, i) {
            if event_step(data).is_some_and(|s| s > max_step) {
                dropped += 1;
                changed = true;
            } else {
                kept.extend_from_slice(&bytes[i..next]);
            }
            i = next;
        }
        if i < bytes.len() {
            changed = true;
        }
        if changed {
            crate::fs::write_atomic(&path, &kept)?;
        }
    }
    Ok(dropped)
}

/// The record starting at `i` and the offset after it, when it is whole and its checksums hold.
fn next_record(bytes: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let len_bytes = bytes.get(i..i + 8)?;
    let len = usize::try_from(u64::from_le_bytes(len_bytes.try_into().ok()?)).ok()?;
    let len_crc = u32::from_le_bytes(bytes.get(i + 8..i + 12)?.try_into().ok()?);
    if len_crc != masked_crc32c(len_bytes) {
        return None;
    }
    let end = i.checked_add(12)?.checked_add(len)?;
    let data = bytes.get(i + 12..end)?;
    let data_crc = u32::from_le_bytes(bytes.get(end..end + 4)?.try_into().ok()?);
    (data_crc == masked_crc32c(data)).then_some((data, end + 4))
}

/// The `step` field (2) of an encoded `Event`, if it has one and is well formed.
fn event_step(event: &[u8]) -> Option<i64> {
    let mut i = 0;
    while i < event.len() {
        let key = get_varint(event, &mut i)?;
        match (key >> 3, key & 7) {
            (2, 0) => return Some(get_varint(event, &mut i)? as i64),
            (_, 0) => {
                get_varint(event, &mut i)?;
            }
            (_, 1) => i += 8,
            (_, 5) => i += 4,
            (_, 2) => i += usize::try_from(get_varint(event, &mut i)?).ok()?,
            _ => return None,
        }
    }
    None
}

fn get_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field key: field number and wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    put_varint(out, (field << 3) | wire_type);
}

fn put_double(out: &mut Vec<u8>, field: u64, v: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: records are small and
/// written once per logged step.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// TFRecord's masking of a CRC (so that CRCs of data containing CRCs stay well distributed).
fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(b: &[u8], i: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// (step, [(tag, value)]) of one Event, decoded by a minimal protobuf reader.
    fn decode(event: &[u8]) -> (i64, Vec<(String, f32)>) {
        let (mut i, mut step, mut values) = (0, 0i64, Vec::new());
        while i < event.len() {
            let key = varint(event, &mut i);
            match (key >> 3, key & 7) {
                (1, 1) => i += 8,
                (2, 0) => step = varint(event, &mut i) as i64,
                (_, 2) => {
                    let len = varint(event, &mut i) as usize;
                    if key >> 3 == 5 {
                        let summary = &event[i..i + len];
                        let mut j = 0;
                        while j < summary.len() {
                            assert_eq!(varint(summary, &mut j), (1 << 3) | 2);
                            let vlen = varint(summary, &mut j) as usize;
                            let value = &summary[j..j + vlen];
                            j += vlen;
                            let mut k = 0;
                            assert_eq!(varint(value, &mut k), (1 << 3) | 2);
                            let tlen = varint(value, &mut k) as usize;
                            let tag = String::from_utf8(value[k..k + tlen].to_vec()).expect("utf8");
                            k += tlen;
                            assert_eq!(varint(value, &mut k), (2 << 3) | 5);
                            let x = f32::from_le_bytes(value[k..k + 4].try_into().expect("4"));
                            values.push((tag, x));
                        }
                    }
                    i += len;
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
        (step, values)
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC catalogue's check value of CRC-32C for the ASCII digits "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn event_file_holds_checked_records_with_the_logged_scalars() {
        let dir = std::env::temp_dir().join(format!("panacea-tb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let json = serde_json::json!({"step": 300, "train/kl": 0.25, "note": "x", "ok": true});
        let (step, values) = scalars_of(&json).expect("scalars");
        let mut w = EventWriter::create(&dir, 1_700_000_000.5).expect("create");
        w.scalars(step, 1_700_000_001.0, &values).expect("write");
        drop(w);
        let file = std::fs::read_dir(&dir).expect("ls").flatten().next().expect("file").path();
        assert!(file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with("events.out.tfevents."));
        let bytes = std::fs::read(&file).expect("read");
        let mut records = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let len_bytes = &bytes[i..i + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().expect("8")) as usize;
            let len_crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().expect("4"));
            assert_eq!(len_crc, masked_crc32c(len_bytes));
            let data = &bytes[i + 12..i + 12 + len];
            let data_crc =
                u32::from_le_bytes(bytes[i + 12 + len..i + 16 + len].try_into().expect("4"));
            assert_eq!(data_crc, masked_crc32c(data));
            records.push(data.to_vec());
            i += 16 + len;
        }
        assert_eq!(records.len(), 2);
        assert!(records[0].windows(13).any(|w| w == b"brain.Event:2"));
        assert_eq!(decode(&records[1]), (300, vec![("train/kl".to_owned(), 0.25f32)]));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
