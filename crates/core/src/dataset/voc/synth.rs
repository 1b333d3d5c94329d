//! The embedded default dataset: a small VOC-layout tree (JPEGImages, Annotations,
//! ImageSets/Main) of drawn scenes. Each class is a shape of its own colour, several per
//! image, so the whole pipeline can run and be tested anywhere without downloads.

use super::VocLayout;
use crate::dataset::classes::VOC_CLASSES;
use crate::progress::Progress;
use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Settings of the generator.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub out: PathBuf,
    pub images: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    TallBox,
    Triangle,
    Ellipse,
    WideBox,
    Diamond,
    Ring,
}

/// The drawn classes: the four defaults and two distractors (so some images hold none of
/// the targets), with their shape, colour and how often they are drawn.
const KINDS: [(&str, Shape, [u8; 3], f64); 6] = [
    ("person", Shape::TallBox, [220, 40, 40], 0.30),
    ("chair", Shape::Triangle, [40, 80, 220], 0.15),
    ("dog", Shape::Ellipse, [150, 90, 30], 0.15),
    ("sofa", Shape::WideBox, [40, 170, 60], 0.12),
    ("car", Shape::Diamond, [230, 200, 30], 0.14),
    ("bird", Shape::Ring, [200, 60, 200], 0.14),
];

struct Object {
    kind: usize,
    difficult: bool,
    bbox: [u32; 4],
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct SynthSummary {
    pub images: usize,
    pub objects_per_class: Vec<(String, usize)>,
}

/// Writes the dataset under `cfg.out` (the VOC root). Existing files are overwritten.
pub fn generate(cfg: &SynthConfig, progress: &dyn Progress) -> Result<SynthSummary> {
    if cfg.images < 4 {
        bail!("--images {} is too few; at least 4 are needed", cfg.images);
    }
    let layout = VocLayout::new(&cfg.out);
    for d in [layout.images_dir(), layout.annotations_dir(), layout.main_sets_dir()] {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    progress.phase("synth", cfg.images as u64);
    let scenes: Vec<(String, Vec<Object>)> = (0..cfg.images)
        .into_par_iter()
        .map(|i| {
            let id = format!("{:06}", i + 1);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
            let (img, objects) = draw_scene(&mut rng);
            let jpg = layout.image(&id);
            img.save_with_format(&jpg, image::ImageFormat::Jpeg).with_context(|| format!("cannot write {}", jpg.display()))?;
            let xml = annotation_xml(&id, img.width(), img.height(), &objects);
            std::fs::write(layout.annotation(&id), xml)?;
            progress.done(1, None);
            Ok((id, objects))
        })
        .collect::<Result<_>>()?;
    write_imagesets(&layout, &scenes)?;
    let mut counts: Vec<(String, usize)> = KINDS.iter().map(|k| (k.0.to_string(), 0)).collect();
    for (_, objs) in &scenes {
        for o in objs {
            counts[o.kind].1 += 1;
        }
    }
    Ok(SynthSummary { images: scenes.len(), objects_per_class: counts })
}

fn pick_kind(rng: &mut ChaCha8Rng) -> usize {
    let mut r: f64 = rng.gen();
    for (i, k) in KINDS.iter().enumerate() {
        if r < k.3 {
            return i;
        }
        r -= k.3;
    }
    KINDS.len() - 1
}

fn draw_scene(rng: &mut ChaCha8Rng) -> (RgbImage, Vec<Object>) {
    let w = rng.gen_range(240..=360u32);
    let h = rng.gen_range(180..=280u32);
    let base = [rng.gen_range(150..235u8), rng.gen_range(150..235u8), rng.gen_range(150..235u8)];
    let mut img = RgbImage::from_fn(w, h, |x, y| {
        let shade = ((x * 13 + y * 7) % 23) as i32 - 11;
        Rgb(base.map(|c| (c as i32 + shade).clamp(0, 255) as u8))
    });
    let n = rng.gen_range(1..=3);
    let mut objects = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = pick_kind(rng);
        let difficult = rng.gen_bool(0.08);
        let frac = if difficult { rng.gen_range(0.12..0.18) } else { rng.gen_range(0.25..0.45) };
        let side = (frac * w.min(h) as f64) as u32;
        let (bw, bh) = match KINDS[kind].1 {
            Shape::TallBox => (side / 2, side),
            Shape::WideBox => (side, side / 2),
            _ => (side, side),
        };
        let x0 = rng.gen_range(0..w - bw);
        let y0 = rng.gen_range(0..h - bh);
        let jitter = |c: u8, r: &mut ChaCha8Rng| (c as i32 + r.gen_range(-20..=20)).clamp(0, 255) as u8;
        let c = KINDS[kind].2;
        let colour = Rgb([jitter(c[0], rng), jitter(c[1], rng), jitter(c[2], rng)]);
        draw_shape(&mut img, KINDS[kind].1, [x0, y0, bw, bh], colour);
        objects.push(Object { kind, difficult, bbox: [x0 + 1, y0 + 1, x0 + bw, y0 + bh] });
    }
    (img, objects)
}

fn draw_shape(img: &mut RgbImage, shape: Shape, [x0, y0, bw, bh]: [u32; 4], colour: Rgb<u8>) {
    let (cx, cy) = (bw as f64 / 2.0, bh as f64 / 2.0);
    for dy in 0..bh {
        for dx in 0..bw {
            let (u, v) = ((dx as f64 + 0.5 - cx) / cx, (dy as f64 + 0.5 - cy) / cy);
            let inside = match shape {
                Shape::TallBox | Shape::WideBox => true,
                Shape::Ellipse => u * u + v * v <= 1.0,
                Shape::Triangle => (v + 1.0) / 2.0 >= u.abs(),
                Shape::Diamond => u.abs() + v.abs() <= 1.0,
                Shape::Ring => (0.45..=1.0).contains(&(u * u + v * v)),
            };
            if inside {
                img.put_pixel(x0 + dx, y0 + dy, colour);
            }
        }
    }
}

fn annotation_xml(id: &str, w: u32, h: u32, objects: &[Object]) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{id}.jpg</filename>\n\t<source><database>vocml synthetic</database></source>\n\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n\t<segmented>0</segmented>\n"
    );
    for o in objects {
        let [x1, y1, x2, y2] = o.bbox;
        let _ = write!(
            s,
            "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>{}</difficult>\n\t\t<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n\t</object>\n",
            KINDS[o.kind].0,
            o.difficult as u8
        );
    }
    s.push_str("</annotation>\n");
    s
}

/// `train`/`val`/`trainval` id lists (alternating ids) and `<class>_<set>.txt` for all 20
/// VOC classes: 1 if a non-difficult object is present, 0 if only difficult ones, else -1.
fn write_imagesets(layout: &VocLayout, scenes: &[(String, Vec<Object>)]) -> Result<()> {
    let dir = layout.main_sets_dir();
    let sets: [(&str, Box<dyn Fn(usize) -> bool>); 3] =
        [("train", Box::new(|i| i % 2 == 0)), ("val", Box::new(|i| i % 2 == 1)), ("trainval", Box::new(|_| true))];
    for (set, member) in &sets {
        let chosen: Vec<&(String, Vec<Object>)> = scenes.iter().enumerate().filter(|(i, _)| member(*i)).map(|(_, s)| s).collect();
        let ids: String = chosen.iter().map(|(id, _)| format!("{id}\n")).collect();
        std::fs::write(dir.join(format!("{set}.txt")), ids)?;
        for class in VOC_CLASSES {
            let mut text = String::new();
            for (id, objs) in &chosen {
                let of_class: Vec<&Object> = objs.iter().filter(|o| KINDS[o.kind].0 == class).collect();
                let v = if of_class.iter().any(|o| !o.difficult) {
                    " 1"
                } else if !of_class.is_empty() {
                    " 0"
                } else {
                    "-1"
                };
                let _ = writeln!(text, "{id} {v}");
            }
            std::fs::write(dir.join(format!("{class}_{set}.txt")), text)?;
        }
    }
    Ok(())
}
