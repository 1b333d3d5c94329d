//! Image decoding (any format the `image` crate sniffs, EXIF orientation applied, converted
//! to 8-bit RGB) and resizing to the square model input with SIMD (fast_image_resize).

use fast_image_resize as fir;
use image::{ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::Path;
use thiserror::Error;

/// Why an input image could not be used. Each variant is a short reason for manifests and
/// error rows.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("missing file")]
    Missing,
    #[error("cannot read file: {0}")]
    Unreadable(String),
    #[error("empty file")]
    Empty,
    #[error("truncated JPEG (no end-of-image marker after the last scan)")]
    TruncatedJpeg,
    #[error("not an image (unrecognised format)")]
    NotAnImage,
    #[error("cannot decode image: {0}")]
    Corrupt(String),
    #[error("image is {width}x{height} pixels, over the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, limit: u64 },
}

/// Largest input side, in pixels, that prepared data or a run may declare.
pub const MAX_IMAGE_SIZE: u32 = 4096;

/// Largest image (width x height) decoded by default: 100 megapixels, about 400 MB of RGBA.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// How a picture is brought to the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ResizeMode {
    /// Plain resize to a square, ignoring aspect ratio (the reference's way).
    #[default]
    Stretch,
    /// Keep the aspect ratio, fit inside the square, pad with gray (114).
    Letterbox,
    /// Keep the aspect ratio, cover the square, crop the centre.
    CenterCrop,
}

impl ResizeMode {
    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::Stretch => "stretch",
            ResizeMode::Letterbox => "letterbox",
            ResizeMode::CenterCrop => "center-crop",
        }
    }
}

/// Gray level used to pad letterboxed images.
pub const LETTERBOX_FILL: u8 = 114;

/// The width x height an encoded image's header declares (nothing is decoded), if it can be
/// read.
pub fn pixel_count(bytes: &[u8]) -> Option<u64> {
    let (w, h) = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()?;
    Some(w as u64 * h as u64)
}

/// Reads and decodes an image file to RGB8; images over `max_pixels` (width x height, read
/// from the header before any pixel memory is allocated) are refused.
pub fn decode_file(path: &Path, max_pixels: u64) -> Result<RgbImage, DecodeError> {
    // A FIFO or device would block or never end: only regular files are read.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => return Err(DecodeError::Unreadable("not a regular file".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DecodeError::Missing),
        _ => {}
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DecodeError::Missing),
        Err(e) => return Err(DecodeError::Unreadable(e.to_string())),
    };
    decode_bytes(&bytes, max_pixels)
}

/// Decodes an encoded image to RGB8: grayscale, alpha, CMYK and 16-bit inputs are converted,
/// EXIF orientation is applied, truncated JPEGs are rejected rather than gray-filled; images
/// over `max_pixels` are refused from their header.
pub fn decode_bytes(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if is_jpeg(bytes) && !jpeg_is_complete(bytes) {
        return Err(DecodeError::TruncatedJpeg);
    }
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DecodeError::NotAnImage);
    }
    let mut decoder = reader.into_decoder().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let limit = max_pixels;
    if width as u64 * height as u64 > limit {
        return Err(DecodeError::TooLarge { width, height, limit });
    }
    let orientation = decoder.orientation().ok();
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(DecodeError::Corrupt("image has zero width or height".into()));
    }
    Ok(match img {
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other if other.color().has_alpha() => composite_on_white(&other.to_rgba8()),
        other => other.to_rgb8(),
    })
}

fn composite_on_white(rgba: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let blend = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])])
    })
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[..3] == [0xFF, 0xD8, 0xFF]
}

/// A complete JPEG has an end-of-image marker (FFD9) after its last start-of-scan (FFDA).
/// Entropy-coded data stuffs 0xFF bytes, so FFD9 cannot appear inside a scan.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |m: u8| bytes.windows(2).rposition(|w| w[0] == 0xFF && w[1] == m);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// Decodes (up to a pixel limit) and resizes images to a `size` x `size` square; reuse one
/// per thread.
pub struct SquareResizer {
    size: u32,
    mode: ResizeMode,
    max_pixels: u64,
    resizer: fir::Resizer,
    scratch: Vec<u8>,
}

impl SquareResizer {
    /// A resizer to `size` in `mode` that decodes images of at most `max_pixels`.
    pub fn new(size: u32, mode: ResizeMode, max_pixels: u64) -> Self {
        SquareResizer { size, mode, max_pixels, resizer: fir::Resizer::new(), scratch: Vec::new() }
    }

    /// Output length in bytes (size * size * 3).
    pub fn output_len(&self) -> usize {
        (self.size * self.size * 3) as usize
    }

    /// Decodes the image file at `path` and resizes it: the model input of one file (HWC,
    /// RGB, `output_len()` bytes), or why the file cannot be used.
    pub fn load(&mut self, path: &Path) -> Result<Vec<u8>, String> {
        let img = decode_file(path, self.max_pixels).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; self.output_len()];
        self.resize_into(&img, &mut buf)?;
        Ok(buf)
    }

    /// [`SquareResizer::load`] of an encoded image in memory.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let img = decode_bytes(bytes, self.max_pixels).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; self.output_len()];
        self.resize_into(&img, &mut buf)?;
        Ok(buf)
    }

    /// Writes the resized image into `out` (HWC, RGB, `output_len()` bytes).
    pub fn resize_into(&mut self, img: &RgbImage, out: &mut [u8]) -> Result<(), String> {
        assert_eq!(out.len(), self.output_len(), "output buffer has the wrong length");
        let (w, h) = img.dimensions();
        let src = fir::images::ImageRef::new(w, h, img.as_raw(), fir::PixelType::U8x3).map_err(|e| e.to_string())?;
        let alg = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
        let s = self.size;
        match self.mode {
            ResizeMode::Stretch => {
                let mut dst = fir::images::Image::from_slice_u8(s, s, out, fir::PixelType::U8x3).map_err(|e| e.to_string())?;
                self.resizer.resize(&src, &mut dst, &alg).map_err(|e| e.to_string())?;
            }
            ResizeMode::CenterCrop => {
                let side = w.min(h) as f64;
                let opts = alg.crop((w as f64 - side) / 2.0, (h as f64 - side) / 2.0, side, side);
                let mut dst = fir::images::Image::from_slice_u8(s, s, out, fir::PixelType::U8x3).map_err(|e| e.to_string())?;
                self.resizer.resize(&src, &mut dst, &opts).map_err(|e| e.to_string())?;
            }
            ResizeMode::Letterbox => {
                let scale = (s as f64 / w as f64).min(s as f64 / h as f64);
                let nw = ((w as f64 * scale).round() as u32).clamp(1, s);
                let nh = ((h as f64 * scale).round() as u32).clamp(1, s);
                self.scratch.resize((nw * nh * 3) as usize, 0);
                let mut dst =
                    fir::images::Image::from_slice_u8(nw, nh, &mut self.scratch, fir::PixelType::U8x3).map_err(|e| e.to_string())?;
                self.resizer.resize(&src, &mut dst, &alg).map_err(|e| e.to_string())?;
                out.fill(LETTERBOX_FILL);
                let (x0, y0) = ((s - nw) / 2, (s - nh) / 2);
                let row = (nw * 3) as usize;
                for y in 0..nh {
                    let from = (y * nw * 3) as usize;
                    let to = (((y0 + y) * s + x0) * 3) as usize;
                    out[to..to + row].copy_from_slice(&self.scratch[from..from + row]);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut buf = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90).encode_image(&img).unwrap();
        buf
    }

    /// A PNG whose header claims `w` x `h` pixels, with a few bytes of image data.
    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in bytes {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                }
            }
            !c
        }
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut out = (data.len() as u32).to_be_bytes().to_vec();
            let body: Vec<u8> = kind.iter().chain(data).copied().collect();
            out.extend(&body);
            out.extend(crc32(&body).to_be_bytes());
            out
        };
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        png.extend(chunk(b"IHDR", &ihdr));
        png.extend(chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused_before_decoding() {
        let bomb = png_header_only(100_000, 100_000);
        assert!(bomb.len() < 100);
        let err = decode_bytes(&bomb, DEFAULT_MAX_PIXELS).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { width: 100_000, height: 100_000, limit: DEFAULT_MAX_PIXELS });
        assert_eq!(err.to_string(), "image is 100000x100000 pixels, over the limit of 100000000 pixels");
        assert!(matches!(decode_bytes(&png_header_only(65_535, 65_535), DEFAULT_MAX_PIXELS), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn decodes_jpeg_and_rejects_bad_inputs() {
        let good = jpeg_bytes(40, 30);
        assert_eq!(decode_bytes(&good, DEFAULT_MAX_PIXELS).unwrap().dimensions(), (40, 30));
        assert_eq!(decode_bytes(&[], DEFAULT_MAX_PIXELS), Err(DecodeError::Empty));
        assert_eq!(decode_bytes(&good[..good.len() / 2], DEFAULT_MAX_PIXELS), Err(DecodeError::TruncatedJpeg));
        assert_eq!(decode_bytes(b"hello, this is text", DEFAULT_MAX_PIXELS), Err(DecodeError::NotAnImage));
        let mut garbage = vec![0xFF, 0xD8, 0xFF, 0xE0];
        garbage.extend(std::iter::repeat(0x11).take(100));
        garbage.extend([0xFF, 0xDA, 0x00, 0xFF, 0xD9]);
        assert!(matches!(decode_bytes(&garbage, DEFAULT_MAX_PIXELS), Err(DecodeError::Corrupt(_))));
    }

    #[test]
    fn alpha_is_composited_on_white_and_gray_is_expanded() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        let mut png = Vec::new();
        rgba.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let rgb = decode_bytes(&png, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [10, 20, 30]);

        let gray = image::GrayImage::from_pixel(3, 3, image::Luma([77]));
        let mut png = Vec::new();
        gray.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        assert_eq!(decode_bytes(&png, DEFAULT_MAX_PIXELS).unwrap().get_pixel(1, 1).0, [77, 77, 77]);
    }

    #[test]
    fn resize_modes_fill_the_square() {
        let img = RgbImage::from_pixel(100, 50, image::Rgb([200, 10, 10]));
        for mode in [ResizeMode::Stretch, ResizeMode::CenterCrop, ResizeMode::Letterbox] {
            let mut r = SquareResizer::new(32, mode, DEFAULT_MAX_PIXELS);
            let mut out = vec![0u8; r.output_len()];
            r.resize_into(&img, &mut out).unwrap();
            let centre = ((16 * 32 + 16) * 3) as usize;
            assert_eq!(&out[centre..centre + 3], &[200, 10, 10], "{mode:?}");
            if mode == ResizeMode::Letterbox {
                assert_eq!(&out[0..3], &[LETTERBOX_FILL; 3]);
            } else {
                assert_eq!(&out[0..3], &[200, 10, 10], "{mode:?}");
            }
        }
    }
}
