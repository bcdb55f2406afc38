//! template: the plugin to copy when you start your own (wasm-plugins/README.md says how). It is
//! small but complete: a root context that reads a JSON configuration and refuses a bad one, and
//! an HTTP context per request that
//!
//! - answers `403` itself for one path (`deny_path`), without asking the server;
//! - adds a request header (`header: value`) to every other request;
//! - adds a response header (`response_header`) carrying the GWLB endpoint the flow came through,
//!   read from the property `gwlb.vpc_endpoint_id`.
//!
//! Configuration (JSON; every field optional, these are the defaults but `deny_path`, which is
//! off by default):
//!
//! ```json
//! {"header": "x-flowdog-template", "value": "hello", "deny_path": "/blocked",
//!  "response_header": "x-flowdog-vpce"}
//! ```
//!
//! A configuration that is not JSON, has a field it does not know, or names a header that cannot
//! be sent is refused: `on_configure` returns false, and the appliance does not start (or a hot
//! reload keeps the running plugins), with a log line saying why.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::rc::Rc;

// The module's entry point: the SDK calls this once when the host starts the module. Say which
// root context to make; the root context makes one HTTP context per request.
proxy_wasm::main! {{
    // Lines below this level are not even sent to the host.
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> {
        Box::new(Root { config: Rc::new(Config::default()) })
    });
}}

/// What the configuration says, with the defaults for what it leaves out.
#[derive(Deserialize, Debug)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The request header to add, and its value.
    header: String,
    value: String,
    /// Requests for this path (the query not counted) get a local 403. None: no path is denied.
    deny_path: Option<String>,
    /// The response header that carries `gwlb.vpc_endpoint_id`.
    response_header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "x-flowdog-template".into(),
            value: "hello".into(),
            deny_path: None,
            response_header: "x-flowdog-vpce".into(),
        }
    }
}

impl Config {
    /// Parses and checks the configuration (empty: the defaults). The error says what is wrong.
    fn parse(raw: &[u8]) -> Result<Config, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let c: Config = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
        for name in [&c.header, &c.response_header] {
            if !is_header_name(name) {
                return Err(format!("{name:?} is not a lowercase header name"));
            }
        }
        if c.value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(format!("the value {:?} has a control character", c.value));
        }
        if let Some(p) = &c.deny_path {
            if !p.starts_with('/') {
                return Err(format!("deny_path {p:?} does not start with /"));
            }
        }
        Ok(c)
    }
}

/// A header name HTTP/1.1 and HTTP/2 both accept: lowercase token characters.
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The root context: one per plugin instance (one instance per worker). It holds the
/// configuration; the HTTP contexts share it through an `Rc` (an instance is single-threaded).
struct Root {
    config: Rc<Config>,
}

// `Context` has the calls every context may make (properties, shared data, outbound calls, ...);
// nothing to override here.
impl Context for Root {}

impl RootContext for Root {
    /// Called once at start, and with the new configuration at a hot reload (a new instance).
    /// Returning false refuses the configuration.
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        let raw = self.get_plugin_configuration().unwrap_or_default();
        match Config::parse(&raw) {
            Ok(c) => {
                let deny = c.deny_path.as_deref().unwrap_or("(no path)");
                log::info!("template: adding {}: {}; denying {deny}", c.header, c.value);
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                log::error!("template: bad configuration: {e}");
                false
            }
        }
    }

    /// This plugin wants HTTP contexts (a flow acceptor would say `StreamContext`).
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Template { config: self.config.clone() }))
    }
}

/// One request's context: made when the request's head arrives, gone when the exchange ends.
/// Keep here what one callback learns for a later one.
struct Template {
    config: Rc<Config>,
}

impl Context for Template {}

impl HttpContext for Template {
    /// The request head. Headers include the pseudo-headers `:method`, `:path`, `:authority`,
    /// `:scheme`. `Action::Continue` passes the head on; `Action::Pause` holds it (here: after a
    /// local response, which ends the exchange).
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let path_only = path.split('?').next().unwrap_or_default();
        if self.config.deny_path.as_deref() == Some(path_only) {
            log::info!("template: {path} denied");
            self.send_http_response(403, vec![("content-type", "text/plain")], Some(b"denied by template\n"));
            return Action::Pause;
        }
        self.add_http_request_header(&self.config.header, &self.config.value);
        Action::Continue
    }

    /// The response head (`:status` among the headers). A property of the flow goes back to the
    /// client as a header. `get_property` gives bytes, or None when the host does not know it.
    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(v) = self.get_property(vec!["gwlb", "vpc_endpoint_id"]) {
            self.add_http_response_header(&self.config.response_header, &String::from_utf8_lossy(&v));
        }
        Action::Continue
    }
}
