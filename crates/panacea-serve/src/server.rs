//! The HTTP server: OpenAI's `/v1/chat/completions`, `/v1/completions` and `/v1/models`,
//! `/health`, and the steering page at `/`, over one [`Engine`].
//!
//! With a report (`ServeOptions::front`), `/report.html` is its interactive front, which the page
//! embeds.
//!
//! Handlers only parse, check limits and relay events; the engine thread does every tensor
//! operation. A request is refused before it queues when it is malformed (400, naming the
//! field), too large (413: body, prompt tokens, `max_tokens`, `n`), or when the queue is full
//! (429). Shutdown ([`ShutdownHandle::trigger`]) stops accepting connections, lets every
//! request in flight (streams included) finish, then stops the engine.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::engine::{
    Engine, EngineInfo, EngineStats, Event, Limits, ServedModel, SubmitError, Submitter,
};
use crate::error::{ApiError, ServeError};
use crate::openai::{self, Choice, Defaults, Endpoint};

/// Server settings beyond the engine's [`Limits`].
#[derive(Clone, Debug, PartialEq)]
pub struct ServeOptions {
    /// Engine limits (batch, queue, prompt and output tokens).
    pub limits: Limits,
    /// λ for requests without `preference` (`None`: uniform). Checked against the adapter.
    pub default_preference: Option<Vec<f64>>,
    /// `max_tokens` for requests without it (capped by `limits.max_output_tokens`).
    pub default_max_tokens: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// libtorch intra-op threads of the engine thread (0: libtorch's default). Load the model
    /// on a thread with the same count: `load_model` lays the weights out for it (the CPU
    /// small-M kernel's row layout needs one thread), and a mismatch leaves the decode steps
    /// on libtorch's slower path for that layout (2× per step at batch 8, benches/README.md).
    pub threads: usize,
    /// The front of an eval-front report of the served adapter ([`crate::report`]), shown on
    /// the page and served at `/report.html`.
    pub front: Option<panacea_eval::FrontView>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            default_preference: None,
            default_max_tokens: 256,
            max_body_bytes: 1 << 20,
            threads: 0,
            front: None,
        }
    }
}

struct AppState {
    submitter: Submitter,
    info: Arc<EngineInfo>,
    stats: Arc<EngineStats>,
    defaults: Defaults,
    max_body_bytes: usize,
    seeds: AtomicU64,
    ids: AtomicU64,
    /// The front page (`/report.html`), when a report is served.
    front_html: Option<String>,
}

/// Triggers a graceful shutdown of a running server; cloneable, usable from any thread (the
/// CLI calls it from its signal handler's thread).
#[derive(Clone, Debug)]
pub struct ShutdownHandle(Arc<tokio::sync::watch::Sender<bool>>);

impl ShutdownHandle {
    /// A handle and the future that resolves once it is triggered.
    pub fn new() -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let fut = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        (Self(Arc::new(tx)), fut)
    }

    /// Stops accepting connections; requests in flight finish first.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// The router over a started engine. `default_preference` must already be checked.
fn router(engine: &Engine, opts: &ServeOptions) -> Result<Router, ServeError> {
    let info = engine.info().clone();
    let submitter = engine
        .submitter()
        .ok_or_else(|| ServeError::EngineGone("the engine has been shut down".into()))?;
    let front_html = match &opts.front {
        Some(view) => Some(
            view.html(&format!("The front of {}", info.name))
                .map_err(|e| ServeError::Invalid(format!("the report's front: {e}")))?,
        ),
        None => None,
    };
    let seed0 = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let state = Arc::new(AppState {
        submitter,
        stats: engine.stats().clone(),
        defaults: Defaults {
            preference: opts.default_preference.clone(),
            max_tokens: opts.default_max_tokens,
        },
        info,
        max_body_bytes: opts.max_body_bytes,
        seeds: AtomicU64::new(seed0),
        ids: AtomicU64::new(0),
        front_html,
    });
    Ok(Router::new()
        .route("/", get(page))
        .route("/report.html", get(front_page))
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .with_state(state))
}

/// Checks `opts.default_preference` against the served adapter's objectives.
fn check_options(served: &ServedModel, opts: &ServeOptions) -> Result<(), ServeError> {
    if let Some(p) = &opts.default_preference {
        if served.adapter.is_none() {
            return Err(ServeError::Invalid(
                "a default preference was given but no adapter is served; pass --adapter DIR"
                    .into(),
            ));
        }
        crate::preference::normalise("--pref", p.clone(), served.objectives())?;
    }
    if let Some(view) = &opts.front {
        crate::report::check_objectives(view, served.objectives())?;
    }
    Ok(())
}

/// Serves `served` on `listener` until `shutdown` resolves, then drains the requests in flight
/// and stops the engine. Runs on the caller's tokio runtime; the engine gets its own thread.
pub async fn serve(
    listener: tokio::net::TcpListener,
    served: ServedModel,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    check_options(&served, &opts)?;
    let engine = Engine::start(served, opts.limits, opts.threads)?;
    let app = router(&engine, &opts)?;
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    // Every connection has closed, so no job is left waiting; the engine exits on its own.
    let stopped = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    served.map_err(|e| ServeError::io("serving HTTP", e))?;
    stopped.map_err(|e| ServeError::EngineGone(e.to_string()))?
}

/// A server running on its own thread (with its own single-threaded runtime).
#[derive(Debug)]
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// Binds `addr` (port 0: any free port), starts the engine and serves on a new thread.
    pub fn start(
        addr: SocketAddr,
        served: ServedModel,
        opts: ServeOptions,
    ) -> Result<Self, ServeError> {
        check_options(&served, &opts)?;
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| ServeError::io(format!("binding {addr}"), e))?;
        listener.set_nonblocking(true).map_err(|e| ServeError::io("setting up the socket", e))?;
        let addr = listener.local_addr().map_err(|e| ServeError::io("reading the address", e))?;
        let (handle, shutdown) = ShutdownHandle::new();
        let thread = std::thread::Builder::new()
            .name("panacea-http".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| ServeError::io("starting the async runtime", e))?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| ServeError::io("registering the socket", e))?;
                    serve(listener, served, opts, shutdown).await
                })
            })
            .map_err(|e| ServeError::io("starting the server thread", e))?;
        Ok(Self { addr, handle, thread: Some(thread) })
    }

    /// A handle that triggers the graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Waits until the server has stopped (after a trigger), returning how it ended.
    pub fn wait(mut self) -> Result<(), ServeError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ServeError::EngineGone("the server thread panicked".into())),
            None => Ok(()),
        }
    }

    /// Triggers the graceful shutdown and waits for it.
    pub fn shutdown(self) -> Result<(), ServeError> {
        self.handle.trigger();
        self.wait()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn page() -> Html<&'static str> {
    Html(crate::page::PAGE)
}

async fn front_page(State(s): State<Arc<AppState>>) -> Response {
    match &s.front_html {
        Some(html) => Html(html.clone()).into_response(),
        None => ApiError::not_found(
            "this server shows no front; start it with --report DIR (an eval-front report)",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "no such route; this server has GET /, /health, /v1/models and POST \
         /v1/chat/completions, /v1/completions",
    )
}

async fn health(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": s.info.name,
        "rows_in_flight": s.stats.rows.load(Ordering::SeqCst),
        "queued": s.stats.queued.load(Ordering::SeqCst),
        "decode_steps": s.stats.steps.load(Ordering::Relaxed),
        "limits": {
            "max_batch": s.info.limits.max_batch,
            "queue_len": s.info.limits.queue_len,
            "max_prompt_tokens": s.info.limits.max_prompt_tokens,
            "max_output_tokens": s.info.limits.max_output_tokens,
            "max_body_bytes": s.max_body_bytes,
        },
    }))
}

async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    let k = s.info.objectives.len();
    let pref =
        (k > 0).then(|| s.defaults.preference.clone().unwrap_or_else(|| vec![1.0 / k as f64; k]));
    Json(json!({
        "object": "list",
        "data": [{
            "id": s.info.name,
            "object": "model",
            "created": 0,
            "owned_by": "panacea",
            "objectives": s.info.objectives,
            "preference": pref,
        }],
    }))
}

async fn chat(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Chat, s, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    handle(Endpoint::Completion, s, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn read_body(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let limit = s.max_body_bytes;
    let too_large = |size: String| {
        ApiError::too_large(
            None,
            format!("the request body is {size}; this server takes at most {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        return Err(too_large(format!("{n} bytes")));
    }
    axum::body::to_bytes(body, limit)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| too_large(format!("over {limit} bytes (or was cut off)")))
}

async fn handle(
    endpoint: Endpoint,
    s: Arc<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&s, &headers, body).await?;
    let seeds = &s.seeds;
    let req = openai::parse(endpoint, &bytes, &s.info, &s.defaults, || {
        seeds.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
    })?;
    let prompt_tokens = req.prompt.len();
    let n = req.params.n;
    let pref_json = req.pref.as_ref().map(|p| crate::preference::to_json(p, &s.info.objectives));
    let events = s.submitter.submit(req.prompt, req.pref, req.params).map_err(|e| match e {
        SubmitError::QueueFull(q) => ApiError::busy(format!(
            "the server is busy: {q} requests are already waiting (queue_len); retry shortly"
        )),
        SubmitError::Gone => ApiError::unavailable("the server is shutting down"),
        // `parse` already checked every limit; kept as a 413 should the two ever disagree.
        SubmitError::Invalid(m) => ApiError::too_large(None, m),
    })?;
    let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let id = format!("{prefix}-{:x}", s.ids.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let model = s.info.name.clone();
    if req.stream {
        let stream = sse_stream(endpoint, id, created, model, n, events);
        return Ok(Sse::new(stream).into_response());
    }
    let choices = collect(events, n).await?;
    let v = openai::response(endpoint, &id, created, &model, &choices, prompt_tokens, pref_json);
    Ok((StatusCode::OK, Json(v)).into_response())
}

/// Gathers every choice of a non-streamed request.
async fn collect(mut events: UnboundedReceiver<Event>, n: usize) -> Result<Vec<Choice>, ApiError> {
    let mut texts = vec![String::new(); n];
    let mut done: Vec<Option<Choice>> = (0..n).map(|_| None).collect();
    let mut remaining = n;
    while remaining > 0 {
        match events.recv().await {
            Some(Event::Text { index, text, .. }) => texts[index].push_str(&text),
            Some(Event::Done { index, finish, completion_tokens }) => {
                let text = std::mem::take(&mut texts[index]);
                done[index] = Some(Choice { text, finish, completion_tokens });
                remaining -= 1;
            }
            Some(Event::Error(message)) => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message,
                    param: None,
                })
            }
            None => return Err(ApiError::unavailable("the engine stopped before answering")),
        }
    }
    Ok(done.into_iter().flatten().collect())
}

/// The SSE stream of a request: a role chunk per choice (chat), text chunks, a finish chunk per
/// choice, then `[DONE]`.
fn sse_stream(
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    n: usize,
    events: UnboundedReceiver<Event>,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    struct St {
        events: UnboundedReceiver<Event>,
        pending: std::collections::VecDeque<String>,
        remaining: usize,
        finished: bool,
    }
    let mut pending = std::collections::VecDeque::new();
    if endpoint == Endpoint::Chat {
        for i in 0..n {
            pending.push_back(
                openai::chunk(endpoint, &id, created, &model, i, None, None).to_string(),
            );
        }
    }
    let st = St { events, pending, remaining: n, finished: false };
    stream::unfold(st, move |mut st| {
        let (id, model) = (id.clone(), model.clone());
        async move {
            loop {
                if let Some(data) = st.pending.pop_front() {
                    return Some((Ok(SseEvent::default().data(data)), st));
                }
                if st.finished {
                    return None;
                }
                if st.remaining == 0 {
                    st.finished = true;
                    st.pending.push_back("[DONE]".into());
                    continue;
                }
                let chunk = match st.events.recv().await {
                    Some(Event::Text { index, text, .. }) if !text.is_empty() => {
                        openai::chunk(endpoint, &id, created, &model, index, Some(&text), None)
                    }
                    Some(Event::Text { .. }) => continue,
                    Some(Event::Done { index, finish, .. }) => {
                        st.remaining -= 1;
                        openai::chunk(endpoint, &id, created, &model, index, None, Some(finish))
                    }
                    Some(Event::Error(message)) => {
                        st.remaining = 0;
                        json!({"error": {"message": message, "type": "server_error", "param": null, "code": 500}})
                    }
                    None => {
                        st.remaining = 0;
                        json!({"error": {"message": "the engine stopped", "type": "server_error", "param": null, "code": 503}})
                    }
                };
                st.pending.push_back(chunk.to_string());
            }
        }
    })
}
