//! flow_acceptor: the seed's `lambda_acceptor` ("security groups 2.0"). At the first packet of
//! every new flow (any protocol, fast-path flows included) the appliance opens a stream context;
//! this plugin posts the flow to an authorizer over HTTP (on AWS, a Lambda function URL) and lets
//! the flow pass when the answer is `{"Accept": true}`, or closes it. Until then the appliance
//! holds the flow's first packets; if no answer comes in time, `[acceptor] default` applies.
//!
//! What it posts (`content-type: application/json`):
//!
//! ```json
//! {"Geneve": {"VpcEndpointId": "vpce-0123456789abcdef0", "AttachmentId": "0", "FlowCookie": "1a2b3c4d"},
//!  "NetworkProtocol": "ipv4", "TransportProtocol": "tcp",
//!  "Source": {"Address": "198.18.1.10", "Port": 40000},
//!  "Destination": {"Address": "198.18.2.10", "Port": 80}}
//! ```
//!
//! Configuration (JSON): `{"upstream": "authorizer", "path": "/", "authority": "authorizer",
//! "timeout_ms": 1000, "on_error": "deny"}`. `upstream` names one of `[plugins.upstreams]`;
//! `on_error` ("accept" or "deny") is the decision when the call fails or the answer is not
//! `{"Accept": bool}` (a 4xx/5xx included).

use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { cfg: Rc::new(Config::default()) }) });
}}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    upstream: String,
    path: String,
    authority: String,
    timeout_ms: u64,
    on_error: Decision,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            upstream: "authorizer".into(),
            path: "/".into(),
            authority: "authorizer".into(),
            timeout_ms: 1000,
            on_error: Decision::Deny,
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Decision {
    Accept,
    Deny,
}

struct Root {
    cfg: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return true };
        match serde_json::from_slice::<Config>(&raw) {
            Ok(c) => {
                self.cfg = Rc::new(c);
                true
            }
            Err(e) => {
                log::error!("flow_acceptor: bad configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }

    fn create_stream_context(&self, _id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Flow { cfg: self.cfg.clone() }))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Geneve {
    vpc_endpoint_id: String,
    attachment_id: String,
    flow_cookie: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Endpoint {
    address: String,
    port: u64,
}

/// The seed's authorizer input.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Input {
    geneve: Geneve,
    network_protocol: String,
    transport_protocol: String,
    source: Endpoint,
    destination: Endpoint,
}

#[derive(Deserialize)]
struct Output {
    #[serde(rename = "Accept")]
    accept: bool,
}

struct Flow {
    cfg: Rc<Config>,
}

impl Flow {
    fn text(&self, path: &[&str]) -> String {
        self.get_property(path.to_vec()).map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default()
    }

    fn int(&self, path: &[&str]) -> u64 {
        match self.get_property(path.to_vec()) {
            Some(v) if v.len() == 8 => u64::from_le_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]),
            _ => 0,
        }
    }

    /// An address property ("ip:port", "[v6]:port") without its port.
    fn addr(&self, path: &[&str]) -> String {
        let a = self.text(path);
        let host = match a.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.starts_with('[')) => h,
            _ => &a,
        };
        host.trim_start_matches('[').trim_end_matches(']').to_owned()
    }

    fn input(&self) -> Input {
        Input {
            geneve: Geneve {
                vpc_endpoint_id: self.text(&["gwlb", "vpc_endpoint_id"]),
                attachment_id: self.text(&["gwlb", "attachment_id"]),
                flow_cookie: self.text(&["gwlb", "flow_cookie"]),
            },
            network_protocol: self.text(&["flowdog", "network_protocol"]),
            transport_protocol: self.text(&["flowdog", "transport_protocol"]),
            source: Endpoint { address: self.addr(&["source", "address"]), port: self.int(&["source", "port"]) },
            destination: Endpoint {
                address: self.addr(&["destination", "address"]),
                port: self.int(&["destination", "port"]),
            },
        }
    }

    fn decide(&self, d: Decision) {
        match d {
            Decision::Accept => self.resume_downstream(),
            Decision::Deny => self.close_downstream(),
        }
    }
}

impl Context for Flow {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let status = self.get_http_call_response_header(":status");
        let body = self.get_http_call_response_body(0, body_size).unwrap_or_default();
        let answer = match status.as_deref() {
            Some("200") => serde_json::from_slice::<Output>(&body).ok(),
            _ => None,
        };
        match answer {
            Some(o) => self.decide(if o.accept { Decision::Accept } else { Decision::Deny }),
            None => {
                log::warn!(
                    "flow_acceptor: the authorizer answered status {} with {} bytes that are not {{\"Accept\": bool}}",
                    status.as_deref().unwrap_or("(none: the call failed)"),
                    body.len()
                );
                self.decide(self.cfg.on_error);
            }
        }
    }
}

impl StreamContext for Flow {
    fn on_new_connection(&mut self) -> Action {
        let body = match serde_json::to_vec(&self.input()) {
            Ok(b) => b,
            Err(_) => return Action::Continue,
        };
        let headers = vec![
            (":method", "POST"),
            (":path", self.cfg.path.as_str()),
            (":authority", self.cfg.authority.as_str()),
            ("content-type", "application/json"),
        ];
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        match self.dispatch_http_call(&self.cfg.upstream, headers, Some(&body), vec![], timeout) {
            Ok(_) => Action::Pause,
            Err(s) => {
                log::warn!("flow_acceptor: cannot call upstream {:?}: {s:?}", self.cfg.upstream);
                self.decide(self.cfg.on_error);
                Action::Pause
            }
        }
    }
}
