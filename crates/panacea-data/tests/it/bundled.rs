//! The bundled data (prompt sets, the harmless scorer's export) is compiled in: it loads from a
//! process whose current folder is outside the source tree, byte for byte what the committed
//! files hold. (A missing explicit export path: `harmless::a_missing_export_names_the_file_with_a_hint`.)

use std::process::Command;

use panacea_data::harmless::BUNDLED_MODEL;
use panacea_data::{HarmlessScorer, PromptSet, Scorer};

/// The embedded texts are the committed files, byte for byte (so behaviour inside a checkout is
/// what it was when the loaders read those files).
#[test]
fn embedded_prompt_sets_are_the_committed_files() {
    for set in [PromptSet::Harmful, PromptSet::Benign] {
        let committed = std::fs::read(panacea_data::workspace_path(set.file_name())).expect("file");
        assert_eq!(set.text().as_bytes(), committed.as_slice(), "{set:?}");
        let from_file = panacea_data::load_prompts(&set.bundled_path()).expect("file loads");
        assert_eq!(set.load().expect("embedded loads"), from_file, "{set:?}");
    }
    let from_file =
        HarmlessScorer::load(&panacea_data::workspace_path(BUNDLED_MODEL)).expect("file loads");
    let embedded = HarmlessScorer::load_bundled().expect("embedded loads");
    let texts = ["You are an idiot.", "Thank you, have a nice day!", "damn it", ""];
    for t in texts {
        assert_eq!(embedded.toxicity(t).to_bits(), from_file.toxicity(t).to_bits(), "{t:?}");
    }
}

/// Runs [`loads_in_a_process_outside_the_source_tree`] again in a child process of this test
/// binary whose current folder is a fresh temporary folder.
#[test]
fn bundled_sets_load_from_a_temp_current_folder() {
    let dir = std::env::temp_dir().join(format!("panacea-data-bundled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "bundled::loads_in_a_process_outside_the_source_tree"])
        .args(["--ignored", "--test-threads", "1"])
        .current_dir(&dir)
        .output()
        .expect("child runs");
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "the child ran the check: {stdout}");
}

/// The child of [`bundled_sets_load_from_a_temp_current_folder`]; alone it checks the same in
/// whatever folder it is started from.
#[test]
#[ignore = "run as a child process by bundled_sets_load_from_a_temp_current_folder"]
fn loads_in_a_process_outside_the_source_tree() {
    let here = std::env::current_dir().expect("current folder");
    assert!(!here.join("data/prompts").exists(), "{} has the data folder", here.display());
    assert_eq!(PromptSet::Harmful.load().expect("harmful").len(), 1138);
    assert_eq!(PromptSet::Benign.load().expect("benign").len(), 560);
    let harmless = HarmlessScorer::load_bundled().expect("harmless scorer");
    let s =
        harmless.score(&["", ""], &["Have a lovely day.", "You idiot, shut up."]).expect("score");
    assert!(s[0] > 0.9 && s[1] < 0.5, "{s:?}");
}
