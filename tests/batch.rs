//! Batch scoring as data teams run it: `predict --shard K/N` parts merged with `--merge` equal
//! one `predict` row for row; `predict --resume` after a SIGKILL at random points scores every
//! photo exactly once, its output whole at every kill point; docs/deploy's Kubernetes Indexed
//! Job run as the Job would run each task, and its Slurm array script on a real one-node Slurm.

use crate::util::slurm::SlurmCluster;
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

/// The merged parts of `out` (part-0 .. part-{n-1}) of `photos`, by `predict --merge`.
fn merged(out: &Path, n: usize, photos: &Path) -> String {
    let mut merge = bin("predict");
    for k in 0..n {
        merge.arg("--merge").arg(out.join(format!("part-{k}.csv")));
    }
    whole(run(merge.arg(photos)))
}

/// docs/deploy's Kubernetes Indexed Job, each task run as the Job would (its index in the
/// environment, the manifest's paths mapped to the test's), one pod killed halfway and run
/// again: the parts merge into one row per photo, equal to one predict.
#[test]
fn the_indexed_job_in_docs_deploy_scores_every_photo_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs, run_dir) = best_run(root, 40, 64, &["--epochs", "1"]);
    let photos = root.join("voc/JPEGImages");
    let one = whole(run(bin("predict").arg("--run").arg(&run_dir).arg("-q").arg(&photos)));
    let path = path_with_tools();

    let text = std::fs::read_to_string(repo_root().join("docs/deploy/predict-job.yaml")).unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!((job["kind"].as_str(), job["spec"]["completionMode"].as_str()), (Some("Job"), Some("Indexed")));
    let n = job["spec"]["completions"].as_u64().unwrap() as usize;
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"], serde_yaml::from_str::<serde_yaml::Value>(r#"["/bin/sh", "-c"]"#).unwrap());
    let script = container["args"][0].as_str().unwrap();
    let out = root.join("k8s-out");
    std::fs::create_dir_all(&out).unwrap();
    let mapped = script
        .replace("/runs/best", runs.join("best").to_str().unwrap())
        .replace("/out/", &format!("{}/", out.display()))
        .replace(" /data", &format!(" {}", photos.display()));
    let task = |k: usize| {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", &mapped]).env("JOB_COMPLETION_INDEX", k.to_string()).env("PATH", &path).env_remove("LD_LIBRARY_PATH");
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    // Pod 0 is killed once its part holds a few rows; the Job restarts it.
    let mut first = task(0).spawn().unwrap();
    let part0 = out.join("part-0.csv");
    let grown = wait_for(Duration::from_secs(60), || (std::fs::read_to_string(&part0).map_or(0, |t| t.lines().count()) > 2).then_some(()));
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(grown.is_some(), "pod 0 wrote no rows in 60 s");
    for k in 0..n {
        let o = task(k).output().unwrap();
        assert!(o.status.success(), "index {k}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let all = merged(&out, n, &photos);
    assert_eq!(all.lines().count(), one.lines().count(), "{all}");
    let labels = |t: &str| t.lines().map(|l| l.split(',').take(2).collect::<Vec<_>>().join(",")).collect::<Vec<_>>();
    assert_eq!(labels(&all), labels(&one), "the same path and labels in the same order");
}

/// PATH with the built tools first.
fn path_with_tools() -> String {
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_predict")).parent().unwrap().to_path_buf();
    format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default())
}

/// docs/deploy/slurm-predict.sh on a real one-node Slurm: an array of 4 predict shards over
/// 300 photos, merged, equals one predict row for row; task 0 killed with SIGKILL (scancel)
/// once its part holds 2 of its ~75 rows and re-submitted alone ends with the same merged
/// result.
#[test]
fn the_slurm_array_on_a_real_slurm_scores_every_photo_once_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, _, run_dir) = best_run(root, 40, 224, &["--epochs", "1"]);
    let photos = root.join("photos");
    synth(&photos, 300, 21);
    let photos = photos.join("JPEGImages");
    let one = whole(run(&mut predict(&run_dir, &[], &photos)));
    assert_eq!(one.lines().count(), 301);
    let slurm = SlurmCluster::start();
    let script = repo_root().join("docs/deploy/slurm-predict.sh");
    let out = root.join("out");
    // --batch-size 1: byte-equal rows (see `predict` above).
    let args = [run_dir.as_path(), photos.as_path(), out.as_path(), Path::new("--batch-size"), Path::new("1")];
    let job = slurm.sbatch(&[], &script, &args, &path_with_tools());
    let part0 = out.join("part-0.csv");
    let rows = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count().saturating_sub(1));
    let grown = wait_for(Duration::from_secs(120), || (rows(&part0) >= 2).then_some(()));
    let o = slurm.command("scancel").args(["--full", "--signal=KILL", &format!("{job}_0")]).output().unwrap();
    assert!(grown.is_some() && o.status.success(), "task 0 wrote no rows, or scancel failed: {}{}", stderr(&o), slurm.logs());
    slurm.wait_done(&job, Duration::from_secs(300));
    let killed_rows = rows(&part0);
    let states = slurm.task_states(&job);
    assert!(states.iter().any(|(t, s)| t == "0" && s != "COMPLETED"), "task 0 was not killed: {states:?}{}", slurm.logs());
    assert!(states.iter().filter(|(t, _)| t != "0").all(|(_, s)| s == "COMPLETED"), "{states:?}{}", slurm.logs());
    // The killed part is valid CSV with whole rows, short of its shard.
    let text = std::fs::read_to_string(&part0).unwrap();
    let fields = text.lines().next().unwrap().split(',').count();
    assert!(text.ends_with('\n') && text.lines().all(|l| l.split(',').count() == fields), "{text}");
    let mut merge = bin("predict");
    for k in 0..4 {
        merge.arg("--merge").arg(out.join(format!("part-{k}.csv")));
    }
    let incomplete = run(merge.arg(&photos));
    assert_eq!(incomplete.status.code(), Some(1), "the parts of a killed task must not merge: {}", stdout(&incomplete));

    let again = slurm.sbatch(&["--array=0"], &script, &args, &path_with_tools());
    slurm.wait_done(&again, Duration::from_secs(300));
    assert!(rows(&part0) > killed_rows, "the re-submitted task added no rows{}", slurm.logs());
    assert_eq!(merged(&out, 4, &photos), one, "the merged parts differ from one predict{}", slurm.logs());
}
