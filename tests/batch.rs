//! Batch scoring as data teams run it: `predict --shard K/N` parts merged with `--merge` equal
//! one `predict` row for row, and `predict --resume` after a SIGKILL at random points scores
//! every photo exactly once, its output whole at every kill point.

use crate::util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `predict` of `inputs` one image per forward pass: a batch's composition moves the sixth
/// decimal of some probabilities (batched float arithmetic), so byte-equal outputs of shards,
/// resumed runs and one run are compared at batch size 1.
fn predict(run_dir: &Path, extra: &[&str], inputs: &Path) -> Command {
    let mut c = bin("predict");
    c.arg("--run").arg(run_dir).args(["-q", "--batch-size", "1"]).args(extra).arg(inputs);
    c
}

fn whole(o: std::process::Output) -> String {
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn shards_merge_into_one_predict_and_a_bad_merge_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, _, run_dir) = best_run(root, 60, 64, &["--epochs", "1"]);
    let photos = root.join("voc/JPEGImages");
    for format in ["csv", "jsonl"] {
        let one = whole(run(&mut predict(&run_dir, &["--format", format], &photos)));
        let parts: Vec<PathBuf> = (1..=4).map(|k| root.join(format!("part-{k}.{format}"))).collect();
        for (k, part) in parts.iter().enumerate() {
            let shard = format!("{}/4", k + 1);
            whole(run(&mut predict(&run_dir, &["--format", format, "--shard", &shard, "--output", part.to_str().unwrap()], &photos)));
        }
        let mut merge = bin("predict");
        merge.args(["--format", format]);
        for p in &parts {
            merge.arg("--merge").arg(p);
        }
        let merged = whole(run(merge.arg(&photos)));
        assert_eq!(merged, one, "{format}: the merged shards differ from one predict");

        // A part missing, or given twice: an error naming it, nothing written.
        let out = root.join(format!("merged.{format}"));
        let mut missing = bin("predict");
        missing
            .args(["--format", format])
            .arg("--merge")
            .arg(&parts[0])
            .arg("--merge")
            .arg(&parts[1])
            .arg("--output")
            .arg(&out)
            .arg(&photos);
        let o = run(&mut missing);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("have no row in the parts") && !out.exists(), "{}", stderr(&o));
        let mut doubled = bin("predict");
        doubled.args(["--format", format]);
        for p in parts.iter().chain(&parts[..1]) {
            doubled.arg("--merge").arg(p);
        }
        let o = run(doubled.arg(&photos));
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("has a row in"), "{}", stderr(&o));
    }
}

/// Rows of a CSV output: every line whole, each record parses, the paths in order.
fn csv_paths(text: &str) -> Vec<String> {
    assert!(text.is_empty() || text.ends_with('\n'), "a row cut short: {:?}", &text[text.len().saturating_sub(80)..]);
    vocml_core::io::csv_line::records(text).skip(1).map(|(line, r)| r.unwrap_or_else(|e| panic!("line {line}: {e}"))[0].clone()).collect()
}

#[test]
fn predict_killed_at_random_points_resumes_and_scores_every_photo_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, _, run_dir) = best_run(root, 40, 64, &["--epochs", "1"]);
    // 240 photos: the 40 of the dataset under six names each.
    let photos = root.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    for e in std::fs::read_dir(root.join("voc/JPEGImages")).unwrap() {
        let p = e.unwrap().path();
        for copy in 0..6 {
            std::fs::copy(&p, photos.join(format!("{copy}-{}", p.file_name().unwrap().to_string_lossy()))).unwrap();
        }
    }
    let one = whole(run(&mut predict(&run_dir, &[], &photos)));
    let rows = |out: &Path| std::fs::read_to_string(out).map_or(0, |t| t.lines().count());

    // Each round is killed once the file has grown by a random number of rows, plus a random
    // few milliseconds: kills land between and during writes whatever the machine's speed.
    let out = root.join("part.csv");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills = 0;
    for round in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (grow, extra) = (1 + seed % 30, Duration::from_millis(seed % 40));
        let target = rows(&out) + grow as usize;
        let mut child = predict(&run_dir, &["--resume", "--output", out.to_str().unwrap()], &photos)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let finished = wait_for(Duration::from_secs(120), || match child.try_wait().unwrap() {
            Some(status) => Some(Some(status)),
            None => (rows(&out) >= target).then_some(None),
        })
        .expect("predict neither grew its output nor finished in 120 s");
        if let Some(status) = finished {
            assert!(status.success(), "round {round}");
            break;
        }
        std::thread::sleep(extra);
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let paths = csv_paths(&std::fs::read_to_string(&out).unwrap());
        let unique: std::collections::HashSet<&String> = paths.iter().collect();
        assert_eq!(unique.len(), paths.len(), "round {round}: a photo scored twice");
    }
    // Finish whatever is left.
    let o = run(&mut predict(&run_dir, &["--resume", "--output", out.to_str().unwrap()], &photos));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kills >= 5, "only {kills} kills landed before the end");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), one, "after {kills} kills the output differs from one uninterrupted predict");
    let again = run(&mut predict(&run_dir, &["--resume", "--output", out.to_str().unwrap()], &photos));
    assert!(again.status.success() && std::fs::read_to_string(&out).unwrap() == one, "a finished output resumed again changed");

    // An output of another format (or run) is refused, unchanged.
    let o = run(&mut predict(&run_dir, &["--resume", "--top-k", "2", "--output", out.to_str().unwrap()], &photos));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("header"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), one);
}
