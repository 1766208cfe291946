//! Chat templates rendered with minijinja equal transformers' `apply_chat_template`: five real
//! templates (SmolLM2, Llama 3, Qwen2.5, Mistral without and with a system prompt;
//! tests/fixtures/chat_templates/, provenance in its README) on conversations with system
//! prompts, several turns and the generation prompt.
//! The expected strings (and the templates' `raise_exception` messages) were recorded by
//! scripts/make_model_fixtures.py with transformers.

use std::path::PathBuf;

use panacea_lm::{ChatTemplate, JinjaChatTemplate, LmError, Message, PromptTemplate, Role};
use serde::Deserialize;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat_templates")
}

#[derive(Deserialize)]
struct Case {
    template: String,
    conversation: String,
    bos_token: String,
    eos_token: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    expected: Option<String>,
    expected_error: Option<String>,
}

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

fn template(case: &Case) -> JinjaChatTemplate {
    let source = std::fs::read_to_string(dir().join(&case.template)).expect("template file");
    JinjaChatTemplate::new(source, &case.template, &case.bos_token, &case.eos_token)
}

#[test]
fn renders_as_transformers_does_for_five_real_templates() {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("cases.json");
    let cases: Cases = serde_json::from_str(&text).expect("cases.json parses");
    let mut templates = std::collections::BTreeSet::new();
    let mut with_system = 0;
    for case in &cases.cases {
        let what = format!("{} / {}", case.template, case.conversation);
        let got = template(case).render(&case.messages, case.add_generation_prompt);
        match (&case.expected, &case.expected_error) {
            (Some(want), None) => {
                assert_eq!(got.expect(&what), *want, "{what}");
                templates.insert(case.template.clone());
                with_system += usize::from(case.messages[0].role == Role::System);
            }
            (None, Some(msg)) => match got {
                Err(LmError::Template(e)) => assert!(e.contains(msg.as_str()), "{what}: {e}"),
                other => panic!("{what}: expected the template's error {msg:?}, got {other:?}"),
            },
            _ => panic!("{what}: a case has either `expected` or `expected_error`"),
        }
    }
    assert_eq!(templates.len(), 5, "every template rendered at least once: {templates:?}");
    assert!(with_system >= 8, "system prompts covered: {with_system}");
}

#[test]
fn raise_exception_is_an_error_with_the_template_message() {
    let source = std::fs::read_to_string(dir().join("mistral.jinja")).expect("template");
    let t = JinjaChatTemplate::new(source, "mistral.jinja", "<s>", "</s>");
    let msgs = [Message::new(Role::User, "a"), Message::new(Role::User, "b")];
    let err = t.render(&msgs, true).expect_err("two user turns in a row");
    let text = err.to_string();
    assert!(text.contains("Conversation roles must alternate"), "{text}");
    assert!(text.contains("mistral.jinja"), "names the template: {text}");
}

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let t =
        JinjaChatTemplate::new("{% for m in messages %}\n{{ m.content ", "broken.jinja", "", "");
    let text = t.check().expect_err("unclosed").to_string();
    assert!(text.contains("broken.jinja") && text.contains("line 2"), "{text}");
}

#[test]
fn the_chatml_fallback_says_so_and_renders_chatml() {
    let fallback = PromptTemplate::ChatMlFallback(ChatTemplate::default());
    assert!(fallback.is_fallback());
    let want = ChatTemplate::default().user_prompt("Hi");
    assert_eq!(fallback.user_prompt("Hi").expect("render"), want);
    // SmolLM2's own template renders the same text as the hand-written ChatML.
    let source = std::fs::read_to_string(dir().join("smollm2.jinja")).expect("template");
    let own = PromptTemplate::Model(JinjaChatTemplate::new(
        source,
        "smollm2.jinja",
        "<|im_start|>",
        "<|im_end|>",
    ));
    assert!(!own.is_fallback());
    assert_eq!(own.user_prompt("Hi").expect("render"), want);
}

/// The model folders carry their template in tokenizer_config.json (transformers 4.x) or in
/// chat_template.jinja (5.x); a folder with neither falls back to ChatML and says so.
#[test]
fn model_folders_use_their_own_template() {
    crate::common::setup();
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
    let user = [Message::new(Role::User, "Hi")];
    for (family, start) in [
        ("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"),
        ("qwen2", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."),
        ("mistral", "<s>[INST] Hi [/INST]"),
    ] {
        let pre = panacea_lm::Pretrained::from_dir(&models.join(family)).expect("loads");
        let text = pre.chat_template.render(&user, true).expect("renders");
        assert!(text.starts_with(start), "{family}: {text:?}");
    }
    // The same folder without its template: ChatML, reported.
    let tmp = std::env::temp_dir().join(format!("panacea-lm-notemplate-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(models.join("qwen3").join(f), tmp.join(f)).expect("copy");
    }
    let pre = panacea_lm::Pretrained::from_dir(&tmp).expect("loads without a template");
    assert!(pre.chat_template.is_fallback());
    let _ = std::fs::remove_dir_all(&tmp);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// A model folder's template is untrusted text: compiling and rendering any mix of Jinja
    /// syntax, text and the names HF templates use gives a string or an error, never a panic.
    #[test]
    fn any_template_text_renders_or_errs_without_panicking(
        parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "{{", "}}", "{%", "%}", "{#", "#}", " for m in messages ", " endfor ", " if ",
                " endif ", " else ", "m['role']", "m.content", ".strip()", "|trim", "|tojson",
                "raise_exception('no')", "loop.index0", " set x = 1 ", "add_generation_prompt",
                "bos_token", "(", ")", "[", "]", "'", "\"", "\n", "-", "+", "~", " ", "text",
            ]),
            0..40,
        )
    ) {
        let source: String = parts.concat();
        let t = JinjaChatTemplate::new(source, "fuzz", "<s>", "</s>");
        let messages = [Message::new(Role::System, "sys"), Message::new(Role::User, "hi")];
        let _ = t.check();
        let _ = t.render(&messages, true);
    }
}

/// `strftime` against Python's `datetime.fromtimestamp(t, timezone.utc).strftime(...)` (values
/// printed by Python 3.11): a leap day, the epoch, the last second of 2099 and Llama's default
/// date 26 Jul 2024.
#[test]
fn strftime_matches_python_on_reference_instants() {
    use panacea_lm::chat::strftime;
    let format = "%d %b %Y|%Y-%m-%d %H:%M:%S|%a %A %b %B|%y %j %e|%%";
    for (t, want) in [
        (1_721_952_000, "26 Jul 2024|2024-07-26 00:00:00|Fri Friday Jul July|24 208 26|%"),
        (951_827_696, "29 Feb 2000|2000-02-29 12:34:56|Tue Tuesday Feb February|00 060 29|%"),
        (0, "01 Jan 1970|1970-01-01 00:00:00|Thu Thursday Jan January|70 001  1|%"),
        (4_102_444_799, "31 Dec 2099|2099-12-31 23:59:59|Thu Thursday Dec December|99 365 31|%"),
    ] {
        assert_eq!(strftime(format, t).expect("format"), want, "t = {t}");
    }
    // 12-hour clock: 00:xx is 12 AM, 13:xx is 1 PM.
    assert_eq!(strftime("%I %p", 0).expect("format"), "12 AM");
    assert_eq!(strftime("%I %p", 13 * 3600).expect("format"), "01 PM");
    let err = strftime("%Z", 0).expect_err("unsupported");
    assert!(err.contains("%Z is not supported"), "{err}");
}

/// Llama 3.1/3.2's templates date their system prompt with `strftime_now("%d %b %Y")` when the
/// function is defined. The date lines of Llama 3.2's template, rendered with a fixed clock:
/// the date is the clock's, and a template error names an unsupported directive.
#[test]
fn strftime_now_reads_the_templates_clock() {
    use panacea_lm::TemplateClock;
    let source =
        "{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n        \
                  {%- set date_string = strftime_now(\"%d %b %Y\") %}\n    {%- else %}\n        \
                  {%- set date_string = \"26 Jul 2024\" %}\n    {%- endif %}\n{%- endif %}\n\
                  {{- \"Today Date: \" + date_string + \"\\n\" }}\
                  {%- for m in messages %}{{ m.content }}{% endfor %}";
    let user = [Message::new(Role::User, "Hi")];
    let at = |t: i64| {
        JinjaChatTemplate::new(source, "llama3.2-date.jinja", "", "")
            .with_clock(TemplateClock::Fixed(t))
            .render(&user, true)
            .expect("render")
    };
    assert_eq!(at(951_827_696), "Today Date: 29 Feb 2000\nHi");
    assert_eq!(at(1_796_688_000), "Today Date: 08 Dec 2026\nHi");
    // The system clock gives today's date in the same format.
    let now = JinjaChatTemplate::new(source, "llama3.2-date.jinja", "", "").render(&user, true);
    let now = now.expect("render");
    assert!(now.starts_with("Today Date: ") && now.len() == "Today Date: 08 Dec 2026\nHi".len());
    let bad = JinjaChatTemplate::new("{{ strftime_now('%Q') }}", "bad.jinja", "", "")
        .render(&user, false)
        .expect_err("unsupported directive");
    assert!(bad.to_string().contains("%Q is not supported"), "{bad}");
}
