//! Explanations for people: Grad-CAM maps (computed by [`crate::model::grad_cam`]) drawn
//! over the photos a run scored, as PNG overlays (and `.npy` maps).

use anyhow::Result;
use tch::Tensor;

/// A jet colour map of `cam` (`h*w` values in [0, 1]) blended over RGB `pixels` with `alpha`.
pub fn overlay(pixels: &[u8], cam: &[f32], alpha: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(pixels.len());
    for (px, &v) in pixels.chunks_exact(3).zip(cam) {
        let jet = |x: f32| (1.5 - (4.0 * v - x).abs()).clamp(0.0, 1.0) * 255.0;
        let colour = [jet(3.0), jet(2.0), jet(1.0)];
        for k in 0..3 {
            out.push(((1.0 - alpha) * px[k] as f32 + alpha * colour[k]).round() as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_blends_the_jet_colour_map() {
        let px = [100u8, 100, 100, 100, 100, 100];
        let out = overlay(&px, &[0.0, 1.0], 0.5);
        // 0 is dark blue (0, 0, 127.5), 1 is dark red (127.5, 0, 0).
        assert_eq!(&out[..3], &[50, 50, 114]);
        assert_eq!(&out[3..], &[114, 50, 50]);
    }
}

/// What `predict --explain` writes.
#[derive(Debug, Clone)]
pub struct ExplainOptions {
    pub dir: std::path::PathBuf,
    /// Output columns to explain; `None`: the decided labels, or the most probable class.
    pub classes: Option<Vec<usize>>,
    /// Also write each raw map as `.npy` (float32 `[H, W]` at the model's input size).
    pub npy: bool,
    /// Opacity of the colour map over the photo.
    pub alpha: f32,
    /// Largest photo decoded (width x height).
    pub max_pixels: u64,
}

/// One written explanation: the image, the class, the overlay (and raw map) paths.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub image: std::path::PathBuf,
    pub class: String,
    pub overlay: std::path::PathBuf,
    pub map: Option<std::path::PathBuf>,
}

/// Writes a Grad-CAM overlay PNG per explained class of each scored image (`probabilities`
/// as `predict` gave them), and `explanations.csv` listing them, into `opts.dir`.
pub fn explain_files(
    model: &crate::infer::predictor::Predictor,
    scored: &[(std::path::PathBuf, Vec<f32>)],
    opts: &ExplainOptions,
) -> Result<Vec<Explanation>> {
    use anyhow::Context;
    std::fs::create_dir_all(&opts.dir).with_context(|| format!("cannot create {}", opts.dir.display()))?;
    let task = model.task();
    let side = model.image_size();
    let mut resizer = crate::io::image::SquareResizer::new(side, model.resize(), opts.max_pixels);
    let mut out = Vec::new();
    for (i, (path, p)) in scored.iter().enumerate() {
        let cols = match &opts.classes {
            Some(c) => c.clone(),
            None => explained_columns(task, p, &model.thresholds),
        };
        let px = resizer.load(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let cams = model.grad_cam(
            &Tensor::from_slice(&px).view([1, side as i64, side as i64, 3]),
            &cols.iter().map(|&c| c as i64).collect::<Vec<_>>(),
        )?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        for (k, &col) in cols.iter().enumerate() {
            let cam: Vec<f32> = Vec::try_from(cams.get(k as i64).flatten(0, -1))?;
            let class = &task.classes[col];
            let name = format!("{i:05}_{}_{}", safe(&stem), safe(class));
            let overlay_path = opts.dir.join(format!("{name}.png"));
            overlay_image(path, &px, side, &cam, model.resize(), opts.alpha, opts.max_pixels)?
                .save(&overlay_path)
                .with_context(|| format!("cannot write {}", overlay_path.display()))?;
            let map = if opts.npy {
                let m = opts.dir.join(format!("{name}.npy"));
                crate::io::npy::write_f32(&m, &[side as usize, side as usize], &cam)?;
                Some(m)
            } else {
                None
            };
            out.push(Explanation { image: path.clone(), class: class.clone(), overlay: overlay_path, map });
        }
    }
    let mut csv = String::from("path,class,overlay,map\n");
    for e in &out {
        let map = e.map.as_ref().map(|m| m.display().to_string()).unwrap_or_default();
        let q = crate::io::csv_line::quote;
        csv += &format!("{},{},{},{}\n", q(&e.image.display().to_string()), q(&e.class), q(&e.overlay.display().to_string()), q(&map));
    }
    let index = opts.dir.join("explanations.csv");
    std::fs::write(&index, csv).with_context(|| format!("cannot write {}", index.display()))?;
    Ok(out)
}

/// The overlay at the photo's own size for a stretched input (the map stretched back), or
/// over the square model input for letterbox and centre-crop.
fn overlay_image(
    path: &std::path::Path,
    square: &[u8],
    side: u32,
    cam: &[f32],
    mode: crate::io::image::ResizeMode,
    alpha: f32,
    max_pixels: u64,
) -> Result<image::RgbImage> {
    let photo = match mode {
        crate::io::image::ResizeMode::Stretch => {
            Some(crate::io::image::decode_file(path, max_pixels).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
        }
        _ => None,
    };
    Ok(overlay_on(photo.as_ref(), square, side, cam, alpha))
}

/// The heat map `cam` (`side` x `side`) over `photo` (stretched back to its size), or over the
/// square model input when there is no photo.
pub fn overlay_on(photo: Option<&image::RgbImage>, square: &[u8], side: u32, cam: &[f32], alpha: f32) -> image::RgbImage {
    use image::{imageops, ImageBuffer, Luma};
    let map: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(side, side, cam.to_vec()).expect("side x side values");
    let (base, map) = match photo {
        Some(p) => (p.clone(), imageops::resize(&map, p.width(), p.height(), imageops::FilterType::Triangle)),
        None => (image::RgbImage::from_raw(side, side, square.to_vec()).expect("square input"), map),
    };
    let blended = overlay(base.as_raw(), map.as_raw(), alpha);
    image::RgbImage::from_raw(base.width(), base.height(), blended).expect("same size")
}

/// The decided labels' columns, or the most probable one when none is decided.
pub fn explained_columns(task: &crate::task::Task, p: &[f32], thresholds: &[f32]) -> Vec<usize> {
    let decided: Vec<usize> = task.decide(p, thresholds).iter().enumerate().filter(|(_, d)| **d >= 0.5).map(|(i, _)| i).collect();
    if decided.is_empty() {
        vec![(0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap_or(0)]
    } else {
        decided
    }
}

fn safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}
