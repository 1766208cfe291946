//! Dequantisation of the ggml tensor types this project meets (docs/models.md, §1.5 and §2):
//! F32, F16, BF16, Q8_0, Q4_1, Q4_K and Q6_K. Each function turns whole blocks of bytes into
//! f32 values; the caller has already checked that the byte slice holds exactly
//! `out.len() / block_size` blocks. The loops are plain slice code so the compiler vectorises
//! them; large tensors are split over the available cores.

use half::f16;

/// A ggml tensor type that [`dequantize`] can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// 0: f32.
    F32,
    /// 1: IEEE half.
    F16,
    /// 3: 32 weights in 20 bytes (f16 d, f16 m, 16 nibble bytes).
    Q4_1,
    /// 8: 32 weights in 34 bytes (f16 d, 32 × i8).
    Q8_0,
    /// 12: 256 weights in 144 bytes (k-quant, 4 bit).
    Q4K,
    /// 14: 256 weights in 210 bytes (k-quant, 6 bit).
    Q6K,
    /// 30: bfloat16.
    BF16,
}

/// The ggml type ids [`GgmlType::from_id`] accepts, for error messages.
pub const SUPPORTED_TYPES: &str = "0 F32, 1 F16, 3 Q4_1, 8 Q8_0, 12 Q4_K, 14 Q6_K, 30 BF16";

impl GgmlType {
    /// Maps a ggml type id; `None` for types this reader does not decode.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q6K => 210,
        }
    }

    /// Name as ggml spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_1 => "Q4_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4K => "Q4_K",
            Self::Q6K => "Q6_K",
            Self::BF16 => "BF16",
        }
    }
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn f32_blocks(src: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn f16_blocks(src: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

fn bf16_blocks(src: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
    }
}

/// Q8_0: y_j = d · q_j.
fn q8_0_blocks(src: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(34)) {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..34]) {
            *o = d * f32::from(q as i8);
        }
    }
}

/// Q4_1: y_j = (qs_j & 0xF)·d + m, y_{j+16} = (qs_j >> 4)·d + m (not interleaved).
fn q4_1_blocks(src: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(32).zip(src.chunks_exact(20)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let (lo, hi) = y.split_at_mut(16);
        for j in 0..16 {
            let q = b[4 + j];
            lo[j] = f32::from(q & 0xF) * d + m;
            hi[j] = f32::from(q >> 4) * d + m;
        }
    }
}

/// The 6-bit scale and min of Q4_K sub-block `j` (ggml's `get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

/// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins; y = d·sc·q − dmin·m.
fn q4_k_blocks(src: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(144)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for i in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * i, scales);
            let (sc2, m2) = scale_min_k4(2 * i + 1, scales);
            let (d1, m1) = (d * f32::from(sc1), dmin * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), dmin * f32::from(m2));
            let q = &qs[32 * i..32 * i + 32];
            let y = &mut y[64 * i..64 * i + 64];
            for l in 0..32 {
                y[l] = d1 * f32::from(q[l] & 0xF) - m1;
                y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
            }
        }
    }
}

/// Q6_K: two halves of 128 weights, 6-bit values from ql (low 4 bits) and qh (high 2 bits).
fn q6_k_blocks(src: &[u8], out: &mut [f32]) {
    for (y, b) in out.chunks_exact_mut(256).zip(src.chunks_exact(210)) {
        let d = f16_at(b, 208);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            let y = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = i32::from((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                let q2 = i32::from((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * f32::from(sc[is] as i8) * q1 as f32;
                y[l + 32] = d * f32::from(sc[is + 2] as i8) * q2 as f32;
                y[l + 64] = d * f32::from(sc[is + 4] as i8) * q3 as f32;
                y[l + 96] = d * f32::from(sc[is + 6] as i8) * q4 as f32;
            }
        }
    }
}

/// Decodes `src` (whole blocks of `ty`) into `out`. Requires
/// `src.len() == out.len() / ty.block_size() * ty.block_bytes()` and
/// `out.len() % ty.block_size() == 0`; returns `false` (and writes nothing) otherwise.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) -> bool {
    let (bs, bb) = (ty.block_size(), ty.block_bytes());
    if !out.len().is_multiple_of(bs) || src.len() != out.len() / bs * bb {
        return false;
    }
    let f: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::F32 => f32_blocks,
        GgmlType::F16 => f16_blocks,
        GgmlType::BF16 => bf16_blocks,
        GgmlType::Q8_0 => q8_0_blocks,
        GgmlType::Q4_1 => q4_1_blocks,
        GgmlType::Q4K => q4_k_blocks,
        GgmlType::Q6K => q6_k_blocks,
    };
    let n_blocks = out.len() / bs;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    // Below ~1M weights a thread costs more than it saves.
    if threads < 2 || out.len() < 1 << 20 {
        f(src, out);
        return true;
    }
    let per = n_blocks.div_ceil(threads);
    std::thread::scope(|s| {
        for (o, b) in out.chunks_mut(per * bs).zip(src.chunks(per * bb)) {
            s.spawn(move || f(b, o));
        }
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_low_nibbles_fill_the_first_half() {
        // d = 0.5, m = -1; byte j holds low nibble j%16 and high nibble 15 - j%16.
        let mut b = Vec::new();
        b.extend(h(0.5));
        b.extend(h(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut y = [0f32; 32];
        assert!(dequantize(GgmlType::Q4_1, &b, &mut y));
        for j in 0..16 {
            assert_eq!(y[j], j as f32 * 0.5 - 1.0);
            assert_eq!(y[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn q8_0_scales_signed_bytes() {
        let mut b = h(0.25).to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let mut y = [0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &b, &mut y));
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, (j as f32 - 16.0) * 0.25);
        }
    }

    #[test]
    fn q4_k_first_sub_blocks_use_plain_scales() {
        // d = 1, dmin = 1, sub-block 0: sc 2, m 3 (s[0] = 2, s[4] = 3); all nibbles 5.
        let mut b = h(1.0).to_vec();
        b.extend(h(1.0));
        let mut scales = [0u8; 12];
        scales[0] = 2;
        scales[4] = 3;
        b.extend(scales);
        b.extend([0x55u8; 128]);
        let mut y = [0f32; 256];
        assert!(dequantize(GgmlType::Q4K, &b, &mut y));
        assert_eq!(y[0], 2.0 * 5.0 - 3.0); // sub-block 0, low nibbles
        assert_eq!(y[32], 0.0); // sub-block 1: sc = m = 0
    }

    #[test]
    fn q6_k_zero_codes_give_minus_32_times_scale() {
        let mut b = vec![0u8; 192];
        b.extend([1u8; 16]); // every scale 1
        b.extend(h(0.5));
        let mut y = [0f32; 256];
        assert!(dequantize(GgmlType::Q6K, &b, &mut y));
        assert!(y.iter().all(|&v| v == -16.0));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut y = [0f32; 32];
        assert!(!dequantize(GgmlType::Q4_1, &[0u8; 19], &mut y));
        assert!(!dequantize(GgmlType::Q4_1, &[0u8; 20], &mut y[..31]));
    }
}
