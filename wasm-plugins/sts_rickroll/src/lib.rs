//! sts_rickroll: the seed's STS prank. Responses to `sts:GetCallerIdentity` from an STS
//! endpoint (`sts.*` hosts) come back with another `<UserId>`; the body changes length, so the
//! plugin holds the response head until the whole body is there and sets Content-Length anew.
//!
//! Configuration (JSON, optional): `{"user_id": "..."}`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

const DEFAULT_USER_ID: &str = "NeverGonnaGiveYouUp:NeverGonnaLetYouDown";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { user_id: Rc::new(DEFAULT_USER_ID.into()) })
    });
}}

#[derive(Deserialize)]
struct Config {
    user_id: Option<String>,
}

struct Root {
    user_id: Rc<String>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return true };
        match serde_json::from_slice::<Config>(&raw) {
            Ok(Config { user_id: Some(u) }) => {
                self.user_id = Rc::new(u);
                true
            }
            Ok(_) => true,
            Err(e) => {
                log::error!("sts_rickroll: bad configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rickroll { user_id: self.user_id.clone(), active: false }))
    }
}

struct Rickroll {
    user_id: Rc<String>,
    /// This response is an STS answer worth reading.
    active: bool,
}

impl Context for Rickroll {}

/// `body` with the text of every `<UserId>` element replaced by `user_id`; None when it has none.
fn rewrite(body: &str, user_id: &str) -> Option<String> {
    const OPEN: &str = "<UserId>";
    const CLOSE: &str = "</UserId>";
    let mut out = String::with_capacity(body.len() + user_id.len());
    let mut rest = body;
    let mut changed = false;
    while let Some(i) = rest.find(OPEN) {
        let after = &rest[i + OPEN.len()..];
        let Some(j) = after.find(CLOSE) else { break };
        out.push_str(&rest[..i + OPEN.len()]);
        out.push_str(user_id);
        rest = &after[j..];
        changed = true;
    }
    out.push_str(rest);
    changed.then_some(out)
}

impl HttpContext for Rickroll {
    fn on_http_response_headers(&mut self, _n: usize, eos: bool) -> Action {
        let host = self.get_http_request_header(":authority").unwrap_or_default().to_ascii_lowercase();
        let xml = self.get_http_response_header("content-type").is_some_and(|t| t.contains("xml"));
        self.active = !eos && xml && host.starts_with("sts.");
        if self.active {
            // Hold the head: its Content-Length changes with the body.
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        if !self.active {
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        let Some(body) = self.get_http_response_body(0, size) else { return Action::Continue };
        let Ok(text) = String::from_utf8(body) else { return Action::Continue };
        if !text.contains("GetCallerIdentityResponse") {
            return Action::Continue;
        }
        if let Some(new) = rewrite(&text, &self.user_id) {
            self.set_http_response_body(0, size, new.as_bytes());
            self.set_http_response_header("content-length", Some(&new.len().to_string()));
            log::info!("sts_rickroll: GetCallerIdentity UserId rewritten");
        }
        Action::Continue
    }
}
