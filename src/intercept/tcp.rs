//! The two TCP legs of an intercepted flow, on smoltcp, and the byte streams hyper reads and
//! writes over them.
//!
//! Each leg is its own smoltcp interface of medium IP holding exactly one socket, so handing a
//! packet to a leg never scans other flows' sockets: the worker's flow table finds the flow, the
//! flow's [`Pair`](super::Pair) has its two legs. The client leg owns the server's address (it
//! answers the client as the server would); the upstream leg owns the client's (it connects to
//! the server as the client). Each interface's one address has prefix length 0, so every peer is
//! on-link and no route is needed.
//!
//! What a leg sends goes to a [`Sink`], which wraps it in the flow's Geneve header for that
//! direction and transmits it (on a worker: into an mbuf, onto the port's transmit buffer).

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Where a leg's packets go: the inner IP packet of `len` bytes, written by `fill`, travelling
/// towards the client (`to_client`) or towards the server.
pub trait Sink {
    fn emit(&mut self, to_client: bool, len: usize, fill: &mut dyn FnMut(&mut [u8]));
}

/// A sink that throws packets away (for building an interface before any packet flows).
struct Discard(Vec<u8>);

impl Sink for Discard {
    fn emit(&mut self, _to_client: bool, len: usize, fill: &mut dyn FnMut(&mut [u8])) {
        self.0.resize(len, 0);
        fill(&mut self.0);
    }
}

thread_local! {
    /// Milliseconds of the worker's clock at its last poll, and the offset of the leg being
    /// polled, for TCP timestamps (smoltcp asks a plain function for them).
    static NOW_MS: Cell<u32> = const { Cell::new(0) };
    static TS_OFFSET: Cell<u32> = const { Cell::new(0) };
}

/// Sets the clock that TCP timestamps come from; the worker calls it once per loop.
pub fn set_clock(now: Instant) {
    NOW_MS.with(|c| c.set(now.total_millis() as u32));
}

fn tsval() -> u32 {
    NOW_MS.with(|c| c.get()).wrapping_add(TS_OFFSET.with(|c| c.get()))
}

struct LegDevice<'a> {
    rx: Option<&'a [u8]>,
    sink: &'a mut dyn Sink,
    to_client: bool,
    mtu: usize,
}

struct RxTok<'a>(&'a [u8]);

struct TxTok<'a> {
    sink: &'a mut dyn Sink,
    to_client: bool,
}

impl phy::RxToken for RxTok<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut f = Some(f);
        let mut r = None;
        self.sink.emit(self.to_client, len, &mut |buf| {
            if let Some(f) = f.take() {
                r = Some(f(buf));
            }
        });
        // A sink always calls `fill` once (into a scratch buffer when it cannot send).
        match r {
            Some(r) => r,
            None => {
                let mut scratch = vec![0u8; len];
                (f.take().expect("fill not called, so f is still here"))(&mut scratch)
            }
        }
    }
}

impl<'a> Device for LegDevice<'a> {
    type RxToken<'t>
        = RxTok<'a>
    where
        Self: 't;
    type TxToken<'t>
        = TxTok<'t>
    where
        Self: 't;

    fn receive(&mut self, _now: Instant) -> Option<(RxTok<'a>, TxTok<'_>)> {
        let p = self.rx.take()?;
        Some((RxTok(p), TxTok { sink: &mut *self.sink, to_client: self.to_client }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxTok<'_>> {
        Some(TxTok { sink: &mut *self.sink, to_client: self.to_client })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

/// Sizes and timeouts of a leg.
#[derive(Debug, Clone, Copy)]
pub struct LegConfig {
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    /// The inner MTU: packets the leg sends are at most this long (GWLB's is 8 500; the
    /// mbuf's room can make it smaller).
    pub mtu: usize,
}

/// One leg: an interface with one address and one TCP socket.
pub struct Leg {
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    /// Packets go towards the client (client leg) or the server (upstream leg).
    to_client: bool,
    mtu: usize,
    /// Added to the worker's millisecond clock for this leg's TCP timestamps.
    ts_offset: u32,
}

impl Leg {
    pub fn new(local: IpAddress, to_client: bool, cfg: &LegConfig, seed: u64, now: Instant) -> Leg {
        let mut ic = IfaceConfig::new(HardwareAddress::Ip);
        ic.random_seed = seed;
        let mut discard = Discard(Vec::new());
        let mut dev = LegDevice { rx: None, sink: &mut discard, to_client, mtu: cfg.mtu };
        let mut iface = Interface::new(ic, &mut dev, now);
        iface.update_ip_addrs(|a| {
            // One address: cannot overflow the interface's list.
            let _ = a.push(IpCidr::new(local, 0));
        });
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; cfg.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; cfg.tx_buffer]),
        );
        // The proxy writes whole messages; Nagle would hold their tails back for an ACK.
        s.set_nagle_enabled(false);
        s.set_tsval_generator(Some(tsval));
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(s);
        Leg { iface, sockets, handle, to_client, mtu: cfg.mtu, ts_offset: 0 }
    }

    /// Makes the leg's TCP timestamps continue the clock of the host it stands in for: `tsval`
    /// is what that host sent at `now`. A server still in TIME-WAIT from that host's earlier
    /// connection on the same ports then takes the new SYN (PAWS), as it would without the
    /// appliance; timestamps from the worker's own clock would look older and be refused.
    pub fn follow_timestamps(&mut self, tsval: u32, now: Instant) {
        self.ts_offset = tsval.wrapping_sub(now.total_millis() as u32);
    }

    pub fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// Starts the upstream connection from `local` to `remote`.
    pub fn connect(&mut self, remote: (IpAddress, u16), local: (IpAddress, u16)) -> Result<(), tcp::ConnectError> {
        let s = self.sockets.get_mut::<tcp::Socket>(self.handle);
        s.connect(self.iface.context(), remote, local)
    }

    /// When the leg next needs a poll without a packet (a retransmission, a delayed ACK, ...).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface.poll_at(now, &self.sockets)
    }

    /// Hands the leg one received packet (or none: only timers and pending data), lets it send
    /// what it has. Returns when it next needs a poll without a packet.
    pub fn poll(&mut self, now: Instant, rx: Option<&[u8]>, sink: &mut dyn Sink) -> Option<Instant> {
        TS_OFFSET.with(|c| c.set(self.ts_offset));
        let mut dev = LegDevice { rx, sink, to_client: self.to_client, mtu: self.mtu };
        self.iface.poll(now, &mut dev, &mut self.sockets);
        self.iface.poll_at(now, &self.sockets)
    }
}

/// What the proxy tasks and the worker share of one flow's pair: the legs, and whether a task
/// wrote something that the worker must now send (`dirty`, with the pair queued on the
/// worker's dirty list once).
pub struct PairIo {
    /// [client leg, upstream leg].
    pub legs: [Leg; 2],
    pub id: u64,
    dirty: bool,
    dirty_list: Rc<RefCell<Vec<u64>>>,
}

impl PairIo {
    pub fn new(legs: [Leg; 2], id: u64, dirty_list: Rc<RefCell<Vec<u64>>>) -> PairIo {
        PairIo { legs, id, dirty: false, dirty_list }
    }

    /// Queues the pair for the worker's next egress poll.
    pub fn touch(&mut self) {
        if !self.dirty {
            self.dirty = true;
            self.dirty_list.borrow_mut().push(self.id);
        }
    }

    pub fn clear_dirty(&mut self) {
        self.dirty = false;
    }
}

/// Which leg of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client = 0,
    Upstream = 1,
}

/// One leg's byte stream for hyper (and the relays): reads what the peer sent, writes into the
/// socket's send buffer; the worker sends it.
#[derive(Clone)]
pub struct LegStream {
    pair: Rc<RefCell<PairIo>>,
    side: Side,
}

fn not_open_yet(s: tcp::State) -> bool {
    matches!(s, tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived)
}

impl LegStream {
    pub fn new(pair: Rc<RefCell<PairIo>>, side: Side) -> LegStream {
        LegStream { pair, side }
    }

    /// The first bytes the peer sent, without consuming them: ready once `n` bytes are there,
    /// or fewer when the peer stopped sending (FIN, reset) or `enough` says so.
    pub fn poll_peek(&self, cx: &mut Context<'_>, n: usize, enough: impl Fn(&[u8]) -> bool) -> Poll<Vec<u8>> {
        let mut p = self.pair.borrow_mut();
        let s = p.legs[self.side as usize].socket();
        if not_open_yet(s.state()) {
            s.register_recv_waker(cx.waker());
            return Poll::Pending;
        }
        // (`may_recv` stays true while data is buffered, even after the peer's FIN.)
        let more_to_come = matches!(s.state(), tcp::State::Established | tcp::State::FinWait1 | tcp::State::FinWait2);
        match s.peek(n) {
            Ok(d) if d.len() >= n || enough(d) || !more_to_come => Poll::Ready(d.to_vec()),
            Ok(_) => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Err(_) => Poll::Ready(Vec::new()),
        }
    }

    /// Sends a RST on this leg (the peer went away on the other one).
    pub fn abort(&self) {
        let mut p = self.pair.borrow_mut();
        p.legs[self.side as usize].socket().abort();
        p.touch();
    }
}

impl hyper::rt::Read for LegStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = self.pair.borrow_mut();
        let s = p.legs[self.side as usize].socket();
        if not_open_yet(s.state()) {
            s.register_recv_waker(cx.waker());
            return Poll::Pending;
        }
        let room = buf.remaining();
        if room == 0 {
            return Poll::Ready(Ok(()));
        }
        match s.recv(|d| {
            let n = d.len().min(room);
            buf.put_slice(&d[..n]);
            (n, n)
        }) {
            Ok(0) => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(_) => {
                // The window opened: the worker may owe the peer a window update.
                p.touch();
                Poll::Ready(Ok(()))
            }
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(())),
            Err(tcp::RecvError::InvalidState) => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
        }
    }
}

impl hyper::rt::Write for LegStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut p = self.pair.borrow_mut();
        let s = p.legs[self.side as usize].socket();
        if not_open_yet(s.state()) {
            s.register_send_waker(cx.waker());
            return Poll::Pending;
        }
        match s.send_slice(buf) {
            Ok(0) if !buf.is_empty() => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                p.touch();
                Poll::Ready(Ok(n))
            }
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = self.pair.borrow_mut();
        p.legs[self.side as usize].socket().close();
        p.touch();
        Poll::Ready(Ok(()))
    }
}
