//! Preference vectors, samplers, grids and the seeded RNG streams.

use panacea_core::config::parse_config;
use panacea_core::preference::{das_dennis, PreferenceSampler, PreferenceVector};
use panacea_core::seed::{seed_everything, RunRng};
use panacea_core::CoreError;
use rand::Rng;
use tch::{Device, Kind, Tensor};

use crate::setup;

#[track_caller]
fn rejected(values: &[f64], needle: &str) {
    match PreferenceVector::new(values.to_vec()) {
        Err(CoreError::Preference { reason, .. }) => {
            assert!(reason.contains(needle), "{values:?}: `{reason}` lacks `{needle}`")
        }
        other => panic!("{values:?} should be rejected, got {other:?}"),
    }
}

#[test]
fn invalid_preferences_are_rejected_with_a_reason() {
    rejected(&[0.5, 0.6], "sum to 1.1");
    rejected(&[], "empty");
    rejected(&[1.5, -0.5], "< 0");
    rejected(&[f64::NAN, 1.0], "finite");
    rejected(&[f64::INFINITY, 0.0], "finite");
    // Within the tolerance is fine, just outside is not.
    assert!(PreferenceVector::new(vec![0.5, 0.5 + 5e-7]).is_ok());
    rejected(&[0.5, 0.5 + 5e-6], "sum");
    let err = PreferenceVector::with_len(vec![0.5, 0.5], 3).expect_err("length 2 ≠ 3");
    assert!(err.to_string().contains("3 objectives"), "{err}");
    let err = "0.7,abc".parse::<PreferenceVector>().expect_err("not a number");
    assert!(err.to_string().contains("abc"), "{err}");
}

#[test]
fn preference_tensors_have_the_documented_shapes() {
    setup();
    let p: PreferenceVector = "0.7,0.3".parse().expect("valid");
    let t = p.to_tensor(Device::Cpu);
    assert_eq!((t.size(), t.kind()), (vec![2], Kind::Float));
    let q = PreferenceVector::vertex(2, 1).expect("e_2");
    let rows = PreferenceVector::stack(&[p.clone(), q], Device::Cpu).expect("same K");
    assert_eq!(rows.size(), [2, 2]);
    assert!(rows.get(1).equal(&Tensor::from_slice(&[0.0f32, 1.0])));
    let three = PreferenceVector::uniform(3).expect("valid");
    assert!(PreferenceVector::stack(&[p, three], Device::Cpu).is_err());
}

#[test]
fn das_dennis_counts_match_the_method_table() {
    // docs/method.md, §4.2: count = C(H + m − 1, m − 1).
    for (m, h, count) in [
        (2, 10, 11),
        (3, 5, 21),
        (3, 10, 66),
        (3, 12, 91),
        (4, 5, 56),
        (4, 6, 84),
        (4, 10, 286),
        (5, 4, 70),
        (5, 5, 126),
        (6, 4, 126),
        (8, 3, 120),
        (10, 2, 55),
        (10, 3, 220),
    ] {
        let grid = PreferenceSampler::DasDennis { h }.grid(m).expect("small enough");
        assert_eq!(grid.len(), count, "m = {m}, H = {h}");
        assert!(grid.iter().all(|p| p.len() == m));
    }
    // 92,378 points for m = 10, H = 10 is refused with a hint.
    let err = PreferenceSampler::DasDennis { h: 10 }.grid(10).expect_err("too many");
    assert!(err.to_string().contains("92378"), "{err}");
}

#[test]
fn grids_are_lexicographic() {
    // m = 2 runs from (0, 1) to (1, 0); the 2-D grid with n = 11 is the lattice with H = 10.
    let lattice = das_dennis(10, 2).expect("ok");
    assert_eq!(lattice[0].as_slice(), &[0.0, 1.0]);
    assert_eq!(lattice[10].as_slice(), &[1.0, 0.0]);
    let grid = PreferenceSampler::Grid2d { n: 11 }.grid(2).expect("ok");
    for (a, b) in grid.iter().zip(&lattice) {
        for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
            assert!((x - y).abs() < 1e-12);
        }
    }
    // m = 3, H = 2: a ∈ {(0,0,2), (0,1,1), (0,2,0), (1,0,1), (1,1,0), (2,0,0)}.
    let g: Vec<Vec<f64>> = das_dennis(2, 3).expect("ok").into_iter().map(Into::into).collect();
    assert_eq!(
        g,
        [
            vec![0.0, 0.0, 1.0],
            vec![0.0, 0.5, 0.5],
            vec![0.0, 1.0, 0.0],
            vec![0.5, 0.0, 0.5],
            vec![0.5, 0.5, 0.0],
            vec![1.0, 0.0, 0.0],
        ]
    );
    assert!(PreferenceSampler::Grid2d { n: 11 }.grid(3).is_err());
    assert!(PreferenceSampler::Dirichlet { vertex_prob: 0.2 }.grid(2).is_err());
}

#[test]
fn sampling_is_reproducible_per_seed_and_stream() {
    let sampler = PreferenceSampler::Dirichlet { vertex_prob: 0.2 };
    let draw = |rng: &mut RunRng| sampler.sample_rows(3, 20, &mut rng.preference).expect("ok");
    let a = draw(&mut RunRng::new(11));
    let b = draw(&mut RunRng::new(11));
    let c = draw(&mut RunRng::new(12));
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Drawing data does not change the preference stream.
    let mut rng = RunRng::new(11);
    let _: u64 = rng.data.gen();
    assert_eq!(draw(&mut rng), a);
    // Resuming from a saved state continues the stream.
    let mut rng = RunRng::new(11);
    let first = sampler.sample_rows(3, 7, &mut rng.preference).expect("ok");
    let state = rng.state();
    let json = serde_json::to_string(&state).expect("serialise");
    let restored: panacea_core::seed::RunRngState = serde_json::from_str(&json).expect("parse");
    let mut resumed = RunRng::from_state(&restored);
    let rest = sampler.sample_rows(3, 13, &mut resumed.preference).expect("ok");
    assert_eq!([first, rest].concat(), a);
}

#[test]
fn dirichlet_draws_are_valid_and_cover_the_simplex() {
    let mut rng = RunRng::new(3);
    let n = 4000;
    let draws = PreferenceSampler::Dirichlet { vertex_prob: 0.0 }
        .sample_rows(3, n, &mut rng.preference)
        .expect("ok");
    let mut mean = [0.0; 3];
    for p in &draws {
        for (m, v) in mean.iter_mut().zip(p.as_slice()) {
            *m += v / n as f64;
        }
    }
    // Dirichlet(1, 1, 1): E[λ_i] = 1/3, sd of λ_i = sqrt(2/36) ≈ 0.236, so the mean of 4000
    // draws is within 5 standard errors (0.019) of 1/3.
    for m in mean {
        assert!((m - 1.0 / 3.0).abs() < 0.019, "{mean:?}");
    }
    assert!(draws.iter().all(|p| p.as_slice().iter().all(|&v| v > 0.0 && v < 1.0)));
    // vertex_prob = 1: only vertices, and all three appear.
    let vertices = PreferenceSampler::Dirichlet { vertex_prob: 1.0 }
        .sample_rows(3, 60, &mut rng.preference)
        .expect("ok");
    let mut seen = [false; 3];
    for p in &vertices {
        let j = p.as_slice().iter().position(|&v| v == 1.0).expect("a vertex");
        seen[j] = true;
    }
    assert_eq!(seen, [true; 3]);
    // A bad vertex probability is an error, not a panic.
    assert!(PreferenceSampler::Dirichlet { vertex_prob: 1.5 }
        .sample(2, &mut rng.preference)
        .is_err());
}

#[test]
fn fixed_and_grid_samplers() {
    let mut rng = RunRng::new(5);
    let fixed = PreferenceSampler::Fixed { weights: vec![0.7, 0.3] };
    assert_eq!(fixed.sample(2, &mut rng.preference).expect("ok").as_slice(), &[0.7, 0.3]);
    assert!(fixed.sample(3, &mut rng.preference).is_err());
    let grid = PreferenceSampler::Grid2d { n: 3 };
    let all = grid.grid(2).expect("ok");
    for _ in 0..10 {
        assert!(all.contains(&grid.sample(2, &mut rng.preference).expect("ok")));
    }
}

#[test]
fn samplers_parse_from_tagged_yaml() {
    let s: PreferenceSampler = parse_config("kind: dirichlet", "<test>", &[]).expect("default p_v");
    assert_eq!(s, PreferenceSampler::Dirichlet { vertex_prob: 0.2 });
    let s: PreferenceSampler =
        parse_config("kind: das_dennis\nh: 5", "<test>", &[]).expect("valid");
    assert_eq!(s, PreferenceSampler::DasDennis { h: 5 });
    let s: PreferenceSampler =
        parse_config("kind: fixed\nweights: [0.7, 0.3]", "<test>", &[]).expect("valid");
    assert_eq!(s, PreferenceSampler::Fixed { weights: vec![0.7, 0.3] });
    let err = parse_config::<PreferenceSampler>("kind: fixed\nweights: [0.5, 0.6]", "<t>", &[]);
    assert!(err.expect_err("sum 1.1").to_string().contains("weights"));
    assert!(
        parse_config::<PreferenceSampler>("kind: dirichlet\nvertex_p: 0.1", "<t>", &[]).is_err()
    );
    // A preference vector deserialises through validation.
    assert!(serde_json::from_str::<PreferenceVector>("[0.5, 0.6]").is_err());
    assert!(serde_json::from_str::<PreferenceVector>("[0.25, 0.75]").is_ok());
}

#[test]
fn seed_everything_seeds_libtorch_and_the_streams() {
    setup();
    let mut a = seed_everything(42);
    let ta = Tensor::randn([4], (Kind::Float, Device::Cpu));
    let mut b = seed_everything(42);
    let tb = Tensor::randn([4], (Kind::Float, Device::Cpu));
    assert!(ta.equal(&tb));
    assert_eq!(a.sampling.gen::<u64>(), b.sampling.gen::<u64>());
    assert_eq!(a.seed(), 42);
}
