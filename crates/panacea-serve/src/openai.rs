//! The OpenAI request fields the server reads, checked one by one so that every error names
//! its field, and the response objects it writes.
//!
//! Read: `model` (any string; the served model answers), `messages` (chat: roles `system`,
//! `user`, `assistant`; content a string or a list of `{"type": "text", "text"}` parts) or
//! `prompt` (completions: a string, or a list of one string), `max_tokens` (or
//! `max_completion_tokens`), `temperature` (0 = greedy, default 1), `top_p`, `n`, `stop`,
//! `seed`, `stream`, and the extra `preference` (see [`crate::preference`]). Other fields
//! (`user`, `logprobs`, penalties, ...) are accepted and ignored, as clients send them.

use panacea_lm::{Message, Role, Sampling};
use serde_json::{json, Map, Value};

use crate::engine::{EngineInfo, FinishReason, GenParams};
use crate::error::ApiError;

/// Which endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// A checked request, ready for the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Token ids of the prompt (chat: rendered with the model's template).
    pub prompt: Vec<i64>,
    /// Generation settings.
    pub params: GenParams,
    /// λ, or `None` when no adapter is served.
    pub pref: Option<Vec<f64>>,
    /// Answer as server-sent events.
    pub stream: bool,
}

/// Server-side defaults for fields a request leaves out.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// λ when `preference` is absent (`None`: uniform).
    pub preference: Option<Vec<f64>>,
    /// `max_tokens` when absent (capped by the limit).
    pub max_tokens: usize,
}

fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {:?}", truncate(s, 40)),
        other => truncate(&other.to_string(), 40),
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn number(body: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            ApiError::bad_request(
                Some(field),
                format!("`{field}` is {}, not a number", type_name(v)),
            )
        }),
    }
}

fn integer(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(
                Some(field),
                format!("`{field}` is {}, not a whole number ≥ 0", type_name(v)),
            )
        }),
    }
}

/// Parses and checks a request body against the engine's limits.
pub fn parse(
    endpoint: Endpoint,
    body: &[u8],
    info: &EngineInfo,
    defaults: &Defaults,
    next_seed: impl FnOnce() -> u64,
) -> Result<Request, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| not_json(body, &e))?;
    let Value::Object(body) = value else {
        return Err(ApiError::bad_request(None, "the request body must be a JSON object"));
    };
    let limits = &info.limits;
    let text = match endpoint {
        Endpoint::Chat => {
            let messages = messages(&body)?;
            info.chat_template
                .render(&messages, true)
                .map_err(|e| ApiError::bad_request(Some("messages"), e.to_string()))?
        }
        Endpoint::Completion => prompt(&body)?,
    };
    let prompt = info
        .tokenizer
        .encode(&text)
        .map_err(|e| ApiError::bad_request(Some("prompt"), e.to_string()))?;
    let prompt_field = if endpoint == Endpoint::Chat { "messages" } else { "prompt" };
    if prompt.is_empty() {
        return Err(ApiError::bad_request(Some(prompt_field), "the prompt has no tokens"));
    }
    if prompt.len() > limits.max_prompt_tokens {
        return Err(ApiError::too_large(
            Some(prompt_field),
            format!(
                "the prompt has {} tokens; this server takes at most {} (max_prompt_tokens)",
                prompt.len(),
                limits.max_prompt_tokens
            ),
        ));
    }
    let max_tokens_field = if body.contains_key("max_completion_tokens") {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    let max_tokens = match integer(&body, max_tokens_field)? {
        None => defaults.max_tokens.min(limits.max_output_tokens),
        Some(0) => {
            return Err(ApiError::bad_request(
                Some(max_tokens_field),
                format!("`{max_tokens_field}` must be ≥ 1"),
            ))
        }
        Some(m) if m > limits.max_output_tokens as u64 => {
            return Err(ApiError::too_large(
                Some(max_tokens_field),
                format!(
                    "`{max_tokens_field}` = {m} exceeds this server's limit of {} new tokens \
                     (max_output_tokens)",
                    limits.max_output_tokens
                ),
            ))
        }
        Some(m) => m as usize,
    };
    let temperature = number(&body, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad_request(
            Some("temperature"),
            format!("`temperature` = {temperature} must be in [0, 2] (0 = greedy)"),
        ));
    }
    let top_p = number(&body, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(
            Some("top_p"),
            format!("`top_p` = {top_p} must be in (0, 1]"),
        ));
    }
    let sampling = if temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Sample { temperature, top_k: None, top_p: (top_p < 1.0).then_some(top_p) }
    };
    let n = integer(&body, "n")?.unwrap_or(1);
    if n == 0 {
        return Err(ApiError::bad_request(Some("n"), "`n` must be ≥ 1"));
    }
    if n > limits.max_batch as u64 {
        return Err(ApiError::too_large(
            Some("n"),
            format!(
                "`n` = {n} choices exceed this server's batch of {} rows (max_batch)",
                limits.max_batch
            ),
        ));
    }
    let stop = stop(&body)?;
    let seed = integer(&body, "seed")?.unwrap_or_else(next_seed);
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(ApiError::bad_request(
                Some("stream"),
                format!("`stream` is {}, not true or false", type_name(v)),
            ))
        }
    };
    let pref = preference(&body, info, defaults)?;
    let params = GenParams { max_tokens, sampling, seed, stop, n: n as usize };
    Ok(Request { prompt, params, pref, stream })
}

fn preference(
    body: &Map<String, Value>,
    info: &EngineInfo,
    defaults: &Defaults,
) -> Result<Option<Vec<f64>>, ApiError> {
    let given = body.get("preference").filter(|v| !v.is_null());
    if info.objectives.is_empty() {
        return match given {
            Some(_) => Err(ApiError::bad_request(
                Some("preference"),
                "this server runs the base model without an adapter, so there is no preference \
                 to set; leave `preference` out, or start the server with --adapter DIR",
            )),
            None => Ok(None),
        };
    }
    let pref = match given {
        Some(v) => crate::preference::from_json("preference", v, &info.objectives)
            .map_err(|e| ApiError::bad_request(Some(&e.field), e.message))?
            .as_slice()
            .to_vec(),
        None => defaults
            .preference
            .clone()
            .unwrap_or_else(|| vec![1.0 / info.objectives.len() as f64; info.objectives.len()]),
    };
    Ok(Some(pref))
}

fn messages(body: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let list = match body.get("messages") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => {
            return Err(ApiError::bad_request(Some("messages"), "`messages` is empty"))
        }
        Some(v) => {
            return Err(ApiError::bad_request(
                Some("messages"),
                format!("`messages` is {}, not a list of messages", type_name(v)),
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                Some("messages"),
                "`messages` is missing: give [{\"role\": \"user\", \"content\": \"...\"}]",
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role_field = format!("messages[{i}].role");
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                other => {
                    return Err(ApiError::bad_request(
                        Some(&role_field),
                        format!(
                            "`{role_field}` is {}; use system, user or assistant",
                            other.map_or("missing".into(), |r| format!("{r:?}"))
                        ),
                    ))
                }
            };
            let content_field = format!("messages[{i}].content");
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.get("type").and_then(Value::as_str), part.get("text")) {
                            (Some("text"), Some(Value::String(t))) => text.push_str(t),
                            _ => {
                                return Err(ApiError::bad_request(
                                    Some(&format!("{content_field}[{j}]")),
                                    format!(
                                        "`{content_field}[{j}]` is not a text part \
                                         ({{\"type\": \"text\", \"text\": \"...\"}}); only text is \
                                         supported"
                                    ),
                                ))
                            }
                        }
                    }
                    text
                }
                Some(v) => {
                    return Err(ApiError::bad_request(
                        Some(&content_field),
                        format!("`{content_field}` is {}, not text", type_name(v)),
                    ))
                }
                None => {
                    return Err(ApiError::bad_request(
                        Some(&content_field),
                        format!("`{content_field}` is missing"),
                    ))
                }
            };
            Ok(Message::new(role, content))
        })
        .collect()
}

fn prompt(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("prompt") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            Ok(list[0].as_str().unwrap_or_default().to_owned())
        }
        Some(Value::Array(_)) => Err(ApiError::bad_request(
            Some("prompt"),
            "`prompt` must be one string (or a list of exactly one); send one request per prompt",
        )),
        Some(v) => Err(ApiError::bad_request(
            Some("prompt"),
            format!("`prompt` is {}, not a string", type_name(v)),
        )),
        None => Err(ApiError::bad_request(Some("prompt"), "`prompt` is missing")),
    }
}

fn stop(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_str().map(str::to_owned).ok_or_else(|| {
                    ApiError::bad_request(
                        Some(&format!("stop[{i}]")),
                        format!("`stop[{i}]` is {}, not a string", type_name(s)),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => {
            return Err(ApiError::bad_request(
                Some("stop"),
                format!("`stop` is {}, not a string or a list of strings", type_name(v)),
            ))
        }
    };
    if stops.len() > 4 || stops.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(Some("stop"), "`stop` takes up to 4 non-empty strings"));
    }
    Ok(stops)
}

/// A 400 for a body that is not JSON, naming the field being read where it failed (e.g. a
/// `NaN` weight in `preference`, which JSON cannot write).
fn not_json(body: &[u8], e: &serde_json::Error) -> ApiError {
    let text = String::from_utf8_lossy(body);
    let offset =
        text.split_inclusive('\n').take(e.line().saturating_sub(1)).map(str::len).sum::<usize>()
            + e.column().saturating_sub(1);
    let field = field_before(&text, offset.min(text.len()));
    let hint = if ["NaN", "Infinity"].iter().any(|w| text.contains(w)) {
        "; NaN and Infinity are not JSON numbers, every weight must be a finite number"
    } else {
        ""
    };
    let place = match &field {
        Some(f) => format!(" in field `{f}`"),
        None => String::new(),
    };
    ApiError::bad_request(
        field.as_deref(),
        format!("the request body is not valid JSON{place}: {e}{hint}"),
    )
}

/// The last `"key":` before `offset`.
fn field_before(text: &str, offset: usize) -> Option<String> {
    let head = text.get(..offset)?;
    let mut rest = head;
    while let Some(colon) = rest.rfind(':') {
        let before = rest[..colon].trim_end();
        if let Some(stripped) = before.strip_suffix('"') {
            if let Some(open) = stripped.rfind('"') {
                return Some(stripped[open + 1..].to_owned());
            }
        }
        rest = &rest[..colon];
    }
    None
}

/// Non-streamed answer: one choice per index, in order.
pub struct Choice {
    /// The text.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// New tokens.
    pub completion_tokens: usize,
}

/// The response object of a non-streamed request.
#[allow(clippy::too_many_arguments)]
pub fn response(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    choices: &[Choice],
    prompt_tokens: usize,
    preference: Option<Value>,
) -> Value {
    let completion: usize = choices.iter().map(|c| c.completion_tokens).sum();
    let list: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| match endpoint {
            Endpoint::Chat => json!({
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish.as_str(),
                "logprobs": null,
            }),
            Endpoint::Completion => json!({
                "index": i,
                "text": c.text,
                "finish_reason": c.finish.as_str(),
                "logprobs": null,
            }),
        })
        .collect();
    let object = match endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completion => "text_completion",
    };
    let mut v = json!({
        "id": id,
        "object": object,
        "created": created,
        "model": model,
        "choices": list,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    });
    if let (Some(p), Some(o)) = (preference, v.as_object_mut()) {
        o.insert("preference".into(), p);
    }
    v
}

/// One streamed chunk: new `text` for choice `index` (chat: a `delta`), or its end.
pub fn chunk(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    index: usize,
    text: Option<&str>,
    finish: Option<FinishReason>,
) -> Value {
    let finish = finish.map(FinishReason::as_str);
    match endpoint {
        Endpoint::Chat => {
            let delta = match text {
                Some(t) => json!({"content": t}),
                None if finish.is_none() => json!({"role": "assistant", "content": ""}),
                None => json!({}),
            };
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": null}],
            })
        }
        Endpoint::Completion => json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null}],
        }),
    }
}
