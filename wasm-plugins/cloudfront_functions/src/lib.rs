//! cloudfront_functions: the seed's `rick.js`, and any CloudFront Functions viewer-request
//! JavaScript, run in the plugin on boa (a JavaScript engine in pure Rust, compiled into the
//! module). The script is evaluated once per instance, at `on_configure`; each request calls its
//! function with a CloudFront event (`event.request`: method, uri, querystring, headers,
//! cookies; `event.viewer.ip`; `event.context`). A request object back is applied to the
//! request (`:method`, `:path`, headers, the Cookie header); a response object (`statusCode`)
//! is answered locally. A function that throws or returns something else fails open: the
//! request goes on unchanged, with a log line and the counter `cloudfront_functions_errors`.
//!
//! Configuration: the script's text, or JSON `{"code": "...", "function": "handler"}`. Without
//! `function`, `handler` is called if the script defines it, else `onRequest` (rick.js's name).
//! `console.log` (info, warn, error) writes to the appliance's log. The script's globals live as
//! long as the instance (CloudFront's do not outlive a request): keep no state in them.
//!
//! `uri` and the querystring's names and values are as on the wire (not percent-decoded); what
//! a script writes there that cannot stand in a URL is percent-encoded on the way back. A
//! response's `statusDescription` is not sent (the host writes the standard reason phrase).

mod event;

use boa_engine::object::ObjectInitializer;
use boa_engine::property::Attribute;
use boa_engine::{js_string, Context as Js, JsError, JsObject, JsResult, JsValue, NativeFunction, Source};
use event::{Change, Head, Outcome};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { script: None }) });
}}

struct Config {
    code: String,
    function: Option<String>,
}

/// The configuration: JSON `{"code", "function"}`, or else the script itself.
fn config(raw: &[u8]) -> Result<Config, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the configuration is not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err("no script: the configuration is its text or {\"code\": \"...\"}".into());
    }
    if text.trim_start().starts_with('{') {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) {
            let code =
                m.get("code").and_then(Value::as_str).ok_or("the configuration's JSON has no \"code\" string")?;
            let function = match m.get("function") {
                None | Some(Value::Null) => None,
                Some(Value::String(f)) => Some(f.clone()),
                Some(_) => return Err("the configuration's \"function\" is not a string".into()),
            };
            return Ok(Config { code: code.to_string(), function });
        }
    }
    Ok(Config { code: text.to_string(), function: None })
}

fn is_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b'$')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
}

/// An exception in one line: `TypeError: ...` for errors, the value for anything else thrown.
fn describe(e: &JsError, js: &mut Js) -> String {
    match e.try_native(js) {
        Ok(n) => n.to_string(),
        Err(_) => e.to_string(),
    }
}

fn console_line(args: &[JsValue]) -> String {
    let parts: Vec<String> = args
        .iter()
        .map(|a| match a.as_string() {
            Some(s) => s.to_std_string_lossy(),
            None => a.display().to_string(),
        })
        .collect();
    format!("cloudfront_functions: {}", parts.join(" "))
}

fn console_log(_: &JsValue, args: &[JsValue], _: &mut Js) -> JsResult<JsValue> {
    log::info!("{}", console_line(args));
    Ok(JsValue::undefined())
}

fn console_warn(_: &JsValue, args: &[JsValue], _: &mut Js) -> JsResult<JsValue> {
    log::warn!("{}", console_line(args));
    Ok(JsValue::undefined())
}

fn console_error(_: &JsValue, args: &[JsValue], _: &mut Js) -> JsResult<JsValue> {
    log::error!("{}", console_line(args));
    Ok(JsValue::undefined())
}

/// The evaluated script and its function.
struct Script {
    js: Js,
    function: JsObject,
    /// The counter of requests that went on unchanged because the function failed.
    errors: Option<u32>,
}

impl Script {
    fn new(c: &Config) -> Result<Script, String> {
        let mut js = Js::default();
        let console = ObjectInitializer::new(&mut js)
            .function(NativeFunction::from_fn_ptr(console_log), js_string!("log"), 0)
            .function(NativeFunction::from_fn_ptr(console_log), js_string!("info"), 0)
            .function(NativeFunction::from_fn_ptr(console_warn), js_string!("warn"), 0)
            .function(NativeFunction::from_fn_ptr(console_error), js_string!("error"), 0)
            .build();
        js.register_global_property(js_string!("console"), console, Attribute::WRITABLE | Attribute::CONFIGURABLE)
            .map_err(|e| format!("console: {e}"))?;
        if let Err(e) = js.eval(Source::from_bytes(c.code.as_bytes())) {
            return Err(format!("the script does not run: {}", describe(&e, &mut js)));
        }
        let names: Vec<&str> = match &c.function {
            Some(f) => vec![f.as_str()],
            None => vec!["handler", "onRequest"],
        };
        let mut function = None;
        for n in names {
            if !is_identifier(n) {
                return Err(format!("{n:?} is not a function name"));
            }
            // Also finds functions declared with const or let (not properties of the global).
            let probe = format!("typeof {n} === 'function' ? {n} : undefined");
            let v =
                js.eval(Source::from_bytes(probe.as_bytes())).map_err(|e| format!("{n}: {}", describe(&e, &mut js)))?;
            if let Some(f) = v.as_callable() {
                function = Some(f);
                break;
            }
        }
        let function = function.ok_or_else(|| match &c.function {
            Some(f) => format!("the script defines no function {f}"),
            None => "the script defines neither a function handler nor onRequest".to_string(),
        })?;
        let errors = hostcalls::define_metric(MetricType::Counter, "cloudfront_functions_errors").ok();
        Ok(Script { js, function, errors })
    }

    /// The function's answer to `event`, as JSON: an object, or what went wrong.
    fn call(&mut self, event: &Value) -> Result<Value, String> {
        let js = &mut self.js;
        let arg = JsValue::from_json(event, js).map_err(|e| format!("the event: {}", describe(&e, js)))?;
        let mut out = match self.function.call(&JsValue::undefined(), &[arg], js) {
            Ok(v) => v,
            Err(e) => return Err(format!("the function threw {}", describe(&e, js))),
        };
        // An async function: its promise, settled by running the jobs it queued.
        if let Some(p) = out.as_promise() {
            js.run_jobs().map_err(|e| format!("the function's jobs threw {}", describe(&e, js)))?;
            out = match p.state() {
                boa_engine::builtins::promise::PromiseState::Fulfilled(v) => v,
                boa_engine::builtins::promise::PromiseState::Rejected(e) => {
                    return Err(format!(
                        "the function's promise was rejected: {}",
                        describe(&JsError::from_opaque(e), js)
                    ))
                }
                boa_engine::builtins::promise::PromiseState::Pending => {
                    return Err("the function's promise never settled".into())
                }
            };
        }
        if !out.is_object() || out.is_callable() {
            return Err(format!("the function returned {}, not a request or a response object", out.display()));
        }
        match out.to_json(js) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err("the function returned nothing".into()),
            Err(e) => Err(format!("the function's answer: {}", describe(&e, js))),
        }
    }

    /// The request goes on unchanged: one log line, the counter.
    fn failed(&self, what: &str) {
        log::warn!("cloudfront_functions: {what}; the request goes on unchanged");
        if let Some(id) = self.errors {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

struct Root {
    script: Option<Rc<RefCell<Script>>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match config(&raw).and_then(|c| Script::new(&c)) {
            Ok(s) => {
                self.script = Some(Rc::new(RefCell::new(s)));
                true
            }
            Err(e) => {
                log::error!("cloudfront_functions: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Viewer { id, script: self.script.clone() }))
    }
}

struct Viewer {
    id: u32,
    script: Option<Rc<RefCell<Script>>>,
}

impl Context for Viewer {}

/// splitmix64: a request id that differs between requests (no randomness needed).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn request_id(ctx: u32) -> String {
    let t = hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}{:016x}", mix(t), mix(t ^ ((ctx as u64) << 32)))
}

/// The changes onto the request head (every one checked already: none of these can fail).
fn apply(changes: &[Change]) {
    let m = MapType::HttpRequestHeaders;
    for c in changes {
        let _ = match c {
            Change::Method(v) => hostcalls::set_map_value(m, ":method", Some(v)),
            Change::Path(p) => hostcalls::set_map_value(m, ":path", Some(p)),
            Change::Set(n, vals) if n == "host" => hostcalls::set_map_value(m, ":authority", Some(&vals[0])),
            Change::Set(n, vals) => hostcalls::set_map_value(m, n, Some(&vals[0]))
                .and_then(|_| vals[1..].iter().try_for_each(|v| hostcalls::add_map_value(m, n, v))),
            Change::Remove(n) => hostcalls::set_map_value(m, n, None),
        };
    }
}

impl HttpContext for Viewer {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let Some(script) = self.script.clone() else { return Action::Continue };
        let mut head = Head { method: String::new(), path: "/".into(), authority: String::new(), headers: Vec::new() };
        for (k, v) in self.get_http_request_headers() {
            match k.as_str() {
                ":method" => head.method = v,
                ":path" => head.path = v,
                ":authority" => head.authority = v,
                k if k.starts_with(':') => {}
                _ => head.headers.push((k.to_ascii_lowercase(), v)),
            }
        }
        let ip = self
            .get_property(vec!["source", "address"])
            .map(|a| event::viewer_ip(&String::from_utf8_lossy(&a)))
            .unwrap_or_default();
        let (ev, request) = event::event(&head, &ip, &request_id(self.id));
        let mut s = script.borrow_mut();
        let answer = match s.call(&ev) {
            Ok(a) => a,
            Err(e) => {
                s.failed(&e);
                return Action::Continue;
            }
        };
        match event::outcome(&request, &head, &answer) {
            Ok(Outcome::Request(changes)) => {
                apply(&changes);
                Action::Continue
            }
            Ok(Outcome::Response(r)) => {
                let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let _ = hostcalls::send_http_response(r.status, headers, Some(&r.body));
                Action::Pause
            }
            Err(e) => {
                s.failed(&format!("the function's answer: {e}"));
                Action::Continue
            }
        }
    }
}
