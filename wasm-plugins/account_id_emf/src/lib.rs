//! account_id_emf: the seed's SigV4 scanner. Every request signed with AWS Signature Version 4
//! (an `Authorization: AWS4-HMAC-SHA256 Credential=...` header, or a presigned URL's
//! `X-Amz-Credential`) names an access key id, and the access key id encodes the AWS account
//! that owns it. The plugin logs one CloudWatch Embedded Metric Format (EMF) record per such
//! request (info level): a `Requests` count with the `AccountId` dimension, plus the key type,
//! the service and region of the credential scope, the host and the GWLB endpoint. CloudWatch
//! turns those log lines into metrics: alert on an account never seen before.
//!
//! Host metrics: `account_id_emf_requests_total{account_id="..."}` (one counter per account, at
//! most `max_accounts`; the rest count under `account_id="other"`) and
//! `account_id_emf_ignored_total{reason="malformed"}` (a SigV4 credential that does not parse)
//! or `{reason="no_account"}` (an old-format key, made before 2019, that encodes no account).
//!
//! Configuration (JSON, optional): `{"namespace": "flowdog", "max_accounts": 1000}`.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use serde::Deserialize;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { shared: Rc::new(Shared::new(Config::default())) })
    });
}}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// The EMF namespace of the metric.
    namespace: String,
    /// Accounts with a host counter of their own at most.
    max_accounts: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { namespace: "flowdog".into(), max_accounts: 1000 }
    }
}

/// What the root context shares with the HTTP contexts: the configuration and the ids of the
/// host metrics defined so far.
struct Shared {
    config: Config,
    metrics: RefCell<HashMap<String, u32>>,
    /// Accounts with a counter of their own (in this instance).
    accounts: Cell<usize>,
}

const OTHER: &str = "account_id_emf_requests_total{account_id=\"other\"}";

impl Shared {
    fn new(config: Config) -> Shared {
        Shared { config, metrics: RefCell::new(HashMap::new()), accounts: Cell::new(0) }
    }

    /// Adds one to the host counter `name` (defined at first use). A host that refuses (too
    /// many metrics) costs the count, nothing else.
    fn count(&self, name: &str) {
        let mut m = self.metrics.borrow_mut();
        let id = match m.get(name) {
            Some(&id) => id,
            None => match hostcalls::define_metric(MetricType::Counter, name) {
                Ok(id) => *m.entry(name.to_owned()).or_insert(id),
                Err(_) => return,
            },
        };
        let _ = hostcalls::increment_metric(id, 1);
    }

    fn count_account(&self, account: &str) {
        let name = format!("account_id_emf_requests_total{{account_id=\"{account}\"}}");
        if self.metrics.borrow().contains_key(&name) {
            return self.count(&name);
        }
        if self.accounts.get() >= self.config.max_accounts {
            return self.count(OTHER);
        }
        self.count(&name);
        if self.metrics.borrow().contains_key(&name) {
            self.accounts.set(self.accounts.get() + 1);
        }
    }
}

struct Root {
    shared: Rc<Shared>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return true };
        if raw.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        match serde_json::from_slice::<Config>(&raw) {
            Ok(c) => {
                self.shared = Rc::new(Shared::new(c));
                true
            }
            Err(e) => {
                log::error!("account_id_emf: bad configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Scan { shared: self.shared.clone() }))
    }
}

struct Scan {
    shared: Rc<Shared>,
}

impl Context for Scan {}

/// A SigV4 credential: `AKID/DATE/REGION/SERVICE/aws4_request` (SigV4a has no region).
#[derive(Debug, PartialEq, Eq)]
pub struct Credential<'a> {
    pub access_key_id: &'a str,
    pub region: Option<&'a str>,
    pub service: &'a str,
}

/// Why a request is not counted as an account's.
#[derive(Debug, PartialEq, Eq)]
pub enum Ignored {
    Malformed,
    NoAccount,
}

fn scope_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses a credential (`X-Amz-Credential`'s value, or what follows `Credential=`).
pub fn parse_credential(c: &str) -> Option<Credential<'_>> {
    let parts: Vec<&str> = c.trim().split('/').collect();
    let (key, date, region, service, end) = match parts.as_slice() {
        [k, d, r, s, e] => (*k, *d, Some(*r), *s, *e),
        [k, d, s, e] => (*k, *d, None, *s, *e),
        _ => return None,
    };
    let key_ok = (16..=128).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric());
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    if !key_ok || !date_ok || !region.is_none_or(scope_part) || !scope_part(service) || end != "aws4_request" {
        return None;
    }
    Some(Credential { access_key_id: key, region, service })
}

/// The credential of a SigV4 `Authorization` value. None: not SigV4 at all (Basic, Bearer, ...);
/// Some(Err): SigV4 that does not parse.
pub fn from_authorization(v: &str) -> Option<Result<Credential<'_>, Ignored>> {
    let v = v.trim_start();
    let (alg, rest) = v.split_once(' ').unwrap_or((v, ""));
    if !alg.starts_with("AWS4-") {
        return None;
    }
    let cred = rest.split(',').map(str::trim).find_map(|p| p.strip_prefix("Credential=")).and_then(parse_credential);
    Some(cred.ok_or(Ignored::Malformed))
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding of a query component; None when an escape is broken or the result is not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = unhex(*b.get(i + 1)?)?;
                let lo = unhex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded `X-Amz-Credential` of a presigned URL's path (None: the URL has none).
pub fn query_credential(path: &str) -> Option<String> {
    let query = path.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        k.eq_ignore_ascii_case("X-Amz-Credential").then(|| percent_decode(v).unwrap_or_default())
    })
}

/// RFC 4648 base32 (no padding): the value of one character.
fn b32(c: u8) -> Option<u64> {
    match c {
        b'A'..=b'Z' => Some((c - b'A') as u64),
        b'2'..=b'7' => Some((c - b'2') as u64 + 26),
        _ => None,
    }
}

/// The 12-digit AWS account id an access key id encodes. After the 4-character prefix (AKIA,
/// ASIA, ...) the key is base32; of the bits it decodes to, the first one flags the format that
/// carries an account (keys made since 2019), and the next 40 are the account number.
pub fn account_id(key: &str) -> Result<String, Ignored> {
    let b = key.as_bytes();
    let prefix_ok = b.len() == 20 && b[0] == b'A' && b[1..4].iter().all(u8::is_ascii_uppercase);
    if !prefix_ok {
        return Err(Ignored::Malformed);
    }
    let mut bits: u64 = 0;
    for &c in &b[4..] {
        b32(c).ok_or(Ignored::Malformed)?;
    }
    // Ten characters are 50 bits: the first 48 (6 bytes) hold the flag and the account.
    for &c in &b[4..14] {
        bits = bits << 5 | b32(c).ok_or(Ignored::Malformed)?;
    }
    let six_bytes = bits >> 2;
    if six_bytes >> 47 == 0 {
        return Err(Ignored::NoAccount);
    }
    let account = (six_bytes & 0x7fff_ffff_ff80) >> 7;
    Ok(format!("{account:012}"))
}

/// One EMF record (a JSON object on one line).
pub struct Record<'a> {
    pub namespace: &'a str,
    pub timestamp_ms: u64,
    pub account_id: &'a str,
    pub key_type: &'a str,
    pub service: &'a str,
    pub region: Option<&'a str>,
    pub host: Option<&'a str>,
    pub vpc_endpoint_id: Option<&'a str>,
}

impl Record<'_> {
    pub fn json(&self) -> String {
        let mut o = serde_json::Map::new();
        o.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": self.timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["AccountId"]],
                    "Metrics": [{"Name": "Requests", "Unit": "Count"}],
                }],
            }),
        );
        o.insert("AccountId".into(), self.account_id.into());
        o.insert("Requests".into(), 1.into());
        o.insert("AccessKeyType".into(), self.key_type.into());
        o.insert("Service".into(), self.service.into());
        let opt = [("Region", self.region), ("Host", self.host), ("VpcEndpointId", self.vpc_endpoint_id)];
        for (k, v) in opt {
            if let Some(v) = v {
                o.insert(k.into(), v.into());
            }
        }
        serde_json::Value::Object(o).to_string()
    }
}

impl Scan {
    fn header(&self, name: &str) -> Option<String> {
        self.get_http_request_header_bytes(name).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// Logs the EMF record of a SigV4-signed request (Ok too for a request that is not).
    fn scan(&self) -> Result<(), Ignored> {
        let auth = self.header("authorization");
        let query = self.header(":path").and_then(|p| query_credential(&p));
        let cred = match (auth.as_deref().and_then(from_authorization), query.as_deref()) {
            (Some(c), _) => c?,
            (None, Some(q)) => parse_credential(q).ok_or(Ignored::Malformed)?,
            (None, None) => return Ok(()),
        };
        let account = account_id(cred.access_key_id)?;
        self.shared.count_account(&account);
        // SigV4a names its regions in a header of its own.
        let region_set = self.header("x-amz-region-set");
        let host = self.header(":authority").map(|h| h.to_ascii_lowercase());
        let vpce = self.get_property(vec!["gwlb", "vpc_endpoint_id"]).map(|v| String::from_utf8_lossy(&v).into_owned());
        let timestamp_ms = self.get_current_time().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let record = Record {
            namespace: &self.shared.config.namespace,
            timestamp_ms,
            account_id: &account,
            key_type: &cred.access_key_id[..4],
            service: cred.service,
            region: cred.region.or(region_set.as_deref()),
            host: host.as_deref().filter(|h| !h.is_empty()),
            vpc_endpoint_id: vpce.as_deref().filter(|v| !v.is_empty()),
        };
        log::info!("{}", record.json());
        Ok(())
    }
}

impl HttpContext for Scan {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        if let Err(why) = self.scan() {
            self.shared.count(match why {
                Ignored::Malformed => "account_id_emf_ignored_total{reason=\"malformed\"}",
                Ignored::NoAccount => "account_id_emf_ignored_total{reason=\"no_account\"}",
            });
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_decode_to_their_accounts() {
        // Widely cited pairs (the first from Aidan Steele's and Tal Be'ery's write-ups).
        assert_eq!(account_id("ASIAQNZGKIQY56JQ7WML").unwrap(), "029608264753");
        assert_eq!(account_id("ASIAY34FZKBOKMUTVV7A").unwrap(), "609629065308");
        // The documentation's example key is of the old format: no account in it.
        assert_eq!(account_id("AKIAIOSFODNN7EXAMPLE"), Err(Ignored::NoAccount));
        assert_eq!(account_id("AKIA0NZGKIQY56JQ7WML"), Err(Ignored::Malformed));
        assert_eq!(account_id("AKIAQNZGKIQY56JQ7WM"), Err(Ignored::Malformed));
    }

    #[test]
    fn credentials_parse() {
        let h = "AWS4-HMAC-SHA256 Credential=ASIAQNZGKIQY56JQ7WML/20261203/us-east-1/sts/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abcd";
        let c = from_authorization(h).unwrap().unwrap();
        assert_eq!(c, Credential { access_key_id: "ASIAQNZGKIQY56JQ7WML", region: Some("us-east-1"), service: "sts" });
        assert_eq!(from_authorization("Bearer x"), None);
        assert_eq!(from_authorization("AWS4-HMAC-SHA256 Credential=x/y"), Some(Err(Ignored::Malformed)));
        let q = query_credential("/o?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAQNZGKIQY56JQ7WML%2F20261203%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=00").unwrap();
        assert_eq!(parse_credential(&q).unwrap().region, Some("eu-west-1"));
    }
}
