//! Cross-module checks of the pure pieces: shaping → GAE gives the textbook result on a
//! sparse-reward episode.

use panacea_rlhf::gae::gae;
use panacea_rlhf::rewards::shape_rewards;
use tch::{Kind, Tensor};

#[test]
fn shaped_sparse_reward_with_gamma_one_gives_score_minus_value() {
    panacea_core::device::init_torch();
    // With β = 0 the only reward is the score at the last token; with γ = λ_GAE = 1 GAE reduces
    // to A_t = score − V_t for every response token (Monte-Carlo return minus baseline).
    let lp = Tensor::zeros([1, 4], (Kind::Float, tch::Device::Cpu));
    let mask = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 1.0]).view([1, 4]);
    let scores = Tensor::from_slice(&[2.0f32]).view([1, 1]);
    let shaped = shape_rewards(&lp, &lp, &mask, &scores, 0.0, 50.0);
    let values = Tensor::from_slice(&[0.0f32, 0.5, 1.0, 1.5]).view([1, 4, 1]);
    let out = gae(&values, &shaped.rewards, &mask, 1.0, 1.0);
    let adv: Vec<f64> =
        Vec::try_from(out.advantages.flatten(0, -1).to_kind(Kind::Double)).expect("to vec");
    assert_eq!(adv, vec![0.0, 1.5, 1.0, 0.5]);
}
