//! An on-disk cache of reference log-probs: they depend neither on the trained parameters θ
//! nor on λ, so each pair's two values are computed once and reused by every later step,
//! evaluation and run on the same data and base [ours].
//!
//! The reference model is the frozen base (`Adapter::Off`), so log π_ref(y_j|x) of a pair is a
//! fixed number once the data, the base weights and the scoring settings are fixed. The cache
//! stores both values of every pair, keyed by pair index, in one JSON file whose name is the
//! digest of a [`RefCacheKey`]: the hash of the encoded pairs (which covers the data, the
//! tokenizer, the chat template and truncation), the hash of the base weights, and a settings
//! string (sequence log-prob variant, dtype, device kind). The full key is stored inside the
//! file and checked on open, so changing any part of it never returns a stale value: the
//! cache is then empty and is rebuilt ([`CacheStatus::Invalidated`] or [`CacheStatus::New`]).
//!
//! Values are f32 log-probs written as JSON numbers (f64), which round-trips them exactly.
//! Writes are atomic (temporary file, then rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::data::EncodedPair;
use crate::DpoError;

/// Version of the file layout; a file of another version is treated as invalid.
pub const CACHE_VERSION: u32 = 1;

/// What identifies a set of reference log-probs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefCacheKey {
    /// Hash of the encoded pairs ([`hash_pairs`]).
    pub data: String,
    /// Hash of the base model's weights ([`hash_var_store`] or a file hash).
    pub base_model: String,
    /// Everything else that changes the numbers: variant, dtype, device kind.
    pub settings: String,
}

impl RefCacheKey {
    /// The hex SHA-256 of the three parts (used as the file name).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.data, &self.base_model, &self.settings] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 over the pairs' indices, prompt lengths and token ids, in order.
pub fn hash_pairs(pairs: &[EncodedPair]) -> String {
    let mut h = Sha256::new();
    h.update((pairs.len() as u64).to_le_bytes());
    for p in pairs {
        h.update((p.index as u64).to_le_bytes());
        h.update((p.prompt_len as u64).to_le_bytes());
        for s in &p.seqs {
            h.update((s.len() as u64).to_le_bytes());
            for id in s {
                h.update(id.to_le_bytes());
            }
        }
    }
    hex(&h.finalize())
}

/// The base-model hash (moved to panacea-core so every trainer and eval-front share it).
pub use panacea_core::checkpoint::hash_var_store;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u32,
    key: RefCacheKey,
    /// pair index → [log π_ref(y_0|x), log π_ref(y_1|x)].
    values: BTreeMap<usize, [f64; 2]>,
}

/// What [`RefLogpCache::open`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// No file for this key: the cache starts empty.
    New,
    /// A file for this key with `entries` pairs.
    Loaded {
        /// Pairs already cached.
        entries: usize,
    },
    /// A file was found under this key's name but did not belong to it (other key or version,
    /// or unreadable); it is ignored and will be overwritten.
    Invalidated {
        /// Why it was rejected.
        reason: String,
    },
}

/// Reference log-probs per pair, backed by a file. Lookups and inserts are by pair index.
#[derive(Debug)]
pub struct RefLogpCache {
    path: PathBuf,
    key: RefCacheKey,
    values: BTreeMap<usize, [f64; 2]>,
    dirty: bool,
    /// Batches served entirely from the cache.
    pub hits: usize,
    /// Batches with at least one pair missing.
    pub misses: usize,
}

impl RefLogpCache {
    /// Opens (or starts) the cache for `key` in folder `dir` (created when saving).
    pub fn open(dir: &Path, key: RefCacheKey) -> (Self, CacheStatus) {
        let path = dir.join(format!("ref-logp-{}.json", &key.digest()[..16]));
        let mut cache =
            Self { path, key, values: BTreeMap::new(), dirty: false, hits: 0, misses: 0 };
        let status = match std::fs::read(&cache.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheStatus::New,
            Err(e) => CacheStatus::Invalidated { reason: format!("cannot read: {e}") },
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Err(e) => CacheStatus::Invalidated { reason: format!("not a cache file: {e}") },
                Ok(f) if f.version != CACHE_VERSION => CacheStatus::Invalidated {
                    reason: format!("version {} (expected {CACHE_VERSION})", f.version),
                },
                Ok(f) if f.key != cache.key => {
                    CacheStatus::Invalidated { reason: "written for another key".into() }
                }
                Ok(f) if f.values.values().flatten().any(|v| !v.is_finite()) => {
                    CacheStatus::Invalidated { reason: "holds a non-finite value".into() }
                }
                Ok(f) => {
                    cache.values = f.values;
                    CacheStatus::Loaded { entries: cache.values.len() }
                }
            },
        };
        (cache, status)
    }

    /// The file backing this cache.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key this cache belongs to.
    pub fn key(&self) -> &RefCacheKey {
        &self.key
    }

    /// Number of cached pairs.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The reference log-probs of the pairs `index` as [2B] f32 on `device` (rows: every
    /// response 0, then every response 1, like [`crate::data::PairBatch`]), or `None` when any
    /// pair is missing. Counts a hit or a miss.
    pub fn lookup(&mut self, index: &[usize], device: Device) -> Option<Tensor> {
        let found: Option<Vec<[f64; 2]>> =
            index.iter().map(|i| self.values.get(i).copied()).collect();
        let Some(found) = found else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        let flat: Vec<f32> = (0..2).flat_map(|j| found.iter().map(move |v| v[j] as f32)).collect();
        Some(Tensor::from_slice(&flat).to_device(device)) // [2B]
    }

    /// Stores the reference log-probs `values` [2B] of the pairs `index`.
    pub fn insert(&mut self, index: &[usize], values: &Tensor) -> Result<(), DpoError> {
        let b = index.len();
        if values.size() != [2 * b as i64] {
            return Err(DpoError::shape(
                "reference log-probs [2B]",
                vec![2 * b as i64],
                values.size(),
            ));
        }
        let host = Vec::<f32>::try_from(values.to_kind(Kind::Float).to_device(Device::Cpu))?;
        if host.iter().any(|v| !v.is_finite()) {
            return Err(DpoError::Data(format!(
                "reference log-probs of pairs {index:?} are not finite: {host:?}"
            )));
        }
        for (i, &p) in index.iter().enumerate() {
            self.values.insert(p, [f64::from(host[i]), f64::from(host[b + i])]);
        }
        self.dirty = true;
        Ok(())
    }

    /// Writes the cache if anything was added since the last save (atomically).
    pub fn save(&mut self) -> Result<(), DpoError> {
        if !self.dirty {
            return Ok(());
        }
        let err = |message: String| DpoError::Cache { path: self.path.clone(), message };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        }
        let file = CacheFile {
            version: CACHE_VERSION,
            key: self.key.clone(),
            values: self.values.clone(),
        };
        let text = serde_json::to_vec(&file).map_err(|e| err(format!("cannot serialise: {e}")))?;
        panacea_core::checkpoint::write_atomic(&self.path, &text)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    fn key(data: &str) -> RefCacheKey {
        RefCacheKey {
            data: data.into(),
            base_model: "base".into(),
            settings: "response_sum".into(),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir()
            .join(format!("panacea-dpo-refcache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn hit_after_insert_and_reopen() {
        let dir = tmp("hit");
        let (mut c, status) = RefLogpCache::open(&dir, key("d"));
        assert_eq!(status, CacheStatus::New);
        assert!(c.lookup(&[4, 9], Device::Cpu).is_none());
        // Rows: response 0 of pairs 4, 9, then response 1 of pairs 4, 9.
        let v = Tensor::from_slice(&[-1.25f32, -2.5, -3.125, -0.1]);
        c.insert(&[4, 9], &v).expect("insert");
        c.save().expect("save");
        let (mut c2, status) = RefLogpCache::open(&dir, key("d"));
        assert_eq!(status, CacheStatus::Loaded { entries: 2 });
        let got = c2.lookup(&[9, 4], Device::Cpu).expect("hit");
        // Exact round trip, reordered to the requested pairs.
        assert_eq!(Vec::<f32>::try_from(got).expect("host"), [-2.5, -1.25, -0.1, -3.125]);
        assert_eq!((c2.hits, c2.misses), (1, 0));
        assert!(c2.lookup(&[4, 5], Device::Cpu).is_none(), "pair 5 was never stored");
        assert_eq!(c2.misses, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn any_changed_key_part_misses() {
        let dir = tmp("key");
        let (mut c, _) = RefLogpCache::open(&dir, key("d"));
        c.insert(&[0], &Tensor::from_slice(&[-1.0f32, -2.0])).expect("insert");
        c.save().expect("save");
        let changed = [
            key("other data"),
            RefCacheKey { base_model: "other base".into(), ..key("d") },
            RefCacheKey { settings: "from_divergence".into(), ..key("d") },
        ];
        for k in changed {
            let (mut c2, status) = RefLogpCache::open(&dir, k);
            assert_eq!(status, CacheStatus::New);
            assert!(c2.lookup(&[0], Device::Cpu).is_none());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn var_store_hash_is_stable_and_sees_a_changed_weight() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().zeros_no_train("w", &[3, 2]);
        let _ = vs.root().zeros_no_train("b", &[2]);
        let h0 = hash_var_store(&vs).expect("hash");
        assert_eq!(h0, hash_var_store(&vs).expect("hash"));
        assert_eq!(h0.len(), 64);
        tch::no_grad(|| {
            let _ = w.shallow_clone().get(1).get(0).fill_(1e-7);
        });
        assert_ne!(h0, hash_var_store(&vs).expect("hash"));
    }

    #[test]
    fn a_file_written_for_another_key_is_invalidated() {
        let dir = tmp("inval");
        let (mut a, _) = RefLogpCache::open(&dir, key("a"));
        a.insert(&[0], &Tensor::from_slice(&[-1.0f32, -2.0])).expect("insert");
        a.save().expect("save");
        // Put a's file under b's name: the stored key does not match, so nothing is served.
        let (b, _) = RefLogpCache::open(&dir, key("b"));
        std::fs::copy(a.path(), b.path()).expect("copy");
        let (mut b, status) = RefLogpCache::open(&dir, key("b"));
        assert!(matches!(status, CacheStatus::Invalidated { .. }), "{status:?}");
        assert!(b.lookup(&[0], Device::Cpu).is_none());
        // Garbage bytes are invalid too, never a panic.
        std::fs::write(b.path(), b"\x00\xffnot json").expect("write");
        let (_, status) = RefLogpCache::open(&dir, key("b"));
        assert!(matches!(status, CacheStatus::Invalidated { .. }), "{status:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
