"""make learning-curve: how accuracy grows with the number of training photos, under the
cross-validation protocol of make quality-cv, and what the curve says about a target.

For each fold of a finished quality-cv case FULL (default `best`: configs/voc4-best.toml on the
whole training split of each fold), the same recipe (RECIPE, with FLAGS) trains on nested
random shares of that fold's training split (SHARES, default "8 4 2": 1/8, 1/4, 1/2; a
share's photos include the smaller shares' photos; seed 1000 + fold), with the fold's val
(early stopping, thresholds) and test splits unchanged, and is scored on the test fold. The
whole split is FULL's own runs. Each share is stored as a quality-cv case
(OUT/<FULL>-n1of<d>/fold<f>/{runs,seconds,data}), so finished folds are kept and
benches/report_cv.py can tabulate them too.

Report: per share, training photos, mean ± sd over folds of mAP and macro-F1 (0.5, shrunk,
tuned); the paired gain of each doubling with its 95% interval (Student's t over folds); and,
for TARGET_MAP (and TARGET_F1, tuned macro-F1; empty for none), the training photos a target
would take if every further doubling gained what the last one did. Learning curves flatten
(each doubling gains less than the one before), so that figure is a lower bound on the photos
needed, not an estimate.

Usage: learning_curve.py (environment: OUT FULL RECIPE FLAGS SHARES TARGET_MAP TARGET_F1 B)
"""
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from loop import subset
from report_cv import T975, metrics

B = Path(os.environ.get("B", "target/release"))
OUT = Path(os.environ.get("OUT", "target/quality-cv"))
FULL = os.environ.get("FULL", "best")
RECIPE = os.environ.get("RECIPE", "configs/voc4-best.toml")
FLAGS = os.environ.get("FLAGS", "").split()
SHARES = sorted((int(d) for d in os.environ.get("SHARES", "8 4 2").split()), reverse=True)
TARGET_MAP = float(os.environ.get("TARGET_MAP", "0.90"))
TARGET_F1 = float(os.environ.get("TARGET_F1", "0.85")) if os.environ.get("TARGET_F1", "0.85") else None
PY = Path(os.environ.get("PY", ".venv/bin/python"))


def finished_folds(case_dir):
    return sorted(d for d in case_dir.glob("fold*") if (d / "seconds").is_file())


def run_of(fold_dir):
    return next(p for p in (fold_dir / "runs").iterdir() if p.is_dir() and not p.name.startswith("."))


def train_share(full_fold, share):
    """Trains the recipe on 1/share of full_fold's training split (nested shares), scored on its test split."""
    fold = int(full_fold.name.removeprefix("fold"))
    out = OUT / f"{FULL}-n1of{share}" / full_fold.name
    if (out / "seconds").is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data = Path((full_fold / "data").read_text().strip())
    n = json.loads((data / "manifest.json").read_text())["splits"]["train"]["count"]
    order = list(range(n))
    random.Random(1000 + fold).shuffle(order)
    keep = sorted(order[: round(n / share)])
    part = subset(data, out / "prepared", keep)
    print(f"learning-curve: {FULL} fold {fold}: {len(keep)} of {n} training photos", file=sys.stderr)
    with open(out / "train.log", "w") as log:
        p = subprocess.run([str(PY), "benches/measure.py", str(B / "train"), "--config", RECIPE, "--data", str(part), "--seed", "42",
                            *FLAGS, "--runs-dir", str(out / "runs"), "-q"], stdout=subprocess.PIPE, stderr=log, text=True)
    if p.returncode != 0:
        sys.exit(f"learning-curve: train failed on {part} (see {out / 'train.log'})")
    subprocess.run([str(B / "evaluate"), "--data", str(part), "--run", str(run_of(out)), "--no-select", "-q"],
                   stdout=subprocess.DEVNULL, check=True)
    (out / "data").write_text(f"{part}\n")
    (out / "seconds").write_text(p.stdout)
    return out


def scores(fold_dir):
    ev = json.loads((run_of(fold_dir) / "evaluation.json").read_text())
    data = Path((fold_dir / "data").read_text().strip())
    photos = json.loads((data / "manifest.json").read_text())["splits"]["train"]["count"]
    seconds = float((fold_dir / "seconds").read_text().split()[0])
    return {**metrics(ev), "photos": photos, "seconds": seconds}


def interval(d):
    m = statistics.fmean(d)
    h = T975[len(d) - 2] * statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return m, m - h, m + h


def extrapolation(rows, key, label, target):
    """What the last doubling's gain in `key` says about the training photos `target` takes."""
    last, before = rows[-1][1], rows[-2][1]
    top = statistics.fmean(x[key] for x in last)
    g, lo, hi = interval([a[key] - b[key] for a, b in zip(last, before)])
    photos = statistics.fmean(x["photos"] for x in last)
    if top >= target:
        return f"{label} {top:.3f} already reaches the target {target:.2f}."
    if g <= 0:
        return f"{label} {target:.2f} from {top:.3f}: the last doubling gained {g:+.3f} [{lo:+.3f}, {hi:+.3f}]; no extrapolation."
    need = lambda gain: f"{photos * 2 ** ((target - top) / gain):,.0f}" if gain > 0 else "no bound"
    return (f"{label} {target:.2f} from {top:.3f}: the last doubling gained {g:+.3f} [{lo:+.3f}, {hi:+.3f}]; at that rate "
            f"the target takes {(target - top) / g:.1f} more doublings, about {need(g)} training photos (at the interval's "
            f"upper end {need(hi)}) against {photos:.0f} here: a lower bound, as learning curves flatten.")


def report(rows):
    """rows: [(share, [per-fold scores])], largest share last (1 = the whole split)."""
    folds = len(rows[0][1])
    lines = [f"{folds} folds; recipe {RECIPE}{' ' + ' '.join(FLAGS) if FLAGS else ''}; each share's photos a random subset of the "
             "next share's (val and test splits unchanged); mean ± sd over folds; gains paired by fold, 95% t-intervals.\n",
             "| training photos | share | mAP | macro-F1 @0.5 | shrunk | tuned | mAP gain of the doubling [95% CI] | "
             "tuned F1 gain [95% CI] | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    prev = None
    for share, s in rows:
        ms = lambda k: f"{statistics.fmean(x[k] for x in s):.3f} ± {statistics.stdev(x[k] for x in s):.3f}"
        mean = lambda k: f"{statistics.fmean(x[k] for x in s):.3f}"
        if prev is None:
            gain = f1gain = "-"
        else:
            g = interval([a["map"] - b["map"] for a, b in zip(s, prev)])
            f = interval([a["tuned"] - b["tuned"] for a, b in zip(s, prev)])
            gain = f"{g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]"
            f1gain = f"{f[0]:+.3f} [{f[1]:+.3f}, {f[2]:+.3f}]"
        lines.append(f"| {statistics.fmean(x['photos'] for x in s):.0f} | 1/{share} | {ms('map')} | {mean('f1')} | {mean('shrunk')} | "
                     f"{mean('tuned')} | {gain} | {f1gain} | {statistics.fmean(x['seconds'] for x in s):.0f} |")
        prev = s
    for key, label, target in (("map", "mAP", TARGET_MAP), ("tuned", "tuned macro-F1", TARGET_F1)):
        if target is not None:
            lines.append("\n" + extrapolation(rows, key, label, target))
    return "\n".join(lines) + "\n"


def main():
    full_dir = OUT / FULL
    full_folds = finished_folds(full_dir)
    if not full_folds:
        sys.exit(f"learning-curve: no finished folds of case {FULL} in {OUT}; run make quality-cv with it first")
    rows = []
    for share in SHARES:
        rows.append((share, [scores(train_share(f, share)) for f in full_folds]))
    rows.append((1, [scores(f) for f in full_folds]))
    table = report(rows)
    name = OUT / f"learning-curve-{FULL}.md"
    name.write_text(table)
    print(table)
    print(f"(table in {name}; machine: {os.cpu_count()} cores)", file=sys.stderr)


if __name__ == "__main__":
    main()
