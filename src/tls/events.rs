//! What the workers' TLS code tells the control plane: session secrets (the key log) and the
//! failures that deserve a log line. Workers never format strings: they send fixed-size records
//! through a bounded channel (a full channel drops the record and counts it), and the control
//! plane's thread writes the NSS key log file (`SSLKEYLOGFILE` format) and the log lines.
//!
//! The same channel is where the live capture (issue 8) will take the secrets from, to put them
//! into pcapng Decryption Secrets Blocks.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

/// The NSS key log labels rustls uses (TLS 1.2 and 1.3).
const LABELS: [&str; 7] = [
    "CLIENT_RANDOM",
    "CLIENT_EARLY_TRAFFIC_SECRET",
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
    "EXPORTER_SECRET",
];

/// One key log line's data.
#[derive(Debug, Clone)]
pub struct Secret {
    pub label: &'static str,
    pub client_random: [u8; 32],
    pub secret: [u8; 48],
    pub secret_len: u8,
}

impl Secret {
    /// The line in NSS key log format, without the newline.
    pub fn line(&self) -> String {
        let mut s = String::with_capacity(self.label.len() + 1 + 64 + 1 + 96);
        s.push_str(self.label);
        s.push(' ');
        for b in self.client_random {
            let _ = write!(s, "{b:02x}");
        }
        s.push(' ');
        for b in &self.secret[..self.secret_len as usize] {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// Which leg a TLS failure happened on, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The upstream certificate failed verification.
    UpstreamRejected,
    /// The upstream handshake failed otherwise.
    UpstreamFailed,
    /// The client's first bytes were not a usable ClientHello.
    BadClientHello,
    /// The client's handshake failed (it did not accept our leaf, for example).
    ClientFailed,
    /// The client hung up (FIN or reset) during its handshake.
    ClientGone,
    /// No leaf could be had.
    MintFailed,
}

/// Something the control plane logs.
#[derive(Debug)]
pub struct Event {
    pub failure: Failure,
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The SNI (or the name the upstream was verified for), if any.
    pub host: Option<String>,
    /// The cause, formatted by the control plane.
    pub cause: Cause,
}

/// Why, as the layer that failed said it (formatted only on the control plane).
#[derive(Debug)]
pub enum Cause {
    Tls(rustls::Error),
    Io(std::io::ErrorKind),
    Hello(flowdog_wire::tls::HelloError),
    Mint(super::mint::MintError),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Tls(e) => write!(f, "{e}"),
            Cause::Io(k) => write!(f, "{k}"),
            Cause::Hello(e) => write!(f, "{e}"),
            Cause::Mint(e) => write!(f, "{e}"),
        }
    }
}

pub enum Msg {
    Secret(Secret),
    Event(Event),
}

/// The workers' end: rustls's key log, and failures.
#[derive(Clone)]
pub struct Events {
    tx: SyncSender<Msg>,
    /// Whether secrets are wanted at all (a key log file, or a capture).
    pub secrets: bool,
    pub dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("secrets", &self.secrets).finish()
    }
}

impl Events {
    fn send(&self, m: Msg) {
        if self.tx.try_send(m).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn failure(&self, failure: Failure, client: SocketAddr, server: SocketAddr, host: Option<&str>, cause: Cause) {
        self.send(Msg::Event(Event { failure, client, server, host: host.map(str::to_owned), cause }));
    }
}

impl rustls::KeyLog for Events {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let (Some(label), Ok(client_random)) =
            (LABELS.iter().find(|l| **l == label), <[u8; 32]>::try_from(client_random))
        else {
            return;
        };
        if secret.len() > 48 {
            return;
        }
        let mut s = Secret { label, client_random, secret: [0; 48], secret_len: secret.len() as u8 };
        s.secret[..secret.len()].copy_from_slice(secret);
        self.send(Msg::Secret(s));
    }

    fn will_log(&self, _label: &str) -> bool {
        self.secrets
    }
}

/// Starts the control plane's thread for the events: it appends secrets to `keylog` (created
/// with mode 0600 if missing) and prints failures to stderr. Ends when every sender is gone.
pub fn start(keylog: Option<&Path>, capacity: usize) -> Result<(Events, std::thread::JoinHandle<()>)> {
    let mut file = match keylog {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("tls.keylog_file: {}: cannot open", p.display()))?,
        ),
        None => None,
    };
    let (tx, rx): (SyncSender<Msg>, Receiver<Msg>) = mpsc::sync_channel(capacity.max(1));
    let events = Events { tx, secrets: file.is_some(), dropped: Arc::new(AtomicU64::new(0)) };
    let h = std::thread::Builder::new()
        .name("flowdog-tlslog".into())
        .spawn(move || {
            for m in rx {
                match m {
                    Msg::Secret(s) => {
                        if let Some(f) = &mut file {
                            // A line at a time, so a reader (tshark) never sees half a line.
                            let _ = f.write_all(format!("{}\n", s.line()).as_bytes());
                        }
                    }
                    Msg::Event(e) => eprintln!("{}", describe(&e)),
                }
            }
        })
        .context("starting the TLS event thread")?;
    Ok((events, h))
}

/// The log line for a failure.
pub fn describe(e: &Event) -> String {
    let what = match e.failure {
        Failure::UpstreamRejected => "upstream certificate rejected",
        Failure::UpstreamFailed => "upstream handshake failed",
        Failure::BadClientHello => "bad ClientHello",
        Failure::ClientFailed => "client handshake failed",
        Failure::ClientGone => "client hung up during the handshake",
        Failure::MintFailed => "no leaf certificate",
    };
    format!(
        "flowdog: tls: {what}: host={} client={} server={}: {}",
        e.host.as_deref().unwrap_or("-"),
        e.client,
        e.server,
        e.cause
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::KeyLog;

    #[test]
    fn secrets_become_nss_lines() {
        let dir = std::env::temp_dir().join(format!("flowdog-keylog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.log");
        let (ev, h) = start(Some(&path), 16).unwrap();
        assert!(ev.will_log("CLIENT_RANDOM"));
        ev.log("CLIENT_TRAFFIC_SECRET_0", &[0xab; 32], &[0x01; 48]);
        ev.log("NOT_A_LABEL", &[0xab; 32], &[0x01; 48]);
        ev.log("CLIENT_RANDOM", &[0xcd; 31], &[0x01; 48]);
        drop(ev);
        h.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("CLIENT_TRAFFIC_SECRET_0 {} {}\n", "ab".repeat(32), "01".repeat(48)));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
