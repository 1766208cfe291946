//! The `panacea chat` session without a terminal: commands, λ by name or position, sweeps,
//! multi-turn prompts through the chat template, and saving.

use panacea_serve::chat::{self, ChatSession, Command};
use panacea_serve::engine::{Engine, GenParams};

use crate::common;

#[test]
fn lines_become_commands_or_clear_errors() {
    assert_eq!(chat::parse_line("  hello there "), Ok(Command::Say("hello there".into())));
    assert_eq!(chat::parse_line(""), Ok(Command::Nothing));
    assert_eq!(
        chat::parse_line("/pref helpful=0.7, harmless=0.3"),
        Ok(Command::Pref(Some("helpful=0.7, harmless=0.3".into())))
    );
    assert_eq!(chat::parse_line("/pref"), Ok(Command::Pref(None)));
    assert_eq!(chat::parse_line("/sweep"), Ok(Command::Sweep(5)));
    assert_eq!(chat::parse_line("/sweep 3"), Ok(Command::Sweep(3)));
    assert!(chat::parse_line("/sweep 50").expect_err("too many").contains("2 to 11"));
    assert_eq!(chat::parse_line("/save out.json"), Ok(Command::Save("out.json".into())));
    assert!(chat::parse_line("/save").expect_err("no file").contains("file name"));
    assert_eq!(chat::parse_line("/reset"), Ok(Command::Reset));
    assert_eq!(chat::parse_line("/quit"), Ok(Command::Quit));
    assert!(chat::parse_line("/frobnicate").expect_err("unknown").contains("/help"));
}

#[test]
fn preferences_by_name_or_position_are_normalised_or_rejected_by_name() {
    let mut s =
        ChatSession::new(common::objectives(), Some("helpful=7,harmless=3"), None).expect("valid");
    assert_eq!(s.pref(), Some(&[0.7, 0.3][..]));
    assert_eq!(s.set_pref("0.2,0.8").expect("positional"), "helpful=0.2, harmless=0.8");
    assert_eq!(s.set_pref("harmless=1").expect("one name"), "helpful=0, harmless=1");
    let e = s.set_pref("helpfull=1").expect_err("typo");
    assert_eq!(e.field, "/pref.helpfull");
    assert!(e.message.contains("objectives: helpful, harmless"), "{}", e.message);
    let e = s.set_pref("0.5,0.3,0.2").expect_err("length");
    assert!(e.message.contains("has 3 weights but the adapter has 2 objectives"), "{}", e.message);
    let e = s.set_pref("-1,2").expect_err("negative");
    assert_eq!(e.field, "/pref[0]");
    let e = s.set_pref("nan,1").expect_err("NaN");
    assert!(e.message.contains("not a finite number"), "{}", e.message);
    let e = s.set_pref("lots,1").expect_err("text");
    assert!(e.message.contains("not a number"), "{}", e.message);
    assert_eq!(s.pref(), Some(&[0.0, 1.0][..]), "a rejected /pref keeps the last good λ");
    // Sweeps run from the first objective's vertex to the second's.
    assert_eq!(s.sweep_points(3), vec![vec![1.0, 0.0], vec![0.5, 0.5], vec![0.0, 1.0]]);
    // No adapter: no λ.
    let base = ChatSession::new(Vec::new(), None, None).expect("base");
    assert_eq!(base.describe_pref(), "base model (no adapter)");
    assert!(ChatSession::new(Vec::new(), Some("0.5,0.5"), None).is_err());
}

#[test]
fn a_conversation_carries_its_turns_and_a_sweep_answers_the_last_question_at_each_preference() {
    let Some(served) = common::tiny_served(true) else { return };
    let template = served.base.chat_template.clone();
    let limits = common::options(8, 16).limits;
    let engine = Engine::start(served, limits, 1).expect("engine");
    let params = GenParams {
        max_tokens: 8,
        sampling: panacea_lm::Sampling::Greedy,
        seed: 0,
        stop: Vec::new(),
        n: 1,
    };
    let mut s = ChatSession::new(common::objectives(), Some("0.5,0.5"), Some("Be brief.".into()))
        .expect("session");
    assert_eq!(s.sweep_prompt(&template).expect("renders"), None, "nothing to sweep yet");

    let prompt1 = s.ask(&template, "What is the capital of France?").expect("renders");
    let rx = chat::submit_text(&engine, &prompt1, s.pref(), params.clone()).expect("queued");
    let answer1 = chat::collect_text(rx).expect("answer");
    s.answered(&answer1);
    let prompt2 = s.ask(&template, "And of Italy?").expect("renders");
    assert!(prompt2.starts_with("<|im_start|>system\nBe brief.<|im_end|>"), "{prompt2}");
    assert!(prompt2.contains(&format!("<|im_start|>assistant\n{answer1}<|im_end|>")), "{prompt2}");
    assert!(prompt2.ends_with("<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"));
    let answer2 = chat::collect_text(
        chat::submit_text(&engine, &prompt2, s.pref(), params.clone()).expect("queued"),
    )
    .expect("answer");
    s.answered(&answer2);

    // The sweep answers the last user turn (not the answer after it) at every point, batched,
    // each exactly as that λ alone would.
    let sweep_prompt = s.sweep_prompt(&template).expect("renders").expect("a question");
    assert_eq!(sweep_prompt, prompt2);
    let points = s.sweep_points(3);
    let swept = chat::sweep(&engine, &sweep_prompt, &points, &params).expect("sweep");
    for (p, text) in points.iter().zip(&swept) {
        let alone = chat::collect_text(
            chat::submit_text(&engine, &sweep_prompt, Some(p), params.clone()).expect("queued"),
        )
        .expect("answer");
        assert_eq!(&alone, text, "λ = {p:?}");
    }
    assert_eq!(swept[1], answer2, "λ = (0.5, 0.5) is the session's own λ");

    let dir = std::env::temp_dir().join(format!("panacea-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("chat.json");
    s.save(&path).expect("saves");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reads")).expect("JSON");
    assert_eq!(saved["messages"].as_array().map(Vec::len), Some(4));
    assert_eq!(saved["messages"][3]["content"], serde_json::json!(answer2));
    assert_eq!(saved["preference"], serde_json::json!({"helpful": 0.5, "harmless": 0.5}));
    s.reset();
    assert!(s.history.is_empty());
    std::fs::remove_dir_all(&dir).expect("cleanup");
    engine.shutdown().expect("engine stops");
}
