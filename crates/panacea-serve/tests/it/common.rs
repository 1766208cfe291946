//! Shared helpers: the tiny random model with a random two-objective adapter, a running
//! server on a free port, and a small HTTP/1.1 client (std only) for requests and SSE.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use panacea_core::adapter::SvdLoraConfig;
use panacea_serve::{Limits, RunningServer, ServeOptions, ServedAdapter, ServedModel};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// The objective names of the test adapter.
pub(crate) fn objectives() -> Vec<String> {
    vec!["helpful".to_owned(), "harmless".to_owned()]
}

/// libtorch start-up for tests (one intra-op thread: the harness runs tests in parallel on a
/// 2-core machine).
pub(crate) fn setup() {
    panacea_core::device::init_torch();
    tch::set_num_threads(1);
}

/// Fills every adapter variable from a seeded stream: U, V ~ N(0, 0.02²)-like uniforms, σ and
/// the preference scale s away from 0, so that λ changes the answers (a fresh adapter has
/// σ = s = 0 and equals the base for every λ).
pub(crate) fn randomise_adapter(vs: &tch::nn::VarStore, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    tch::no_grad(|| {
        for name in names {
            let v = &vars[name];
            let n = v.numel();
            let (lo, hi) =
                if name.ends_with("svd_lora_pref_scale") || name.ends_with("svd_lora_sigma") {
                    (0.5, 1.5)
                } else {
                    (-0.035, 0.035)
                };
            let values: Vec<f32> = (0..n).map(|_| rng.gen_range(lo..hi) as f32).collect();
            let t = Tensor::from_slice(&values).view(v.size().as_slice()).to_kind(v.kind());
            v.shallow_clone().copy_(&t);
        }
    });
}

/// The tiny random base (SmolLM2 tokenizer) with, when `adapter`, a random adapter over the
/// objectives helpful and harmless. `None` (with a printed reason) when the tokenizer is not
/// in the model cache.
pub(crate) fn tiny_served(adapter: bool) -> Option<ServedModel> {
    setup();
    let base = match panacea_lm::tiny_random_model(Device::Cpu, 0, Kind::Float) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("SKIPPED: {e} (`cargo xtask test` fetches it)");
            return None;
        }
    };
    let adapter = adapter.then(|| {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let model = base.model.with_adapter(Some((&vs.root(), &SvdLoraConfig::new(2))));
        randomise_adapter(&vs, 7);
        ServedAdapter { model, vs, objectives: objectives() }
    });
    Some(ServedModel { base, adapter, name: "tiny-random+test-adapter".into() })
}

/// Options with small limits for tests.
pub(crate) fn options(max_batch: usize, queue_len: usize) -> ServeOptions {
    ServeOptions {
        limits: Limits { max_batch, queue_len, max_prompt_tokens: 96, max_output_tokens: 64 },
        default_preference: None,
        default_max_tokens: 16,
        max_body_bytes: 16 * 1024,
        threads: 1,
        front: None,
    }
}

/// A server on a free local port.
pub(crate) fn start(served: ServedModel, opts: ServeOptions) -> RunningServer {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("address");
    RunningServer::start(addr, served, opts).expect("server starts")
}

/// A response: status, headers (lower-case names) and the body (chunked encoding removed).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `data:` payloads of an SSE body.
    pub(crate) fn sse_data(&self) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.trim().to_owned())
            .collect()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one request (`Connection: close`) and reads the whole reply.
pub(crate) fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read reply");
    parse_reply(&raw)
}

/// Sends one request and reads only the status line and headers, leaving the connection open
/// (for a stream: its answer keeps coming until the connection is dropped, which cancels it).
pub(crate) fn open(addr: SocketAddr, path: &str, body: &serde_json::Value) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).expect("timeout");
    let body = body.to_string();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body.as_bytes()).expect("write body");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("read the reply's head");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    (status, s)
}

pub(crate) fn post(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Reply {
    request(addr, "POST", path, body.to_string().as_bytes())
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, b"")
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply { status, headers, body: String::from_utf8(body).expect("UTF-8 body") }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .expect("chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    out
}

/// A greedy chat request for `prompt` at λ = `pref`.
pub(crate) fn chat_body(
    prompt: &str,
    pref: Option<[f64; 2]>,
    max_tokens: usize,
) -> serde_json::Value {
    let mut v = serde_json::json!({
        "model": "test",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
    });
    if let Some(p) = pref {
        v["preference"] = serde_json::json!(p);
    }
    v
}

/// The assistant text of a chat completion.
pub(crate) fn answer(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["choices"][0]["message"]["content"].as_str().expect("content").to_owned()
}

/// Polls `/health` until `ok` holds (at most 60 s).
pub(crate) fn wait_until(addr: SocketAddr, ok: impl Fn(&serde_json::Value) -> bool) {
    let start = std::time::Instant::now();
    loop {
        let h = get(addr, "/health").json();
        if ok(&h) {
            return;
        }
        assert!(start.elapsed().as_secs() < 60, "server state never reached: {h}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
