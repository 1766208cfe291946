//! `panacea chat`: a terminal conversation over panacea-serve's chat session and engine.
//! Tokens are printed as they stream; Ctrl-C stops the answer being generated (the engine
//! drops its row), not the program; Ctrl-D or /quit leaves.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use panacea_lm::Sampling;
use panacea_serve::chat::{self, ChatSession, Command};
use panacea_serve::{Engine, Event, GenParams, Limits};
use tokio::sync::mpsc::error::TryRecvError;

/// Flags of `panacea chat`.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: crate::serve::ModelArgs,
    /// Starting λ: `helpful=0.7,harmless=0.3` or `0.7,0.3` (default: uniform).
    #[arg(long, requires = "adapter")]
    pref: Option<String>,
    /// A system prompt (default: the chat template's own).
    #[arg(long)]
    system: Option<String>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed of the sampling RNG (each answer uses seed + its turn number).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=2.0).contains(&args.temperature) && args.top_p > 0.0 && args.top_p <= 1.0,
        "--temperature must be in [0, 2] and --top-p in (0, 1]"
    );
    let served = args.model.load()?;
    let template = served.base.chat_template.clone();
    if template.is_fallback() {
        eprintln!("note: {} has no chat template; using ChatML", args.model.model);
    }
    let mut session =
        ChatSession::new(served.objectives().to_vec(), args.pref.as_deref(), args.system.clone())?;
    // Eight rows: a /sweep of more points queues the rest behind them.
    let limits = Limits {
        max_batch: 8,
        queue_len: 16,
        max_prompt_tokens: 1536,
        max_output_tokens: args.max_tokens,
    };
    let engine = Engine::start(served, limits, args.model.threads)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
        .context("installing the Ctrl-C handler")?;
    eprintln!(
        "chatting with {} — λ: {}; /help for commands",
        args.model.model,
        session.describe_pref()
    );
    let mut turn = 0u64;
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let command = match chat::parse_line(&line) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{e}");
                continue;
            }
        };
        let params = GenParams {
            max_tokens: args.max_tokens,
            sampling: if args.temperature == 0.0 {
                Sampling::Greedy
            } else {
                let top_p = (args.top_p < 1.0).then_some(args.top_p);
                Sampling::Sample { temperature: args.temperature, top_k: None, top_p }
            },
            seed: args.seed.wrapping_add(turn),
            stop: Vec::new(),
            n: 1,
        };
        match command {
            Command::Say(text) => {
                turn += 1;
                let prompt = session.ask(&template, &text)?;
                interrupted.store(false, Ordering::SeqCst);
                let rx = chat::submit_text(&engine, &prompt, session.pref(), params)?;
                match stream_answer(rx, &interrupted)? {
                    Some(answer) => session.answered(&answer),
                    None => {
                        println!("\n[stopped]");
                        session.forget_unanswered();
                    }
                }
            }
            Command::Pref(None) => println!("λ: {}", session.describe_pref()),
            Command::Pref(Some(text)) => match session.set_pref(&text) {
                Ok(d) => println!("λ: {d}"),
                Err(e) => eprintln!("{e}"),
            },
            Command::Sweep(n) => match session.sweep_prompt(&template)? {
                None => eprintln!("nothing to sweep yet: ask something first"),
                Some(_) if session.objectives().is_empty() => {
                    eprintln!("/sweep needs an adapter (--adapter DIR)")
                }
                Some(prompt) => {
                    let points = session.sweep_points(n);
                    let answers = chat::sweep(&engine, &prompt, &points, &params)?;
                    for (p, a) in points.iter().zip(answers) {
                        let lambda = panacea_serve::preference::describe(p, session.objectives());
                        println!("── λ: {lambda}\n{}\n", a.trim());
                    }
                }
            },
            Command::Reset => {
                session.reset();
                println!("(new conversation)");
            }
            Command::Save(path) => {
                session.save(&path)?;
                println!("saved to {}", path.display());
            }
            Command::Help => println!("{}", chat::HELP),
            Command::Quit => break,
            Command::Nothing => {}
        }
    }
    engine.shutdown()?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the answer's text as it arrives; `None` when Ctrl-C stopped it (dropping the
/// receiver cancels the row in the engine).
fn stream_answer(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
    interrupted: &AtomicBool,
) -> anyhow::Result<Option<String>> {
    let mut answer = String::new();
    let mut out = std::io::stdout();
    loop {
        match rx.try_recv() {
            Ok(Event::Text { text, .. }) => {
                print!("{text}");
                out.flush()?;
                answer.push_str(&text);
            }
            Ok(Event::Done { .. }) => {
                println!();
                return Ok(Some(answer));
            }
            Ok(Event::Error(e)) => anyhow::bail!("generation failed: {e}"),
            Err(TryRecvError::Disconnected) => anyhow::bail!("the engine stopped"),
            Err(TryRecvError::Empty) => {
                if interrupted.swap(false, Ordering::SeqCst) {
                    return Ok(None);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}
