//! upsidedown: the seed's Upside-Down-Ternet. JPEG, PNG and GIF responses come back rotated
//! 180° and blurred, re-encoded in their own format (every frame of an animated GIF).
//!
//! Only `200` answers whose Content-Type is `image/jpeg`, `image/png` or `image/gif`, with no
//! Content-Encoding, are held: the head waits while the body is collected (up to `max_bytes`;
//! a Content-Length above it is let go at once, a body of unknown length that grows past it
//! goes on unchanged). Every other response passes without a pause. An image that does not
//! decode, or has more than `max_pixels` pixels, goes on unchanged (logged at warn / info).
//!
//! Keep `max_bytes` below the appliance's `[intercept] max_body_bytes` (by a chunk): the host
//! refuses to let a plugin hold more. Decoding, blurring and encoding a large image takes time:
//! `[plugins] callback_deadline_ms` must allow for the largest image `max_pixels` admits.
//!
//! Configuration (JSON, optional):
//! `{"max_bytes": 1000000, "max_pixels": 1000000, "sigma": 2.0, "jpeg_quality": 85}`.

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;
use std::io::Cursor;
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: Rc::new(Config::default()) }) });
}}

#[derive(Deserialize, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The largest body held and transformed.
    pub max_bytes: usize,
    /// The largest image (width × height, all frames of a GIF together) transformed.
    pub max_pixels: u64,
    /// The blur's standard deviation in pixels (0: no blur).
    pub sigma: f32,
    /// The quality JPEG images are written with (1..=100).
    pub jpeg_quality: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_bytes: 1_000_000, max_pixels: 1_000_000, sigma: 2.0, jpeg_quality: 85 }
    }
}

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else { return true };
        if raw.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        match serde_json::from_slice::<Config>(&raw) {
            Ok(c) if c.sigma.is_finite() && c.sigma >= 0.0 && (1..=100).contains(&c.jpeg_quality) => {
                self.config = Rc::new(c);
                true
            }
            Ok(c) => {
                log::error!(
                    "upsidedown: bad configuration: sigma {} (>= 0), jpeg_quality {} (1..=100)",
                    c.sigma,
                    c.jpeg_quality
                );
                false
            }
            Err(e) => {
                log::error!("upsidedown: bad configuration: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(UpsideDown { config: self.config.clone(), format: None }))
    }
}

/// The image format a Content-Type names (parameters and case ignored), if one of ours.
pub fn format_of(content_type: &str) -> Option<ImageFormat> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(ImageFormat::Jpeg),
        "image/png" | "image/x-png" => Some(ImageFormat::Png),
        "image/gif" => Some(ImageFormat::Gif),
        _ => None,
    }
}

/// The widths of the three box blurs whose succession approximates a Gaussian of `sigma`
/// (Kovesi, "Fast Almost-Gaussian Filtering", 2010): odd widths `wl` and `wl + 2`.
pub fn box_widths(sigma: f32) -> [usize; 3] {
    const N: f32 = 3.0;
    let ideal = (12.0 * sigma * sigma / N + 1.0).sqrt();
    let mut wl = ideal.floor() as i64;
    if wl % 2 == 0 {
        wl -= 1;
    }
    let wl = wl.max(1);
    let wf = wl as f32;
    let m = ((12.0 * sigma * sigma - N * wf * wf - 4.0 * N * wf - 3.0 * N) / (-4.0 * wf - 4.0)).round() as i64;
    let mut out = [0; 3];
    for (i, w) in out.iter_mut().enumerate() {
        *w = if (i as i64) < m { wl as usize } else { wl as usize + 2 };
    }
    out
}

/// Division by a box's width as a multiplication: `sum / d`, rounded, for the sums a box of
/// 8-bit values makes.
#[derive(Clone, Copy)]
struct Div {
    inv: u64,
}

impl Div {
    fn new(d: u32) -> Div {
        Div { inv: ((1u64 << 32) + d as u64 / 2) / d as u64 }
    }

    #[inline(always)]
    fn of(self, sum: u32) -> u8 {
        ((sum as u64 * self.inv + (1 << 31)) >> 32) as u8
    }
}

/// One box blur of radius `r` along rows (`src` to `dst`), edges clamped: a running sum per
/// channel over the row padded with copies of its end pixels, so the cost does not grow with
/// the radius.
fn box_rows<const CH: usize>(src: &[u8], dst: &mut [u8], w: usize, r: usize, pad: &mut Vec<[u8; CH]>) {
    let div = Div::new(2 * r as u32 + 1);
    for (s, o) in src.chunks_exact(w * CH).zip(dst.chunks_exact_mut(w * CH)) {
        let px = |x: usize| -> [u8; CH] { s[x * CH..][..CH].try_into().unwrap_or([0; CH]) };
        pad.clear();
        pad.extend(std::iter::repeat_n(px(0), r));
        pad.extend((0..w).map(px));
        pad.extend(std::iter::repeat_n(px(w - 1), r + 1));
        let mut sum = [0u32; CH];
        for p in &pad[..2 * r + 1] {
            for c in 0..CH {
                sum[c] += p[c] as u32;
            }
        }
        for (x, out) in o.chunks_exact_mut(CH).enumerate() {
            let (add, sub) = (pad[x + 2 * r + 1], pad[x]);
            for c in 0..CH {
                out[c] = div.of(sum[c]);
                sum[c] = sum[c] + add[c] as u32 - sub[c] as u32;
            }
        }
    }
}

/// The same along columns, a row at a time (one running sum per column and channel).
fn box_cols(src: &[u8], dst: &mut [u8], w: usize, h: usize, ch: usize, r: usize, acc: &mut [u32]) {
    let div = Div::new(2 * r as u32 + 1);
    let stride = w * ch;
    let row = |y: usize| &src[y.min(h - 1) * stride..][..stride];
    for (a, &v) in acc.iter_mut().zip(row(0)) {
        *a = (r as u32 + 1) * v as u32;
    }
    for y in 1..=r {
        for (a, &v) in acc.iter_mut().zip(row(y)) {
            *a += v as u32;
        }
    }
    for (y, out) in dst.chunks_exact_mut(stride).enumerate() {
        let (add, sub) = (row(y + r + 1), row(y.saturating_sub(r)));
        for (((o, a), &p), &m) in out.iter_mut().zip(acc.iter_mut()).zip(add).zip(sub) {
            *o = div.of(*a);
            *a = *a + p as u32 - m as u32;
        }
    }
}

fn blur<const CH: usize>(pixels: &mut [u8], w: usize, h: usize, sigma: f32) {
    let mut tmp = vec![0u8; pixels.len()];
    let mut acc = vec![0u32; w * CH];
    let mut pad = Vec::with_capacity(w + 64);
    for width in box_widths(sigma) {
        let r = width / 2;
        if r == 0 {
            continue;
        }
        box_rows::<CH>(pixels, &mut tmp, w, r, &mut pad);
        box_cols(&tmp, pixels, w, h, CH, r, &mut acc);
    }
}

/// `pixels` (`ch` interleaved 8-bit channels, `w` × `h`) rotated 180° and blurred in place.
pub fn flip_and_blur(pixels: &mut [u8], w: usize, h: usize, ch: usize, sigma: f32) {
    if w == 0 || h == 0 || !(1..=4).contains(&ch) || pixels.len() != w * h * ch {
        return;
    }
    // 180°: the pixels in reverse order (each pixel's channels kept in theirs).
    pixels.reverse();
    for p in pixels.chunks_exact_mut(ch) {
        p.reverse();
    }
    if sigma <= 0.0 {
        return;
    }
    match ch {
        1 => blur::<1>(pixels, w, h, sigma),
        2 => blur::<2>(pixels, w, h, sigma),
        3 => blur::<3>(pixels, w, h, sigma),
        _ => blur::<4>(pixels, w, h, sigma),
    }
}

/// `img` rotated and blurred, as 8-bit gray, gray and alpha, RGB or RGBA (what it is, or the
/// nearest of these).
fn turn(img: DynamicImage, sigma: f32) -> DynamicImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    macro_rules! go {
        ($buf:expr, $ch:expr, $variant:ident) => {{
            let mut b = $buf;
            flip_and_blur(&mut b, w, h, $ch, sigma);
            DynamicImage::$variant(b)
        }};
    }
    match img {
        DynamicImage::ImageLuma8(b) => go!(b, 1, ImageLuma8),
        DynamicImage::ImageLumaA8(b) => go!(b, 2, ImageLumaA8),
        DynamicImage::ImageRgb8(b) => go!(b, 3, ImageRgb8),
        DynamicImage::ImageLuma16(_) => go!(img.into_luma8(), 1, ImageLuma8),
        DynamicImage::ImageLumaA16(_) => go!(img.into_luma_alpha8(), 2, ImageLumaA8),
        i if !i.color().has_alpha() => go!(i.into_rgb8(), 3, ImageRgb8),
        i => go!(i.into_rgba8(), 4, ImageRgba8),
    }
}

/// Why an image stays as it is.
#[derive(Debug)]
pub enum Skip {
    /// More pixels than `max_pixels`.
    TooLarge(u64),
    /// It does not decode (or encode).
    Bad(image::ImageError),
}

impl From<image::ImageError> for Skip {
    fn from(e: image::ImageError) -> Skip {
        Skip::Bad(e)
    }
}

fn too_big(pixels: u64, c: &Config) -> Result<(), Skip> {
    if pixels > c.max_pixels {
        return Err(Skip::TooLarge(pixels));
    }
    Ok(())
}

/// The image `body` rotated 180° and blurred, in format `hint` (or the one its bytes show).
pub fn transform(body: &[u8], hint: ImageFormat, c: &Config) -> Result<Vec<u8>, Skip> {
    // What the bytes are wins over what the Content-Type says: the answer stays self-consistent.
    let format = match image::guess_format(body) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif)) => f,
        _ => hint,
    };
    let mut out = Vec::with_capacity(body.len());
    if format == ImageFormat::Gif {
        let dec = GifDecoder::new(Cursor::new(body))?;
        let (w, h) = dec.dimensions();
        too_big(w as u64 * h as u64, c)?;
        let mut frames = Vec::new();
        let mut pixels = 0u64;
        for f in dec.into_frames() {
            let f = f?;
            pixels += f.buffer().width() as u64 * f.buffer().height() as u64;
            too_big(pixels, c)?;
            let (left, top, delay) = (f.left(), f.top(), f.delay());
            let mut buf = f.into_buffer();
            let (fw, fh) = buf.dimensions();
            flip_and_blur(&mut buf, fw as usize, fh as usize, 4, c.sigma);
            // A frame smaller than the screen moves to the opposite corner.
            let (left, top) = (w.saturating_sub(left + fw), h.saturating_sub(top + fh));
            frames.push(image::Frame::from_parts(buf, left, top, delay));
        }
        let animated = frames.len() > 1;
        let mut enc = GifEncoder::new_with_speed(&mut out, 10);
        if animated {
            enc.set_repeat(Repeat::Infinite)?;
        }
        enc.encode_frames(frames)?;
        drop(enc);
        return Ok(out);
    }
    let reader = ImageReader::with_format(Cursor::new(body), format);
    let (w, h) = reader.into_dimensions()?;
    too_big(w as u64 * h as u64, c)?;
    let img = turn(ImageReader::with_format(Cursor::new(body), format).decode()?, c.sigma);
    match format {
        ImageFormat::Jpeg => {
            // JPEG has no alpha; gray stays gray.
            let img = match img {
                DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => img,
                DynamicImage::ImageLumaA8(_) => DynamicImage::ImageLuma8(img.into_luma8()),
                other => DynamicImage::ImageRgb8(other.into_rgb8()),
            };
            img.write_with_encoder(JpegEncoder::new_with_quality(&mut out, c.jpeg_quality))?;
        }
        _ => img.write_with_encoder(PngEncoder::new(&mut out))?,
    }
    Ok(out)
}

struct UpsideDown {
    config: Rc<Config>,
    /// This response is an image being held.
    format: Option<ImageFormat>,
}

impl Context for UpsideDown {}

impl UpsideDown {
    fn response_header(&self, name: &str) -> Option<String> {
        self.get_http_response_header_bytes(name).map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}

impl HttpContext for UpsideDown {
    fn on_http_response_headers(&mut self, _n: usize, eos: bool) -> Action {
        if eos || self.response_header(":status").as_deref() != Some("200") {
            return Action::Continue;
        }
        let Some(format) = self.response_header("content-type").as_deref().and_then(format_of) else {
            return Action::Continue;
        };
        if self.response_header("content-encoding").is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity")) {
            return Action::Continue;
        }
        let length = self.response_header("content-length").and_then(|l| l.trim().parse::<usize>().ok());
        if length.is_some_and(|l| l > self.config.max_bytes) {
            log::info!("upsidedown: {} bytes, more than max_bytes: passes unchanged", length.unwrap_or(0));
            return Action::Continue;
        }
        // Hold the head: the body's length changes.
        self.format = Some(format);
        Action::Pause
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        let Some(format) = self.format else { return Action::Continue };
        if size > self.config.max_bytes {
            self.format = None;
            log::info!("upsidedown: more than max_bytes ({}) of image: passes unchanged", self.config.max_bytes);
            return Action::Continue;
        }
        if !eos {
            return Action::Pause;
        }
        self.format = None;
        let Some(body) = self.get_http_response_body(0, size) else { return Action::Continue };
        match transform(&body, format, &self.config) {
            Ok(new) => {
                self.set_http_response_body(0, size, &new);
                if self.get_http_response_header_bytes("content-length").is_some() {
                    self.set_http_response_header("content-length", Some(&new.len().to_string()));
                }
                // Another body: the server's validators and byte ranges describe the old one.
                self.remove_http_response_header("etag");
                self.remove_http_response_header("accept-ranges");
                log::debug!("upsidedown: {size} bytes of {format:?} turned upside down ({} bytes)", new.len());
            }
            Err(Skip::TooLarge(n)) => {
                log::info!(
                    "upsidedown: {n} pixels, more than max_pixels ({}): passes unchanged",
                    self.config.max_pixels
                )
            }
            Err(Skip::Bad(e)) => {
                log::warn!("upsidedown: {format:?} image ({size} bytes) does not decode: {e}; passes unchanged")
            }
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_widths_approximate_the_gaussian() {
        assert_eq!(box_widths(2.0), [3, 3, 5]);
        assert_eq!(box_widths(0.3), [1, 1, 1]);
        for sigma in [1.0f32, 2.0, 3.5, 10.0] {
            // Variances add up: a box of width w has (w² - 1) / 12.
            let v: f32 = box_widths(sigma).iter().map(|&w| ((w * w - 1) as f32) / 12.0).sum();
            assert!((v - sigma * sigma).abs() <= sigma * sigma * 0.25 + 0.5, "{sigma}: {v}");
        }
    }

    #[test]
    fn flip_and_blur_turns_and_smooths() {
        // 4 × 2 gray: a bright pixel at the bottom right.
        let mut p = vec![0, 0, 0, 0, 0, 0, 0, 255];
        flip_and_blur(&mut p, 4, 2, 1, 0.0);
        assert_eq!(p, [255, 0, 0, 0, 0, 0, 0, 0]);
        // RGB: the channels of a pixel keep their order.
        let mut p = vec![1, 2, 3, 4, 5, 6];
        flip_and_blur(&mut p, 2, 1, 3, 0.0);
        assert_eq!(p, [4, 5, 6, 1, 2, 3]);
        // A blur keeps a flat image flat and spreads a spike.
        let mut flat = vec![77u8; 9 * 9 * 2];
        flip_and_blur(&mut flat, 9, 9, 2, 2.0);
        assert!(flat.iter().all(|&v| v == 77));
        let mut spike = vec![0u8; 9 * 9];
        spike[4 * 9 + 4] = 255;
        flip_and_blur(&mut spike, 9, 9, 1, 1.5);
        assert!(spike[4 * 9 + 4] < 255 && spike[4 * 9 + 5] > 0 && spike[3 * 9 + 4] > 0);
    }

    #[test]
    fn the_division_is_exact_for_box_sums() {
        for d in (1..=301u32).step_by(2) {
            let div = Div::new(d);
            for sum in 0..=255 * d {
                assert_eq!(div.of(sum) as u32, (sum + d / 2) / d, "{sum} / {d}");
            }
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(format_of("Image/JPEG; q=1"), Some(ImageFormat::Jpeg));
        assert_eq!(format_of("image/png"), Some(ImageFormat::Png));
        assert_eq!(format_of(" image/gif "), Some(ImageFormat::Gif));
        assert_eq!(format_of("image/webp"), None);
        assert_eq!(format_of("text/html"), None);
    }
}
