//! account_id_emf and upsidedown through the host (tests/plugins.rs has the harness).

use super::*;
use image::{AnimationDecoder, ImageFormat, Rgba, RgbaImage};
use std::io::Cursor;

// ---------------------------------------------------------------------------------------------
// account_id_emf

fn logs(events: &Receiver<Event>) -> Vec<(i32, String)> {
    events
        .try_iter()
        .filter_map(|e| match e {
            Event::Log { level, message, .. } => Some((level, message)),
            Event::Failed { what, .. } => panic!("the plugin failed: {what}"),
            _ => None,
        })
        .collect()
}

fn metric(c: &Chain, name: &str) -> Option<i64> {
    c._plugins.shared.metrics().into_iter().find(|m| m.0 == name).map(|m| m.2)
}

fn sigv4(key: &str, scope: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={key}/20261203/{scope}/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, \
         Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024"
    )
}

/// The request heads after the chain, one exchange each.
fn through_chain(c: &Chain, reqs: Vec<http::request::Parts>) -> Vec<http::request::Parts> {
    let vms = c.vms.clone();
    block_on(async move {
        let mut out = Vec::new();
        for r in reqs {
            let ex = Exchange::new(&vms, flow(), 1 << 20);
            out.push(ex.head(r, true).await.expect("the request goes on").expect("not held"));
        }
        out
    })
}

#[test]
fn account_id_emf_logs_an_emf_record_with_the_account_of_the_key() {
    let c = chain(&[("account_id_emf", r#"{"namespace": "lab"}"#, OnFailure::Closed)], relaxed());
    let auth = sigv4("ASIAQNZGKIQY56JQ7WML", "us-east-1/sts");
    // A presigned S3 URL: the credential in the query, percent-encoded.
    let presigned = "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAY34FZKBOKMUTVV7A%2F20261203%2F\
                     eu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20261203T000000Z&X-Amz-Expires=60&\
                     X-Amz-SignedHeaders=host&X-Amz-Signature=00";
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let out = through_chain(
        &c,
        vec![
            request("/", &[("Host", "sts.lab.test"), ("Authorization", &auth)]),
            request(presigned, &[("Host", "s3.lab.test")]),
            request("/", &[("Host", "sts.lab.test"), ("Authorization", &auth)]),
            request("/", &[("Host", "www.lab.test")]),
        ],
    );
    assert_eq!(out[0].headers["authorization"], auth.as_str(), "the request goes on unchanged");
    let t1 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let lines = logs(&c.events);
    assert_eq!(lines.len(), 3, "one record per signed request, none for the unsigned one: {lines:?}");
    let docs: Vec<serde_json::Value> = lines
        .iter()
        .map(|(level, m)| {
            assert_eq!(*level, 2, "info: {m}");
            assert!(!m.contains('\n'), "one line: {m}");
            serde_json::from_str(m).unwrap_or_else(|e| panic!("not JSON ({e}): {m}"))
        })
        .collect();
    let d = &docs[0];
    let ts = d["_aws"]["Timestamp"].as_u64().expect("a Timestamp in ms");
    assert!(t0 <= ts && ts <= t1, "the host's clock, in milliseconds: {ts} not in {t0}..{t1}");
    assert_eq!(
        d["_aws"]["CloudWatchMetrics"],
        serde_json::json!([{"Namespace": "lab", "Dimensions": [["AccountId"]],
                            "Metrics": [{"Name": "Requests", "Unit": "Count"}]}])
    );
    assert_eq!(d["AccountId"], "029608264753");
    assert_eq!(d["Requests"], 1);
    assert_eq!(d["AccessKeyType"], "ASIA");
    assert_eq!(d["Service"], "sts");
    assert_eq!(d["Region"], "us-east-1");
    assert_eq!(d["Host"], "sts.lab.test");
    assert_eq!(d["VpcEndpointId"], "vpce-00123456789abcdef");
    // Every member the metric directive names is there (what CloudWatch requires).
    assert!(d.get("AccountId").is_some() && d.get("Requests").is_some());
    let p = &docs[1];
    assert_eq!(
        (&p["AccountId"], &p["Service"], &p["Region"], &p["Host"]),
        (&"609629065308".into(), &"s3".into(), &"eu-west-1".into(), &"s3.lab.test".into())
    );
    assert_eq!(docs[2]["AccountId"], "029608264753");
    assert_eq!(metric(&c, r#"account_id_emf_requests_total{account_id="029608264753"}"#), Some(2));
    assert_eq!(metric(&c, r#"account_id_emf_requests_total{account_id="609629065308"}"#), Some(1));
    assert_eq!(metric(&c, r#"account_id_emf_ignored_total{reason="malformed"}"#), None);
}

#[test]
fn account_id_emf_ignores_malformed_credentials_and_counts_them() {
    let c = chain(&[("account_id_emf", "", OnFailure::Closed)], relaxed());
    let bad = [
        "AWS4-HMAC-SHA256".to_string(),
        "AWS4-HMAC-SHA256 ".to_string(),
        "AWS4-HMAC-SHA256 Credential=".to_string(),
        "AWS4-HMAC-SHA256 Credential=ASIAQNZGKIQY56JQ7WML".to_string(),
        sigv4("ASIAQNZGKIQY56JQ7WM", "us-east-1/sts"),  // 19 characters
        sigv4("ASIAQNZGKIQY56JQ7WM1", "us-east-1/sts"), // not base32
        sigv4("asiaqnzgkiqy56jq7wml", "us-east-1/sts"), // lowercase
        sigv4("ASIAQNZGKIQY56JQ7WML", "US EAST/sts"),   // not a region
        "AWS4-HMAC-SHA256 Credential=ASIAQNZGKIQY56JQ7WML/2026/us-east-1/sts/aws4_request".to_string(),
        "AWS4-HMAC-SHA256 Credential=ASIAQNZGKIQY56JQ7WML/20261203/us-east-1/sts/aws5_request".to_string(),
        format!("AWS4-HMAC-SHA256 Credential={}", "A".repeat(5000)),
    ];
    let mut reqs: Vec<http::request::Parts> =
        bad.iter().map(|a| request("/", &[("Host", "sts.lab.test"), ("Authorization", a)])).collect();
    // Not UTF-8 at all.
    let mut r = request("/", &[("Host", "sts.lab.test")]);
    r.headers
        .insert("authorization", http::HeaderValue::from_bytes(b"AWS4-HMAC-SHA256 Credential=\xff\xfe/x").unwrap());
    reqs.push(r);
    // A presigned URL whose credential's escapes are broken.
    reqs.push(request("/o?X-Amz-Credential=ASIAQNZGKIQY56JQ7WML%2G20261203%2", &[("Host", "s3.lab.test")]));
    let malformed = reqs.len() as i64;
    // The documentation's example key: well formed, but of the old format that names no account.
    reqs.push(request(
        "/",
        &[("Host", "sts.lab.test"), ("Authorization", &sigv4("AKIAIOSFODNN7EXAMPLE", "us-east-1/sts"))],
    ));
    // Not SigV4: not counted at all.
    reqs.push(request("/", &[("Host", "www.lab.test"), ("Authorization", "Bearer abc")]));
    reqs.push(request("/", &[("Host", "www.lab.test"), ("Authorization", "AWS AKIAIOSFODNN7EXAMPLE:c2lnbmF0dXJl")]));
    let n = reqs.len();
    let out = through_chain(&c, reqs);
    assert_eq!(out.len(), n, "every request went on");
    let lines = logs(&c.events);
    assert!(lines.is_empty(), "no record and no complaint: {lines:?}");
    assert_eq!(metric(&c, r#"account_id_emf_ignored_total{reason="malformed"}"#), Some(malformed));
    assert_eq!(metric(&c, r#"account_id_emf_ignored_total{reason="no_account"}"#), Some(1));
    let accounts =
        c._plugins.shared.metrics().into_iter().filter(|m| m.0.starts_with("account_id_emf_requests")).count();
    assert_eq!(accounts, 0);
}

#[test]
fn account_id_emf_refuses_a_bad_configuration() {
    let entries: Vec<PluginEntry> = vec![toml::from_str(&format!(
        "name = \"account_id_emf\"\nfile = \"{}\"\nconfiguration = '{{\"namespace\": 7}}'",
        wasm("account_id_emf").display()
    ))
    .unwrap()];
    let (tx, _rx) = test_events();
    assert!(Plugins::load(&relaxed(), &entries, 1, tx).is_err(), "on_configure says no");
}

// ---------------------------------------------------------------------------------------------
// upsidedown

const W: u32 = 40;
const H: u32 = 30;
const RED: [u8; 3] = [230, 20, 20];
const BLUE: [u8; 3] = [20, 20, 230];

/// Blue everywhere but the bottom-right quarter, which is red.
fn fixture() -> RgbaImage {
    RgbaImage::from_fn(W, H, |x, y| {
        let c = if x >= W / 2 && y >= H / 2 { RED } else { BLUE };
        Rgba([c[0], c[1], c[2], 255])
    })
}

fn encode(img: &RgbaImage, f: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    match f {
        ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(img.clone()).into_rgb8().write_to(&mut out, f).unwrap(),
        _ => img.write_to(&mut out, f).unwrap(),
    }
    out.into_inner()
}

fn near(p: &Rgba<u8>, c: [u8; 3]) -> bool {
    (0..3).all(|i| (p[i] as i32 - c[i] as i32).abs() <= 40)
}

/// A response through the chain, its body in two pieces: the head and the body that came out,
/// and whether the head was held for the body.
fn respond(c: &Chain, headers: &[(&str, &str)], body: &[u8]) -> (http::response::Parts, Vec<u8>, bool) {
    let vms = c.vms.clone();
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let body = body.to_vec();
    block_on(async move {
        let ex = Exchange::new(&vms, flow(), 1 << 20);
        let req = ex.head(request("/cat", &[("Host", "img.lab.test")]), true).await.unwrap().unwrap();
        ex.request_sent(&req);
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (a, b) = body.split_at(body.len() / 2);
        let mut out = Vec::new();
        let mut head = ex.head(response(200, &h), body.is_empty()).await.unwrap();
        let held = head.is_none();
        for (piece, eos) in [(a, false), (b, true)] {
            let o = ex.data::<http::response::Parts>(Bytes::copy_from_slice(piece), eos).await.unwrap();
            if let Some(hd) = o.head {
                assert!(head.is_none(), "the head came out twice");
                head = Some(hd);
            }
            out.extend_from_slice(&o.data.unwrap_or_default());
        }
        (head.expect("the head came out"), out, held)
    })
}

fn check_upside_down(f: ImageFormat, content_type: &str) {
    let c = chain(&[("upsidedown", r#"{"sigma": 2.0}"#, OnFailure::Closed)], relaxed());
    let original = encode(&fixture(), f);
    let len = original.len().to_string();
    let (head, body, held) = respond(
        &c,
        &[("Content-Type", content_type), ("Content-Length", &len), ("ETag", "\"abc\""), ("Accept-Ranges", "bytes")],
        &original,
    );
    assert!(held, "{content_type}: the head waits for the whole image");
    assert_ne!(body, original, "{content_type}: the image changed");
    assert_eq!(head.headers["content-length"], body.len().to_string(), "{content_type}");
    assert!(head.headers.get("etag").is_none() && head.headers.get("accept-ranges").is_none());
    assert_eq!(image::guess_format(&body).unwrap(), f, "{content_type}: the same format");
    let img = image::load_from_memory_with_format(&body, f).unwrap().into_rgba8();
    assert_eq!(img.dimensions(), (W, H), "{content_type}");
    // 180°: the top-left corner comes from the red bottom-right, the bottom-right from blue.
    assert!(near(img.get_pixel(0, 0), RED), "{content_type}: (0,0) is {:?}", img.get_pixel(0, 0));
    assert!(near(img.get_pixel(W / 4, H / 4), RED), "{content_type}: {:?}", img.get_pixel(W / 4, H / 4));
    assert!(near(img.get_pixel(W - 1, H - 1), BLUE), "{content_type}: {:?}", img.get_pixel(W - 1, H - 1));
    assert!(near(img.get_pixel(W - 1, 0), BLUE) && near(img.get_pixel(0, H - 1), BLUE), "{content_type}");
    // Blurred: across the red/blue edge (now between x = W/2 - 1 and W/2 of the top half) the
    // colour runs through purples over several pixels.
    let y = H / 4;
    let mixed = (W / 2 - 4..W / 2 + 4).filter(|&x| {
        let p = img.get_pixel(x, y);
        (60..=190).contains(&p[0]) && (60..=190).contains(&p[2])
    });
    assert!(
        mixed.count() >= 2,
        "{content_type}: the edge is blurred: {:?}",
        (W / 2 - 4..W / 2 + 4).map(|x| img.get_pixel(x, y).0).collect::<Vec<_>>()
    );
    assert!(logs(&c.events).iter().all(|(l, _)| *l < 3), "no warning");
}

#[test]
fn upsidedown_turns_a_png_over_and_blurs_it() {
    check_upside_down(ImageFormat::Png, "image/png");
}

#[test]
fn upsidedown_turns_a_jpeg_over_and_blurs_it() {
    check_upside_down(ImageFormat::Jpeg, "image/jpeg; charset=binary");
}

#[test]
fn upsidedown_turns_a_gif_over_and_blurs_it() {
    check_upside_down(ImageFormat::Gif, "IMAGE/GIF");
}

#[test]
fn upsidedown_turns_every_frame_of_an_animated_gif() {
    let c = chain(&[("upsidedown", "", OnFailure::Closed)], relaxed());
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite).unwrap();
        let second =
            RgbaImage::from_fn(W, H, |x, _| if x < 4 { Rgba([0, 200, 0, 255]) } else { Rgba([200, 200, 200, 255]) });
        enc.encode_frames([image::Frame::new(fixture()), image::Frame::new(second)]).unwrap();
    }
    let (_, body, _) = respond(&c, &[("Content-Type", "image/gif")], &gif);
    let frames =
        image::codecs::gif::GifDecoder::new(Cursor::new(&body)).unwrap().into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 2);
    assert!(near(frames[0].buffer().get_pixel(0, 0), RED));
    // The second frame's green stripe moved from the left edge to the right.
    assert!(frames[1].buffer().get_pixel(W - 1, H / 2)[1] > frames[1].buffer().get_pixel(W - 1, H / 2)[0] + 50);
}

#[test]
fn upsidedown_leaves_other_responses_alone_and_unheld() {
    let c = chain(&[("upsidedown", r#"{"max_bytes": 100}"#, OnFailure::Closed)], relaxed());
    let html = b"<html><body>not an image at all, but long enough to be split in two</body></html>".to_vec();
    let (head, body, held) =
        respond(&c, &[("Content-Type", "text/html"), ("Content-Length", &html.len().to_string())], &html);
    assert!(!held, "a page passes without a pause");
    assert_eq!(
        (body, head.headers["content-length"].to_str().unwrap()),
        (html.clone(), html.len().to_string().as_str())
    );
    // An image larger than max_bytes (its Content-Length says so) is not held either.
    let png = encode(&fixture(), ImageFormat::Png);
    assert!(png.len() > 100);
    let (_, body, held) =
        respond(&c, &[("Content-Type", "image/png"), ("Content-Length", &png.len().to_string())], &png);
    assert!(!held);
    assert_eq!(body, png);
    // Without a length it is held until it outgrows max_bytes, then goes on as it came.
    let (_, body, held) = respond(&c, &[("Content-Type", "image/png")], &png);
    assert!(held);
    assert_eq!(body, png);
    assert!(logs(&c.events).iter().all(|(l, _)| *l < 3));
}

#[test]
fn upsidedown_passes_an_image_it_cannot_decode_with_a_warning() {
    let c = chain(&[("upsidedown", "", OnFailure::Closed)], relaxed());
    let mut broken = encode(&fixture(), ImageFormat::Png);
    broken.truncate(broken.len() / 2);
    for (ct, body) in [("image/png", broken), ("image/jpeg", b"\xff\xd8\xff\xe0 not really a jpeg".to_vec())] {
        let (head, out, _) = respond(&c, &[("Content-Type", ct), ("Content-Length", &body.len().to_string())], &body);
        assert_eq!(out, body, "{ct}: unchanged");
        assert_eq!(head.headers["content-length"], body.len().to_string());
    }
    let warns: Vec<String> = logs(&c.events).into_iter().filter(|(l, _)| *l == 3).map(|(_, m)| m).collect();
    assert_eq!(warns.len(), 2, "{warns:?}");
    assert!(warns.iter().all(|w| w.starts_with("upsidedown: ") && w.contains("does not decode")), "{warns:?}");
}
