//! geneve_headers: every request goes upstream with the GWLB metadata of its flow as headers:
//! `X-Gwlb-Vpc-Endpoint-Id`, `X-Gwlb-Attachment-Id`, `X-Gwlb-Flow-Cookie`, and the flowdog
//! worker that handled it as `X-Flowdog-Worker`. Headers of those names that the client sent
//! are replaced, so a client cannot forge them.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(GeneveHeaders) });
}}

struct GeneveHeaders;

impl Context for GeneveHeaders {}

impl HttpContext for GeneveHeaders {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        for (header, path) in [
            ("X-Gwlb-Vpc-Endpoint-Id", ["gwlb", "vpc_endpoint_id"]),
            ("X-Gwlb-Attachment-Id", ["gwlb", "attachment_id"]),
            ("X-Gwlb-Flow-Cookie", ["gwlb", "flow_cookie"]),
        ] {
            match self.get_property(path.to_vec()).map(String::from_utf8) {
                Some(Ok(v)) => self.set_http_request_header(header, Some(&v)),
                // Not behind GWLB (no such property): no header, and none the client forged.
                _ => self.set_http_request_header(header, None),
            }
        }
        // Integers come as 8 bytes, little-endian (Envoy's encoding).
        if let Some(w) = self.get_property(vec!["flowdog", "worker"]).filter(|w| w.len() == 8) {
            let n = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            self.set_http_request_header("X-Flowdog-Worker", Some(&n.to_string()));
        }
        Action::Continue
    }
}
