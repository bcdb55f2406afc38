//! Health checks of the targets, as GWLB runs them (gwlb-facts.md §7): TCP connect, HTTP or
//! HTTPS to a port and path, every interval with a timeout, and healthy / unhealthy thresholds
//! of consecutive results. HTTPS does not verify the target's certificate (GWLB does not).

use super::config::{CheckProtocol, HealthCheck};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One check against `ip`; Err names why it failed.
pub fn check(hc: &HealthCheck, ip: Ipv4Addr) -> Result<(), String> {
    let deadline = Instant::now() + hc.timeout;
    let addr = SocketAddr::from((ip, hc.port));
    let mut tcp = TcpStream::connect_timeout(&addr, hc.timeout).map_err(|e| format!("connect: {e}"))?;
    if hc.protocol == CheckProtocol::Tcp {
        return Ok(());
    }
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    tcp.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {ip}\r\nUser-Agent: ELB-HealthChecker/2.0\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        hc.path
    );
    let head = if hc.protocol == CheckProtocol::Https {
        let config = tls_config();
        let name = rustls::pki_types::ServerName::IpAddress(ip.into());
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| format!("tls: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        exchange(&mut tls, request.as_bytes(), deadline)?
    } else {
        exchange(&mut tcp, request.as_bytes(), deadline)?
    };
    let status = parse_status(&head).ok_or_else(|| "no HTTP status line in the answer".to_string())?;
    if hc.matcher.0 <= status && status <= hc.matcher.1 {
        Ok(())
    } else {
        Err(format!("HTTP {status}, not in {}-{}", hc.matcher.0, hc.matcher.1))
    }
}

/// Sends the request and reads until the end of the response head (or of the stream).
fn exchange(s: &mut (impl Read + Write), request: &[u8], deadline: Instant) -> Result<Vec<u8>, String> {
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    s.flush().map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
        if Instant::now() >= deadline {
            return Err("timed out".into());
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Ok(head)
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts.next()?.trim().parse().ok()
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the default provider supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// GWLB's HTTPS health checks do not validate the target's certificate; neither do ours.
/// Signatures are still checked, so the handshake is a real one.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A target's health from consecutive results: `unhealthy_threshold` failures in a row turn a
/// healthy target unhealthy, `healthy_threshold` successes in a row turn it healthy again.
#[derive(Debug, Clone, Copy)]
pub struct Tracker {
    pub healthy: bool,
    streak: u32,
}

impl Tracker {
    pub fn new(healthy: bool) -> Tracker {
        Tracker { healthy, streak: 0 }
    }

    /// Records a result; returns true when the state changed.
    pub fn record(&mut self, ok: bool, hc: &HealthCheck) -> bool {
        if ok == self.healthy {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.healthy { hc.unhealthy_threshold } else { hc.healthy_threshold };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc() -> HealthCheck {
        HealthCheck {
            protocol: CheckProtocol::Http,
            port: 80,
            path: "/".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            healthy_threshold: 3,
            unhealthy_threshold: 2,
            matcher: (200, 399),
        }
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let h = hc();
        let mut t = Tracker::new(true);
        assert!(!t.record(false, &h));
        assert!(!t.record(true, &h)); // the streak breaks
        assert!(!t.record(false, &h));
        assert!(t.record(false, &h));
        assert!(!t.healthy);
        assert!(!t.record(true, &h));
        assert!(!t.record(true, &h));
        assert!(t.record(true, &h));
        assert!(t.healthy);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn checks_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 500 Oops\r\n\r\n"] {
                let (mut s, _) = l.accept().unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let mut h = hc();
        h.port = port;
        h.timeout = Duration::from_secs(2);
        let ip = Ipv4Addr::LOCALHOST;
        assert_eq!(check(&h, ip), Ok(()));
        assert!(check(&h, ip).unwrap_err().contains("HTTP 500"));
        server.join().unwrap();
        h.protocol = CheckProtocol::Tcp;
        assert!(check(&h, ip).unwrap_err().starts_with("connect"));
    }
}
