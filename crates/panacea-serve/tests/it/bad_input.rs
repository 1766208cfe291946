//! Every malformed or oversized request gets its status and a JSON error naming the field,
//! and the server goes on serving (no panic, no stuck row).

use std::io::Read;

use serde_json::json;

use crate::common;

/// What is wrong, the request body, the expected status, the expected `param`, and text the
/// message must contain.
type Case = (&'static str, Vec<u8>, u16, Option<&'static str>, &'static str);

fn cases() -> Vec<Case> {
    let chat = |extra: serde_json::Value| {
        let mut v = common::chat_body("Hi", None, 4);
        for (k, val) in extra.as_object().expect("object") {
            v[k] = val.clone();
        }
        v.to_string().into_bytes()
    };
    vec![
        (
            "λ of the wrong length",
            chat(json!({"preference": [0.5, 0.3, 0.2]})),
            400,
            Some("preference"),
            "has 3 weights but the adapter has 2 objectives",
        ),
        (
            "negative weight",
            chat(json!({"preference": [-0.5, 1.5]})),
            400,
            Some("preference[0]"),
            "must be ≥ 0",
        ),
        (
            "NaN weight",
            br#"{"messages":[{"role":"user","content":"Hi"}],"preference":[NaN,0.5]}"#.to_vec(),
            400,
            Some("preference"),
            "NaN and Infinity are not JSON numbers",
        ),
        (
            "unknown objective",
            chat(json!({"preference": {"helpfull": 1.0}})),
            400,
            Some("preference.helpfull"),
            "not an objective of this adapter (objectives: helpful, harmless)",
        ),
        (
            "weight not a number",
            chat(json!({"preference": ["a lot", 1]})),
            400,
            Some("preference[0]"),
            "not a number",
        ),
        (
            "λ neither list nor object",
            chat(json!({"preference": "helpful"})),
            400,
            Some("preference"),
            "give a list of weights",
        ),
        (
            "weights summing to 0",
            chat(json!({"preference": [0, 0]})),
            400,
            Some("preference"),
            "sum to 0",
        ),
        (
            "temperature not a number",
            chat(json!({"temperature": "hot"})),
            400,
            Some("temperature"),
            "not a number",
        ),
        (
            "temperature out of range",
            chat(json!({"temperature": 3.5})),
            400,
            Some("temperature"),
            "must be in [0, 2]",
        ),
        ("top_p out of range", chat(json!({"top_p": 0})), 400, Some("top_p"), "must be in (0, 1]"),
        (
            "no messages",
            json!({"model": "m"}).to_string().into_bytes(),
            400,
            Some("messages"),
            "`messages` is missing",
        ),
        (
            "unknown role",
            json!({"messages": [{"role": "wizard", "content": "Hi"}]}).to_string().into_bytes(),
            400,
            Some("messages[0].role"),
            "use system, user or assistant",
        ),
        ("stop not text", chat(json!({"stop": [1]})), 400, Some("stop[0]"), "not a string"),
        ("not JSON", b"{\"messages\": [".to_vec(), 400, Some("messages"), "not valid JSON"),
        (
            "max_tokens over the limit",
            chat(json!({"max_tokens": 100000})),
            413,
            Some("max_tokens"),
            "exceeds this server's limit of 64",
        ),
        (
            "prompt over the limit",
            common::chat_body(&"word ".repeat(200), None, 4).to_string().into_bytes(),
            413,
            Some("messages"),
            "this server takes at most 96",
        ),
        (
            "n over the batch",
            chat(json!({"n": 33})),
            413,
            Some("n"),
            "exceed this server's batch of 32 rows",
        ),
        (
            "body over the limit",
            chat(json!({"padding": "x".repeat(20_000)})),
            413,
            None,
            "this server takes at most 16384 bytes",
        ),
    ]
}

#[test]
fn each_malformed_request_gets_its_status_and_field_and_the_server_keeps_serving() {
    let Some(served) = common::tiny_served(true) else { return };
    let server = common::start(served, common::options(32, 64));
    let good = common::chat_body("What is the capital of France?", Some([0.3, 0.7]), 6);
    let before = common::answer(&common::post(server.addr, "/v1/chat/completions", &good));
    for (what, body, status, param, message) in cases() {
        let r = common::request(server.addr, "POST", "/v1/chat/completions", &body);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        let err = &r.json()["error"];
        assert_eq!(err["param"].as_str(), param, "{what}: {}", r.body);
        let text = err["message"].as_str().expect("message");
        assert!(text.contains(message), "{what}: message {text:?} lacks {message:?}");
        assert_eq!(err["code"], json!(status), "{what}");
    }
    // Not a route, and the base-model server refuses λ.
    let r = common::get(server.addr, "/v2/nothing");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"]
        .as_str()
        .expect("message")
        .contains("/v1/chat/completions"));
    // The same request still gets the same answer: nothing was left stuck or changed.
    let after = common::answer(&common::post(server.addr, "/v1/chat/completions", &good));
    assert_eq!(after, before);
    // The answer is sent before its row leaves the batch, so give the engine a moment.
    common::wait_until(server.addr, |h| h["rows_in_flight"] == json!(0) && h["queued"] == json!(0));
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_full_queue_answers_429_and_the_base_model_refuses_a_preference() {
    let Some(served) = common::tiny_served(false) else { return };
    // Room for long answers, so the first request is still decoding while the others arrive.
    let mut opts = common::options(1, 1);
    opts.limits.max_output_tokens = 8000;
    let server = common::start(served, opts);
    let addr = server.addr;
    let with_pref = common::chat_body("Hi", Some([0.5, 0.5]), 4);
    let r = common::post(addr, "/v1/chat/completions", &with_pref);
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["param"], json!("preference"));
    assert!(r.body.contains("without an adapter"), "{}", r.body);

    // One streamed request holds the only row (it could decode for thousands of steps); seven
    // more arrive one after the other with a queue of 1. Exactly one waits and six are refused,
    // whatever the engine has done with the waiting one meanwhile. Dropping the connections
    // cancels both jobs, and nothing stays stuck.
    let long = || {
        let mut b = common::chat_body("Count to one hundred.", None, 8000);
        b["stop"] = json!(["this text never appears \u{1F600}"]);
        b["stream"] = json!(true);
        b
    };
    let (status, holder) = common::open(addr, "/v1/chat/completions", &long());
    assert_eq!(status, 200);
    common::wait_until(addr, |h| h["rows_in_flight"] == json!(1) && h["queued"] == json!(0));
    let mut waiting = Vec::new();
    let mut refused = Vec::new();
    for i in 0..7 {
        // Streamed, so an admitted request answers its head at once.
        let (status, mut conn) = common::open(addr, "/v1/chat/completions", &long());
        if status == 429 {
            let mut rest = String::new();
            conn.read_to_string(&mut rest).expect("the refusal's body");
            refused.push(rest);
        } else {
            assert_eq!(status, 200, "request {i}");
            waiting.push(conn);
        }
    }
    // The holder is still decoding, so the bound was tested with the row busy throughout.
    let h = common::get(addr, "/health").json();
    assert_eq!((h["rows_in_flight"].clone(), h["queued"].clone()), (json!(1), json!(1)), "{h}");
    assert_eq!(waiting.len(), 1, "a queue of 1 admitted {} requests", waiting.len());
    assert_eq!(refused.len(), 6);
    for body in &refused {
        assert!(body.contains("rate_limit_exceeded"), "{body}");
        assert!(body.contains("1 requests are already waiting (queue_len)"), "{body}");
    }
    drop(holder);
    drop(waiting);
    common::wait_until(addr, |h| h["rows_in_flight"] == json!(0) && h["queued"] == json!(0));
    server.shutdown().expect("clean shutdown");
}

#[test]
fn the_engine_refuses_jobs_that_could_never_run_instead_of_blocking_the_queue() {
    use panacea_serve::engine::{Engine, GenParams, SubmitError};
    let Some(served) = common::tiny_served(false) else { return };
    let limits = common::options(2, 4).limits;
    let engine = Engine::start(served, limits, 1).expect("engine");
    let params = |n: usize, max_tokens: usize| GenParams {
        max_tokens,
        sampling: panacea_lm::Sampling::Greedy,
        seed: 0,
        stop: Vec::new(),
        n,
    };
    let refused = |r: Result<_, SubmitError>| match r {
        Err(SubmitError::Invalid(m)) => m,
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("accepted"),
    };
    assert!(refused(engine.submit(vec![1, 2], None, params(3, 4))).contains("max_batch"));
    assert!(refused(engine.submit(vec![1, 2], None, params(0, 4))).contains("n = 0"));
    assert!(refused(engine.submit(Vec::new(), None, params(1, 4))).contains("max_prompt_tokens"));
    assert!(refused(engine.submit(vec![1; 97], None, params(1, 4))).contains("max_prompt_tokens"));
    assert!(refused(engine.submit(vec![1, 2], None, params(1, 65))).contains("max_output_tokens"));
    // Two rows at once still run after the refusals.
    let rx = engine.submit(vec![1, 2, 3], None, params(2, 4)).expect("queued");
    let events: Vec<_> = std::iter::from_fn({
        let mut rx = rx;
        move || rx.blocking_recv()
    })
    .collect();
    let done = events.iter().filter(|e| matches!(e, panacea_serve::Event::Done { .. })).count();
    assert_eq!(done, 2, "{events:?}");
    engine.shutdown().expect("engine stops");
}
