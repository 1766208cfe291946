//! The OpenAI protocol: plain and streamed chat and completions, stop texts, seeds and `n`,
//! `/v1/models`, the page and a report's front, graceful shutdown, and the real `openai` Python client.

use serde_json::json;

use crate::common;

/// The text of a streamed chat (delta contents joined), its finish reason, and whether it
/// ended with `[DONE]`.
fn streamed_chat(reply: &common::Reply) -> (String, Option<String>, bool) {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let data = reply.sse_data();
    let done = data.last().map(String::as_str) == Some("[DONE]");
    let chunks: Vec<serde_json::Value> = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], json!("assistant"));
    assert!(chunks.iter().all(|c| c["object"] == json!("chat.completion.chunk")));
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    let finish =
        chunks.iter().find_map(|c| c["choices"][0]["finish_reason"].as_str()).map(str::to_owned);
    (text, finish, done)
}

#[test]
fn streamed_and_plain_answers_agree_and_preferences_by_name_equal_lists() {
    let Some(served) = common::tiny_served(true) else { return };
    let server = common::start(served, common::options(8, 16));
    let addr = server.addr;
    let plain = common::post(
        addr,
        "/v1/chat/completions",
        &common::chat_body("Tell me a joke.", Some([0.3, 0.7]), 12),
    );
    let v = plain.json();
    let text = common::answer(&plain);
    assert_eq!(v["object"], json!("chat.completion"));
    assert_eq!(v["preference"], json!({"helpful": 0.3, "harmless": 0.7}));
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"],
        json!(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );
    assert!(usage["completion_tokens"].as_u64().unwrap_or(0) <= 12);

    let mut body = common::chat_body("Tell me a joke.", None, 12);
    body["stream"] = json!(true);
    body["preference"] = json!({"harmless": 7, "helpful": 3}); // by name, not normalised
    let (streamed, finish, done) =
        streamed_chat(&common::post(addr, "/v1/chat/completions", &body));
    assert_eq!(streamed, text);
    assert_eq!(finish.as_deref(), v["choices"][0]["finish_reason"].as_str());
    assert!(done, "the stream ends with [DONE]");

    // Another λ is another answer (the random adapter is strong).
    let other = common::answer(&common::post(
        addr,
        "/v1/chat/completions",
        &common::chat_body("Tell me a joke.", Some([1.0, 0.0]), 12),
    ));
    let third = common::answer(&common::post(
        addr,
        "/v1/chat/completions",
        &common::chat_body("Tell me a joke.", Some([0.0, 1.0]), 12),
    ));
    assert!(other != text || third != text, "λ changed nothing");

    // Completions: raw prompt, plain and streamed.
    let comp =
        json!({"model": "m", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0});
    let c = common::post(addr, "/v1/completions", &comp).json();
    assert_eq!(c["object"], json!("text_completion"));
    let ctext = c["choices"][0]["text"].as_str().expect("text").to_owned();
    let mut scomp = comp.clone();
    scomp["stream"] = json!(true);
    let r = common::post(addr, "/v1/completions", &scomp);
    let joined: String = r
        .sse_data()
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(joined, ctext);

    // Models and the page.
    let m = common::get(addr, "/v1/models").json();
    assert_eq!(m["data"][0]["objectives"], json!(["helpful", "harmless"]));
    assert_eq!(m["data"][0]["preference"], json!([0.5, 0.5]));
    let page = common::get(addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("preference") && page.body.contains("/v1/chat/completions"));
    assert!(
        !page.body.contains("<script src") && !page.body.contains("https://"),
        "the page is self-contained"
    );
    server.shutdown().expect("clean shutdown");
}

#[test]
fn a_stop_text_ends_the_answer_before_it_and_seeded_sampling_repeats() {
    let Some(served) = common::tiny_served(true) else { return };
    let server = common::start(served, common::options(8, 16));
    let addr = server.addr;
    let full = common::answer(&common::post(
        addr,
        "/v1/chat/completions",
        &common::chat_body("Write a haiku about the sea.", Some([0.5, 0.5]), 24),
    ));
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() > 12, "answer long enough to cut: {full:?}");
    let stop: String = chars[8..11].iter().collect();
    let cut = full.find(&stop).expect("stop text is in the answer");
    for stream in [false, true] {
        let mut body = common::chat_body("Write a haiku about the sea.", Some([0.5, 0.5]), 24);
        body["stop"] = json!([stop, "never appears"]);
        body["stream"] = json!(stream);
        let r = common::post(addr, "/v1/chat/completions", &body);
        let (text, finish) = if stream {
            let (t, f, _) = streamed_chat(&r);
            (t, f)
        } else {
            let v = r.json();
            (common::answer(&r), v["choices"][0]["finish_reason"].as_str().map(str::to_owned))
        };
        assert_eq!(text, full[..cut], "stream = {stream}");
        assert_eq!(finish.as_deref(), Some("stop"));
    }

    let sampled = json!({
        "messages": [{"role": "user", "content": "Tell me a joke."}],
        "temperature": 1.0, "top_p": 0.9, "seed": 5, "n": 3, "max_tokens": 10,
        "preference": [0.6, 0.4],
    });
    let texts = |v: &serde_json::Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .expect("choices")
            .iter()
            .map(|c| c["message"]["content"].as_str().expect("text").to_owned())
            .collect()
    };
    let a = common::post(addr, "/v1/chat/completions", &sampled).json();
    let b = common::post(addr, "/v1/chat/completions", &sampled).json();
    assert_eq!(texts(&a).len(), 3);
    assert_eq!(texts(&a), texts(&b), "the same seed gives the same choices");
    let indices: Vec<u64> = a["choices"]
        .as_array()
        .expect("choices")
        .iter()
        .filter_map(|c| c["index"].as_u64())
        .collect();
    assert_eq!(indices, vec![0, 1, 2]);
    let distinct: std::collections::BTreeSet<String> = texts(&a).into_iter().collect();
    assert!(distinct.len() > 1, "three samples were all {:?}", texts(&a));
    server.shutdown().expect("clean shutdown");
}

#[test]
fn shutdown_lets_a_stream_in_flight_finish_then_refuses_connections() {
    let Some(served) = common::tiny_served(true) else { return };
    let mut opts = common::options(8, 16);
    opts.limits.max_output_tokens = 400;
    let server = common::start(served, opts);
    let addr = server.addr;
    let mut body = common::chat_body("Count to one hundred.", Some([0.5, 0.5]), 400);
    body["stream"] = json!(true);
    body["stop"] = json!(["never appears \u{1F600}"]);
    let reference = {
        let mut b = body.clone();
        b["stream"] = json!(false);
        common::post(addr, "/v1/chat/completions", &b).json()
    };
    let expected = reference["choices"][0]["message"]["content"].as_str().expect("text").to_owned();
    let handle = server.shutdown_handle();
    // The reference's row leaves just after its answer is sent: wait, so that "one row in
    // flight" below means the streamed request.
    common::wait_until(addr, |h| h["rows_in_flight"] == json!(0));
    let reply = std::thread::scope(|s| {
        let client = s.spawn(move || common::post(addr, "/v1/chat/completions", &body));
        let start = std::time::Instant::now();
        while common::get(addr, "/health").json()["rows_in_flight"] != json!(1) {
            assert!(start.elapsed().as_secs() < 60, "the request never started");
        }
        handle.trigger();
        client.join().expect("client")
    });
    let (text, _, done) = streamed_chat(&reply);
    assert!(done, "the stream was drained to [DONE]");
    assert_eq!(text, expected, "the drained stream is the whole answer");
    server.wait().expect("clean shutdown");
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer listening");
}

/// A Python that can `import openai`: `$PANACEA_PYTHON`, the test tools' venv in the project
/// cache (which `cargo xtask setup` and `cargo xtask test` fill), or `python3`.
fn python_with_openai() -> Result<std::path::PathBuf, String> {
    let mut candidates: Vec<std::path::PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("PANACEA_PYTHON") {
        candidates.push(p.into());
    }
    if let Some(root) = panacea_lm::load::cache_root() {
        candidates.push(root.join("python-tools/bin/python"));
    }
    candidates.push("python3".into());
    for c in &candidates {
        let ok = std::process::Command::new(c)
            .args(["-c", "import openai"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "no Python with the `openai` package among {candidates:?}; `cargo xtask setup` installs it"
    ))
}

#[test]
fn the_openai_python_client_chats_plain_and_streamed_with_a_preference() {
    let python = match python_with_openai() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let Some(served) = common::tiny_served(true) else { return };
    let server = common::start(served, common::options(8, 16));
    let addr = server.addr;
    let expected = common::answer(&common::post(
        addr,
        "/v1/chat/completions",
        &common::chat_body("What is the capital of France?", Some([0.3, 0.7]), 12),
    ));
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/openai_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{addr}/v1"))
        .output()
        .expect("runs python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed: {stderr}", script.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");
    assert_eq!(v["plain"], json!(expected));
    assert_eq!(v["streamed"], json!(expected));
    assert_eq!(v["models"], json!(["tiny-random+test-adapter"]));
    assert_eq!(v["bad_status"], json!(400));
    assert!(v["bad_message"].as_str().unwrap_or("").contains("preference.helpfull"), "{v}");
    server.shutdown().expect("clean shutdown");
}

/// An eval-front view over helpful and harmless: the base, a 3-point Panacea grid with one
/// sample answer per point (one holding `</script>`), and a baseline.
fn front_view() -> panacea_eval::FrontView {
    use panacea_eval::{FrontView, SampleAnswer, ViewMethod, ViewPoint};
    let point = |pref: Option<[f64; 2]>, value: [f64; 2], answer: &str| ViewPoint {
        pref: pref.map(|p| p.to_vec()),
        value: value.to_vec(),
        sample: Some(SampleAnswer { prompt: "Hi".into(), answer: answer.into() }),
    };
    FrontView {
        objectives: common::objectives(),
        methods: vec![
            ViewMethod {
                name: "base".into(),
                baseline: false,
                points: vec![point(None, [0.2, 0.2], "base answer")],
            },
            ViewMethod {
                name: "panacea".into(),
                baseline: false,
                points: vec![
                    point(Some([0.0, 1.0]), [0.1, 0.9], "harmless answer </script> <b>"),
                    point(Some([0.5, 0.5]), [0.5, 0.5], "balanced answer"),
                    point(Some([1.0, 0.0]), [0.9, 0.1], "helpful answer"),
                ],
            },
            ViewMethod {
                name: "soup".into(),
                baseline: true,
                points: vec![
                    point(Some([0.0, 1.0]), [0.1, 0.7], "s0"),
                    point(Some([1.0, 0.0]), [0.7, 0.1], "s1"),
                ],
            },
        ],
    }
}

#[test]
fn the_front_of_a_report_is_read_checked_and_served() {
    let dir = std::env::temp_dir().join(format!("panacea-front-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let report = dir.join("report.json");
    // An older report: no front view.
    std::fs::write(&report, json!({"tool": "panacea eval-front"}).to_string()).expect("write");
    let err = panacea_serve::report::load_front_view(&dir).expect_err("no front_view").to_string();
    assert!(err.contains("report.json: no `front_view` field"), "{err}");
    assert!(err.contains("run eval-front again"), "{err}");
    // A value with the wrong number of objectives.
    let mut bad = serde_json::to_value(front_view()).expect("json");
    bad["methods"][1]["points"][2]["value"] = json!([0.9]);
    std::fs::write(&report, json!({"front_view": bad}).to_string()).expect("write");
    let err = panacea_serve::report::load_front_view(&dir).expect_err("ragged").to_string();
    assert!(
        err.contains("method \"panacea\" point 2: value has 1 entries but there are 2"),
        "{err}"
    );
    std::fs::write(&report, json!({"tool": "x", "front_view": front_view()}).to_string())
        .expect("write");
    let view = panacea_serve::report::load_front_view(&dir).expect("the view reads back");
    assert_eq!(view, front_view());
    let _ = std::fs::remove_dir_all(&dir);

    // The base model cannot show an adapter's front.
    let Some(base) = common::tiny_served(false) else { return };
    let mut opts = common::options(4, 4);
    opts.front = Some(view.clone());
    let err = panacea_serve::RunningServer::start("127.0.0.1:0".parse().expect("addr"), base, opts)
        .expect_err("objectives differ")
        .to_string();
    assert!(err.contains("(helpful, harmless) are not the served adapter's (none"), "{err}");

    let Some(served) = common::tiny_served(true) else { return };
    let server = common::start(served, common::options(4, 4));
    let r = common::get(server.addr, "/report.html");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().expect("message").contains("--report DIR"));
    server.shutdown().expect("clean shutdown");

    let Some(served) = common::tiny_served(true) else { return };
    let mut opts = common::options(4, 4);
    opts.front = Some(view);
    let server = common::start(served, opts);
    let r = common::get(server.addr, "/report.html");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    // The embedded view parses back to the same points; `<` is escaped inside the script.
    let json = r.body.split("const VIEW = ").nth(1).and_then(|t| t.split(";\n").next());
    let embedded: panacea_eval::FrontView =
        serde_json::from_str(json.expect("embedded view")).expect("the embedded view parses");
    assert_eq!(embedded, front_view());
    assert!(!r.body.contains("answer </script>"), "a sample answer ended the script");
    assert!(r.body.contains("<title>The front of tiny-random+test-adapter</title>"));
    server.shutdown().expect("clean shutdown");
}

#[test]
fn the_page_sends_the_slider_preference_in_headless_chromium() {
    let Some(served) = common::tiny_served(true) else { return };
    // With a report's front: the page embeds it and marks the grid λ nearest the slider's.
    let mut opts = common::options(8, 16);
    opts.front = Some(front_view());
    let server = common::start(served, opts);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/page_check.sh");
    let out_dir = std::env::temp_dir().join(format!("panacea-page-{}", std::process::id()));
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(format!("http://{}", server.addr))
        .arg(&out_dir)
        .arg("3")
        .output()
        .expect("runs bash");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) {
        eprintln!("SKIPPED: {}", stderr.trim());
        return;
    }
    assert!(out.status.success(), "{} failed: {stderr}", script.display());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // λ = (0.3, 0.7) is nearest (0.5, 0.5) in L1 (0.4 against 0.6 for (0, 1)).
    assert!(stdout.contains("nearest grid λ: helpful=0.50, harmless=0.50"), "{stdout}");
    assert!(stdout.contains("front ok: 3 grid points"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out_dir);
    server.shutdown().expect("clean shutdown");
}
