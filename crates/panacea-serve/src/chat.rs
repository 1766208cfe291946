//! The session behind `panacea chat`, without a terminal: the conversation, the current λ,
//! the slash commands, the λ points of a sweep, and saving a transcript. The CLI only reads
//! lines, prints the streamed text and wires Ctrl-C to dropping the event receiver (which
//! cancels the generation in the engine).

use std::path::{Path, PathBuf};

use panacea_core::preference::PreferenceVector;
use panacea_lm::{Message, PromptTemplate, Role};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{Engine, Event, GenParams, SubmitError};
use crate::error::ServeError;
use crate::preference::{self, PreferenceError};

/// What a line typed in the chat asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A user turn.
    Say(String),
    /// `/pref TEXT`: set λ (`helpful=0.7,harmless=0.3` or `0.7,0.3`); `/pref` alone shows it.
    Pref(Option<String>),
    /// `/sweep [N]`: answer the last user turn at N λ points (default 5) side by side.
    Sweep(usize),
    /// `/reset`: forget the conversation (λ stays).
    Reset,
    /// `/save PATH`: write the transcript as JSON.
    Save(PathBuf),
    /// `/help`.
    Help,
    /// `/quit` or `/exit`.
    Quit,
    /// An empty line.
    Nothing,
}

/// The help text of the slash commands.
pub const HELP: &str = "\
/pref helpful=0.7,harmless=0.3   set λ by objective name (or by position: /pref 0.7,0.3)
/pref                            show the current λ
/sweep [N]                       answer the last question at N λ points (default 5)
/reset                           start a new conversation (λ is kept)
/save FILE.json                  save the conversation
/quit                            leave (Ctrl-D too); Ctrl-C stops a generation";

/// Reads one typed line.
pub fn parse_line(line: &str) -> Result<Command, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(Command::Nothing);
    }
    let Some(rest) = line.strip_prefix('/') else { return Ok(Command::Say(line.to_owned())) };
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (rest, ""),
    };
    match name {
        "pref" => Ok(Command::Pref((!arg.is_empty()).then(|| arg.to_owned()))),
        "sweep" if arg.is_empty() => Ok(Command::Sweep(5)),
        "sweep" => match arg.parse::<usize>() {
            Ok(n) if (2..=11).contains(&n) => Ok(Command::Sweep(n)),
            _ => Err(format!("/sweep takes a number of points from 2 to 11, got `{arg}`")),
        },
        "reset" => Ok(Command::Reset),
        "save" if arg.is_empty() => Err("/save needs a file name, e.g. /save chat.json".into()),
        "save" => Ok(Command::Save(PathBuf::from(arg))),
        "help" | "?" => Ok(Command::Help),
        "quit" | "exit" => Ok(Command::Quit),
        other => Err(format!("unknown command /{other}; /help lists the commands")),
    }
}

/// A conversation and its λ.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatSession {
    /// The turns so far (user and assistant).
    pub history: Vec<Message>,
    /// A system prompt put before the turns (the template's own default otherwise).
    pub system: Option<String>,
    objectives: Vec<String>,
    pref: Option<PreferenceVector>,
}

impl ChatSession {
    /// A session over `objectives` (empty: the base model, no λ) starting at `pref`
    /// (`None`: uniform).
    pub fn new(
        objectives: Vec<String>,
        pref: Option<&str>,
        system: Option<String>,
    ) -> Result<Self, PreferenceError> {
        let mut s = Self { history: Vec::new(), system, pref: None, objectives };
        if !s.objectives.is_empty() {
            let k = s.objectives.len();
            s.pref = Some(match pref {
                Some(text) => preference::from_text("--pref", text, &s.objectives)?,
                None => preference::normalise("--pref", vec![1.0; k], &s.objectives)?,
            });
        } else if pref.is_some() {
            return Err(PreferenceError {
                field: "--pref".into(),
                message: "--pref needs an adapter (--adapter DIR); the base model has no λ".into(),
            });
        }
        Ok(s)
    }

    /// The current λ, when there is an adapter.
    pub fn pref(&self) -> Option<&[f64]> {
        self.pref.as_ref().map(PreferenceVector::as_slice)
    }

    /// The objective names.
    pub fn objectives(&self) -> &[String] {
        &self.objectives
    }

    /// `helpful=0.7, harmless=0.3`, or `base model (no adapter)`.
    pub fn describe_pref(&self) -> String {
        match self.pref() {
            Some(p) => preference::describe(p, &self.objectives),
            None => "base model (no adapter)".into(),
        }
    }

    /// Sets λ from `/pref` text; returns its description.
    pub fn set_pref(&mut self, text: &str) -> Result<String, PreferenceError> {
        if self.objectives.is_empty() {
            return Err(PreferenceError {
                field: "/pref".into(),
                message: "no adapter is loaded, so there is no λ to set (start with --adapter DIR)"
                    .into(),
            });
        }
        self.pref = Some(preference::from_text("/pref", text, &self.objectives)?);
        Ok(self.describe_pref())
    }

    fn messages(&self) -> Vec<Message> {
        let mut m = Vec::with_capacity(self.history.len() + 1);
        if let Some(sys) = &self.system {
            m.push(Message::new(Role::System, sys.clone()));
        }
        m.extend(self.history.iter().cloned());
        m
    }

    /// Adds a user turn and renders the conversation for the model's answer.
    pub fn ask(&mut self, template: &PromptTemplate, text: &str) -> Result<String, ServeError> {
        self.history.push(Message::new(Role::User, text));
        Ok(template.render(&self.messages(), true)?)
    }

    /// Records the model's answer to the last user turn.
    pub fn answered(&mut self, text: &str) {
        self.history.push(Message::new(Role::Assistant, text));
    }

    /// Forgets an unanswered last user turn (a generation was stopped or failed).
    pub fn forget_unanswered(&mut self) {
        if self.history.last().is_some_and(|m| m.role == Role::User) {
            self.history.pop();
        }
    }

    /// The conversation up to and including the last user turn, rendered for an answer: what
    /// `/sweep` answers. `None` before the first user turn.
    pub fn sweep_prompt(&self, template: &PromptTemplate) -> Result<Option<String>, ServeError> {
        let Some(last_user) = self.history.iter().rposition(|m| m.role == Role::User) else {
            return Ok(None);
        };
        let mut m = self.messages();
        let drop = self.history.len() - 1 - last_user;
        m.truncate(m.len() - drop);
        Ok(Some(template.render(&m, true)?))
    }

    /// `n` λ points for a sweep: evenly spaced from the first objective's vertex to the second's
    /// for two objectives; for more, every vertex, then the centre, then midpoints of edges.
    pub fn sweep_points(&self, n: usize) -> Vec<Vec<f64>> {
        let k = self.objectives.len();
        match k {
            0 => Vec::new(),
            1 => vec![vec![1.0]],
            2 => (0..n)
                .map(|i| {
                    let a = 1.0 - i as f64 / (n.max(2) - 1) as f64;
                    vec![a, 1.0 - a]
                })
                .collect(),
            _ => {
                let mut pts: Vec<Vec<f64>> = (0..k)
                    .map(|j| (0..k).map(|i| if i == j { 1.0 } else { 0.0 }).collect())
                    .collect();
                pts.push(vec![1.0 / k as f64; k]);
                for a in 0..k {
                    for b in a + 1..k {
                        pts.push(
                            (0..k).map(|i| if i == a || i == b { 0.5 } else { 0.0 }).collect(),
                        );
                    }
                }
                pts.truncate(n.max(k));
                pts
            }
        }
    }

    /// Forgets the conversation (λ and system prompt stay).
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// The transcript as JSON: messages, λ by objective name, and the system prompt.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "messages": self.history,
            "system": self.system,
            "preference": self.pref().map(|p| preference::to_json(p, &self.objectives)),
        })
    }

    /// Writes [`ChatSession::to_json`] to `path`.
    pub fn save(&self, path: &Path) -> Result<(), ServeError> {
        let text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| ServeError::Invalid(format!("transcript to JSON: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| ServeError::io(format!("writing {}", path.display()), e))
    }
}

/// Tokenises `prompt` and queues it with λ `pref`; the events stream back on the receiver
/// (drop it to cancel).
pub fn submit_text(
    engine: &Engine,
    prompt: &str,
    pref: Option<&[f64]>,
    params: GenParams,
) -> Result<UnboundedReceiver<Event>, ServeError> {
    let ids = engine.info().tokenizer.encode(prompt)?;
    let limit = engine.info().limits.max_prompt_tokens;
    if ids.len() > limit {
        return Err(ServeError::Invalid(format!(
            "the conversation is {} tokens, over the limit of {limit}; /reset to start over",
            ids.len()
        )));
    }
    engine.submit(ids, pref.map(<[f64]>::to_vec), params).map_err(|e| match e {
        SubmitError::QueueFull(q) => ServeError::Invalid(format!("the queue of {q} is full")),
        SubmitError::Gone => ServeError::EngineGone("the engine stopped".into()),
        SubmitError::Invalid(m) => ServeError::Invalid(m),
    })
}

/// Answers one prompt at each λ of `points` (all in one batch) and returns the texts in order.
/// Blocks; not for use inside an async runtime.
pub fn sweep(
    engine: &Engine,
    prompt: &str,
    points: &[Vec<f64>],
    params: &GenParams,
) -> Result<Vec<String>, ServeError> {
    let receivers = points
        .iter()
        .map(|p| submit_text(engine, prompt, Some(p), GenParams { n: 1, ..params.clone() }))
        .collect::<Result<Vec<_>, _>>()?;
    receivers.into_iter().map(collect_text).collect()
}

/// Reads a one-choice job's events to the end and returns its text. Blocks.
pub fn collect_text(mut rx: UnboundedReceiver<Event>) -> Result<String, ServeError> {
    let mut text = String::new();
    loop {
        match rx.blocking_recv() {
            Some(Event::Text { text: t, .. }) => text.push_str(&t),
            Some(Event::Done { .. }) => return Ok(text),
            Some(Event::Error(e)) => return Err(ServeError::EngineGone(e)),
            None => return Err(ServeError::EngineGone("the engine stopped".into())),
        }
    }
}
