//! Token log-probs, masked means and masked whitening.

use panacea_core::ops::{
    gather_log_probs, masked_mean, masked_mean_dim, masked_whiten, sequence_log_probs,
};
use tch::{Device, Kind, Tensor};

use crate::setup;

#[test]
fn gather_log_probs_matches_log_softmax_of_next_token() {
    setup();
    let logits = Tensor::randn([2, 4, 7], (Kind::Float, Device::Cpu));
    let ids = Tensor::from_slice(&[1i64, 3, 0, 6, 2, 2, 5, 4]).view([2, 4]);
    let lp = gather_log_probs(&logits, &ids).expect("shapes fit");
    assert_eq!(lp.size(), [2, 3]);
    let full = logits.log_softmax(-1, Kind::Float); // [2, 4, 7]
    for b in 0..2 {
        for t in 0..3 {
            let next = ids.int64_value(&[b, t + 1]);
            let want = full.double_value(&[b, t, next]);
            assert!((lp.double_value(&[b, t]) - want).abs() < 1e-5);
        }
    }
    // bf16 logits are promoted to f32.
    let lp16 = gather_log_probs(&logits.to_kind(Kind::BFloat16), &ids).expect("ok");
    assert_eq!(lp16.kind(), Kind::Float);
    assert!(gather_log_probs(&logits, &ids.narrow(1, 0, 3)).is_err());
}

#[test]
fn sequence_log_probs_sums_the_masked_positions() {
    setup();
    let lp = Tensor::from_slice(&[-1.0f32, -2.0, -3.0, -0.5, -0.5, -0.5]).view([2, 3]);
    let mask = Tensor::from_slice(&[false, true, true, true, false, false]).view([2, 3]);
    let seq = sequence_log_probs(&lp, &mask).expect("ok");
    let got: Vec<f64> = seq.to_kind(Kind::Double).try_into().expect("vec");
    assert_eq!(got, [-5.0, -0.5]);
    assert!(sequence_log_probs(&lp, &mask.narrow(1, 0, 2)).is_err());
}

#[test]
fn masked_mean_handles_all_false_rows() {
    setup();
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 10.0, 20.0, 30.0]).view([2, 3]);
    let mask = Tensor::from_slice(&[true, false, true, false, false, false]).view([2, 3]);
    // Whole tensor: (1 + 3) / 2 = 2.
    assert_eq!(masked_mean(&x, &mask).double_value(&[]), 2.0);
    // Per row: row 0 → 2, row 1 (all false) → 0, not NaN.
    let rows: Vec<f64> = masked_mean_dim(&x, &mask, 1).to_kind(Kind::Double).try_into().expect("v");
    assert_eq!(rows, [2.0, 0.0]);
    let none = Tensor::zeros([2, 3], (Kind::Bool, Device::Cpu));
    assert_eq!(masked_mean(&x, &none).double_value(&[]), 0.0);
}

#[test]
fn masked_whiten_standardises_only_masked_entries() {
    setup();
    // Masked values (1, 3, 5, 7): mean 4, population var 5.
    let x = Tensor::from_slice(&[1.0f32, 3.0, 100.0, 5.0, 7.0, -100.0]).view([2, 3]);
    let mask = Tensor::from_slice(&[true, true, false, true, true, false]).view([2, 3]);
    let w = masked_whiten(&x, &mask, true);
    let s = 5f64.sqrt();
    let want = [-3.0 / s, -1.0 / s, 0.0, 1.0 / s, 3.0 / s, 0.0];
    let got: Vec<f64> = w.to_kind(Kind::Double).view([-1]).try_into().expect("vec");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{got:?}");
    }
    // Without the shift the mean (4) is restored on masked entries.
    let scaled = masked_whiten(&x, &mask, false);
    assert!((scaled.double_value(&[0, 0]) - (4.0 - 3.0 / s)).abs() < 1e-5);
    // An all-false mask gives zeros, not NaN.
    let none = Tensor::zeros([2, 3], (Kind::Bool, Device::Cpu));
    let z = masked_whiten(&x, &none, true);
    assert_eq!(z.abs().sum(Kind::Float).double_value(&[]), 0.0);
}
