//! The interface between the HTTP proxy and what inspects or rewrites its traffic (the built-in
//! rewrites now, the proxy-wasm plugin chain later).
//!
//! For every request the proxy calls [`Hook::on_request`] with the request head, which the hook
//! may change (method, URI, headers) or answer itself ([`Decision::Respond`]) or refuse
//! ([`Decision::Block`], a 403). A hook that needs the whole body says so in
//! [`Hook::wants_request_body`]: the proxy then collects it (up to a configured cap, 413 beyond)
//! and passes it to [`Hook::on_request_body`]. Otherwise bodies stream through untouched. The
//! same holds for responses. WebSocket messages are shown read-only.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use std::net::SocketAddr;

/// The intercepted flow a request belongs to.
#[derive(Debug, Clone)]
pub struct FlowInfo {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The GWLB options of the flow (as the client's side sent them).
    pub vpc_endpoint_id: u64,
    pub attachment_id: u64,
    pub flow_cookie: u32,
    pub worker: usize,
    /// The transport protocol (IP protocol number): TCP for intercepted flows; any for the
    /// acceptor's.
    pub protocol: u8,
    /// Set once the flow's TLS was intercepted.
    pub tls: Option<TlsInfo>,
}

/// What the client's TLS handshake with the appliance said.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub sni: Option<String>,
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'static str,
}

/// The request a response answers (its head as sent upstream, after the hook).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: Method,
    pub uri: Uri,
    /// The Host header, or the URI's authority (HTTP/2).
    pub host: Option<String>,
}

/// An answer the hook makes itself.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What happens to a request or a response after the hook.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Go on (with whatever the hook changed).
    Continue,
    /// Answer with this instead (the request is not sent upstream; a response is replaced).
    Respond(LocalResponse),
    /// Refuse: the client gets 403.
    Block,
}

/// A WebSocket message, whole (fragments joined), as the proxy passed it on.
pub struct WsMessage<'a> {
    pub from_client: bool,
    pub text: bool,
    pub data: &'a [u8],
}

pub trait Hook {
    fn on_request(&self, _flow: &FlowInfo, _req: &mut http::request::Parts) -> Decision {
        Decision::Continue
    }

    fn wants_request_body(&self, _flow: &FlowInfo, _req: &http::request::Parts) -> bool {
        false
    }

    fn on_request_body(&self, _flow: &FlowInfo, _req: &http::request::Parts, _body: &mut Bytes) -> Decision {
        Decision::Continue
    }

    fn on_response(&self, _flow: &FlowInfo, _req: &RequestInfo, _resp: &mut http::response::Parts) -> Decision {
        Decision::Continue
    }

    fn wants_response_body(&self, _flow: &FlowInfo, _req: &RequestInfo, _resp: &http::response::Parts) -> bool {
        false
    }

    fn on_response_body(
        &self,
        _flow: &FlowInfo,
        _req: &RequestInfo,
        _resp: &http::response::Parts,
        _body: &mut Bytes,
    ) -> Decision {
        Decision::Continue
    }

    fn on_ws_message(&self, _flow: &FlowInfo, _msg: &WsMessage<'_>) {}
}

/// The appliance's own mark: every intercepted response gets `x-flowdog: 1`, so a client can
/// see its traffic went through the proxy (like `Via`). The rewrites themselves are plugins.
#[derive(Debug, Clone, Default)]
pub struct Builtin {
    pub mark_responses: bool,
}

/// The host part of a Host header or authority: the port and an IPv6 literal's brackets
/// removed, lowercase.
pub fn host_only(h: &str) -> String {
    let h = h.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        h.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(h, |(a, _)| a)
    };
    h.to_ascii_lowercase()
}

/// The host a request is for: the Host header, else the URI's authority.
pub fn request_host(req: &http::request::Parts) -> Option<String> {
    req.headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_only)
        .or_else(|| req.uri.authority().map(|a| host_only(a.as_str())))
}

impl Hook for Builtin {
    fn on_response(&self, _flow: &FlowInfo, _req: &RequestInfo, resp: &mut http::response::Parts) -> Decision {
        if self.mark_responses {
            resp.headers.insert("x-flowdog", HeaderValue::from_static("1"));
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_compare_without_port_or_case() {
        assert_eq!(host_only("WWW.Lab:8080"), "www.lab");
        assert_eq!(host_only("www.lab"), "www.lab");
        assert_eq!(host_only("[fd00::1]:80"), "fd00::1");
        assert_eq!(host_only("198.18.2.10"), "198.18.2.10");
    }

    #[test]
    fn builtin_marks_responses() {
        let flow = FlowInfo {
            client: "198.18.1.10:40000".parse().unwrap(),
            server: "198.18.2.10:80".parse().unwrap(),
            vpc_endpoint_id: 1,
            attachment_id: 0,
            flow_cookie: 7,
            worker: 0,
            protocol: 6,
            tls: None,
        };
        let ri = RequestInfo { method: Method::GET, uri: Uri::from_static("/"), host: None };
        let (mut resp, _) = http::Response::new(()).into_parts();
        Builtin { mark_responses: false }.on_response(&flow, &ri, &mut resp);
        assert!(resp.headers.get("x-flowdog").is_none());
        Builtin { mark_responses: true }.on_response(&flow, &ri, &mut resp);
        assert_eq!(resp.headers["x-flowdog"], "1");
    }
}
