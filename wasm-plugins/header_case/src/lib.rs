//! header_case: the seed's opening example. Requests leave with their `User-Agent` header name
//! in lowercase (`user-agent`), for every host or only the configured ones.
//!
//! Configuration (JSON, optional): `{"hosts": ["www.example.com"]}`; without it, every request.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { hosts: Rc::new(Vec::new()) }) });
}}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    hosts: Vec<String>,
}

struct Root {
    hosts: Rc<Vec<String>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return true };
        match serde_json::from_slice::<Config>(&raw) {
            Ok(c) => {
                self.hosts = Rc::new(c.hosts.iter().map(|h| h.to_ascii_lowercase()).collect());
                true
            }
            Err(e) => {
                log::error!("header_case: bad configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HeaderCase { hosts: self.hosts.clone() }))
    }
}

struct HeaderCase {
    hosts: Rc<Vec<String>>,
}

impl Context for HeaderCase {}

/// The host of an authority: no port, no IPv6 brackets, lowercase.
fn host_only(a: &str) -> String {
    let a = a.trim();
    let h = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    h.to_ascii_lowercase()
}

impl HttpContext for HeaderCase {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if !self.hosts.is_empty() {
            let host = self.get_http_request_header(":authority").map(|a| host_only(&a)).unwrap_or_default();
            if !self.hosts.contains(&host) {
                return Action::Continue;
            }
        }
        if let Some(ua) = self.get_http_request_header("user-agent") {
            // Out and back in under the lowercase name: the name goes upstream as spelled here.
            self.set_http_request_header("user-agent", None);
            self.add_http_request_header("user-agent", &ua);
        }
        Action::Continue
    }
}
