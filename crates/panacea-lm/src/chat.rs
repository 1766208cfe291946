//! ChatML rendering (SmolLM2's `tokenizer.chat_template`, spec/models.md §1.8):
//! `<|im_start|>{role}\n{content}<|im_end|>\n` per message, a default system prompt when the
//! first message is not a system message, and `<|im_start|>assistant\n` as the generation prompt.

use serde::{Deserialize, Serialize};

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
    fn as_str(self) -> &'static str {
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
