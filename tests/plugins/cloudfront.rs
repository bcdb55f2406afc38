//! cloudfront_functions through the host (tests/plugins.rs has the harness): the seed's rick.js
//! unchanged, a script that rewrites the request or answers it, one that throws (fail open) and
//! one that does not parse (refused at start).

#[allow(unused_imports)]
use super::*;

/// The seed article's cloudfront_functions/rick.js, verbatim.
const RICK_JS: &str = include_str!("../../wasm-plugins/cloudfront_functions/rick.js");

const VIDEO: &str = "https://www.youtube.com/watch?v=dQw4w9WgXcQ";

/// A script that rewrites what it gets, answers /deny itself, throws on /throw and returns a
/// number on /number (given as JSON, with the function's name).
const REWRITE_JS: &str = r#"
const seen = [];
function rewrite(event) {
    const r = event.request;
    if (r.uri === "/throw") throw new TypeError("boom");
    if (r.uri === "/number") return 42;
    if (r.uri === "/deny") {
        return {
            statusCode: 403,
            statusDescription: "Forbidden",
            headers: { "content-type": { value: "text/plain" }, "x-why": { value: r.headers["user-agent"].value } },
            cookies: { blocked: { value: "1", attributes: "Path=/; Max-Age=60" } },
            body: { data: "bm8gdmlkZW9zCg==", encoding: "base64" }
        };
    }
    console.log("rewriting", r.uri, "for", event.viewer.ip);
    r.method = "POST";
    r.uri = "/rewritten" + r.uri;
    r.querystring.added = { value: "yes" };
    delete r.querystring.drop;
    r.headers["x-event"] = { value: [event.version, event.context.eventType, event.context.distributionDomainName].join(" ") };
    r.headers["x-viewer"] = { value: event.viewer.ip };
    r.headers["x-multi"] = { value: "a", multiValue: [{ value: "a" }, { value: "b" }] };
    r.headers["x-seen-q"] = { value: (r.querystring.keep?.multiValue ?? []).map(v => v.value).join(",") };
    r.headers["x-request-id"] = { value: String(event.context.requestId.length) };
    delete r.headers["x-remove"];
    r.cookies.session = { value: "new" };
    return r;
}
"#;

fn logs(events: &Receiver<Event>) -> Vec<String> {
    events
        .try_iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message),
            Event::Failed { what, .. } => Some(format!("failed: {what}")),
            _ => None,
        })
        .collect()
}

fn errors_metric(c: &Chain) -> Option<i64> {
    c._plugins.shared.metrics().into_iter().find(|m| m.0 == "cloudfront_functions_errors").map(|m| m.2)
}

/// `toml` settings with a compile cache: the module is large (a JavaScript engine; Cranelift
/// takes seconds), so the tests here compile it one at a time, the first for all of them.
fn settings(toml: &str) -> PluginsSection {
    let mut s: PluginsSection = toml::from_str(toml).unwrap();
    s.cache_dir = Some(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cloudfront-wasm-cache"));
    s
}

static COMPILING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn compiling() -> std::sync::MutexGuard<'static, ()> {
    COMPILING.lock().unwrap_or_else(|e| e.into_inner())
}

fn cached_chain(cfg: &str) -> Chain {
    let _one_at_a_time = compiling();
    chain(&[("cloudfront_functions", cfg, OnFailure::Closed)], settings("callback_deadline_ms = 2000"))
}

/// One request through the chain: the request that goes on, or the local response.
fn one(c: &Chain, path: &str, headers: &[(&str, &str)]) -> Result<http::request::Parts, Stop> {
    let ex = Exchange::new(&c.vms, flow(), 1 << 20);
    let req = request(path, headers);
    block_on(async move { ex.head(req, true).await.map(|p| p.expect("the head goes on at once")) })
}

/// Loads (compiles) and starts the plugin with `cfg` as `chain` does, saying how long each took.
fn timed(cfg: &str, settings: PluginsSection) -> Chain {
    let mut e: PluginEntry = toml::from_str(&format!(
        "name = \"cloudfront_functions\"\nfile = \"{}\"",
        wasm("cloudfront_functions").display()
    ))
    .unwrap();
    e.configuration = Some(flowdog::plugin::Configuration::Text(cfg.to_string()));
    e.on_failure = OnFailure::Closed;
    let (tx, events) = test_events();
    let t0 = Instant::now();
    let (plugins, _calls) = {
        let _one_at_a_time = compiling();
        Plugins::load(&settings, &[e], 1, tx).expect("the plugin loads")
    };
    let t1 = Instant::now();
    let vms = plugins.instantiate(0, true).expect("the plugin starts");
    let t2 = Instant::now();
    eprintln!(
        "cloudfront_functions: compiled (or read from the cache) in {:?}, instantiated and configured in {:?}",
        t1 - t0,
        t2 - t1
    );
    Chain { vms, events, _plugins: plugins }
}

#[test]
fn rick_js_sends_youtube_to_the_only_video() {
    // The default settings: the script's evaluation and every request fit the 50 ms deadline.
    let c = timed(RICK_JS, settings(""));

    let r = one(&c, "/", &[("Host", "www.youtube.com"), ("User-Agent", "curl/8")]);
    let Err(Stop::Local(resp)) = r else {
        panic!("www.youtube.com/ gets a local response, got {r:?}: {:?}", logs(&c.events))
    };
    assert_eq!(resp.status, 302);
    assert_eq!(resp.headers["location"], VIDEO);

    // The video itself, and what it links to, go on unchanged.
    let p = one(&c, "/watch?v=dQw4w9WgXcQ", &[("Host", "www.youtube.com")]).expect("the video goes on");
    assert_eq!(p.uri, "/watch?v=dQw4w9WgXcQ");
    assert_eq!(p.method, "GET");
    let p =
        one(&c, "/s/player.js", &[("Host", "www.youtube.com"), ("Referer", VIDEO)]).expect("the video's page goes on");
    assert_eq!(p.uri, "/s/player.js");
    assert_eq!(p.headers["referer"], VIDEO);
    // Another video: sent to the only one.
    let r = one(&c, "/watch?v=9bZkp7q19f0", &[("Host", "www.youtube.com")]);
    assert!(matches!(r, Err(Stop::Local(ref l)) if l.status == 302), "{r:?}");
    // Other hosts are untouched.
    let p = one(&c, "/?q=1", &[("Host", "www.lab.test"), ("Cookie", "a=1")]).expect("other hosts go on");
    assert_eq!(p.uri, "/?q=1");
    assert_eq!(p.headers["cookie"], "a=1");
    assert_eq!(p.headers.len(), 2, "{:?}", p.headers);

    // What one request costs: the event built, the function called, the answer read.
    let n = 50;
    let t = Instant::now();
    for i in 0..n {
        let host = if i % 2 == 0 { "www.youtube.com" } else { "www.lab.test" };
        let _ = one(&c, "/watch?v=x", &[("Host", host), ("User-Agent", "curl/8"), ("Accept", "*/*")]);
    }
    let per = t.elapsed() / n;
    eprintln!("cloudfront_functions: rick.js, {per:?} per request (the whole exchange, {n} requests)");
    assert!(per < Duration::from_millis(50), "a request takes {per:?}: past the default callback deadline");
    assert_eq!(errors_metric(&c), Some(0), "{:?}", logs(&c.events));
    assert!(failures(&c.events).is_empty());
}

#[test]
fn a_script_rewrites_the_request_and_answers_locally() {
    let cfg = serde_json::json!({ "code": REWRITE_JS, "function": "rewrite" }).to_string();
    let c = cached_chain(&cfg);
    let p = one(
        &c,
        "/a/b?keep=1&drop=x&keep=2",
        &[("Host", "www.lab.test"), ("X-Remove", "r"), ("Cookie", "session=old; keep=1"), ("Accept", "*/*")],
    )
    .expect("the request goes on");
    assert_eq!(p.method, "POST");
    assert_eq!(p.uri.path(), "/rewritten/a/b");
    let mut q: Vec<&str> = p.uri.query().unwrap().split('&').collect();
    q.sort();
    assert_eq!(q, ["added=yes", "keep=1", "keep=2"]);
    assert_eq!(p.headers["x-event"], "1.0 viewer-request www.lab.test");
    assert_eq!(p.headers["x-viewer"], "198.18.1.10");
    assert_eq!(p.headers.get_all("x-multi").iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(p.headers["x-seen-q"], "1,2");
    assert_eq!(p.headers["x-request-id"], "32");
    assert!(p.headers.get("x-remove").is_none(), "{:?}", p.headers);
    assert_eq!(p.headers["accept"], "*/*");
    assert_eq!(p.headers["host"], "www.lab.test");
    let mut cookies: Vec<&str> = p.headers["cookie"].to_str().unwrap().split("; ").collect();
    cookies.sort();
    assert_eq!(cookies, ["keep=1", "session=new"]);
    assert!(logs(&c.events).iter().any(|l| l == "cloudfront_functions: rewriting /a/b for 198.18.1.10"));

    let r = one(&c, "/deny", &[("Host", "www.lab.test"), ("User-Agent", "curl/8")]);
    let Err(Stop::Local(resp)) = r else { panic!("/deny is answered locally, got {r:?}") };
    assert_eq!(resp.status, 403);
    assert_eq!(resp.headers["content-type"], "text/plain");
    assert_eq!(resp.headers["x-why"], "curl/8");
    assert_eq!(resp.headers["set-cookie"], "blocked=1; Path=/; Max-Age=60");
    assert_eq!(&resp.body[..], b"no videos\n");
    assert_eq!(errors_metric(&c), Some(0));
}

#[test]
fn a_function_that_throws_fails_open() {
    let cfg = serde_json::json!({ "code": REWRITE_JS, "function": "rewrite" }).to_string();
    let c = cached_chain(&cfg);
    let p = one(&c, "/throw?x=1", &[("Host", "www.lab.test"), ("X-Remove", "r")]).expect("fail open");
    assert_eq!(p.uri, "/throw?x=1");
    assert_eq!(p.headers["x-remove"], "r");
    let p = one(&c, "/number", &[("Host", "www.lab.test")]).expect("fail open");
    assert_eq!(p.uri, "/number");
    assert_eq!(errors_metric(&c), Some(2));
    let l = logs(&c.events);
    assert!(l.iter().any(|l| l.contains("threw TypeError: boom") && l.contains("goes on unchanged")), "{l:?}");
    assert!(l.iter().any(|l| l.contains("returned 42, not a request or a response object")), "{l:?}");
    assert!(!l.iter().any(|l| l.starts_with("failed")), "the plugin itself did not fail: {l:?}");
    // The instance is the same one, and still works.
    let p = one(&c, "/ok", &[("Host", "www.lab.test")]).expect("goes on");
    assert_eq!(p.uri.path(), "/rewritten/ok");
}

/// Loads and starts the plugin with `cfg`: the error that refuses it, and its log.
fn refused(cfg: &str) -> (String, Vec<String>) {
    let mut e: PluginEntry = toml::from_str(&format!(
        "name = \"cloudfront_functions\"\nfile = \"{}\"",
        wasm("cloudfront_functions").display()
    ))
    .unwrap();
    e.configuration = Some(flowdog::plugin::Configuration::Text(cfg.to_string()));
    e.on_failure = OnFailure::Closed;
    let (tx, events) = test_events();
    let loaded = {
        let _one_at_a_time = compiling();
        Plugins::load(&settings("callback_deadline_ms = 2000"), &[e], 1, tx)
    };
    let err = match loaded {
        Err(e) => format!("{e:#}"),
        Ok((plugins, _calls)) => match plugins.instantiate(0, true) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("the plugin started with {cfg:?}"),
        },
    };
    (err, logs(&events))
}

#[test]
fn a_script_that_does_not_parse_is_refused_at_start() {
    let (err, log) = refused("function onRequest(event) {\n    return event.request;\n");
    assert!(err.contains("on_configure refused"), "{err}");
    assert!(log.iter().any(|l| l.contains("the script does not run: SyntaxError")), "{log:?}");
    let (err, log) = refused("function other(event) { return event.request; }");
    assert!(err.contains("on_configure refused"), "{err}");
    assert!(log.iter().any(|l| l.contains("neither a function handler nor onRequest")), "{log:?}");
}
