//! The engine: one OS thread owns the model and decodes every request in flight together.
//!
//! libtorch tensors are not meant to be shared between threads, so the model lives on this
//! thread alone; HTTP handlers and the chat loop talk to it through two channels: a bounded
//! queue of [`Job`]s in (full: the caller answers 429), and an unbounded stream of [`Event`]s
//! out per job (bounded in practice by the job's `max_tokens`).
//!
//! Between two decode steps the engine admits queued jobs while rows are free (each prompt is
//! prefilled alone and joins the batch), then runs one step for every row with each row's own
//! λ in one forward (`pref` [B, K]), chooses every row's token with its own sampling settings
//! and RNG, streams the new text, and lets finished rows leave ([`panacea_lm::SlotBatch`]).
//! When every row in flight shares one λ, the steps run a merged model instead (W0 + ΔW(λ),
//! fused like the base, so a step runs the base model's code path; see [`merged_model`]);
//! it is kept for that λ until another shared λ needs merging.
//! A job whose receiver is dropped (the client went away, Ctrl-C in the chat) is cancelled at
//! the next step. A failing step (an error or a libtorch panic) fails the rows in flight with
//! an [`Event::Error`] and the engine goes on with the next jobs.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use panacea_lm::{
    Adapter, CausalLm, Llama, LoadedModel, PromptTemplate, Sampling, SlotBatch, Tokenizer,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::error::ServeError;

/// A trained preference adapter on the served model's base.
#[derive(Debug)]
pub struct ServedAdapter {
    /// The adapted view of the base ([`Llama::with_adapter`]).
    pub model: Llama,
    /// The adapter's variables (kept alive with the view).
    pub vs: tch::nn::VarStore,
    /// Objective names in λ order (from `adapter_config.json`).
    pub objectives: Vec<String>,
}

/// The model the engine serves: a base, its tokenizer and chat template, and optionally an
/// adapter steered by λ.
#[derive(Debug)]
pub struct ServedModel {
    /// The base model.
    pub base: LoadedModel,
    /// The adapter, when one is served.
    pub adapter: Option<ServedAdapter>,
    /// The name `/v1/models` reports and responses carry.
    pub name: String,
}

impl ServedModel {
    /// Loads `model` (a short name, GGUF file or HF folder; `tiny-random` for tests) and,
    /// when given, the native adapter folder `adapter` on top of it.
    pub fn load(
        model: &str,
        adapter: Option<&Path>,
        device: Device,
        kind: Kind,
    ) -> Result<Self, ServeError> {
        let base = if model == panacea_lm::TINY_RANDOM {
            panacea_lm::tiny_random_model(device, 0, kind)?
        } else {
            panacea_lm::load_model(model, device, kind)?
        };
        let name = match adapter.and_then(|d| d.file_name()) {
            Some(a) => format!("{model}+{}", a.to_string_lossy()),
            None => model.to_owned(),
        };
        let adapter = match adapter {
            Some(dir) => Some(load_adapter(&base, dir)?),
            None => None,
        };
        Ok(Self { base, adapter, name })
    }

    /// The objective names (empty without an adapter).
    pub fn objectives(&self) -> &[String] {
        self.adapter.as_ref().map_or(&[], |a| a.objectives.as_slice())
    }
}

/// Reads a native adapter folder onto a view of `base` (the same steps as `panacea generate`).
pub fn load_adapter(base: &LoadedModel, dir: &Path) -> Result<ServedAdapter, ServeError> {
    let folder = panacea_core::checkpoint::read_adapter_config(dir)?;
    let vs = tch::nn::VarStore::new(base.model.device());
    let model = base.model.with_adapter(Some((&vs.root(), &folder.svd_lora())));
    panacea_core::checkpoint::load_adapter(dir, &vs, &folder)?;
    Ok(ServedAdapter { model, vs, objectives: folder.objectives.clone() })
}

/// How much the engine takes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Rows decoded together (a request with `n` choices takes `n` rows).
    pub max_batch: usize,
    /// Requests waiting for rows; one more is refused (429).
    pub queue_len: usize,
    /// Longest prompt in tokens (413 beyond).
    pub max_prompt_tokens: usize,
    /// Most new tokens per choice (413 beyond); also the default `max_tokens`.
    pub max_output_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_batch: 32, queue_len: 256, max_prompt_tokens: 1024, max_output_tokens: 512 }
    }
}

impl Limits {
    /// Positions each row of the cache holds.
    pub fn capacity(&self) -> i64 {
        (self.max_prompt_tokens + self.max_output_tokens) as i64
    }

    fn check(&self, model: &Llama) -> Result<(), ServeError> {
        if self.max_batch == 0 || self.queue_len == 0 {
            return Err(ServeError::Invalid(format!(
                "max_batch = {} and queue_len = {} must be ≥ 1",
                self.max_batch, self.queue_len
            )));
        }
        if self.max_prompt_tokens == 0 || self.max_output_tokens == 0 {
            return Err(ServeError::Invalid(
                "max_prompt_tokens and max_output_tokens must be ≥ 1".into(),
            ));
        }
        let context = model.config.max_position_embeddings;
        if self.capacity() > context {
            return Err(ServeError::Invalid(format!(
                "max_prompt_tokens + max_output_tokens = {} exceeds the model's context of {context} \
                 tokens; lower one of them",
                self.capacity()
            )));
        }
        Ok(())
    }
}

/// How one job generates.
#[derive(Clone, Debug, PartialEq)]
pub struct GenParams {
    /// Most new tokens per choice.
    pub max_tokens: usize,
    /// Greedy (temperature 0) or sampled.
    pub sampling: Sampling,
    /// Seed of choice i's RNG is `seed + i`.
    pub seed: u64,
    /// Texts that end a choice (not included in its text).
    pub stop: Vec<String>,
    /// Choices (rows) generated for the one prompt.
    pub n: usize,
}

/// One request for the engine.
#[derive(Debug)]
pub struct Job {
    /// The prompt's token ids (rendered with the chat template where it is a chat).
    pub prompt: Vec<i64>,
    /// λ (one weight per objective) when an adapter is served; `None` for the base.
    pub pref: Option<Vec<f64>>,
    /// Generation settings.
    pub params: GenParams,
    /// Where the job's events go.
    pub events: UnboundedSender<Event>,
}

/// Why a choice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token or a stop text.
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl FinishReason {
    /// `stop` or `length`, as OpenAI writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What the engine sends back for a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New text of choice `index`.
    Text {
        /// The choice.
        index: usize,
        /// Text to append.
        text: String,
        /// Token ids behind this text (for exactness checks and counting).
        tokens: Vec<i64>,
    },
    /// Choice `index` ended.
    Done {
        /// The choice.
        index: usize,
        /// Why.
        finish: FinishReason,
        /// New tokens it generated (EOS included).
        completion_tokens: usize,
    },
    /// The job failed; no more events follow.
    Error(String),
}

/// Counters shared with the server (`/health`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Decode steps run on the merged model (every row at one λ).
    pub merged_steps: AtomicUsize,
    /// Times the adapter was merged for a new λ.
    pub merges: AtomicUsize,
    /// Rows decoding now.
    pub rows: AtomicUsize,
    /// Jobs admitted and not yet in a row (at most `queue_len`: submitting checks and takes
    /// one unit of it at once, a job entering its rows or dropped gives it back).
    pub queued: AtomicUsize,
    /// Decode steps run.
    pub steps: AtomicUsize,
    /// Microseconds spent prefilling joining prompts (each alone).
    pub prefill_us: AtomicUsize,
    /// Microseconds spent merging the adapter for a shared λ.
    pub merge_us: AtomicUsize,
    /// Microseconds spent in decode-step forwards; on a GPU the
    /// kernels finish during the next counter's span (choosing tokens reads them back).
    pub forward_us: AtomicUsize,
    /// Microseconds spent choosing tokens and streaming text after the forwards.
    pub emit_us: AtomicUsize,
}

/// Adds the microseconds since `start` to `counter`.
fn add_time(counter: &AtomicUsize, start: std::time::Instant) {
    counter.fetch_add(start.elapsed().as_micros() as usize, Ordering::Relaxed);
}

/// What callers need to build jobs: tokenizer, template, objectives, limits.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    /// The served model's name.
    pub name: String,
    /// The tokenizer (a copy of the engine's).
    pub tokenizer: Tokenizer,
    /// The chat template.
    pub chat_template: PromptTemplate,
    /// Objective names in λ order (empty without an adapter).
    pub objectives: Vec<String>,
    /// The limits.
    pub limits: Limits,
}

/// Handle to the engine thread. Dropping every handle (and [`Engine::shutdown`]) lets the
/// thread finish the rows in flight and exit.
#[derive(Debug)]
pub struct Engine {
    jobs: Option<SyncSender<Job>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    info: Arc<EngineInfo>,
    stats: Arc<EngineStats>,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full (answer 429).
    QueueFull(usize),
    /// The engine stopped.
    Gone,
    /// The job can never run within the limits (no rows, too many rows, an empty or too long
    /// prompt, too many new tokens); a job that waited for it would block every later one.
    Invalid(String),
}

/// Merge the adapter for a shared λ only when one of the rows may still decode this many
/// steps: a merge costs about one pass over the weights (a few decode steps of a small batch,
/// benches/README.md), which a short tail of a batch would not repay. A λ that is already
/// merged is used at once.
pub const DEFAULT_MERGE_MIN_STEPS: usize = 64;

impl Engine {
    /// Starts the engine thread with `served` and `limits`; `threads` sets libtorch's intra-op
    /// threads on that thread (0: libtorch's default). Shared-λ batches are merged per
    /// [`DEFAULT_MERGE_MIN_STEPS`].
    pub fn start(served: ServedModel, limits: Limits, threads: usize) -> Result<Self, ServeError> {
        Self::start_with(served, limits, threads, Some(DEFAULT_MERGE_MIN_STEPS))
    }

    /// [`Engine::start`] with the merge rule: `merge_min_steps` `None` never merges (every
    /// adapted step takes the per-row path); `Some(n)` merges a λ shared by every row in flight
    /// once some row may still decode ≥ n steps (0: always).
    pub fn start_with(
        served: ServedModel,
        limits: Limits,
        threads: usize,
        merge_min_steps: Option<usize>,
    ) -> Result<Self, ServeError> {
        limits.check(&served.base.model)?;
        let info = Arc::new(EngineInfo {
            name: served.name.clone(),
            tokenizer: served.base.tokenizer.clone(),
            chat_template: served.base.chat_template.clone(),
            objectives: served.objectives().to_vec(),
            limits,
        });
        let stats = Arc::new(EngineStats::default());
        let batch = SlotBatch::new(&served.base.model, limits.max_batch as i64, limits.capacity())?;
        let (tx, rx) = std::sync::mpsc::sync_channel(limits.queue_len);
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker = Worker::new(served, batch, rx, stats.clone(), stop.clone());
        worker.merge_min_steps = merge_min_steps;
        let thread = std::thread::Builder::new()
            .name("panacea-engine".into())
            .spawn(move || {
                if threads > 0 {
                    tch::set_num_threads(threads as i32);
                }
                worker.run()
            })
            .map_err(|e| ServeError::io("starting the engine thread", e))?;
        Ok(Self { jobs: Some(tx), stop, thread: Some(thread), info, stats })
    }

    /// Tokenizer, template, objectives and limits.
    pub fn info(&self) -> &Arc<EngineInfo> {
        &self.info
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// A sender for jobs (clone it into request handlers).
    pub fn submitter(&self) -> Option<Submitter> {
        self.jobs.as_ref().map(|tx| Submitter {
            tx: tx.clone(),
            stats: self.stats.clone(),
            limits: self.info.limits,
        })
    }

    /// Queues `prompt` and returns the receiver of its events (see [`Submitter::submit`]).
    pub fn submit(
        &self,
        prompt: Vec<i64>,
        pref: Option<Vec<f64>>,
        params: GenParams,
    ) -> Result<UnboundedReceiver<Event>, SubmitError> {
        self.submitter().ok_or(SubmitError::Gone)?.submit(prompt, pref, params)
    }

    /// Stops taking jobs, lets the rows in flight finish, and joins the thread.
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        self.jobs = None;
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Err(_)) => Err(ServeError::EngineGone("the engine thread panicked".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.jobs = None;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A cloneable job sender.
#[derive(Clone, Debug)]
pub struct Submitter {
    tx: SyncSender<Job>,
    stats: Arc<EngineStats>,
    limits: Limits,
}

impl Submitter {
    /// Queues a job without blocking; `Err(QueueFull)` when `queue_len` jobs are already
    /// waiting for rows (an exact bound, however far the engine has taken them).
    pub fn submit(
        &self,
        prompt: Vec<i64>,
        pref: Option<Vec<f64>>,
        params: GenParams,
    ) -> Result<UnboundedReceiver<Event>, SubmitError> {
        let l = &self.limits;
        let problem = if params.n == 0 || params.n > l.max_batch {
            Some(format!("n = {} must be in 1..={} (max_batch)", params.n, l.max_batch))
        } else if prompt.is_empty() || prompt.len() > l.max_prompt_tokens {
            Some(format!(
                "the prompt has {} tokens; it needs 1 to {} (max_prompt_tokens)",
                prompt.len(),
                l.max_prompt_tokens
            ))
        } else if params.max_tokens == 0 || params.max_tokens > l.max_output_tokens {
            Some(format!(
                "max_tokens = {} must be in 1..={} (max_output_tokens)",
                params.max_tokens, l.max_output_tokens
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(SubmitError::Invalid(p));
        }
        // Admission is one counter of the jobs admitted and not yet in a row, wherever they
        // wait (in the channel or among the engine's waiting jobs); it is released when a job
        // takes its rows or is dropped. The channel alone could not bound it: the engine moves
        // jobs out of the channel before rows free up.
        let admitted = self.stats.queued.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |q| {
            (q < l.queue_len).then_some(q + 1)
        });
        if admitted.is_err() {
            return Err(SubmitError::QueueFull(l.queue_len));
        }
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        match self.tx.try_send(Job { prompt, pref, params, events }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => Err(SubmitError::QueueFull(l.queue_len)),
                    TrySendError::Disconnected(_) => Err(SubmitError::Gone),
                }
            }
        }
    }
}

/// One choice being decoded.
struct Row {
    events: UnboundedSender<Event>,
    index: usize,
    pref: Option<Vec<f64>>,
    sampling: Sampling,
    rng: ChaCha8Rng,
    max_tokens: usize,
    stop: Arc<Vec<String>>,
    /// Generated ids (EOS excluded).
    generated: Vec<i64>,
    /// Ids not yet sent with a text event.
    unsent: Vec<i64>,
    /// Bytes of the decoded text already sent.
    sent: usize,
    /// The token to feed at the next step.
    next: i64,
    finished: Option<FinishReason>,
    /// Counts EOS too.
    completion_tokens: usize,
    cancelled: bool,
}

struct Worker {
    served: ServedModel,
    batch: SlotBatch,
    rows: Vec<Row>,
    jobs: Receiver<Job>,
    waiting: VecDeque<Job>,
    stats: Arc<EngineStats>,
    /// Every job sender is gone, or the owner asked the engine to stop.
    closed: bool,
    /// How the decode steps run while the rows stay the same (see `plan`).
    plan: StepPlan,
    /// The adapter merged at one λ, kept until another shared λ is merged.
    merged: Option<MergedModel>,
    /// See [`Engine::start_with`].
    merge_min_steps: Option<usize>,
    stop: Arc<AtomicBool>,
}

/// How the decode steps run while the rows stay the same.
enum StepPlan {
    /// To be decided (the rows changed).
    Unplanned,
    /// The base model: no adapter, or rows without λ.
    Base,
    /// The adapted view with each row's λ, [B, K] in row order, its factors prepared.
    PerRow(Tensor),
    /// Every row shares λ: `Worker::merged`.
    Merged,
}

/// The served adapter merged into the base at one λ.
struct MergedModel {
    pref: Vec<f64>,
    model: Llama,
}

impl Worker {
    fn new(
        served: ServedModel,
        batch: SlotBatch,
        jobs: Receiver<Job>,
        stats: Arc<EngineStats>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let waiting = VecDeque::new();
        let rows = Vec::new();
        Self {
            served,
            batch,
            rows,
            jobs,
            waiting,
            stats,
            closed: false,
            plan: StepPlan::Unplanned,
            merged: None,
            merge_min_steps: None,
            stop,
        }
    }

    fn run(mut self) {
        loop {
            self.admit();
            if self.rows.is_empty() {
                if self.closed && self.waiting.is_empty() {
                    return;
                }
                continue;
            }
            let stepped = std::panic::catch_unwind(AssertUnwindSafe(|| self.step()));
            let failure = match stepped {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(panic_message(&*panic)),
            };
            if let Some(message) = failure {
                self.fail_all(&format!("generation failed: {message}"));
            }
            self.retire();
        }
    }

    /// Takes new jobs: blocks for one when nothing is in flight, else only looks.
    fn pull(&mut self) {
        if self.closed {
            return;
        }
        // Idle: wait for a job, looking at the stop flag now and then (a job sender may
        // outlive the owner's handle, e.g. in a request handler being torn down).
        while self.rows.is_empty() && self.waiting.is_empty() {
            if self.stop.load(Ordering::SeqCst) {
                self.closed = true;
                return;
            }
            match self.jobs.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(job) => self.waiting.push_back(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
        loop {
            match self.jobs.try_recv() {
                Ok(job) => self.waiting.push_back(job),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Admits waiting jobs in arrival order while their rows fit.
    fn admit(&mut self) {
        self.pull();
        while let Some(job) = self.waiting.front() {
            if job.events.is_closed() {
                self.waiting.pop_front();
                self.stats.queued.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let free = self.batch.max_rows() as usize - self.batch.rows();
            if job.params.n > free {
                return;
            }
            let Some(job) = self.waiting.pop_front() else { return };
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            let joined = std::panic::catch_unwind(AssertUnwindSafe(|| self.join(&job)));
            let failure = match joined {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(panic_message(&*panic)),
            };
            if let Some(message) = failure {
                let _ = job.events.send(Event::Error(format!("generation failed: {message}")));
                // Rows of this job that joined before the failure leave with it.
                for r in &mut self.rows {
                    if r.events.same_channel(&job.events) {
                        r.cancelled = true;
                    }
                }
            }
            self.retire();
        }
    }

    /// Prefills the job's prompt once per choice and adds the rows.
    fn join(&mut self, job: &Job) -> Result<(), ServeError> {
        let start = std::time::Instant::now();
        self.replan();
        let stop = Arc::new(job.params.stop.clone());
        let device = self.served.base.model.device();
        for index in 0..job.params.n {
            let pref_t = job.pref.as_ref().map(|p| pref_tensor(&[p.as_slice()], device));
            let (model, adapter) = model_for(&self.served, pref_t.as_ref());
            let logits = self.batch.join(model, &job.prompt, adapter)?; // [1, V]
            let mut row = Row {
                events: job.events.clone(),
                index,
                pref: job.pref.clone(),
                sampling: job.params.sampling,
                rng: ChaCha8Rng::seed_from_u64(job.params.seed.wrapping_add(index as u64)),
                max_tokens: job.params.max_tokens,
                stop: stop.clone(),
                generated: Vec::new(),
                unsent: Vec::new(),
                sent: 0,
                next: 0,
                finished: None,
                completion_tokens: 0,
                cancelled: false,
            };
            let token = choose(&logits, &mut [&mut row])?
                .first()
                .copied()
                .ok_or_else(|| ServeError::EngineGone("no token chosen for a new row".into()))?;
            self.rows.push(row);
            let r = self.rows.len() - 1;
            self.accept(r, token)?;
        }
        self.stats.rows.store(self.rows.len(), Ordering::SeqCst);
        add_time(&self.stats.prefill_us, start);
        Ok(())
    }

    /// One decode step for every row.
    fn step(&mut self) -> Result<(), ServeError> {
        self.plan()?;
        let start = std::time::Instant::now();
        let tokens: Vec<i64> = self.rows.iter().map(|r| r.next).collect();
        let (model, adapter) = match (&self.plan, &self.served.adapter, &self.merged) {
            (StepPlan::PerRow(pref), Some(a), _) => (&a.model, Adapter::On { pref }),
            (StepPlan::Merged, _, Some(m)) => (&m.model, Adapter::Off),
            _ => (&self.served.base.model, Adapter::Off),
        };
        let logits = self.batch.step(model, &tokens, adapter)?; // [B, V]
        add_time(&self.stats.forward_us, start);
        let start = std::time::Instant::now();
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        if matches!(self.plan, StepPlan::Merged) {
            self.stats.merged_steps.fetch_add(1, Ordering::Relaxed);
        }
        let mut rows: Vec<&mut Row> = self.rows.iter_mut().collect();
        let chosen = choose(&logits, &mut rows)?;
        for (r, token) in chosen.into_iter().enumerate() {
            self.accept(r, token)?;
        }
        add_time(&self.stats.emit_us, start);
        Ok(())
    }

    /// Decides how the steps run for the rows in flight, once per change of the rows: the base
    /// when a row has no λ; the merged model when every row shares λ and it is merged already
    /// or worth merging (`merge_min_steps`); else each row with its own λ, the adapter's factors
    /// folded for it once ([`panacea_lm::Llama`]'s layers' `prepare`: the same operations as
    /// the unprepared forward, so the same numbers).
    fn plan(&mut self) -> Result<(), ServeError> {
        if !matches!(self.plan, StepPlan::Unplanned) {
            return Ok(());
        }
        let prefs: Option<Vec<&[f64]>> = self.rows.iter().map(|r| r.pref.as_deref()).collect();
        let (Some(prefs), Some(adapter)) = (prefs, self.served.adapter.as_mut()) else {
            self.plan = StepPlan::Base;
            return Ok(());
        };
        let shared = prefs.windows(2).all(|w| w[0] == w[1]).then(|| prefs[0].to_vec());
        if let (Some(pref), Some(min_steps)) = (shared, self.merge_min_steps) {
            let cached = self.merged.as_ref().is_some_and(|m| m.pref == pref);
            let remaining =
                self.rows.iter().map(|r| r.max_tokens - r.completion_tokens).max().unwrap_or(0);
            if cached || remaining >= min_steps {
                if !cached {
                    let start = std::time::Instant::now();
                    self.merged = None; // free the old copy before making the new one
                    let model = merged_model(&self.served.base.model, &adapter.model, &pref);
                    self.merged = Some(MergedModel { pref, model });
                    self.stats.merges.fetch_add(1, Ordering::Relaxed);
                    add_time(&self.stats.merge_us, start);
                }
                self.plan = StepPlan::Merged;
                return Ok(());
            }
        }
        let pref = pref_tensor(&prefs, self.served.base.model.device()); // [B, K]
        for l in adapter.model.linears_mut() {
            l.prepare(&pref)?;
        }
        self.plan = StepPlan::PerRow(pref);
        Ok(())
    }

    /// Forgets the plan (the rows change); the prepared factors are dropped before the λ
    /// tensor is, so a later tensor at the same address can never hit stale factors.
    fn replan(&mut self) {
        if let Some(a) = self.served.adapter.as_mut() {
            a.model.linears_mut().for_each(panacea_core::adapter::SvdLoraLinear::unprepare);
        }
        self.plan = StepPlan::Unplanned;
    }

    /// Records row r's new token: EOS, stop texts and the length limit end it; new text is
    /// streamed (held back while it may be the start of a stop text or a split character).
    fn accept(&mut self, r: usize, token: i64) -> Result<(), ServeError> {
        let eos = &self.served.base.tokenizer.eos_ids;
        let tokenizer = &self.served.base.tokenizer;
        let row = &mut self.rows[r];
        row.completion_tokens += 1;
        row.next = token;
        let mut finish = None;
        if eos.contains(&token) {
            finish = Some(FinishReason::Stop);
        } else {
            row.generated.push(token);
            row.unsent.push(token);
        }
        let text = tokenizer.decode(&row.generated, true)?;
        let mut end = text.len();
        if let Some(at) = row.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            end = at;
            finish = Some(FinishReason::Stop);
        }
        if finish.is_none() && row.completion_tokens >= row.max_tokens {
            finish = Some(FinishReason::Length);
        }
        if finish.is_none() {
            // Hold back what could still become a stop text, and a trailing partial character
            // (byte-level tokens can split one).
            let hold = row.stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0);
            end = end.saturating_sub(hold);
            if text[..floor_char(&text, end)].ends_with('\u{FFFD}') {
                end = end.saturating_sub('\u{FFFD}'.len_utf8());
            }
        }
        let end = floor_char(&text, end).max(row.sent.min(text.len()));
        if end > row.sent || (finish.is_some() && !row.unsent.is_empty()) {
            let new = text.get(row.sent..end).unwrap_or("").to_owned();
            let tokens = std::mem::take(&mut row.unsent);
            row.sent = end;
            if row.events.send(Event::Text { index: row.index, text: new, tokens }).is_err() {
                row.cancelled = true;
            }
        }
        if let Some(f) = finish {
            row.finished = Some(f);
            let done = Event::Done {
                index: row.index,
                finish: f,
                completion_tokens: row.completion_tokens,
            };
            let _ = row.events.send(done);
        } else if row.events.is_closed() {
            row.cancelled = true;
        }
        Ok(())
    }

    /// Removes finished and cancelled rows from the batch (swap-remove, highest index first).
    fn retire(&mut self) {
        for r in (0..self.rows.len()).rev() {
            if self.rows[r].finished.is_some() || self.rows[r].cancelled {
                self.replan();
                if self.batch.leave(r).is_err() {
                    self.batch.clear();
                }
                self.rows.swap_remove(r);
            }
        }
        if self.rows.is_empty() {
            self.batch.clear();
        }
        self.stats.rows.store(self.rows.len(), Ordering::SeqCst);
    }

    fn fail_all(&mut self, message: &str) {
        for row in &mut self.rows {
            let _ = row.events.send(Event::Error(message.to_owned()));
            row.cancelled = true;
        }
    }
}

/// The network and adapter switch for a forward: the adapted view under λ, or the base.
fn model_for<'a>(served: &'a ServedModel, pref: Option<&'a Tensor>) -> (&'a Llama, Adapter<'a>) {
    match (&served.adapter, pref) {
        (Some(a), Some(p)) => (&a.model, Adapter::On { pref: p }),
        _ => (&served.base.model, Adapter::Off),
    }
}

/// The adapter merged into the base at λ `pref`: a model whose projections hold W0 + ΔW(λ)
/// (summed in f32 and rounded once to W0's dtype, as `SvdLoraLinear::merge` does) in buffers of
/// its own, fused like the base's, so a forward under `Adapter::Off` runs the base's code on
/// the same shapes. The embedding, norms and head are shared with the base. Memory: one copy of
/// the projection weights.
pub fn merged_model(base: &Llama, adapted: &Llama, pref: &[f64]) -> Llama {
    let device = base.device();
    let pref = Tensor::from_slice(pref).to_kind(Kind::Float).to_device(device); // [K]
    let mut model = base.with_adapter(None);
    tch::no_grad(|| {
        for (dst, src) in model.linears_mut().zip(adapted.linears()) {
            // Fresh tensors throughout: fusing re-points its members' storage, which must never
            // reach the base's (shared) tensors.
            let weight = match &src.lora {
                Some(lora) => {
                    let delta = lora.delta_weight(&pref); // [d_out, d_in], f32
                    (src.weight.to_kind(Kind::Float) + delta).to_kind(src.weight.kind())
                }
                None => src.weight.copy(),
            };
            dst.weight = weight.contiguous();
            dst.bias = src.bias.as_ref().map(Tensor::copy);
        }
    });
    model.fuse_projections();
    model
}

/// The largest char boundary ≤ i.
fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// λ rows as an f32 tensor [B, K] on `device`.
fn pref_tensor(rows: &[&[f64]], device: Device) -> Tensor {
    let k = rows.first().map_or(0, |r| r.len()) as i64;
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, k]).to_kind(Kind::Float).to_device(device)
}

/// Each row's next token from logits [B, V]: one argmax when every row is greedy, else row by
/// row with the row's own sampling settings and RNG (exactly `generate`'s choice).
fn choose(logits: &Tensor, rows: &mut [&mut Row]) -> Result<Vec<i64>, ServeError> {
    if rows.iter().all(|r| r.sampling == Sampling::Greedy) {
        let ids = logits.argmax(-1, false).to_device(Device::Cpu); // [B]
        return Ok(Vec::<i64>::try_from(&ids).map_err(panacea_lm::LmError::from)?);
    }
    let mut out = Vec::with_capacity(rows.len());
    for (r, row) in rows.iter_mut().enumerate() {
        let (id, _) =
            panacea_lm::choose_tokens(&logits.narrow(0, r as i64, 1), row.sampling, &mut row.rng);
        let id: Vec<i64> =
            Vec::try_from(&id.to_device(Device::Cpu)).map_err(panacea_lm::LmError::from)?;
        out.extend(id);
    }
    Ok(out)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a libtorch call panicked".into())
}
