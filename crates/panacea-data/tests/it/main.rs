//! The single integration-test binary of panacea-data (one binary per crate keeps link time down
//! on 2-core machines). One module per topic.

mod bundled;
mod concise;
mod formats;
mod harmless;
mod pairgen;
mod pairs;
mod positive;
mod prompts;
mod relevant;

/// The committed fixture `data/fixtures/<name>` as JSON.
pub(crate) fn fixture(name: &str) -> serde_json::Value {
    let path = panacea_data::workspace_path(&format!("data/fixtures/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
