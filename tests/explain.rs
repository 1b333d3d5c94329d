//! Grad-CAM through `predict --explain`: the heat maps of a trained model sit on the objects
//! (a localisation check against the synthetic scenes' boxes that cannot pass by accident),
//! overlays have the photo's size, and bad class names are refused before any output.

use crate::util::*;
use std::path::Path;

/// (width, height, [(class, xmin, ymin, xmax, ymax)]) of a synthetic annotation.
fn boxes(xml: &str) -> (f64, f64, Vec<(String, [f64; 4])>) {
    let tag = |s: &str, t: &str| -> f64 {
        let start = s.find(&format!("<{t}>")).unwrap() + t.len() + 2;
        s[start..start + s[start..].find('<').unwrap()].trim().parse().unwrap()
    };
    let objects = xml
        .split("<object>")
        .skip(1)
        .map(|o| {
            let name = o[o.find("<name>").unwrap() + 6..o.find("</name>").unwrap()].to_string();
            (name, [tag(o, "xmin"), tag(o, "ymin"), tag(o, "xmax"), tag(o, "ymax")])
        })
        .collect();
    (tag(xml, "width"), tag(xml, "height"), objects)
}

/// The heat map's share of mass inside the class's boxes over the boxes' share of the image.
fn mass_ratio(map: &Path, xml: &str, class: &str) -> Option<f64> {
    let (w, h, objects) = boxes(xml);
    let npy = vocml_core::io::npy::NpyArray::open(map).unwrap();
    let side = npy.shape()[0];
    let cam = npy.to_f32_vec().unwrap();
    let mut inside = vec![false; side * side];
    for (_, [x0, y0, x1, y1]) in objects.iter().filter(|(n, _)| n == class) {
        let (r0, r1) = ((y0 * side as f64 / h) as usize, ((y1 * side as f64 / h).ceil() as usize).min(side));
        let (c0, c1) = ((x0 * side as f64 / w) as usize, ((x1 * side as f64 / w).ceil() as usize).min(side));
        for r in r0..r1 {
            inside[r * side + c0..r * side + c1].iter_mut().for_each(|v| *v = true);
        }
    }
    let total: f64 = cam.iter().map(|&v| v as f64).sum();
    let area = inside.iter().filter(|&&v| v).count() as f64 / inside.len() as f64;
    if total == 0.0 || area == 0.0 {
        return None;
    }
    let mass: f64 = cam.iter().zip(&inside).filter(|(_, &i)| i).map(|(&v, _)| v as f64).sum();
    Some(mass / total / area)
}

#[test]
fn heat_maps_of_a_trained_model_sit_on_the_objects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, _, run_dir) = best_run(root, 200, 224, &[]);
    let m = read_json(&data.join("manifest.json"));
    let photos: Vec<_> = m["splits"]["test"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| root.join(format!("voc/JPEGImages/{}.jpg", i.as_str().unwrap())))
        .collect();
    let out = root.join("explain");
    let o = run(bin("predict").args(["-q", "--explain-npy", "--run"]).arg(&run_dir).arg("--explain").arg(&out).args(&photos));
    assert!(o.status.success(), "{}", stderr(&o));
    let index = std::fs::read_to_string(out.join("explanations.csv")).unwrap();
    let mut ratios = Vec::new();
    for line in index.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (photo, class, overlay, map) = (Path::new(f[0]), f[1], Path::new(f[2]), Path::new(f[3]));
        let xml = std::fs::read_to_string(photo.to_str().unwrap().replace("JPEGImages", "Annotations").replace(".jpg", ".xml")).unwrap();
        let png = image::open(overlay).unwrap();
        let (w, h, _) = boxes(&xml);
        assert_eq!((png.width() as f64, png.height() as f64), (w, h), "the overlay has the photo's size");
        ratios.extend(mass_ratio(map, &xml, class));
    }
    assert!(ratios.len() >= 10, "too few explained objects: {}", ratios.len());
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    eprintln!("Grad-CAM mass in the object's boxes / the boxes' share of the image: mean {mean:.2} over {}", ratios.len());
    assert!(mean >= 2.0, "heat maps do not sit on the objects: mean ratio {mean:.2}");

    let o = run(bin("predict").args(["--run"]).arg(&run_dir).arg("--explain").arg(&out).args(["--explain-classes", "cat"]).arg(&photos[0]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--explain-classes: unknown class \"cat\""), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "nothing is written before the refusal: {}", stdout(&o));
}

/// One trained run for every ranking case (long on purpose: training one per case is slow).
#[test]
fn rank_orders_rows_by_informativeness_and_selects_the_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, _, run_dir) = best_run(root, 40, 64, &["--epochs", "3"]);
    let photos = root.join("voc/JPEGImages");
    let all = run(bin("predict").args(["-q", "--format", "jsonl", "--run"]).arg(&run_dir).arg(&photos));
    // A run not evaluated yet has no tuned thresholds: 0.5.
    assert!(!run_dir.join("thresholds.json").exists());
    let t = [0.5; 4];
    // uncertainty: minus the smallest distance of a probability to its threshold.
    let mut want: Vec<(f64, String)> = stdout(&all)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let p = &v["probabilities"];
            let d = ["person", "chair", "dog", "sofa"]
                .iter()
                .zip(&t)
                .map(|(c, t)| (p[c].as_f64().unwrap() - t).abs())
                .fold(f64::INFINITY, f64::min);
            (-d, v["path"].as_str().unwrap().to_string())
        })
        .collect();
    want.sort_by(|a, b| b.0.total_cmp(&a.0));
    let o = run(bin("predict").args(["-q", "--rank", "uncertainty", "--select", "5", "--run"]).arg(&run_dir).arg(&photos));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().ends_with(",score,error"));
    let got: Vec<(f64, String)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[f.len() - 2].parse().unwrap(), f[0].to_string())
        })
        .collect();
    assert_eq!(got.len(), 5);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.1, w.1);
        assert!((g.0 - w.0).abs() < 1e-5, "{} vs {}", g.0, w.0);
    }
    let o = run(bin("predict").args(["-q", "--select", "5", "--run"]).arg(&run_dir).arg(&photos));
    assert_eq!(o.status.code(), Some(2), "--select needs --rank");

    // Four copies of the most uncertain photo: plain ranking picks all five, --diverse one.
    let pool = root.join("pool");
    std::fs::create_dir(&pool).unwrap();
    for f in std::fs::read_dir(&photos).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, pool.join(f.file_name().unwrap())).unwrap();
    }
    let top = std::path::Path::new(&want[0].1).file_name().unwrap().to_string_lossy().into_owned();
    for i in 0..4 {
        std::fs::copy(photos.join(&top), pool.join(format!("copy{i}_{top}"))).unwrap();
    }
    let picks = |extra: &[&str]| -> Vec<(f64, String)> {
        let o =
            run(bin("predict").args(["-q", "--rank", "uncertainty", "--select", "5"]).args(extra).arg("--run").arg(&run_dir).arg(&pool));
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[f.len() - 2].parse().unwrap(), std::path::Path::new(f[0]).file_name().unwrap().to_string_lossy().into_owned())
            })
            .collect()
    };
    let copies = |rows: &[(f64, String)]| rows.iter().filter(|(_, n)| n.ends_with(&top)).count();
    let plain = picks(&[]);
    assert_eq!(copies(&plain), 5, "{plain:?}");
    let diverse = picks(&["--diverse"]);
    assert_eq!(diverse.len(), 5);
    assert_eq!(copies(&diverse), 1, "one of the near-copies: {diverse:?}");
    assert!(diverse.windows(2).all(|w| w[0].0 >= w[1].0), "most informative first: {diverse:?}");
    let score_of: std::collections::HashMap<String, f64> =
        want.iter().map(|(s, p)| (std::path::Path::new(p).file_name().unwrap().to_string_lossy().into_owned(), *s)).collect();
    for (s, name) in &diverse {
        let original = name.rsplit_once(&format!("_{top}")).map_or(name.as_str(), |_| top.as_str());
        assert!((s - score_of[original]).abs() < 1e-5, "{name}: {s} vs {}", score_of[original]);
    }
    assert_eq!(picks(&["--diverse"]), diverse, "the same picks every time");
}
