//! The SmolLM2 tokenizer rebuilt from GGUF metadata: reference ids, round trips, special tokens
//! and the ChatML prompt.

use panacea_lm::ChatTemplate;

use crate::common::real_tokenizer;

/// The passage of docs/models.md, §1.6 and its 21 ids (HF transformers 5.24 tokenizer).
pub(crate) const PASSAGE: &str = "The capital of France is Paris. The capital of Germany is \
                                  Berlin. The capital of Italy is Rome.";
pub(crate) const PASSAGE_IDS: [i64; 21] = [
    504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314, 11452, 30, 378, 3575, 282,
    7158, 314, 7268, 30,
];

#[test]
fn encodes_the_reference_passage_to_the_reference_ids() {
    crate::common::setup();
    let Some(tok) = real_tokenizer() else { return };
    assert_eq!(tok.encode(PASSAGE).expect("encode"), PASSAGE_IDS);
    assert_eq!(tok.vocab_size(), 49_152);
}

#[test]
fn decode_of_encode_is_the_identity() {
    crate::common::setup();
    let Some(tok) = real_tokenizer() else { return };
    let cases = [
        "Hello, world!",
        "  leading and trailing spaces  ",
        "numbers 1234567890 and 3.14159",
        "tabs\tand\nnewlines\r\n",
        "Ünïcödé: café, naïve, 日本語, emoji 🚀🎉",
        "code: fn main() { println!(\"{}\", x); }",
        "<|im_start|>user\nHi<|im_end|>\n",
        "",
    ];
    for s in cases {
        let ids = tok.encode(s).expect("encode");
        assert_eq!(tok.decode(&ids, false).expect("decode"), s, "ids {ids:?}");
    }
}

#[test]
fn digits_are_split_one_per_token() {
    crate::common::setup();
    let Some(tok) = real_tokenizer() else { return };
    assert_eq!(tok.encode("2024").expect("encode").len(), 4);
}

#[test]
fn special_tokens_have_their_ids_and_are_skippable() {
    crate::common::setup();
    let Some(tok) = real_tokenizer() else { return };
    assert_eq!(tok.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    assert_eq!(tok.eos_id, 2);
    let ids = tok.encode("<|im_start|>assistant\nYes.<|im_end|>").expect("encode");
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(tok.decode(&ids, true).expect("decode"), "assistant\nYes.");
}

#[test]
fn chat_prompt_starts_with_im_start_system_newline() {
    crate::common::setup();
    let Some(tok) = real_tokenizer() else { return };
    let prompt = ChatTemplate::default().user_prompt("What is the capital of France?");
    let ids = tok.encode(&prompt).expect("encode");
    // <|im_start|>, "system", "Ċ" (the byte-level newline), per docs/models.md, §1.7.
    assert_eq!(ids[0], 1);
    assert_eq!(ids[1], tok.token_id("system").expect("system token"));
    assert_eq!(ids[2], tok.token_id("Ċ").expect("newline token"));
    assert_eq!(tok.decode(&ids, false).expect("decode"), prompt);
}
