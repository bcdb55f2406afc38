//! The CloudFront Functions viewer-request event, and what a function's answer asks for: plain
//! data (serde_json values), no host calls; lib.rs makes those.

use serde_json::{json, Map, Value};

/// A request head as the host shows it: names lowercase, no pseudo-headers in `headers`.
pub struct Head {
    pub method: String,
    /// `:path`: the path and the query, as on the wire.
    pub path: String,
    pub authority: String,
    pub headers: Vec<(String, String)>,
}

/// A change to the request head.
#[derive(Debug, PartialEq)]
pub enum Change {
    Method(String),
    /// A new `:path` (already encoded).
    Path(String),
    /// The header's values, all of them (`host`: the authority).
    Set(String, Vec<String>),
    Remove(String),
}

/// A local response.
#[derive(Debug, PartialEq)]
pub struct Local {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Request(Vec<Change>),
    Response(Local),
}

/// `{name: {value, multiValue}}` of name/value pairs, `multiValue` only for a repeated name.
fn entries<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Map<String, Value> {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in pairs {
        match grouped.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((k, vec![v])),
        }
    }
    grouped
        .into_iter()
        .map(|(k, vs)| {
            let mut e = Map::new();
            e.insert("value".into(), vs[0].into());
            if vs.len() > 1 {
                e.insert("multiValue".into(), vs.iter().map(|v| json!({ "value": v })).collect());
            }
            (k.to_string(), Value::Object(e))
        })
        .collect()
}

/// `a=1&b&a=2` as name/value pairs (a name alone has the value "").
fn query_pairs(q: &str) -> impl Iterator<Item = (&str, &str)> {
    q.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The cookies of Cookie header values (`a=1; b=2`).
fn cookie_pairs<'a>(values: impl Iterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    values
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.split_once('=').unwrap_or((c, "")))
        .map(|(n, v)| (n.trim(), v.trim()))
        .collect()
}

/// The event for `head`, from viewer `ip`; and its `request` alone (to compare the answer with).
pub fn event(head: &Head, ip: &str, request_id: &str) -> (Value, Value) {
    let (uri, query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    let mut headers = entries(std::iter::once(("host", head.authority.as_str())).chain(
        head.headers.iter().filter(|(k, _)| k != "cookie" && k != "host").map(|(k, v)| (k.as_str(), v.as_str())),
    ));
    if head.authority.is_empty() {
        headers.remove("host");
    }
    let cookies = entries(cookie_pairs(head.headers.iter().filter(|(k, _)| k == "cookie").map(|(_, v)| v.as_str())));
    let request = json!({
        "method": head.method,
        "uri": uri,
        "querystring": entries(query_pairs(query)),
        "headers": headers,
        "cookies": cookies,
    });
    let host = host_only(&head.authority);
    let event = json!({
        "version": "1.0",
        "context": {
            "distributionDomainName": host,
            "distributionId": "FLOWDOG",
            "eventType": "viewer-request",
            "requestId": request_id,
        },
        "viewer": { "ip": ip },
        "request": request.clone(),
    });
    (event, request)
}

/// The host of an authority: no port, no IPv6 brackets.
fn host_only(a: &str) -> &str {
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// A viewer address from the `source.address` property (`ip:port`, `[ip6]:port`): the IP.
pub fn viewer_ip(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => addr.to_string(),
    }
}

/// A string, number or boolean as a string (CloudFront wants strings; a number is forgiven).
fn scalar(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("{what}: not a string")),
    }
}

/// The values of an entry `{value, multiValue}`: multiValue's when it has some, unless only
/// `value` changed from `orig` (a script that set `value` of a repeated one meant that value).
fn values(e: &Value, orig: Option<&Value>, what: &str) -> Result<Vec<String>, String> {
    let Value::Object(o) = e else { return Err(format!("{what}: not an object {{value}}")) };
    let single = o.get("value").filter(|v| !v.is_null()).map(|v| scalar(v, what)).transpose()?;
    let multi = match o.get("multiValue") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.get("value").ok_or_else(|| format!("{what}: a multiValue item has no value")))
            .map(|v| v.and_then(|v| scalar(v, what)))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(format!("{what}: multiValue is not an array")),
    };
    match single {
        _ if multi.is_empty() => single.map(|s| vec![s]).ok_or_else(|| format!("{what}: no value")),
        Some(s) => {
            let before = orig.and_then(|o| values(o, None, what).ok()).unwrap_or_default();
            if multi == before && before.first() != Some(&s) {
                Ok(vec![s])
            } else {
                Ok(multi)
            }
        }
        None => Ok(multi),
    }
}

/// An object of entries as (name, values), in its order; names lowercased when `lower`.
fn all_values(
    m: &Map<String, Value>,
    orig: Option<&Map<String, Value>>,
    what: &str,
    lower: bool,
) -> Result<Vec<(String, Vec<String>)>, String> {
    m.iter()
        .map(|(k, e)| {
            let name = if lower { k.to_ascii_lowercase() } else { k.clone() };
            let o = orig.and_then(|o| o.get(&name));
            Ok((name.clone(), values(e, o, &format!("{what} {k:?}"))?))
        })
        .collect()
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{what} is not an object"))
}

/// RFC 9110 token characters (header names, methods).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What the host takes as a header value: no control characters but tab.
fn is_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

fn check_header(name: &str, vals: &[String]) -> Result<(), String> {
    if !is_token(name) {
        return Err(format!("{name:?} is not a header name"));
    }
    match vals.iter().find(|v| !is_value(v)) {
        Some(v) => Err(format!("header {name}: {v:?} is not a header value")),
        None => Ok(()),
    }
}

/// `s` with every byte outside the URI's unreserved, sub-delims, `:@/%` and `also` percent-encoded.
fn encode(s: &str, also: &[u8], except: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let ok = (b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b) || also.contains(&b))
            && !except.contains(&b);
        if ok {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A querystring object back as `a=1&b=2` (the names and values as the script wrote them,
/// what cannot stand in a query percent-encoded).
fn query_string(q: &[(String, Vec<String>)]) -> String {
    let mut out = String::new();
    for (name, vals) in q {
        for v in vals {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&encode(name, b"?", b"&=+#"));
            out.push('=');
            out.push_str(&encode(v, b"?", b"&#"));
        }
    }
    out
}

/// What `answer` (the function's return value, an object) asks for, given the `request` of the
/// event it got and the head that request came from.
pub fn outcome(request: &Value, head: &Head, answer: &Value) -> Result<Outcome, String> {
    let a = object(answer, "the answer")?;
    if a.contains_key("statusCode") {
        return response(a).map(Outcome::Response);
    }
    let mut changes = Vec::new();
    if let Some(m) = a.get("method") {
        let m = scalar(m, "method")?;
        if m != head.method {
            if !is_token(&m) {
                return Err(format!("method {m:?} is not a method"));
            }
            changes.push(Change::Method(m));
        }
    }
    // uri and querystring: `:path`, rebuilt only when either changed.
    let (old_uri, old_query) = head.path.split_once('?').unwrap_or((&head.path, ""));
    let uri = match a.get("uri") {
        Some(u) => scalar(u, "uri")?,
        None => old_uri.to_string(),
    };
    let query = match a.get("querystring") {
        None | Some(Value::Null) => None,
        // CloudFront takes a string too.
        Some(Value::String(s)) => Some(s.strip_prefix('?').unwrap_or(s).to_string()),
        Some(q) => {
            let orig = request.get("querystring").and_then(Value::as_object);
            let new = all_values(object(q, "querystring")?, orig, "querystring", false)?;
            let before = all_values(orig.unwrap_or(&Map::new()), None, "querystring", false)?;
            (new != before).then(|| query_string(&new))
        }
    };
    if uri != old_uri || query.as_deref().is_some_and(|q| q != old_query) {
        if !uri.starts_with('/') {
            return Err(format!("uri {uri:?} does not start with /"));
        }
        let mut path = encode(&uri, b"", b"");
        let q = query.as_deref().unwrap_or(old_query);
        if !q.is_empty() {
            path.push('?');
            path.push_str(&encode(q, b"?", b"#"));
        }
        changes.push(Change::Path(path));
    }
    if let Some(h) = a.get("headers").filter(|h| !h.is_null()) {
        let orig = request.get("headers").and_then(Value::as_object);
        let new = all_values(object(h, "headers")?, orig, "header", true)?;
        for (name, vals) in &new {
            check_header(name, vals)?;
            let authority = |v: &String| {
                !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
            };
            if name == "host" && (vals.len() != 1 || !authority(&vals[0])) {
                return Err(format!("host {vals:?} is not one authority"));
            }
            let before = orig.and_then(|o| o.get(name)).map(|e| values(e, None, name)).transpose()?;
            if before.as_ref() != Some(vals) {
                changes.push(if vals.is_empty() {
                    Change::Remove(name.clone())
                } else {
                    Change::Set(name.clone(), vals.clone())
                });
            }
        }
        for name in orig.into_iter().flat_map(|o| o.keys()) {
            if name != "host" && !new.iter().any(|(n, _)| n == name) {
                changes.push(Change::Remove(name.clone()));
            }
        }
    }
    if let Some(c) = a.get("cookies").filter(|c| !c.is_null()) {
        let orig = request.get("cookies").and_then(Value::as_object);
        let new = all_values(object(c, "cookies")?, orig, "cookie", false)?;
        let before = all_values(orig.unwrap_or(&Map::new()), None, "cookie", false)?;
        if new != before {
            let mut line = String::new();
            for (name, vals) in &new {
                for v in vals {
                    if !line.is_empty() {
                        line.push_str("; ");
                    }
                    line.push_str(name);
                    line.push('=');
                    line.push_str(v);
                }
            }
            if line.is_empty() {
                changes.push(Change::Remove("cookie".into()));
            } else {
                check_header("cookie", std::slice::from_ref(&line))?;
                changes.push(Change::Set("cookie".into(), vec![line]));
            }
        }
    }
    Ok(Outcome::Request(changes))
}

fn response(a: &Map<String, Value>) -> Result<Local, String> {
    let status = match &a["statusCode"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| (200..=599).contains(s))
    .ok_or_else(|| format!("statusCode {} is not a status from 200 to 599", a["statusCode"]))? as u32;
    let mut headers = Vec::new();
    if let Some(h) = a.get("headers").filter(|h| !h.is_null()) {
        for (name, vals) in all_values(object(h, "headers")?, None, "header", true)? {
            check_header(&name, &vals)?;
            headers.extend(vals.into_iter().map(|v| (name.clone(), v)));
        }
    }
    if let Some(c) = a.get("cookies").filter(|c| !c.is_null()) {
        for (name, e) in object(c, "cookies")? {
            // {value, attributes, multiValue: [{value, attributes}]}: one Set-Cookie each.
            let items: Vec<&Value> = match e.get("multiValue").and_then(Value::as_array) {
                Some(m) if !m.is_empty() => m.iter().collect(),
                _ => vec![e],
            };
            for it in items {
                let v = it.get("value").map(|v| scalar(v, "cookie")).transpose()?.unwrap_or_default();
                let mut line = format!("{name}={v}");
                if let Some(at) = it.get("attributes").filter(|x| !x.is_null()) {
                    let at = scalar(at, "cookie attributes")?;
                    if !at.is_empty() {
                        line.push_str("; ");
                        line.push_str(&at);
                    }
                }
                check_header("set-cookie", std::slice::from_ref(&line))?;
                headers.push(("set-cookie".into(), line));
            }
        }
    }
    let body = match a.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(Value::Object(b)) => {
            let data = b.get("data").map(|d| scalar(d, "body.data")).transpose()?.unwrap_or_default();
            match b.get("encoding").and_then(Value::as_str).unwrap_or("text") {
                "text" => data.into_bytes(),
                "base64" => base64(&data).ok_or("body.data is not base64")?,
                e => return Err(format!("body.encoding {e:?} is neither text nor base64")),
            }
        }
        Some(_) => return Err("body is neither a string nor {data, encoding}".into()),
    };
    Ok(Local { status, headers, body })
}

/// Base64 (standard or URL-safe alphabet, padding and whitespace optional) decoded.
fn base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(path: &str, headers: &[(&str, &str)]) -> Head {
        Head {
            method: "GET".into(),
            path: path.into(),
            authority: "www.example.com:8080".into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn the_event_has_cloudfronts_shape() {
        let h = head("/a/b?x=1&y=2&x=3&z", &[("accept", "*/*"), ("cookie", "s=1; t=2"), ("x-a", "1"), ("x-a", "2")]);
        let (ev, req) = event(&h, "198.18.1.10", "id");
        assert_eq!(ev["context"]["distributionDomainName"], "www.example.com");
        assert_eq!(ev["context"]["eventType"], "viewer-request");
        assert_eq!(ev["viewer"]["ip"], "198.18.1.10");
        assert_eq!(req["uri"], "/a/b");
        assert_eq!(req["querystring"]["x"], json!({"value": "1", "multiValue": [{"value": "1"}, {"value": "3"}]}));
        assert_eq!(req["querystring"]["z"], json!({"value": ""}));
        assert_eq!(req["headers"]["host"], json!({"value": "www.example.com:8080"}));
        assert!(req["headers"].get("cookie").is_none());
        assert_eq!(req["headers"]["x-a"]["multiValue"][1]["value"], "2");
        assert_eq!(req["cookies"]["t"], json!({"value": "2"}));
        assert_eq!(viewer_ip("[fd00:fd:1::10]:4000"), "fd00:fd:1::10");
        assert_eq!(viewer_ip("198.18.1.10:4000"), "198.18.1.10");
    }

    #[test]
    fn the_request_back_unchanged_changes_nothing() {
        let h = head("/a?x=1&x=2", &[("cookie", "s=1"), ("x-a", "1"), ("x-a", "2")]);
        let (_, req) = event(&h, "ip", "id");
        assert_eq!(outcome(&req, &h, &req).unwrap(), Outcome::Request(vec![]));
    }

    #[test]
    fn changes_come_back_as_changes() {
        let h = head("/a?x=1", &[("cookie", "s=1"), ("x-a", "1"), ("x-gone", "1")]);
        let (_, mut req) = event(&h, "ip", "id");
        req["uri"] = "/b c".into();
        req["querystring"]["y"] = json!({"value": "a&b"});
        req["headers"]["x-a"]["value"] = "2".into();
        req["headers"]["X-New"] = json!({"value": "n", "multiValue": [{"value": "n"}, {"value": "m"}]});
        req["headers"].as_object_mut().unwrap().remove("x-gone");
        req["cookies"]["u"] = json!({"value": "3"});
        let Outcome::Request(mut c) = outcome(&event(&h, "ip", "id").1, &h, &req).unwrap() else { panic!() };
        let key = |c: &Change| format!("{c:?}");
        c.sort_by_key(key);
        let mut want = vec![
            Change::Path("/b%20c?x=1&y=a%26b".into()),
            Change::Set("x-a".into(), vec!["2".into()]),
            Change::Set("x-new".into(), vec!["n".into(), "m".into()]),
            Change::Remove("x-gone".into()),
            Change::Set("cookie".into(), vec!["s=1; u=3".into()]),
        ];
        want.sort_by_key(key);
        assert_eq!(c, want);
    }

    #[test]
    fn a_response_is_a_local_response() {
        let h = head("/", &[]);
        let (_, req) = event(&h, "ip", "id");
        let a = json!({"statusCode": 302, "headers": {"Location": {"value": "https://x/"}},
                       "cookies": {"k": {"value": "v", "attributes": "Path=/"}},
                       "body": {"data": "aGk=", "encoding": "base64"}});
        assert_eq!(
            outcome(&req, &h, &a).unwrap(),
            Outcome::Response(Local {
                status: 302,
                headers: vec![("location".into(), "https://x/".into()), ("set-cookie".into(), "k=v; Path=/".into())],
                body: b"hi".to_vec(),
            })
        );
        assert!(outcome(&req, &h, &json!({"statusCode": 42})).is_err());
        assert!(outcome(&req, &h, &json!({"headers": {"x": {"value": "a\nb"}}})).is_err());
    }
}
