//! Small PNG charts without system fonts: line panels (training curves, precision-recall
//! curves) and a shaded table (confusion summary), drawn with a built-in 5x7 bitmap font.

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

const W: u32 = 420;
const H: u32 = 300;
const SCALE: u32 = 2;
const BG: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([30, 30, 30]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// Distinct line colours.
pub const PALETTE: [[u8; 3]; 6] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75]];

/// One line of a panel.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: [u8; 3],
}

/// One chart.
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    pub series: Vec<Series>,
}

/// 5x7 glyphs, one byte per row, low 5 bits, most significant bit on the left.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [1, 1, 2, 4, 8, 16, 16],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '@' => [14, 17, 23, 21, 23, 16, 14],
        _ => [0; 7],
    }
}

/// Draws text with its top-left at (x, y); returns the width in pixels.
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, color: Rgb<u8>) -> i64 {
    let mut cx = x;
    for ch in s.chars() {
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5 {
                if bits & (1 << (4 - col)) != 0 {
                    put(img, cx + col, y + row as i64, color);
                }
            }
        }
        cx += 6;
    }
    cx - x
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>, thick: bool) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        if thick {
            put(img, x + 1, y, c);
            put(img, x, y + 1, c);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn fill(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, c: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(img, xx, yy, c);
        }
    }
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() >= 1.0) {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn draw_panel(img: &mut RgbImage, ox: i64, oy: i64, p: &Panel) {
    let (l, r, t, b) = (ox + 48, ox + W as i64 - 12, oy + 28, oy + H as i64 - 36);
    text(img, ox + 48, oy + 8, &p.title, INK);
    let (x0, x1) = p.x_range;
    let (y0, y1) = p.y_range;
    let span = |a: f64, b: f64| if (b - a).abs() < 1e-12 { 1.0 } else { b - a };
    let px = |x: f64| l + ((x - x0) / span(x0, x1) * (r - l) as f64).round() as i64;
    let py = |y: f64| b - ((y - y0) / span(y0, y1) * (b - t) as f64).round() as i64;
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        line(img, (l, py(fy)), (r, py(fy)), GRID, false);
        let label = fmt_tick(fy);
        text(img, l - 6 - 6 * label.len() as i64, py(fy) - 3, &label, INK);
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let label = fmt_tick(fx);
        text(img, px(fx) - 3 * label.len() as i64, b + 6, &label, INK);
    }
    line(img, (l, t), (l, b), INK, false);
    line(img, (l, b), (r, b), INK, false);
    text(img, (l + r) / 2 - 3 * p.x_label.len() as i64, b + 18, &p.x_label, INK);
    text(img, ox + 4, oy + 16, &p.y_label, INK);
    for (i, s) in p.series.iter().enumerate() {
        let c = Rgb(s.color);
        for w in s.points.windows(2) {
            line(img, (px(w[0].0), py(w[0].1)), (px(w[1].0), py(w[1].1)), c, true);
        }
        if s.points.len() == 1 {
            fill(img, px(s.points[0].0) - 2, py(s.points[0].1) - 2, 5, 5, c);
        }
        let ly = t + 4 + 11 * i as i64;
        let lx = r - 8 - 6 * s.label.len() as i64 - 14;
        fill(img, lx, ly + 1, 10, 5, c);
        text(img, lx + 14, ly, &s.label, INK);
    }
}

/// Renders panels in a grid with `cols` columns to a PNG (written atomically).
pub fn render_panels(panels: &[Panel], cols: usize, path: &Path) -> Result<()> {
    let cols = cols.max(1).min(panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let mut img = RgbImage::from_pixel(W * cols as u32, H * rows as u32, BG);
    for (i, p) in panels.iter().enumerate() {
        draw_panel(&mut img, (W * (i % cols) as u32) as i64, (H * (i / cols) as u32) as i64, p);
    }
    save_scaled(&img, path)
}

/// A table of numbers with cells shaded by `shade` (0..1), e.g. a confusion summary.
pub fn render_table(title: &str, header: &[String], rows: &[(String, Vec<(String, f64)>)], path: &Path) -> Result<()> {
    let cell = 84i64;
    let first = 6 * rows.iter().map(|r| r.0.len()).max().unwrap_or(5).max(5) as i64 + 16;
    let w = (first + cell * header.len() as i64 + 10).max(6 * title.len() as i64 + 16);
    let h = 40 + 22 * (rows.len() as i64 + 1) + 10;
    let mut img = RgbImage::from_pixel(w as u32, h as u32, BG);
    text(&mut img, 8, 8, title, INK);
    for (j, head) in header.iter().enumerate() {
        text(&mut img, first + cell * j as i64 + 6, 30, head, INK);
    }
    for (i, (name, cells)) in rows.iter().enumerate() {
        let y = 44 + 22 * i as i64;
        text(&mut img, 8, y + 7, name, INK);
        for (j, (label, s)) in cells.iter().enumerate() {
            let s = s.clamp(0.0, 1.0);
            let shade = Rgb([(255.0 - 180.0 * s) as u8, (255.0 - 120.0 * s) as u8, 255]);
            let x = first + cell * j as i64;
            fill(&mut img, x, y, cell - 4, 20, shade);
            text(&mut img, x + 6, y + 7, label, INK);
        }
    }
    save_scaled(&img, path)
}

fn save_scaled(img: &RgbImage, path: &Path) -> Result<()> {
    let big = image::imageops::resize(img, img.width() * SCALE, img.height() * SCALE, image::imageops::FilterType::Nearest);
    let tmp = path.with_extension("png.tmp");
    big.save_with_format(&tmp, image::ImageFormat::Png).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_draw_lines_in_their_colours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let panel = Panel {
            title: "LOSS".into(),
            x_label: "EPOCH".into(),
            y_label: "".into(),
            x_range: (1.0, 3.0),
            y_range: (0.0, 1.0),
            series: vec![Series { label: "TRAIN".into(), points: vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.2)], color: PALETTE[3] }],
        };
        render_panels(&[panel], 1, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (W * SCALE, H * SCALE));
        let red = img.pixels().filter(|px| px.0 == PALETTE[3]).count();
        assert!(red > 200, "{red} line pixels");
    }

    #[test]
    fn table_renders_shaded_cells() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.png");
        let rows = vec![("DOG".to_string(), vec![("TP 5".to_string(), 1.0), ("FP 0".to_string(), 0.0)])];
        render_table("CONFUSION", &["TP".into(), "FP".into()], &rows, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert!(img.pixels().any(|px| px.0 == [75, 135, 255]));
    }
}
