//! Chat templates: a model's own Jinja template ([`JinjaChatTemplate`], rendered with
//! minijinja the way transformers' `apply_chat_template` renders it), and ChatML
//! ([`ChatTemplate`]: SmolLM2's template written out by hand, docs/models.md, §1.8:
//! `<|im_start|>{role}\n{content}<|im_end|>\n` per message, a default system prompt when the
//! first message is not a system message, and `<|im_start|>assistant\n` as the generation
//! prompt). [`PromptTemplate`] is what a loaded model carries: its own template, or ChatML as a
//! fallback that says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::LmError;

/// SmolLM2's default system prompt, inserted by its template when none is given.
pub const SMOLLM_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant.
    System,
    /// The human.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in chat templates: `system`, `user` or `assistant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl Message {
    /// A message.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// The ChatML template with its default system prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatTemplate {
    /// Inserted when the conversation does not start with a system message; `None` inserts nothing.
    pub default_system: Option<String>,
}

impl Default for ChatTemplate {
    fn default() -> Self {
        Self { default_system: Some(SMOLLM_SYSTEM_PROMPT.to_owned()) }
    }
}

impl ChatTemplate {
    /// Renders `messages`; with `add_generation_prompt` the text ends with
    /// `<|im_start|>assistant\n`, ready for the model to answer.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> String {
        let mut s = String::new();
        let starts_with_system = messages.first().is_some_and(|m| m.role == Role::System);
        if let (false, Some(sys)) = (starts_with_system, &self.default_system) {
            s.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
        }
        for m in messages {
            s.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role.as_str(), m.content));
        }
        if add_generation_prompt {
            s.push_str("<|im_start|>assistant\n");
        }
        s
    }

    /// A single user turn with the generation prompt: the usual way to prompt the model.
    pub fn user_prompt(&self, content: &str) -> String {
        self.render(&[Message::new(Role::User, content)], true)
    }
}

/// The clock a template's `strftime_now` reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemplateClock {
    /// The system clock, in UTC (transformers reads local time; a server's is usually UTC).
    #[default]
    System,
    /// A fixed instant, in seconds since the Unix epoch (UTC): reproducible renders and tests.
    Fixed(i64),
}

impl TemplateClock {
    /// Seconds since the Unix epoch.
    fn unix_seconds(self) -> i64 {
        match self {
            TemplateClock::Fixed(t) => t,
            TemplateClock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }
}

/// A model's own chat template (HF `chat_template`, or GGUF `tokenizer.chat_template`), with
/// the special-token strings it may reference.
///
/// Rendered as transformers renders it: Jinja with `trim_blocks` and `lstrip_blocks`, loop
/// controls, Python string methods on values (`.strip()`, `.startswith()`, ... via
/// minijinja-contrib's pycompat), `raise_exception(msg)` failing the render with the
/// template's message, and `strftime_now(format)` (Llama 3.1+ put today's date in the system
/// prompt with it) formatting the time of `clock` ([`strftime`]). The context holds
/// `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JinjaChatTemplate {
    /// The template text.
    pub source: String,
    /// Where it came from (a file and key), for messages.
    pub origin: String,
    /// The BOS token's text (`""` when the model has none).
    pub bos_token: String,
    /// The EOS token's text (`""` when the model has none).
    pub eos_token: String,
    /// What `strftime_now` reads ([`TemplateClock::System`] unless set).
    pub clock: TemplateClock,
}

impl JinjaChatTemplate {
    /// A template; it is compiled (and syntax errors reported) by [`JinjaChatTemplate::check`]
    /// or on the first render.
    pub fn new(
        source: impl Into<String>,
        origin: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Self {
        Self {
            source: source.into(),
            origin: origin.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            clock: TemplateClock::System,
        }
    }

    /// The same template with `strftime_now` reading `clock`.
    pub fn with_clock(mut self, clock: TemplateClock) -> Self {
        self.clock = clock;
        self
    }

    fn environment(&self) -> Result<minijinja::Environment<'static>, LmError> {
        let mut env = minijinja::Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| self.error(&e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        let clock = self.clock;
        env.add_function(
            "strftime_now",
            move |format: String| -> Result<String, minijinja::Error> {
                strftime(&format, clock.unix_seconds())
                    .map_err(|m| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, m))
            },
        );
        env.add_template_owned("chat_template", self.source.clone()).map_err(|e| self.error(&e))?;
        Ok(env)
    }

    fn error(&self, e: &minijinja::Error) -> LmError {
        let what = match (e.kind(), e.detail()) {
            // raise_exception: the template's own message.
            (minijinja::ErrorKind::InvalidOperation, Some(d)) => d.to_owned(),
            _ => e.to_string(),
        };
        let line = e.line().map(|l| format!(" (template line {l})")).unwrap_or_default();
        LmError::Template(format!("{}: {what}{line}", self.origin))
    }

    /// Compiles the template, so that a syntax error shows at load time.
    pub fn check(&self) -> Result<(), LmError> {
        self.environment().map(|_| ())
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// answer begins. A template that refuses the conversation (`raise_exception`) gives
    /// [`LmError::Template`] with its message.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, LmError> {
        let env = self.environment()?;
        let tmpl = env.get_template("chat_template").map_err(|e| self.error(&e))?;
        let msgs: Vec<minijinja::Value> = messages
            .iter()
            .map(|m| {
                let mut map = BTreeMap::new();
                map.insert("role", minijinja::Value::from(m.role.as_str()));
                map.insert("content", minijinja::Value::from(m.content.as_str()));
                minijinja::Value::from(map)
            })
            .collect();
        let mut ctx = BTreeMap::new();
        ctx.insert("messages", minijinja::Value::from(msgs));
        ctx.insert("add_generation_prompt", minijinja::Value::from(add_generation_prompt));
        ctx.insert("bos_token", minijinja::Value::from(self.bos_token.as_str()));
        ctx.insert("eos_token", minijinja::Value::from(self.eos_token.as_str()));
        tmpl.render(minijinja::Value::from(ctx)).map_err(|e| self.error(&e))
    }
}

const WEEKDAYS: [&str; 7] =
    ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, exact for every i64 day in range).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Formats `unix_seconds` (UTC) as Python's `time.strftime` does in the C locale, for the
/// directives chat templates use: `%d %e %m %y %Y %b %B %a %A %H %I %p %M %S %j %%`. Another
/// directive is an error naming it (a silently wrong date would go unnoticed in a prompt).
pub fn strftime(format: &str, unix_seconds: i64) -> Result<String, String> {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize];
    let month_name = MONTHS[month as usize - 1];
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let day_of_year = cumulative[month as usize - 1] + day + u32::from(month > 2 && is_leap(year));
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('Y') => out.push_str(&year.to_string()),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{:02}", (hour + 11) % 12 + 1)),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "strftime_now: directive %{other} is not supported (supported: %d %e %m %y \
                     %Y %b %B %a %A %H %I %p %M %S %j %%)"
                ))
            }
            None => return Err("strftime_now: the format ends with a lone %".to_owned()),
        }
    }
    Ok(out)
}

/// The chat template a model is prompted with: its own, or ChatML when it has none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromptTemplate {
    /// The model's own template.
    Model(JinjaChatTemplate),
    /// The model has no template: ChatML is used instead. Callers should say so (the library
    /// does not print).
    ChatMlFallback(ChatTemplate),
}

impl PromptTemplate {
    /// Whether this is the ChatML fallback rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        matches!(self, PromptTemplate::ChatMlFallback(_))
    }

    /// Renders `messages` (see [`JinjaChatTemplate::render`] and [`ChatTemplate::render`]).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, LmError> {
        match self {
            PromptTemplate::Model(t) => t.render(messages, add_generation_prompt),
            PromptTemplate::ChatMlFallback(t) => Ok(t.render(messages, add_generation_prompt)),
        }
    }

    /// A single user turn with the generation prompt.
    pub fn user_prompt(&self, content: &str) -> Result<String, LmError> {
        self.render(&[Message::new(Role::User, content)], true)
    }

    /// A user turn after the system message `system`, with the generation prompt; `None`
    /// leaves the system prompt to the template (ChatML's fallback inserts SmolLM2's default,
    /// a model's own template whatever it does without one).
    pub fn user_prompt_with_system(
        &self,
        system: Option<&str>,
        content: &str,
    ) -> Result<String, LmError> {
        match system {
            Some(sys) => self.render(
                &[Message::new(Role::System, sys), Message::new(Role::User, content)],
                true,
            ),
            None => self.user_prompt(content),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_the_default_system_prompt_and_generation_prompt() {
        let t = ChatTemplate::default();
        assert_eq!(
            t.user_prompt("Hi"),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn keeps_a_given_system_prompt() {
        let t = ChatTemplate::default();
        let msgs = [Message::new(Role::System, "Be brief."), Message::new(Role::User, "Hi")];
        assert_eq!(
            t.render(&msgs, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }
}
