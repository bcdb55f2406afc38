//! After an `Upgrade` exchange: WebSocket frames relayed one by one in both directions (RFC
//! 6455, checked by `flowdog_wire::websocket`), each whole message shown to the hook read-only;
//! any other upgraded protocol is relayed as bytes.
//!
//! Each direction is its own task: it reads the sender's leg, parses frame headers, checks them
//! (masking by role, fragmentation, control frames, nothing after Close), and forwards header
//! and payload bytes unchanged as they arrive. A protocol error closes the connection with a RST
//! both ways and is counted.

use super::hook::{FlowInfo, WsMessage};
use super::proxy::{bump, read_some, shutdown, write_all, Ctx, Io};
use bytes::Bytes;
use flowdog_wire::websocket::{apply_mask, FrameHeader, Opcode, Role, Validator};
use std::rc::Rc;

const BUF: usize = 16 * 1024;

/// Relays an upgraded connection until both directions end. `c_early` and `s_early` are bytes
/// each side sent right after the exchange that the HTTP layer had already read.
pub async fn relay<C: Io, S: Io>(
    client: C,
    c_early: Bytes,
    server: S,
    s_early: Bytes,
    websocket: bool,
    ctx: Rc<Ctx>,
    flow: FlowInfo,
) {
    if websocket {
        bump(&ctx.stats.ws_connections);
    }
    let flow = Rc::new(flow);
    let up = Dir { from_client: true, ctx: ctx.clone(), flow: flow.clone(), websocket };
    let down = Dir { from_client: false, ctx, flow, websocket };
    super::exec::spawn(up.run(client.clone(), server.clone(), c_early.to_vec()));
    down.run(server, client, s_early.to_vec()).await;
}

struct Dir {
    from_client: bool,
    ctx: Rc<Ctx>,
    flow: Rc<FlowInfo>,
    websocket: bool,
}

/// Where the parser is within the stream.
enum At {
    Header,
    Payload { left: u64, offset: u64, mask: Option<[u8; 4]>, opcode: Opcode, fin: bool },
}

impl Dir {
    async fn run<F: Io, T: Io>(self, mut from: F, mut to: T, early: Vec<u8>) {
        let mut buf = early;
        let mut tmp = vec![0u8; BUF];
        let role = if self.from_client { Role::Client } else { Role::Server };
        let mut v = Validator::new(role);
        let mut at = At::Header;
        // The message being assembled for the hook (text or binary), and its opcode.
        let mut msg: Vec<u8> = Vec::new();
        let mut msg_text = false;
        let mut msg_too_big = false;
        loop {
            if !self.websocket {
                if !buf.is_empty() && write_all(&mut to, &buf).await.is_err() {
                    from.abort();
                    return;
                }
                buf.clear();
            }
            // Consume what the buffer holds.
            let mut pos = 0;
            while self.websocket && pos < buf.len() {
                match at {
                    At::Header => match FrameHeader::parse(&buf[pos..]) {
                        Ok(None) => break,
                        Ok(Some((h, n))) => {
                            if v.frame(&h).is_err() {
                                return self.fail(&from, &to);
                            }
                            if !h.opcode.is_control() && h.opcode != Opcode::Continuation {
                                msg.clear();
                                msg_text = h.opcode == Opcode::Text;
                                msg_too_big = false;
                            }
                            at = At::Payload {
                                left: h.payload_len,
                                offset: 0,
                                mask: h.mask,
                                opcode: h.opcode,
                                fin: h.fin,
                            };
                            if write_all(&mut to, &buf[pos..pos + n]).await.is_err() {
                                from.abort();
                                return;
                            }
                            pos += n;
                        }
                        Err(_) => return self.fail(&from, &to),
                    },
                    At::Payload { left, offset, mask, opcode, fin } => {
                        let n = (left.min((buf.len() - pos) as u64)) as usize;
                        let chunk = &buf[pos..pos + n];
                        if write_all(&mut to, chunk).await.is_err() {
                            from.abort();
                            return;
                        }
                        if !opcode.is_control() && !msg_too_big {
                            if msg.len() + n > self.ctx.max_body {
                                msg_too_big = true;
                                msg.clear();
                            } else {
                                let start = msg.len();
                                msg.extend_from_slice(chunk);
                                if let Some(k) = mask {
                                    apply_mask(k, offset, &mut msg[start..]);
                                }
                            }
                        }
                        pos += n;
                        let left = left - n as u64;
                        at = At::Payload { left, offset: offset + n as u64, mask, opcode, fin };
                        if left == 0 {
                            at = At::Header;
                            if !opcode.is_control() && fin {
                                bump(&self.ctx.stats.ws_messages);
                                if !msg_too_big {
                                    let m = WsMessage { from_client: self.from_client, text: msg_text, data: &msg };
                                    self.ctx.hook.on_ws_message(&self.flow, &m);
                                }
                                msg.clear();
                            }
                        }
                    }
                }
            }
            buf.drain(..pos);
            // Read more.
            match read_some(&mut from, &mut tmp).await {
                Ok(0) => {
                    // The sender closed: pass the FIN on.
                    shutdown(&mut to).await;
                    return;
                }
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(_) => {
                    to.abort();
                    return;
                }
            }
            // A header never needs more than 14 bytes: more buffered means a stalled parser.
            if buf.len() > BUF + 14 {
                return self.fail(&from, &to);
            }
        }
    }

    fn fail(&self, from: &impl Io, to: &impl Io) {
        bump(&self.ctx.stats.ws_errors);
        from.abort();
        to.abort();
    }
}
