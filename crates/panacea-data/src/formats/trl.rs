//! TRL's preference forms (the `trl` pair format), one record per row:
//!
//! - **standard**: `{"prompt": str, "chosen": str, "rejected": str}`;
//! - **conversational**: `prompt`, `chosen` and `rejected` as lists of `{"role", "content"}`
//!   messages, where `chosen` and `rejected` hold the one assistant reply;
//! - **conversational, implicit prompt**: no `prompt`; `chosen` and `rejected` are whole
//!   conversations that share every message but the last (TRL's `extract_prompt` takes the same
//!   common prefix), and the last is the assistant reply.
//!
//! TRL's unpaired form (`prompt`, `completion`, `label`: one completion judged good or bad) is
//! refused with an error that names it and says how to pair it.
//!
//! Other columns (`score_chosen`, `source`, ...) are ignored. Roles are `system`, `user` and
//! `assistant`; a message's keys other than `role` and `content` must be null (parquet files
//! written from rows with optional keys carry them as nulls) and are otherwise an error.
//! The implicit-prompt form of plain strings is refused rather than split by characters: two
//! replies that begin alike would lose their common words to the prompt.
//!
//! A prompt that is one user message becomes [`crate::PairRecord::prompt`] as it is, the same
//! record the standard form gives. A longer conversation (a system message, earlier turns) is
//! kept whole in [`crate::PairRecord::chat`]; `prompt` then holds it as an HH-RLHF-style
//! transcript (`"\n\nHuman: …\n\nAssistant: …\n\nHuman: …\n\nAssistant:"`, system messages as
//! `"\n\nSystem: …"`), the key under which prompts are grouped and the text a single-turn
//! consumer sees.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatRole {
    /// Instructions for the assistant.
    System,
    /// The human.
    User,
    /// The model.
    Assistant,
}

/// One message of a conversational prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTurn {
    /// Author.
    pub role: ChatRole,
    /// Text.
    pub content: String,
}

/// The columns of a TRL record that are read (`completion` and `label` only to recognise the
/// unpaired form).
#[derive(Deserialize)]
pub(crate) struct TrlRow {
    #[serde(default)]
    prompt: Option<Value>,
    #[serde(default)]
    chosen: Option<Value>,
    #[serde(default)]
    rejected: Option<Value>,
    #[serde(default)]
    completion: Option<Value>,
    #[serde(default)]
    label: Option<Value>,
}

/// Why a record of TRL's unpaired preference form is refused, and what to do instead.
const UNPAIRED: &str = "belongs to TRL's unpaired preference form (prompt, completion, label): \
    one completion judged good or bad, not two compared, and DPO and score models learn from \
    pairs\nhint: write TRL's paired form (prompt, chosen, rejected), e.g. by pairing a \
    completion labelled true with one labelled false for the same prompt";

/// A TRL record made into a pair: the prompt text, the whole conversation where it is more
/// than one user message, and the two replies.
#[derive(Debug)]
pub(crate) struct TrlPair {
    pub(crate) prompt: String,
    pub(crate) chat: Option<Vec<ChatTurn>>,
    pub(crate) chosen: String,
    pub(crate) rejected: String,
}

/// A field path and what is wrong with it.
pub(crate) type FieldError = (String, String);

enum Side {
    Text(String),
    Messages(Vec<ChatTurn>),
}

const FORMS: &str = "a string (TRL's standard form) or a list of {role, content} messages (its \
                     conversational form)";

fn side(field: &str, value: Value) -> Result<Side, FieldError> {
    match value {
        Value::String(s) => Ok(Side::Text(s)),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, m)| message(&format!("{field}[{i}]"), m))
            .collect::<Result<_, _>>()
            .map(Side::Messages),
        other => Err((field.to_owned(), format!("must be {FORMS}, got {}", kind(&other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn message(at: &str, value: Value) -> Result<ChatTurn, FieldError> {
    let Value::Object(mut m) = value else {
        return Err((
            at.to_owned(),
            format!("must be a {{role, content}} message, got {}", kind(&value)),
        ));
    };
    let role = match m.remove("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" => ChatRole::System,
            "user" => ChatRole::User,
            "assistant" => ChatRole::Assistant,
            other => {
                return Err((
                    format!("{at}.role"),
                    format!("{other:?} is not a role this reader knows\nhint: use system, user or assistant"),
                ))
            }
        },
        Some(other) => return Err((format!("{at}.role"), format!("must be a string, got {}", kind(&other)))),
        None => return Err((format!("{at}.role"), "is missing".to_owned())),
    };
    let content = match m.remove("content") {
        Some(Value::String(c)) => c,
        Some(other) => {
            return Err((
                format!("{at}.content"),
                format!("must be a string, got {}\nhint: messages with several content parts (images, tools) are not read", kind(&other)),
            ))
        }
        None => return Err((format!("{at}.content"), "is missing".to_owned())),
    };
    if let Some((key, _)) = m.iter().find(|(_, v)| !v.is_null()) {
        return Err((
            format!("{at}.{key}"),
            "is not read (only role and content are)\nhint: remove the key, or leave it null"
                .to_owned(),
        ));
    }
    Ok(ChatTurn { role, content })
}

/// The one assistant reply of a completion.
fn reply(field: &str, mut turns: Vec<ChatTurn>) -> Result<String, FieldError> {
    match turns.as_slice() {
        [ChatTurn { role: ChatRole::Assistant, .. }] => Ok(turns.remove(0).content),
        [_] => Err((format!("{field}[0].role"), "must be assistant: the reply".to_owned())),
        _ => Err((
            field.to_owned(),
            format!(
                "holds {} messages after the prompt, but a reply is one assistant message",
                turns.len()
            ),
        )),
    }
}

/// An HH-RLHF-style transcript of `turns`, ending with the assistant's cue.
fn transcript(turns: &[ChatTurn]) -> String {
    let mut s = String::new();
    for t in turns {
        let who = match t.role {
            ChatRole::System => "System",
            ChatRole::User => "Human",
            ChatRole::Assistant => "Assistant",
        };
        s.push_str(&format!("\n\n{who}: {}", t.content));
    }
    s.push_str("\n\nAssistant:");
    s
}

/// The prompt text and, for more than one user message, the conversation.
fn prompt_of(
    field: &str,
    turns: Vec<ChatTurn>,
) -> Result<(String, Option<Vec<ChatTurn>>), FieldError> {
    match turns.last() {
        None => Err((field.to_owned(), "the prompt has no messages".to_owned())),
        Some(t) if t.role != ChatRole::User => Err((
            field.to_owned(),
            "the prompt's last message must be the user's (the reply answers it)".to_owned(),
        )),
        Some(_) if turns.len() == 1 => Ok((turns.into_iter().map(|t| t.content).collect(), None)),
        Some(_) => Ok((transcript(&turns), Some(turns))),
    }
}

/// Makes a pair of a TRL row in any of its three forms.
pub(crate) fn pair(row: TrlRow) -> Result<TrlPair, FieldError> {
    let (chosen, rejected) = match (row.chosen, row.rejected) {
        (Some(c), Some(r)) => (c, r),
        _ if row.completion.is_some() && row.label.is_some() => {
            return Err(("completion".to_owned(), UNPAIRED.to_owned()))
        }
        (c, _) => {
            let missing = if c.is_none() { "chosen" } else { "rejected" };
            return Err((
                missing.to_owned(),
                format!("is missing\nhint: a TRL record has chosen and rejected, as {FORMS}"),
            ));
        }
    };
    let chosen = side("chosen", chosen)?;
    let rejected = side("rejected", rejected)?;
    let prompt = row.prompt.map(|p| side("prompt", p)).transpose()?;
    match (prompt, chosen, rejected) {
        (Some(Side::Text(prompt)), Side::Text(chosen), Side::Text(rejected)) => {
            Ok(TrlPair { prompt, chat: None, chosen, rejected })
        }
        (Some(Side::Messages(p)), Side::Messages(c), Side::Messages(r)) => {
            let (prompt, chat) = prompt_of("prompt", p)?;
            Ok(TrlPair {
                prompt,
                chat,
                chosen: reply("chosen", c)?,
                rejected: reply("rejected", r)?,
            })
        }
        (None, Side::Messages(mut c), Side::Messages(mut r)) => {
            let shared = c.iter().zip(&r).take_while(|(a, b)| a == b).count();
            // Leave the last message of each side as its reply, even when the replies agree.
            let shared = shared.min(c.len().saturating_sub(1)).min(r.len().saturating_sub(1));
            let rest_c = c.split_off(shared);
            let rest_r = r.split_off(shared);
            let (prompt, chat) = prompt_of("chosen", c)?;
            Ok(TrlPair {
                prompt,
                chat,
                chosen: reply("chosen", rest_c)?,
                rejected: reply("rejected", rest_r)?,
            })
        }
        (None, Side::Text(_), Side::Text(_)) => Err((
            "prompt".to_owned(),
            "is missing: plain-text chosen/rejected need a prompt column\nhint: add `prompt`, or \
             use format hh-rlhf for \"\\n\\nHuman: … \\n\\nAssistant: …\" transcripts"
                .to_owned(),
        )),
        (prompt, chosen, _) => {
            let form = |s: &Side| match s {
                Side::Text(_) => "a string",
                Side::Messages(_) => "a message list",
            };
            let (field, what) = match prompt {
                Some(p) if form(&p) != form(&chosen) => ("prompt", form(&p)),
                _ => (
                    "rejected",
                    if form(&chosen) == "a string" { "a message list" } else { "a string" },
                ),
            };
            Err((
                field.to_owned(),
                format!(
                    "is {what} but chosen is {}: one record uses one form\nhint: TRL's standard \
                     form has three strings, its conversational form three message lists",
                    form(&chosen)
                ),
            ))
        }
    }
}
