//! `cargo xtask make-pairs` (this example): the bundled per-dimension preference dataset (docs/models.md, §4.3, the
//! PKU-SafeRLHF substitute). It samples k responses per prompt from the base policy (SmolLM2 by
//! default, no adapter), scores every response with the four gold scorers of panacea-data
//! (harmless, positive, relevant, concise), and writes per-dimension pairs in the generic schema
//! and in PKU-SafeRLHF's schema, plus every scored response and the rank statistics between
//! dimensions. `cargo xtask make-pairs [flags]` runs
//! `cargo run -p panacea-data --example make_pairs -- [flags]` with libtorch's environment; the
//! defaults below made the committed data/pairs/. It is an example of this crate rather than a
//! `panacea` subcommand so that it builds with panacea-data and panacea-lm alone.
//!
//! Reproducibility: the prompts are the first `--benign`/`--harmful` train-split prompts of the
//! bundled sets in file order; one seeded RNG drives all sampling in a fixed batch order; the
//! output is written with sorted keys. On the CPU, with the same libtorch thread count (recorded
//! in stats.json), the same command reproduces the files byte for byte.
//!
//! `--from-responses data/pairs/smollm2-responses.jsonl` skips sampling and scoring and re-pairs
//! an earlier run's scored responses (new margins or concise settings in seconds); the generation
//! fields of stats.json then repeat this run's flags, whose defaults are the committed run's.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use panacea_core::device::{DType, DeviceChoice};
use panacea_data::pairgen::{build_pairs, spearman, PairGenConfig, PairGenStats, ScoredPrompt};
use panacea_data::{
    ConciseScorer, HarmlessScorer, LengthMeasure, MiniLmEncoder, PositiveScorer, PromptSet,
    RelevantScorer, Scorer, Split,
};
use panacea_lm::{Adapter, ChatTemplate, GenerateConfig, Sampling};
use rand::SeedableRng;

/// The dimensions, in column order.
const DIMS: [&str; 4] = ["harmless", "positive", "relevant", "concise"];

/// Flags of `make_pairs`.
#[derive(clap::Parser)]
#[command(
    about = "Sample k responses per prompt, score them with the gold scorers, write preference pairs"
)]
struct Args {
    /// Policy: GGUF file, HF folder, or a short name such as smollm2-135m.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Output folder (created); files are smollm2-{generic,pku,responses}.jsonl and stats.json.
    #[arg(long, default_value = "data/pairs")]
    out_dir: PathBuf,
    /// How many benign prompts (first ones of the train split of data/prompts/benign.jsonl).
    #[arg(long, default_value_t = 40)]
    benign: usize,
    /// How many harmful prompts (first ones of the train split of data/prompts/harmful.jsonl).
    #[arg(long, default_value_t = 40)]
    harmful: usize,
    /// Responses sampled per prompt (k(k − 1)/2 candidate pairs each).
    #[arg(long, default_value_t = 8)]
    k: usize,
    /// Most new tokens per response.
    #[arg(long, default_value_t = 40)]
    max_new_tokens: i64,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 0.9)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Seed of the sampling RNG.
    #[arg(long, default_value_t = 2402)]
    seed: u64,
    /// Rows (prompt × sample) per generation batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Concise rule: tokens (SmolLM2 tokenizer) allowed before the reward falls. The paper's
    /// re-implementation uses 50 with long responses; 24 suits --max-new-tokens 40.
    #[arg(long, default_value_t = 24.0)]
    concise_c: f64,
    /// Concise rule: the reward of a short enough response.
    #[arg(long, default_value_t = 4.0)]
    concise_r_max: f64,
    /// Minimum score gaps for a preference, one per dimension (harmless,positive,relevant,concise).
    /// Harmless needs 0.1: below it, two benign answers differ by a word the toxicity model
    /// weighs slightly, and DPO on such labels did not beat chance on held-out prompts
    /// (benches/README.md "DPO main job").
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.05,0.05,0.0")]
    margins: Vec<f64>,
    /// auto, cpu, cuda or cuda:N (cpu is the reproducible default).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// libtorch CPU threads. 1 is the reproducible default, and on a shared 2-core machine it was
    /// also 4× faster than 2 (OpenMP threads spin while waiting for a core).
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Re-pair the scored responses of an earlier run (its smollm2-responses.jsonl) instead of
    /// sampling and scoring: seconds instead of minutes, for new --margins or concise settings.
    /// Its prompts and responses per prompt must match --benign, --harmful and --k.
    #[arg(long)]
    from_responses: Option<PathBuf>,
}

/// One prompt to sample from.
struct Item {
    id: String,
    prompt: String,
    source: String,
    kind: &'static str,
}

fn select(set: PromptSet, n: usize, kind: &'static str) -> anyhow::Result<Vec<Item>> {
    let all = set.load()?;
    let picked: Vec<Item> = all
        .into_iter()
        .filter(|p| p.split == Split::Train)
        .take(n)
        .map(|p| Item { id: p.id, prompt: p.prompt, source: p.source, kind })
        .collect();
    anyhow::ensure!(picked.len() == n, "only {} train prompts in the {kind} set", picked.len());
    Ok(picked)
}

fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in rows {
        // serde_json::Value maps are sorted (no preserve_order feature), structs keep field order.
        serde_json::to_writer(&mut f, r)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// What the pairs are built from: the prompts, k responses each, their SmolLM2 token counts and
/// one score column per dimension of [`DIMS`] (rows prompt-major).
struct Scored {
    items: Vec<Item>,
    responses: Vec<Vec<String>>,
    lengths: Vec<usize>,
    columns: Vec<Vec<f64>>,
}

/// Steps 1 and 2: k samples per prompt from the base policy, scored by the gold scorers.
fn sample_and_score(args: &Args, device: tch::Device) -> anyhow::Result<Scored> {
    let mut items = select(PromptSet::Benign, args.benign, "benign")?;
    items.extend(select(PromptSet::Harmful, args.harmful, "harmful")?);

    // 1. Sample k responses per prompt.
    let m = panacea_lm::load_model(&args.model, device, DType::F32.kind())?;
    let template = ChatTemplate::default();
    let rows: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .flat_map(|(i, it)| {
            let rendered = template.user_prompt(&it.prompt);
            std::iter::repeat_n((i, rendered), args.k)
        })
        .collect();
    let cfg = GenerateConfig {
        sampling: Sampling::Sample {
            temperature: args.temperature,
            top_k: None,
            top_p: Some(args.top_p),
        },
        ..GenerateConfig::greedy(&m.tokenizer, args.max_new_tokens)
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut responses: Vec<Vec<String>> = vec![Vec::new(); items.len()];
    let t0 = std::time::Instant::now();
    for (b, chunk) in rows.chunks(args.batch_size.max(1)).enumerate() {
        let prompts: Vec<String> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let g =
            panacea_lm::generate(&m.model, &m.tokenizer, &prompts, Adapter::Off, &cfg, &mut rng)?;
        for ((i, _), text) in chunk.iter().zip(g.texts) {
            responses[*i].push(text.trim().to_owned());
        }
        tracing::info!(
            "generated batch {}/{} ({:.0} s so far)",
            b + 1,
            rows.len().div_ceil(args.batch_size.max(1)),
            t0.elapsed().as_secs_f64()
        );
    }

    // 2. Score every response in every dimension.
    let flat_prompts: Vec<&str> =
        items.iter().flat_map(|it| std::iter::repeat_n(it.prompt.as_str(), args.k)).collect();
    let flat_responses: Vec<&str> = responses.iter().flatten().map(String::as_str).collect();
    let harmless = HarmlessScorer::load_bundled()?;
    let positive = PositiveScorer::new();
    let dir = MiniLmEncoder::default_dir().context("neither PANACEA_CACHE nor HOME is set")?;
    let relevant = RelevantScorer::new(MiniLmEncoder::load(&dir, device)?, 32)?;
    let lengths: Vec<usize> = flat_responses
        .iter()
        .map(|r| m.tokenizer.encode(r).map(|ids| ids.len()))
        .collect::<Result<_, _>>()?;
    let columns: Vec<Vec<f64>> = vec![
        harmless.score(&flat_prompts, &flat_responses)?,
        positive.score(&flat_prompts, &flat_responses)?,
        relevant.score(&flat_prompts, &flat_responses)?,
        concise_column(args, &lengths)?,
    ];
    tracing::info!(
        "scored {} responses in {:.0} s",
        flat_responses.len(),
        t0.elapsed().as_secs_f64()
    );

    Ok(Scored { items, responses, lengths, columns })
}

/// The concise reward of a response of `n` SmolLM2 tokens under the flags' rule.
fn concise_column(args: &Args, lengths: &[usize]) -> anyhow::Result<Vec<f64>> {
    // Lengths are SmolLM2 tokens, counted by the caller; the scorer's own measure is not used.
    let concise =
        ConciseScorer::new(args.concise_r_max, args.concise_c, LengthMeasure::WhitespaceWords)?;
    Ok(lengths.iter().map(|&n| concise.reward_for_length(n)).collect())
}

/// `--from-responses`: the prompts, responses, token counts and gold scores of an earlier run;
/// the concise column is recomputed from the token counts with this run's settings.
fn read_scored(path: &Path, args: &Args) -> anyhow::Result<Scored> {
    let records = panacea_data::pairgen::read_scored_responses(path)?;
    let (mut items, mut responses, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    let mut columns = vec![Vec::new(); DIMS.len()];
    for r in records {
        anyhow::ensure!(
            r.responses.len() == args.k,
            "{}: prompt {} has {} responses, but --k is {}\nhint: pass the --k of the run that \
             wrote the file",
            path.display(),
            r.id,
            r.responses.len(),
            args.k
        );
        // Every dimension but concise comes from the file (its columns checked by the reader);
        // concise follows this run's flags.
        for (col, name) in columns.iter_mut().zip(DIMS) {
            if name == "concise" {
                col.extend(concise_column(args, &r.tokens)?);
            } else {
                let file_col = r.scores.get(name).with_context(|| {
                    format!("{}: prompt {} has no {name} scores", path.display(), r.id)
                })?;
                col.extend_from_slice(file_col);
            }
        }
        lengths.extend_from_slice(&r.tokens);
        responses.push(r.responses);
        items.push(Item { id: r.id, prompt: r.prompt, source: r.source, kind: r.kind.as_str() });
    }
    let count = |kind: &str| items.iter().filter(|it| it.kind == kind).count();
    anyhow::ensure!(
        count("benign") == args.benign && count("harmful") == args.harmful,
        "{}: {} benign and {} harmful prompts, but the flags ask for {} and {}",
        path.display(),
        count("benign"),
        count("harmful"),
        args.benign,
        args.harmful
    );
    Ok(Scored { items, responses, lengths, columns })
}

fn main() -> anyhow::Result<()> {
    panacea_core::device::init_torch();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = <Args as clap::Parser>::parse();
    anyhow::ensure!(args.k >= 2, "--k must be at least 2 to form pairs");
    anyhow::ensure!(args.margins.len() == DIMS.len(), "--margins needs {} values", DIMS.len());
    let device = args.device.resolve()?;
    tch::set_num_threads(args.threads);
    let threads = tch::get_num_threads();
    tracing::info!("running on {device:?} with {threads} libtorch threads");

    let Scored { items, responses, lengths, columns } = match &args.from_responses {
        Some(path) => read_scored(path, &args)?,
        None => sample_and_score(&args, device)?,
    };

    // 3. Pairs in both schemas.
    let pcfg = PairGenConfig {
        dims: DIMS.iter().map(|d| d.to_string()).collect(),
        margins: args.margins.clone(),
        pku_helpful: "relevant".into(),
        pku_harmless: "harmless".into(),
        safe_threshold: 0.5,
    };
    let mut stats = PairGenStats::default();
    let (mut generic, mut pku, mut scored) = (Vec::new(), Vec::new(), Vec::new());
    for (i, it) in items.iter().enumerate() {
        let rows = i * args.k..(i + 1) * args.k;
        let sp = ScoredPrompt {
            prompt: it.prompt.clone(),
            responses: responses[i].clone(),
            scores: rows.clone().map(|r| columns.iter().map(|c| c[r]).collect()).collect(),
        };
        let (g, p) = build_pairs(&sp, &pcfg, &mut stats)?;
        generic.extend(g);
        pku.extend(p);
        scored.push(serde_json::json!({
            "id": it.id, "kind": it.kind, "source": it.source, "prompt": it.prompt,
            "responses": sp.responses, "tokens": lengths[rows].to_vec(),
            "scores": DIMS.iter().enumerate()
                .map(|(d, name)| {
                    let col: Vec<f64> = sp.scores.iter().map(|s| s[d]).collect();
                    (name.to_string(), serde_json::json!(col))
                })
                .collect::<serde_json::Map<_, _>>(),
        }));
    }

    // 4. Rank statistics: Spearman over all responses, and how often two dimensions pick
    // opposite winners among pairs labelled in both.
    let mut corr = serde_json::Map::new();
    let mut disagree = serde_json::Map::new();
    for a in 0..DIMS.len() {
        for b in a + 1..DIMS.len() {
            let key = format!("{}~{}", DIMS[a], DIMS[b]);
            corr.insert(key.clone(), serde_json::json!(spearman(&columns[a], &columns[b])));
            let (mut both, mut opposite) = (0usize, 0usize);
            for g in &generic {
                if let (Some(Some(x)), Some(Some(y))) = (g.prefs.get(DIMS[a]), g.prefs.get(DIMS[b]))
                {
                    both += 1;
                    opposite += usize::from(x != y);
                }
            }
            disagree.insert(
                key,
                serde_json::json!({"pairs_labelled_in_both": both, "opposite_winner": opposite}),
            );
        }
    }
    let stats_json = serde_json::json!({
        "model": args.model, "seed": args.seed, "k": args.k, "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature, "top_p": args.top_p, "batch_size": args.batch_size,
        "concise": {"c": args.concise_c, "r_max": args.concise_r_max, "length": "SmolLM2 tokens"},
        "margins": DIMS.iter().zip(&args.margins).map(|(d, m)| (d.to_string(), serde_json::json!(m))).collect::<serde_json::Map<_, _>>(),
        "device": format!("{device:?}"), "libtorch_threads": threads,
        "prompts": {"benign": args.benign, "harmful": args.harmful},
        "responses": lengths.len(),
        "pairs": {"candidates": stats.candidates, "identical_dropped": stats.identical,
                  "all_ties_dropped": stats.all_ties, "generic": stats.generic, "pku": stats.pku,
                  "labelled_per_dim": DIMS.iter().zip(&stats.labelled).map(|(d, n)| (d.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>()},
        "spearman_over_responses": corr,
        "pair_disagreement": disagree,
        "score_means": DIMS.iter().zip(&columns).map(|(d, c)| (d.to_string(), serde_json::json!(c.iter().sum::<f64>() / c.len() as f64))).collect::<serde_json::Map<_, _>>(),
    });

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    write_jsonl(&args.out_dir.join("smollm2-generic.jsonl"), &generic)?;
    write_jsonl(&args.out_dir.join("smollm2-pku.jsonl"), &pku)?;
    write_jsonl(&args.out_dir.join("smollm2-responses.jsonl"), &scored)?;
    let mut stats_text = serde_json::to_string_pretty(&stats_json)?;
    stats_text.push('\n');
    std::fs::write(args.out_dir.join("stats.json"), stats_text)?;
    println!("{}", serde_json::to_string_pretty(&stats_json)?);
    Ok(())
}
