//! Faults: SIGKILL at 20 random points of train, retrain and voc-prep; a full disk during each;
//! two trains and two retrains into one runs directory at once. After every fault nothing
//! visible is half-written, `runs/best` loads, the feedback store holds every acknowledged
//! correction, and the next run works.

use crate::util::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vocml_core::retrain::feedback::FeedbackStore;

/// Kill delays from a fixed seed (xorshift64), so a failure replays.
struct Delays(u64);

impl Delays {
    /// A delay uniform in [0, 1.2 x `span`): most kills land inside the run, a few after it.
    fn next(&mut self, span: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        span.mul_f64(1.2 * (self.0 % 10_000) as f64 / 10_000.0)
    }
}

/// Starts `cmd` and SIGKILLs it after `delay`; true when it finished successfully first.
fn run_and_kill(cmd: &mut Command, delay: Duration) -> bool {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    match wait_for(delay, || child.try_wait().unwrap()) {
        Some(status) => status.success(),
        None => {
            child.kill().unwrap();
            child.wait().unwrap();
            false
        }
    }
}

/// How long `cmd` takes uninterrupted.
fn duration_of(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let o = run(cmd);
    assert!(o.status.success(), "{}", stderr(&o));
    start.elapsed()
}

/// Checks that every visible run in `runs` is complete and loads, and that `best` (when
/// present) is one of them; returns their names.
fn complete_runs(runs: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(runs).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if name.starts_with('.') || name == "feedback" || name == "best" || !p.is_dir() {
            continue;
        }
        vocml_core::infer::loaded::LoadedModel::load(&p, tch::Device::Cpu)
            .unwrap_or_else(|e| panic!("{name} is visible but broken: {e:#}"));
        names.insert(name);
    }
    let best = runs.join("best");
    if best.exists() || best.is_symlink() {
        let target = std::fs::read_link(&best).unwrap();
        let target = target.file_name().unwrap().to_string_lossy().into_owned();
        assert!(names.contains(&target), "best points to {target}, not a complete run");
    }
    names
}

/// Hidden staging entries (`.NAME.tmp-PID-HOST`, `.NAME.old`) in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && (n.contains(".tmp-") || n.ends_with(".old")))
        .collect()
}

/// The image hashes the feedback store holds (it must be readable).
fn stored_hashes(feedback: &Path) -> BTreeSet<String> {
    let store = FeedbackStore::open(feedback).unwrap();
    store.all().unwrap_or_else(|e| panic!("feedback store unreadable: {e:#}")).corrections.into_iter().map(|c| c.sha256).collect()
}

fn sha256_of(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))
}

fn train_cmd(data: &Path, runs: &Path) -> Command {
    let mut c = bin("train");
    c.arg("--data").arg(data).arg("--runs-dir").arg(runs).args(["-q", "--threads", "1", "--epochs", "3", "--aug-views", "1"]);
    c
}

fn retrain_cmd(runs: &Path, csv: &Path) -> Command {
    let mut c = bin("retrain");
    c.arg("--runs-dir").arg(runs).arg("--corrections").arg(csv).args([
        "-q",
        "--threads",
        "1",
        "--epochs",
        "2",
        "--replicate",
        "2",
        "--force",
    ]);
    c
}

/// A corrections CSV for image `i` of the synthetic set, written beside `root`'s images.
fn correction_csv(root: &Path, i: usize) -> (PathBuf, PathBuf) {
    let img = root.join(format!("voc/JPEGImages/{:06}.jpg", i + 1));
    let csv = root.join(format!("fix-{i}.csv"));
    std::fs::write(&csv, format!("path,labels\n{},dog;sofa\n", img.display())).unwrap();
    (csv, img)
}

/// A prepared dataset and a first run promoted to `runs/best`.
fn fixture(root: &Path) -> (PathBuf, PathBuf) {
    let (data, runs, _) = best_run(root, 60, 64, &["--epochs", "1"]);
    (data, runs)
}

#[test]
fn train_killed_at_20_random_points_leaves_only_complete_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (data, runs) = fixture(dir.path());
    let span = duration_of(&mut train_cmd(&data, &runs));
    let mut delays = Delays(0x5eed_0001);
    for _ in 0..20 {
        run_and_kill(&mut train_cmd(&data, &runs), delays.next(span));
        complete_runs(&runs);
    }
    let before = complete_runs(&runs);
    let o = run(&mut train_cmd(&data, &runs));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(complete_runs(&runs).len(), before.len() + 1);
    assert_eq!(leftovers(&runs), Vec::<String>::new(), "the next run cleans what killed ones left");
}

#[test]
fn retrain_killed_at_20_random_points_keeps_best_and_every_acknowledged_correction() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, runs) = fixture(root);
    let feedback = runs.join("feedback");
    let (csv, img) = correction_csv(root, 0);
    let span = duration_of(&mut retrain_cmd(&runs, &csv));
    let mut acknowledged = BTreeSet::from([sha256_of(&img)]);
    let mut delays = Delays(0x5eed_0002);
    for i in 1..=20 {
        let (csv, img) = correction_csv(root, i);
        if run_and_kill(&mut retrain_cmd(&runs, &csv), delays.next(span)) {
            acknowledged.insert(sha256_of(&img));
        }
        complete_runs(&runs);
        let stored = stored_hashes(&feedback);
        assert!(acknowledged.is_subset(&stored), "an acknowledged correction is missing from the store");
    }
    assert!(acknowledged.len() < 21, "no kill landed inside a retrain");
    let (csv, img) = correction_csv(root, 21);
    let o = run(&mut retrain_cmd(&runs, &csv));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stored_hashes(&feedback).contains(&sha256_of(&img)));
    complete_runs(&runs);
    assert_eq!(leftovers(&runs), Vec::<String>::new());
}

#[test]
fn voc_prep_killed_at_20_random_points_keeps_a_complete_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let voc = root.join("voc");
    synth(&voc, 400, 5);
    let out = root.join("pd");
    let prep = || {
        let mut c = bin("voc-prep");
        c.arg("--voc-root").arg(&voc).arg("--out").arg(&out).args(["-q", "--size", "96"]);
        c
    };
    let complete = || {
        let m = vocml_core::dataset::manifest::Manifest::load(&out).unwrap_or_else(|e| panic!("output broken: {e:#}"));
        for split in ["train", "val", "test"] {
            vocml_core::dataset::prepared::SplitData::open(&out, split, &m).unwrap_or_else(|e| panic!("output broken: {e:#}"));
        }
    };
    let span = duration_of(&mut prep());
    let mut delays = Delays(0x5eed_0003);
    for _ in 0..20 {
        run_and_kill(&mut prep(), delays.next(span));
        complete();
    }
    let o = run(&mut prep());
    assert!(o.status.success(), "{}", stderr(&o));
    complete();
    assert_eq!(leftovers(root), Vec::<String>::new());
}

/// Runs `a` and `b` at once and returns their outputs.
fn both(mut a: Command, mut b: Command) -> [std::process::Output; 2] {
    let ca = a.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let cb = b.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    [ca.wait_with_output().unwrap(), cb.wait_with_output().unwrap()]
}

#[test]
fn two_trains_and_two_retrains_into_one_runs_directory_keep_every_finished_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs) = fixture(root);
    let start = complete_runs(&runs).len();
    for _ in 0..10 {
        for o in both(train_cmd(&data, &runs), train_cmd(&data, &runs)) {
            assert!(o.status.success(), "{}", stderr(&o));
        }
    }
    assert_eq!(complete_runs(&runs).len(), start + 20, "a finished train was lost");
    let mut images = Vec::new();
    for round in 0..10 {
        let (csv_a, img_a) = correction_csv(root, 2 * round);
        let (csv_b, img_b) = correction_csv(root, 2 * round + 1);
        for o in both(retrain_cmd(&runs, &csv_a), retrain_cmd(&runs, &csv_b)) {
            assert!(o.status.success(), "{}", stderr(&o));
        }
        images.extend([sha256_of(&img_a), sha256_of(&img_b)]);
    }
    assert_eq!(complete_runs(&runs).len(), start + 40, "a finished retrain was lost");
    let stored = stored_hashes(&runs.join("feedback"));
    assert!(images.iter().all(|h| stored.contains(h)), "a correction of a finished retrain is missing");
}

/// A size-limited tmpfs mounted for a test and unmounted when dropped (needs root, as in CI).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, megabytes: u32) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("disk-full test skipped: mounting a tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"]).arg(dir).status().unwrap();
        assert!(ok.success(), "cannot mount a tmpfs on {}", dir.display());
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system but `leave` bytes with `<dir>/filler`.
    fn fill_leaving(&self, leave: u64) {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let written = f.metadata().unwrap().len();
        f.set_len(written.saturating_sub(leave)).unwrap();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Expects a failed run whose one error line names a path under `under` and the full disk.
fn fails_on_full_disk(o: &std::process::Output, under: &Path) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(under.to_str().unwrap()), "the error does not name the path: {err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
}

#[test]
fn a_full_disk_during_train_retrain_and_voc_prep_is_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (data, runs_src) = fixture(root);
    let Some(disk) = Tmpfs::mount(&root.join("disk"), 48) else { return };
    let runs = disk.0.join("runs");
    std::fs::create_dir(&runs).unwrap();
    let best = runs_src.join("best").canonicalize().unwrap();
    let parent = runs.join(best.file_name().unwrap());
    std::fs::create_dir(&parent).unwrap();
    for f in std::fs::read_dir(&best).unwrap().flatten() {
        std::fs::copy(f.path(), parent.join(f.file_name())).unwrap();
    }
    vocml_core::run::point_best(&runs, &parent).unwrap();

    disk.fill_leaving(2 << 20);
    fails_on_full_disk(&run(&mut train_cmd(&data, &runs)), &runs);
    assert_eq!(complete_runs(&runs).len(), 1);
    assert_eq!(leftovers(&runs), Vec::<String>::new(), "a failed train left its staging");

    let (csv, img) = correction_csv(root, 3);
    fails_on_full_disk(&run(&mut retrain_cmd(&runs, &csv)), &runs);
    assert_eq!(complete_runs(&runs).len(), 1);
    assert!(stored_hashes(&runs.join("feedback")).is_empty(), "a failed retrain stored its correction");

    disk.free();
    disk.fill_leaving(100 << 10);
    let out = disk.0.join("pd");
    let prep = || {
        let mut c = bin("voc-prep");
        c.arg("--voc-root").arg(root.join("voc")).arg("--out").arg(&out).args(["-q", "--size", "64"]);
        c
    };
    fails_on_full_disk(&run(&mut prep()), &disk.0);
    assert!(!out.exists());
    assert_eq!(leftovers(&disk.0), Vec::<String>::new());

    disk.free();
    disk.fill_leaving(0);
    let rows = disk.0.join("rows.csv");
    let o = run(bin("predict").arg("--run").arg(runs.join("best")).arg(root.join("voc/JPEGImages")).arg("-o").arg(&rows));
    fails_on_full_disk(&o, &rows);
    assert!(!rows.exists());
    assert_eq!(leftovers(&disk.0), Vec::<String>::new());

    disk.free();
    assert!(run(&mut train_cmd(&data, &runs)).status.success());
    assert!(run(&mut retrain_cmd(&runs, &csv)).status.success());
    assert!(stored_hashes(&runs.join("feedback")).contains(&sha256_of(&img)));
    assert!(run(&mut prep()).status.success());
    assert_eq!(complete_runs(&runs).len(), 3);
}
