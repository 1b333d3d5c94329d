//! The embedded example dataset of the non-VOC task types: drawn shapes of three colours
//! (red, green, blue) and three forms (circle, square, triangle), written both as a
//! class-per-folder tree (`images/<colour>_<shape>/NNNN.png`) and as a CSV
//! (`labels.csv`: `path,color,shape`). The same images thus serve `multiclass` (9 folder
//! classes), `multilabel` (folder names split on `_`) and `multihead` (one head per column).

use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

/// Colours and their RGB values.
pub const COLORS: [(&str, [u8; 3]); 3] = [("red", [210, 40, 40]), ("green", [40, 170, 60]), ("blue", [40, 70, 210])];
/// Shape names.
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
/// File listing every image with its colour and shape.
pub const LABELS_CSV: &str = "labels.csv";

/// Writes `images` pictures of `size` px under `out` (cycling through the 9 combinations, so
/// every class has `images / 9` or one more) and `out/labels.csv`. Returns the CSV path.
pub fn generate(out: &Path, images: usize, size: u32, seed: u64) -> Result<std::path::PathBuf> {
    if images < 18 {
        bail!("--images {images} is too few; at least 18 (2 per class) are needed");
    }
    if !(16..=1024).contains(&size) {
        bail!("--size {size}: expected 16..=1024 px");
    }
    let rows: Vec<String> = (0..images)
        .into_par_iter()
        .map(|i| {
            let (color, shape) = (i % 9 / 3, i % 3);
            let name = format!("{}_{}", COLORS[color].0, SHAPES[shape]);
            let rel = format!("images/{name}/{:04}.png", i + 1);
            let path = out.join(&rel);
            std::fs::create_dir_all(path.parent().expect("has a folder")).with_context(|| format!("cannot create {}", path.display()))?;
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
            draw(&mut rng, size, COLORS[color].1, shape)
                .save_with_format(&path, image::ImageFormat::Png)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(format!("{rel},{},{}", COLORS[color].0, SHAPES[shape]))
        })
        .collect::<Result<_>>()?;
    let csv = out.join(LABELS_CSV);
    std::fs::write(&csv, format!("path,color,shape\n{}\n", rows.join("\n"))).with_context(|| format!("cannot write {}", csv.display()))?;
    Ok(csv)
}

fn draw(rng: &mut ChaCha8Rng, size: u32, rgb: [u8; 3], shape: usize) -> RgbImage {
    let base: [u8; 3] = [rng.gen_range(170..240), rng.gen_range(170..240), rng.gen_range(170..240)];
    let mut img = RgbImage::from_fn(size, size, |_, _| Rgb(base.map(|c| (c as i32 + rng.gen_range(-12..=12)).clamp(0, 255) as u8)));
    let side = (rng.gen_range(0.4..0.7) * size as f64) as u32;
    let (x0, y0) = (rng.gen_range(0..=size - side), rng.gen_range(0..=size - side));
    let colour = Rgb(rgb.map(|c| (c as i32 + rng.gen_range(-25..=25)).clamp(0, 255) as u8));
    let c = side as f64 / 2.0;
    for dy in 0..side {
        for dx in 0..side {
            let (u, v) = ((dx as f64 + 0.5 - c) / c, (dy as f64 + 0.5 - c) / c);
            let inside = match shape {
                0 => u * u + v * v <= 1.0,
                1 => true,
                _ => (v + 1.0) / 2.0 >= u.abs(),
            };
            if inside {
                img.put_pixel(x0 + dx, y0 + dy, colour);
            }
        }
    }
    img
}
