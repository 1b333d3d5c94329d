//! Hostile and careless inputs across the tools, generated here (no committed binaries): each
//! case must end in bounded time with the right exit status and one clear line naming the
//! problem, never a panic or abort, and must leave no output or store change behind.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with a 10 s limit; returns (exit code, stderr). Kills and fails on a hang.
fn bounded(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    let status = wait_for(Duration::from_secs(10), || child.try_wait().unwrap());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("{cmd:?} did not finish within 10 s");
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{cmd:?} panicked: {err}");
    assert!(status.code() != Some(134) && status.code() != Some(101), "{cmd:?} aborted: {err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    (status.code(), err)
}

/// Expects exit `code` and an error line containing `expect`.
fn refused(cmd: &mut Command, code: i32, expect: &str) {
    let (got, err) = bounded(cmd);
    assert_eq!(got, Some(code), "{cmd:?}: {err}");
    assert!(err.contains(expect), "{cmd:?}: expected {expect:?} in {err:?}");
}

/// A PNG whose header claims `w` x `h` pixels (91 bytes).
pub(crate) fn png_bomb(w: u32, h: u32) -> Vec<u8> {
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
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
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

/// Every file under `dir` with its bytes, to prove a refused command changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(snapshot(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn decoders_and_walks_survive_bombs_loops_and_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = prepared(root, 40, 64);
    let runs = root.join("runs");
    let run_dir = quick_run(&data, &runs, &["--epochs", "1"]);
    let photos = root.join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(root.join("voc/JPEGImages/000001.jpg"), photos.join("good.jpg")).unwrap();
    std::fs::write(photos.join("bomb.png"), png_bomb(100_000, 100_000)).unwrap();
    std::os::unix::fs::symlink(".", photos.join("a")).unwrap();
    std::os::unix::fs::symlink(".", photos.join("b")).unwrap();
    let fifo = std::ffi::CString::new(root.join("x.jpg").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);

    let o = run(bin("predict").args(["-q", "--run"]).arg(&run_dir).arg(&photos).arg(root.join("x.jpg")));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows = stdout(&o);
    assert_eq!(rows.lines().count(), 4, "header, good, bomb, fifo once each (links not followed twice): {rows}");
    assert!(rows.contains("image is 100000x100000 pixels, over the limit of 100000000 pixels"), "{rows}");
    assert!(rows.contains("not a regular file"), "{rows}");

    // voc-prep skips the bomb with its reason; the folder importer walks the loops once.
    std::fs::write(root.join("voc/JPEGImages/000002.jpg"), png_bomb(65_535, 65_535)).unwrap();
    let o = run(bin("voc-prep").arg("--voc-root").arg(root.join("voc")).arg("--out").arg(root.join("pd2")).args(["-q", "--size", "32"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = read_json(&root.join("pd2/manifest.json"));
    assert!(m["skipped"].to_string().contains("over the limit"), "{}", m["skipped"]);
    let classes = root.join("classes");
    for c in ["cat", "dog"] {
        std::fs::create_dir_all(classes.join(c)).unwrap();
        for i in 0..6 {
            std::fs::copy(root.join("voc/JPEGImages/000003.jpg"), classes.join(c).join(format!("{i}.jpg"))).unwrap();
        }
        std::os::unix::fs::symlink("..", classes.join(c).join("up")).unwrap();
    }
    let o = run(bin("voc-prep").args(["folders", "-q", "--size", "32", "--root"]).arg(&classes).arg("--out").arg(root.join("pd3")));
    assert!(o.status.success(), "{}", stderr(&o));
    let m = read_json(&root.join("pd3/manifest.json"));
    let total: u64 = ["train", "val", "test"].iter().map(|s| m["splits"][s]["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 12, "each image once");
}

#[test]
fn bad_flags_and_run_files_are_clear_errors_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs, run_dir) = best_run(root, 40, 64, &["--epochs", "1"]);
    let img = root.join("voc/JPEGImages/000001.jpg");
    let csv = root.join("fixes.csv");
    let odd = root.join("two\nlines.jpg");
    std::fs::copy(root.join("voc/JPEGImages/000002.jpg"), &odd).unwrap();
    let odd_field = vocml_core::io::csv_line::quote(odd.to_str().unwrap());
    std::fs::write(&csv, format!("\u{feff}path,labels\r\n{},dog\r\n{odd_field},person\r\n", img.display())).unwrap();
    let train = |extra: &[&str]| {
        let mut c = bin("train");
        c.arg("--data").arg(&data).arg("--runs-dir").arg(root.join("runs_bad")).arg("-q").args(extra);
        c
    };
    let retrain = |extra: &[&str]| {
        let mut c = bin("retrain");
        c.arg("--runs-dir").arg(&runs).arg("--corrections").arg(&csv).arg("-q").args(extra);
        c
    };
    let before = snapshot(&runs);
    for threads in ["0", "2000", "-1"] {
        refused(&mut train(&["--threads", threads]), 2, "--threads");
    }
    refused(&mut train(&["--aug-views", "100000"]), 2, "aug_views 100000");
    for lr in ["0", "-1", "NaN", "inf", "1e30"] {
        refused(&mut train(&[&format!("--lr={lr}")]), 2, "lr");
    }
    refused(&mut retrain(&["--replicate", "100000"]), 2, "replicate 100000");
    refused(&mut retrain(&["--replicate", "0"]), 2, "replicate 0");
    refused(&mut retrain(&["--batch-size", "0"]), 2, "epochs and batch_size");
    refused(&mut retrain(&["--epochs", "0"]), 2, "epochs and batch_size");
    let ensemble = || {
        let mut c = bin("evaluate");
        c.arg("--data").arg(&data).arg("--run").arg(&run_dir).arg("--run").arg(&run_dir).args(["--ensemble", "-q"]);
        c
    };
    refused(&mut ensemble(), 1, "is listed twice");
    refused(&mut train(&["--image-size", "0"]), 2, "image_size 0: expected 1..=4096");
    refused(
        &mut train(&["--models", "efficientnet_lite0", "--weights-dir", "/no/such/dir"]),
        1,
        "--weights-dir /no/such/dir: no such directory",
    );
    for (body, expect) in [
        ("epochs = -3\n", "recipe.toml: invalid value '-3' for '--epochs"),
        ("no_augment = \"yes\"\n", "recipe.toml: key \"no_augment\" is a switch"),
        ("epoch = 3\n", "recipe.toml: unknown key \"epoch\""),
    ] {
        std::fs::write(root.join("recipe.toml"), body).unwrap();
        refused(&mut train(&["--config", root.join("recipe.toml").to_str().unwrap()]), 1, expect);
    }
    assert!(!root.join("runs_bad").exists(), "a refused train left a runs directory");
    assert_eq!(snapshot(&runs), before, "a refused command changed the runs directory or the feedback store");

    // Broken run files: short thresholds, a zero image size.
    let broken = root.join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "model.safetensors", "classes.json"] {
        std::fs::copy(run_dir.join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("thresholds.json"), r#"{"classes":["person","chair","dog","sofa"],"thresholds":[0.5],"tuned_on":"val"}"#)
        .unwrap();
    refused(bin("predict").arg("--run").arg(&broken).arg(&img), 1, "1 thresholds for 4 classes");
    std::fs::remove_file(broken.join("thresholds.json")).unwrap();
    let cfg = std::fs::read_to_string(run_dir.join("config.json")).unwrap().replace("\"image_size\": 64", "\"image_size\": 0");
    std::fs::write(broken.join("config.json"), cfg).unwrap();
    refused(bin("predict").arg("--run").arg(&broken).arg(&img), 1, "image_size 0");

    // A corrections CSV with a byte-order mark, CRLF line ends and a quoted path holding a
    // line break (as predict writes it) is read like any other.
    let o = run(&mut retrain(&["--epochs", "1", "--replicate", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 corrections (2 new)"), "{}", stdout(&o));
}

#[test]
fn bad_prepared_data_and_outputs_over_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = prepared(root, 40, 64);
    let voc = root.join("voc");
    let before = snapshot(&voc);
    refused(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(&voc).arg("--force"), 1, "would delete the input");
    refused(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(root).arg("--force"), 1, "would delete the input");
    refused(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg("."), 1, "must be named");
    assert_eq!(snapshot(&voc), before, "the source photos changed");

    let y = vocml_core::io::npy::NpyArray::open(&data.join("y_train.npy")).unwrap();
    let original = y.to_f32_vec().unwrap();
    let mut labels = original.clone();
    let shape = y.shape().to_vec();
    for (value, expect) in [(f32::NAN, "label NaN, expected 0 or 1"), (2.0, "label 2, expected 0 or 1")] {
        labels[5] = value;
        vocml_core::io::npy::write_f32(&data.join("y_train.npy"), &shape, &labels).unwrap();
        refused(bin("train").arg("--data").arg(&data).arg("--runs-dir").arg(root.join("r")).arg("-q"), 1, expect);
    }
    vocml_core::io::npy::write_f32(&data.join("y_train.npy"), &shape, &original).unwrap();

    // Arrays that disagree with each other or with the manifest, each named.
    let o = run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(root.join("pd32")).args(["-q", "--size", "32"]));
    assert!(o.status.success());
    let o =
        run(bin("voc-prep").arg("--voc-root").arg(&voc).arg("--out").arg(root.join("pdf")).args(["-q", "--size", "64", "--dtype", "f32"]));
    assert!(o.status.success());
    let manifest = std::fs::read_to_string(data.join("manifest.json")).unwrap();
    let swap = |from: &Path, to: &str| std::fs::copy(from, data.join(to)).unwrap();
    let train = || {
        let mut c = bin("train");
        c.arg("--data").arg(&data).arg("--runs-dir").arg(root.join("r")).arg("-q");
        c
    };
    let keep = std::fs::read(data.join("X_val.npy")).unwrap();
    swap(&root.join("pd32/X_val.npy"), "X_val.npy");
    refused(&mut train(), 1, "X_val.npy: 32 px images, but manifest.json says 64 px");
    std::fs::write(data.join("X_val.npy"), &keep).unwrap();
    let keep = std::fs::read(data.join("y_val.npy")).unwrap();
    swap(&data.join("y_test.npy"), "y_val.npy");
    refused(&mut train(), 1, "y_val.npy: shape");
    std::fs::write(data.join("y_val.npy"), &keep).unwrap();
    std::fs::write(data.join("manifest.json"), manifest.replace("\"size\": 64", "\"size\": 32")).unwrap();
    refused(&mut train(), 1, "X_train.npy: 64 px images, but manifest.json says 32 px");
    std::fs::write(data.join("manifest.json"), manifest.replace("\"dtype\": \"uint8\"", "\"dtype\": \"float32\"")).unwrap();
    refused(&mut train(), 1, "X_train.npy: uint8 pixels, but manifest.json says float32");
    std::fs::write(data.join("manifest.json"), "{\"format\": 1,").unwrap();
    refused(&mut train(), 1, "manifest.json: not a valid manifest");
    std::fs::write(data.join("manifest.json"), &manifest).unwrap();
    let x = vocml_core::io::npy::NpyArray::open(&root.join("pdf/X_train.npy")).unwrap();
    let mut pixels = x.to_f32_vec().unwrap();
    pixels[100] = 255.0;
    vocml_core::io::npy::write_f32(&root.join("pdf/X_train.npy"), &x.shape().to_vec(), &pixels).unwrap();
    refused(
        bin("train").arg("--data").arg(root.join("pdf")).arg("--runs-dir").arg(root.join("r")).arg("-q"),
        1,
        "pixel value 255, expected float32 pixels in [0, 1]",
    );
    assert!(!root.join("r").exists());
}

/// One hostile flag value: the tool, its arguments after the valid base ones, the exit
/// status and a piece of the one error line.
type FlagCase = (&'static str, &'static [&'static str], i32, &'static str);

/// Every numeric, enumerated and path flag of the six tools with values a careless or
/// hostile user gives: each is a one-line error naming the flag (or the file) before any
/// side effect.
const FLAG_CASES: &[FlagCase] = &[
    ("train", &["--epochs", "-1"], 2, "invalid value '-1' for '--epochs <N>'"),
    ("train", &["--epochs", "0"], 2, "batch_size and epochs must be at least 1"),
    ("train", &["--batch-size", "0"], 2, "batch_size and epochs must be at least 1"),
    ("train", &["--batch-size", "abc"], 2, "invalid value 'abc' for '--batch-size <N>'"),
    ("train", &["--patience", "-2"], 2, "'--patience <N>'"),
    ("train", &["--fine-tune-epochs", "-1"], 2, "'--fine-tune-epochs <N>'"),
    ("train", &["--fine-tune-blocks", "x"], 2, "'--fine-tune-blocks <N>'"),
    ("train", &["--fine-tune-lr", "NaN"], 2, "fine_tune_lr NaN: expected a learning rate"),
    ("train", &["--fine-tune-lr", "0"], 2, "fine_tune_lr 0: expected a learning rate"),
    ("train", &["--plateau-factor", "0"], 2, "plateau_factor 0: expected a factor between 0 and 1"),
    ("train", &["--plateau-factor", "2"], 2, "plateau_factor 2: expected a factor between 0 and 1"),
    ("train", &["--plateau-factor", "NaN"], 2, "plateau_factor NaN"),
    ("train", &["--plateau-patience", "-1"], 2, "'--plateau-patience <N>'"),
    ("train", &["--aug-views", "-1"], 2, "'--aug-views <N>'"),
    ("train", &["--aug-views", "65"], 2, "aug_views 65: at most 64"),
    ("train", &["--seed", "-1"], 2, "'--seed <S>'"),
    ("train", &["--seed", "abc"], 2, "'--seed <S>'"),
    ("train", &["--image-size", "5000"], 2, "image_size 5000: expected 1..=4096"),
    ("train", &["--image-size", "-3"], 2, "'--image-size <PX>'"),
    ("train", &["--device", "tpu"], 2, "invalid value 'tpu' for '--device <DEVICE>'"),
    ("train", &["--model", "nosuch"], 2, "invalid value 'nosuch' for '--model <NAME>'"),
    ("train", &["--models", "small_cnn,nosuch"], 2, "'--models <A,B,..>...'"),
    ("train", &["--scheduler", "linear"], 2, "invalid value 'linear' for '--scheduler <NAME>'"),
    ("train", &["--head", "0"], 2, "invalid value '0' for '--head <W,W.. | linear>'"),
    ("train", &["--head", "64,x"], 2, "\"x\": expected `linear` or hidden widths"),
    ("train", &["--head", "64", "--head-dropout", "1.5"], 2, "head dropout 1.5: expected a probability in [0, 1)"),
    ("train", &["--head", "64,32", "--head-dropout", "0.1,0.2,0.3"], 2, "3 head dropout values for 2 hidden layers"),
    ("train", &["--head-dropout", "0.3"], 2, "--head <W,W.. | linear>"),
    ("train", &["--weight-decay", "-1"], 2, "weight_decay -1: expected values in [0, 1]"),
    ("train", &["--weight-decay", "0,NaN"], 2, "weight_decay NaN"),
    ("train", &["--label-smoothing", "1"], 2, "label_smoothing 1: expected a value in [0, 1)"),
    ("train", &["--label-smoothing", "NaN"], 2, "label_smoothing NaN: expected a value in [0, 1)"),
    (
        "train",
        &["--models", "efficientnet_lite0,efficientnet_lite1", "--label-smoothing", "0,0.1,0.2"],
        2,
        "--label-smoothing: 3 values for 2 model(s)",
    ),
    (
        "train",
        &["--models", "efficientnet_lite0,efficientnet_lite1", "--label-smoothing", "0,1"],
        2,
        "label_smoothing 1: expected a value in [0, 1)",
    ),
    ("train", &["--scales", "abc"], 2, "invalid value 'abc' for '--scales <PX,PX..>'"),
    ("train", &["--scales", "64,16"], 2, "16 px: expected 32..=4096 pixels for efficientnet_lite0"),
    ("train", &["--scales", "64,64"], 2, "64 px is listed twice"),
    ("train", &["--monitor", "auc"], 2, "invalid value 'auc' for '--monitor <NAME>'"),
    ("train", &["--zoom", "1.5"], 2, "zoom 1.5: expected a range in [0, 0.9]"),
    ("train", &["--shear", "-5"], 2, "shear -5: expected a range in [0, 60]"),
    ("train", &["--width-shift", "inf"], 2, "width_shift inf"),
    ("train", &["--saturation", "2"], 2, "saturation 2: expected a range in [0, 1]"),
    ("train", &["--rotation", "200"], 2, "rotation 200: expected a range in [0, 180]"),
    ("train", &["--brightness", "-0.1"], 2, "brightness -0.1: expected a range in [0, 1]"),
    ("train", &["--height-shift", "NaN"], 2, "height_shift NaN"),
    ("train", &["--contrast", "x"], 2, "invalid value 'x' for '--contrast <F>'"),
    ("train", &["--no-flip", "yes"], 2, "unexpected argument 'yes'"),
    ("train", &["--fine-tune-lr-decay", "0"], 2, "fine_tune_lr_decay 0: expected a factor in (0, 1]"),
    ("train", &["--weights", "/no/such.safetensors"], 1, "weights file /no/such.safetensors not found"),
    (
        "train",
        &["--models", "efficientnet_lite0,efficientnet_lite1", "--weights", "/w.safetensors"],
        2,
        "--weights /w.safetensors names one checkpoint; with --models use --weights-dir",
    ),
    ("train", &["--config", "/no/such.toml"], 1, "cannot read config /no/such.toml"),
    ("train", &["--data", "/no/such"], 1, "cannot read /no/such/manifest.json"),
    ("train", &["--lr"], 2, "a value is required for '--lr <LR>'"),
    ("train", &["--bogus"], 2, "unexpected argument '--bogus'"),
    ("predict", &["--top-k", "-1"], 2, "'--top-k <K>'"),
    ("predict", &["--batch-size", "0"], 2, "invalid value '0' for '--batch-size <N>'"),
    ("predict", &["--batch-size", "-3"], 2, "invalid value '-3' for '--batch-size <N>'"),
    ("predict", &["--format", "xml"], 2, "invalid value 'xml' for '--format <FORMAT>'"),
    ("predict", &["--shard", "0/4"], 2, "need 1 <= K <= N"),
    ("predict", &["--shard", "1/0"], 2, "need 1 <= K <= N"),
    ("predict", &["--shard", "a/b"], 2, "K is not a number"),
    ("predict", &["--threshold", "1.5"], 2, "1.5 is not a probability"),
    ("predict", &["--threshold", "NaN"], 2, "NaN is not a probability"),
    ("predict", &["--threads", "0"], 2, "'--threads <N>'"),
    ("predict", &["--device", "tpu"], 2, "'--device <DEVICE>'"),
    ("predict", &["--max-image-pixels", "0"], 2, "invalid value '0' for '--max-image-pixels <N>'"),
    ("predict", &["--max-image-pixels", "-5"], 2, "invalid value '-5' for '--max-image-pixels <N>'"),
    ("predict", &["--run", "/no/such"], 1, "/no/such is not a trained run"),
    ("predict", &["--tta", "--no-tta"], 2, "cannot be used with"),
    ("retrain", &["--lr", "-1"], 2, "lr -1: expected a learning rate in (0, 10]"),
    ("retrain", &["--lr", "0"], 2, "lr 0: expected a learning rate in (0, 10]"),
    ("retrain", &["--replay-ratio", "-1"], 2, "replay_ratio -1: expected a number in [0, 100]"),
    ("retrain", &["--replay-ratio", "NaN"], 2, "replay_ratio NaN"),
    ("retrain", &["--replay-ratio", "1e9"], 2, "replay_ratio 1000000000"),
    ("retrain", &["--tolerance", "-1"], 2, "tolerance -1: expected a score difference from 0 to 1"),
    ("retrain", &["--tolerance", "2"], 2, "tolerance 2: expected a score difference from 0 to 1"),
    ("retrain", &["--tolerance", "NaN"], 2, "tolerance NaN"),
    ("retrain", &["--replay-all", "--no-replay"], 2, "cannot be used with"),
    ("evaluate", &["--thresholds", "best"], 2, "invalid value 'best' for '--thresholds <RULE>'"),
    ("retrain", &["--seed", "-4"], 2, "'--seed <S>'"),
    ("retrain", &["--epochs", "-1"], 2, "'--epochs <N>'"),
    ("retrain", &["--replicate", "-1"], 2, "'--replicate <N>'"),
    ("retrain", &["--max-image-pixels", "0"], 2, "'--max-image-pixels <N>'"),
    ("retrain", &["--from", "/no/such"], 1, "cannot open run /no/such"),
    ("retrain", &["--corrections", "/no/such.csv"], 1, "cannot read corrections file /no/such.csv"),
    ("retrain", &["--data", "/no/such"], 1, "cannot read /no/such/manifest.json"),
    ("voc-prep", &["--split", "0.5,0.5"], 2, "expected three fractions"),
    ("voc-prep", &["--split", "1,1,1"], 2, "fractions sum to 3, expected 1"),
    ("voc-prep", &["--split", "-1,1,1"], 2, "\"-1\" is not a fraction >= 0"),
    ("voc-prep", &["--split", "a,b,c"], 2, "\"a\" is not a fraction >= 0"),
    ("voc-prep", &["--size", "0"], 1, "--size 0 is out of range (1..=4096)"),
    ("voc-prep", &["--size", "100000"], 1, "--size 100000 is out of range"),
    ("voc-prep", &["--size", "-1"], 2, "invalid value '-1' for '--size <PX>'"),
    ("voc-prep", &["--classes", ","], 1, "empty class name in --classes"),
    ("voc-prep", &["--classes", "person,person"], 1, "class \"person\" is listed twice"),
    ("voc-prep", &["--classes", "nosuch"], 1, "unknown class \"nosuch\" in --classes"),
    ("voc-prep", &["--image-set", "nosuch"], 2, "'--image-set <SET>'"),
    ("voc-prep", &["--dtype", "f64"], 2, "'--dtype <DTYPE>'"),
    ("voc-prep", &["--resize", "weird"], 2, "'--resize <RESIZE>'"),
    ("voc-prep", &["--labels", "nosuch"], 2, "'--labels <LABELS>'"),
    ("voc-prep", &["--seed", "-1"], 2, "'--seed <S>'"),
    ("voc-prep", &["--max-image-pixels", "0"], 2, "'--max-image-pixels <N>'"),
    ("voc-prep", &["--max-image-pixels", "100"], 1, "images could be used (e.g. "),
    ("voc-prep", &["--voc-root", "/no/such"], 1, "--voc-root /no/such: no such directory"),
    ("evaluate", &["--split", "nosuch"], 2, "'--split <SPLIT>'"),
    ("evaluate", &["--metric", "f2"], 2, "'--metric <NAME>'"),
    ("evaluate", &["--batch-size", "0"], 2, "'--batch-size <N>'"),
    ("evaluate", &["--run", "/no/such"], 1, "--run /no/such: /no/such is not a finished run"),
    ("evaluate", &["--data", "/no/such"], 1, "cannot read /no/such/manifest.json"),
    ("evaluate", &["--ensemble"], 1, "--ensemble needs two or more --run directories"),
    ("predict", &["--rank", "loudest"], 2, "invalid value 'loudest' for '--rank <HOW>'"),
    ("predict", &["--rank", "entropy", "--select", "0"], 2, "invalid value '0' for '--select <K>'"),
    ("predict", &["--rank", "entropy", "--diverse"], 2, "--select <K>"),
    ("predict", &["--explain-npy"], 2, "--explain <DIR>"),
    ("predict", &["--run", "models:/m"], 1, "models:/m: expected models:/NAME@ALIAS or models:/NAME/VERSION"),
    ("predict", &["--run", "models:/m/x"], 1, "expected models:/NAME@ALIAS or models:/NAME/VERSION (a number)"),
    ("predict", &["--run", "models:/m@champion"], 1, "name the MLflow server with --mlflow URI"),
    ("train", &["--mlflow", "localhost:5000"], 1, "--mlflow \"localhost:5000\": expected http://host:port"),
    ("train", &["--mlflow", "file:///tmp/mlruns"], 1, "only http(s) tracking servers are supported"),
    ("evaluate", &["--mlflow", "ftp://x"], 1, "only http(s) tracking servers are supported"),
    ("retrain", &["--mlflow", "nonsense"], 1, "expected http://host:port"),
    ("serve", &["--inbox", "/no/such"], 1, "--inbox /no/such: no such directory"),
    ("serve", &["--max-batch", "0"], 2, "invalid value '0' for '--max-batch <N>'"),
    ("serve", &["--max-wait-ms", "-1"], 2, "invalid value '-1' for '--max-wait-ms <MS>'"),
    ("serve", &["--max-body-mb", "0"], 2, "'--max-body-mb <MB>'"),
    ("serve", &["--queue", "0"], 2, "'--queue <N>'"),
    ("serve", &["--addr", "nowhere"], 2, "invalid value 'nowhere' for '--addr <ADDR>'"),
    ("serve", &["--token-file", "/no/such"], 1, "--token-file /no/such"),
    ("serve", &["--retrain-tolerance", "2"], 2, "--retrain-tolerance 2: expected a score difference from 0 to 1"),
    ("serve", &["--label-studio-url", "ftp://ls.test"], 2, "--label-studio-url ftp://ls.test: expected http://HOST:PORT"),
    ("serve", &["--label-studio-map", "couch"], 2, "expected CHOICE=CLASS"),
    ("serve", &["--label-studio-train-after", "0"], 2, "'--label-studio-train-after <N>'"),
    ("serve", &["--run", "/no/such"], 1, "--run /no/such"),
    ("serve", &["--run", "models:/m@champion"], 1, "name the MLflow server with --mlflow URI"),
];

#[test]
fn bad_values_of_every_flag_are_one_line_errors_before_any_side_effect() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs, run_dir) = best_run(root, 40, 64, &["--epochs", "1"]);
    let img = root.join("voc/JPEGImages/000001.jpg");
    let csv = root.join("fixes.csv");
    std::fs::write(&csv, format!("path,labels\n{},dog\n", img.display())).unwrap();
    let before = snapshot(root);
    for &(tool, args, code, expect) in FLAG_CASES {
        let mut cmd = bin(tool);
        match tool {
            "train" => cmd.arg("--data").arg(&data).arg("--runs-dir").arg(&runs).arg("-q"),
            "predict" => cmd.arg("--run").arg(&run_dir).arg(&img),
            "retrain" => cmd.arg("--runs-dir").arg(&runs).arg("--corrections").arg(&csv).arg("-q"),
            "voc-prep" => cmd.arg("--voc-root").arg(root.join("voc")).arg("--out").arg(root.join("out")).arg("-q"),
            "evaluate" => cmd.arg("--data").arg(&data).arg("--run").arg(&run_dir).arg("-q"),
            "serve" => cmd.arg("--runs").arg(&runs).args(["--addr", "127.0.0.1:0"]),
            other => panic!("no base command for {other}"),
        };
        let (got, err) = bounded(cmd.args(args));
        assert_eq!(got, Some(code), "{tool} {args:?}: {err}");
        assert!(err.contains(expect), "{tool} {args:?}: expected {expect:?} in {err:?}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(expect) || code == 2, "{tool} {args:?}: the first line does not name the problem: {err:?}");
        assert_eq!(snapshot(root), before, "{tool} {args:?} changed a file");
    }
    assert!(FLAG_CASES.len() >= 100);
}
