"""make loop: do corrections improve the model on photos nobody corrected, and can the
promotion gate tell? Measured the way a user meets it, on real VOC photos.

Per fold f (voc-prep --fold f/FOLDS: fold f is the untouched test split, "unseen"), POOL
images of the training split are held out as a correction pool; the recipe (RECIPE, default
configs/voc4-best.toml) trains on the rest (the parent). The parent scores the pool and the K
photos it gets most wrong (largest binary cross-entropy against the true labels) are
corrected with their true labels, for each K in KS. Each K is learnt four ways:
  old       retrain's reference recipe (corrections x10, replay 3 per correction, 30 epochs)
  new       retrain NEW_FLAGS (default --config configs/retrain-gentle.toml: the head
            fine-tuned on the whole training split with each correction once, 8 epochs at 1e-4;
            the 2026-12-02 table used --replay-all --replicate 1, 30 epochs at 3e-4)
  shuffled  as new, with the K label sets shuffled among the K photos (a no-op baseline)
  full      the recipe trained from scratch with the K photos added to its training split
and each result is scored on the unseen split (mAP, macro-F1 at 0.5). The gate's decision
(retrain.json) is set against the unseen verdict (the unseen mAP change >= -tolerance).
Seconds are wall time of the process. Unless TIME_5X=0, the first fold also times `old`, `new`
and `full` at K=50 with the training split repeated 5 times (the same photos: time only).

Raw results: OUT/fold<f>/results.json; the table: OUT/loop.md.
Usage: loop.py (environment: VOC_ROOT FOLDS KS POOL RECIPE NEW_FLAGS OUT B TIME_5X)
"""
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

B = Path(os.environ.get("B", "target/release"))
VOC_ROOT = Path(os.environ.get("VOC_ROOT", "../shared/data/voc2007-train/VOCdevkit/VOC2007"))
FOLDS = [int(f) for f in os.environ.get("FOLDS", "1 2 3 4 5").split()]
OF = int(os.environ.get("OF", "5"))
KS = [int(k) for k in os.environ.get("KS", "10 50 200").split()]
POOL = int(os.environ.get("POOL", "400"))
RECIPE = os.environ.get("RECIPE", "configs/voc4-best.toml")
SIZE = int(os.environ.get("SIZE", "320"))
OUT = Path(os.environ.get("OUT", "target/loop"))
NEW_FLAGS = os.environ.get("NEW_FLAGS", "--config configs/retrain-gentle.toml").split()
TOLERANCE = 0.01
WAYS = ["old", "new", "shuffled", "full"]
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def sh(*args, quiet=True):
    """Runs a tool; its wall seconds. A failure stops the measurement with the tool's stderr."""
    t0 = time.perf_counter()
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"make loop: {' '.join(map(str, args[:3]))} failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0, p.stdout


def new_run(runs):
    dirs = [d for d in Path(runs).iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in ("best", "feedback")]
    return max(dirs, key=lambda d: d.stat().st_mtime)


def prepare(fold):
    data = OUT / f"data-{SIZE}-fold{fold}-of{OF}"
    if not (data / "manifest.json").is_file():
        sh(B / "voc-prep", "--voc-root", VOC_ROOT, "--labels", "imagesets", "--image-set", "train", "--size", SIZE,
           "--split", "0.7,0.15,0.15", "--seed", 42, "--fold", f"{fold}/{OF}", "--out", data, "--force", "-q")
    return data


def subset(full, out, keep, extra_rows=(), repeat=1):
    """A prepared-data directory like `full` whose training split is the rows `keep` (then
    `extra_rows` of the same split), all `repeat` times; val and test are full's."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    m = json.loads((full / "manifest.json").read_text())
    x = np.load(full / "X_train.npy", mmap_mode="r")
    y = np.load(full / "y_train.npy")
    rows = (list(keep) + list(extra_rows)) * repeat
    np.save(out / "X_train.npy", np.ascontiguousarray(x[rows]))
    np.save(out / "y_train.npy", y[rows])
    for name in ("X_val.npy", "y_val.npy", "X_test.npy", "y_test.npy"):
        os.link(full / name, out / name)
    ids = m["splits"]["train"]["ids"]
    t = m["splits"]["train"]
    t["ids"] = [ids[i] for i in rows]
    t["count"] = len(rows)
    t["per_class"] = {c: int(y[rows, k].sum()) for k, c in enumerate(m["classes"])}
    (out / "manifest.json").write_text(json.dumps(m, indent=2))
    return out


def evaluate(data, run):
    sh(B / "evaluate", "--data", data, "--run", run, "--no-select", "-q")
    e = json.loads((Path(run) / "evaluation.json").read_text())
    return {"mAP": e["mAP"], "macro_f1": e["macro_f1"]}


def train(data, runs):
    seconds, _ = sh(B / "train", "--config", RECIPE, "--data", data, "--runs-dir", runs, "--seed", 42, "-q")
    return new_run(runs), seconds


def retrain(parent, csv, base, way_dir, flags):
    seconds, _ = sh(B / "retrain", "--from", parent, "--corrections", csv, "--data", base, "--runs-dir", way_dir / "runs",
                    "--feedback-dir", way_dir / "feedback", "-q", *flags)
    run = new_run(way_dir / "runs")
    return run, seconds, json.loads((run / "retrain.json").read_text())


def worst_first(parent, pool_ids, pool_y, classes, fold_dir):
    """Pool indices, most wrong first (binary cross-entropy of the parent's probabilities)."""
    out = fold_dir / "pool.jsonl"
    sh(B / "predict", "--run", parent, "--format", "jsonl", "--output", out, *[VOC_ROOT / "JPEGImages" / f"{i}.jpg" for i in pool_ids])
    probs = {}
    for line in out.read_text().splitlines():
        r = json.loads(line)
        probs[Path(r["path"]).stem] = [r["probabilities"][c] for c in classes]
    loss = []
    for i, ident in enumerate(pool_ids):
        p = np.clip(np.array(probs[ident]), 1e-6, 1 - 1e-6)
        t = pool_y[i]
        loss.append(float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).sum()))
    return sorted(range(len(pool_ids)), key=lambda i: -loss[i])


def write_csv(path, ids, label_rows, classes):
    lines = ["path,labels"]
    for ident, row in zip(ids, label_rows):
        lines.append(f"{VOC_ROOT.resolve() / 'JPEGImages' / (ident + '.jpg')}," + ";".join(c for c, v in zip(classes, row) if v >= 0.5))
    path.write_text("\n".join(lines) + "\n")


def run_fold(fold):
    fold_dir = OUT / f"fold{fold}"
    done = fold_dir / "results.json"
    if done.is_file():
        return json.loads(done.read_text())
    if fold_dir.exists():
        shutil.rmtree(fold_dir)
    fold_dir.mkdir(parents=True)
    full = prepare(fold)
    m = json.loads((full / "manifest.json").read_text())
    classes = m["classes"]
    ids = m["splits"]["train"]["ids"]
    y = np.load(full / "y_train.npy")
    rng = random.Random(1000 + fold)
    pool = sorted(rng.sample(range(len(ids)), POOL))
    keep = [i for i in range(len(ids)) if i not in set(pool)]
    base = subset(full, fold_dir / "base", keep)
    print(f"make loop: fold {fold}: parent on {len(keep)} photos, pool {POOL}, unseen {m['splits']['test']['count']}", file=sys.stderr)
    parent, parent_seconds = train(base, fold_dir / "parent")
    res = {"fold": fold, "train_images": len(keep), "pool": POOL, "unseen": m["splits"]["test"]["count"],
           "parent": evaluate(base, parent), "parent_seconds": parent_seconds, "k": {}}
    order = worst_first(parent, [ids[i] for i in pool], y[pool], classes, fold_dir)
    for k in KS:
        picked = [pool[i] for i in order[:k]]
        kd = fold_dir / f"k{k}"
        kd.mkdir()
        csv = kd / "corrections.csv"
        write_csv(csv, [ids[i] for i in picked], y[picked], classes)
        shuffled = kd / "shuffled.csv"
        perm = list(range(k))
        random.Random(k).shuffle(perm)
        write_csv(shuffled, [ids[i] for i in picked], y[picked][perm], classes)
        row = {}
        for way, flags, source in (("old", [], csv), ("new", NEW_FLAGS, csv), ("shuffled", NEW_FLAGS, shuffled)):
            run, seconds, outcome = retrain(parent, source, base, kd / way, flags)
            row[way] = {**evaluate(base, run), "seconds": seconds, "promoted": outcome["promoted"], "reason": outcome["reason"],
                        "val_macro_f1": [outcome["parent_val_macro_f1"], outcome["new_val_macro_f1"]],
                        "gate": outcome["gate"]}
        data = subset(full, kd / "data-full", keep, picked)
        run, seconds = train(data, kd / "full" / "runs")
        row["full"] = {**evaluate(base, run), "seconds": seconds}
        res["k"][str(k)] = row
        print(f"make loop: fold {fold} K={k}: " + ", ".join(f"{w} {row[w]['mAP']:.4f}" for w in WAYS) +
              f" (parent {res['parent']['mAP']:.4f})", file=sys.stderr)
    if os.environ.get("TIME_5X", "1") == "1" and fold == FOLDS[0] and 50 in KS:
        picked = [pool[i] for i in order[:50]]
        big = subset(full, fold_dir / "base-5x", keep, repeat=5)
        big_parent, _ = train(big, fold_dir / "parent-5x")
        _, new_s, _ = retrain(big_parent, fold_dir / "k50" / "corrections.csv", big, fold_dir / "k50-5x-new", NEW_FLAGS)
        _, old_s, _ = retrain(big_parent, fold_dir / "k50" / "corrections.csv", big, fold_dir / "k50-5x-old", [])
        data = subset(full, fold_dir / "data-full-5x", keep, picked, repeat=5)
        _, full_s = train(data, fold_dir / "full-5x")
        res["time_5x"] = {"train_images": 5 * len(keep), "old": old_s, "new": new_s, "full": full_s}
    done.write_text(json.dumps(res, indent=2))
    return res


def interval(d):
    m = statistics.fmean(d)
    if len(d) < 2:
        return m, None
    h = T975[len(d) - 1] * statistics.stdev(d) / len(d) ** 0.5
    return m, (m - h, m + h)


def fmt(mi):
    m, iv = mi
    return f"{m:+.4f}" + (f" [{iv[0]:+.4f}, {iv[1]:+.4f}]" if iv else "")


def report(results):
    n = len(results)
    lines = [f"{n} fold(s) of {OF} (each: parent trained on ~{results[0]['train_images']} photos, a pool of {POOL}, "
             f"~{results[0]['unseen']} unseen test photos); recipe {RECIPE}; new = retrain {' '.join(NEW_FLAGS)}; mean over folds, "
             "gains paired by fold with 95% t-intervals.\n",
             "| K | parent mAP | old: mAP gain | new: mAP gain | shuffled: mAP gain | full retrain: mAP gain | new / full | "
             "macro-F1: parent, old, new, full | median seconds: old, new, full |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in KS:
        rows = [r["k"][str(k)] for r in results]
        base = [r["parent"]["mAP"] for r in results]
        gains = {w: [row[w]["mAP"] - b for row, b in zip(rows, base)] for w in WAYS}
        ratio = statistics.fmean(gains["new"]) / statistics.fmean(gains["full"]) if statistics.fmean(gains["full"]) > 0 else float("nan")
        f1 = lambda w: statistics.fmean(row[w]["macro_f1"] for row in rows)
        secs = lambda w: statistics.median(row[w]["seconds"] for row in rows)
        lines.append(f"| {k} | {statistics.fmean(base):.4f} | " + " | ".join(fmt(interval(gains[w])) for w in WAYS) +
                     f" | {ratio:.0%} | {statistics.fmean(r['parent']['macro_f1'] for r in results):.3f}, {f1('old'):.3f}, "
                     f"{f1('new'):.3f}, {f1('full'):.3f} | {secs('old'):.0f}, {secs('new'):.0f}, {secs('full'):.0f} |")
    # Gate rules against the unseen verdict: the shipped one (the bootstrap interval's lower
    # end above -tolerance), the old one (val macro-F1 within the tolerance), the point mAP
    # change within the tolerance, and "not clearly worse" (the interval reaches 0).
    rules = {
        "bootstrap: interval above -0.01 (shipped)": lambda o, g: g["low"] >= -TOLERANCE,
        "old: val macro-F1 within 0.01": lambda o, g: o["val_macro_f1"][1] + TOLERANCE >= o["val_macro_f1"][0],
        "val mAP change within 0.01": lambda o, g: g["after"] - g["before"] >= -TOLERANCE,
        "not clearly worse: interval reaches 0": lambda o, g: g["high"] >= 0,
    }
    agree = {name: [0, 0, 0, 0] for name in rules}  # agree, total, promoted-but-worse, refused-but-not-worse
    decisions = []
    for r in results:
        for k in KS:
            row = r["k"][str(k)]
            for w in ("old", "new", "shuffled"):
                unseen_ok = row[w]["mAP"] - r["parent"]["mAP"] >= -TOLERANCE
                for name, rule in rules.items():
                    promote = rule(row[w], row[w]["gate"])
                    a = agree[name]
                    a[0] += promote == unseen_ok
                    a[1] += 1
                    a[2] += promote and not unseen_ok
                    a[3] += (not promote) and unseen_ok
                decisions.append((r["fold"], k, w, row[w]["promoted"], unseen_ok, row[w]["mAP"] - r["parent"]["mAP"], row[w]["reason"]))
    lines.append("\nGate rules against the unseen photos' verdict (not worse: unseen mAP change >= -0.01), over every "
                 "candidate (old, new, shuffled; every fold and K):\n")
    lines.append("| rule | agrees | promoted a worse model | refused one not worse |")
    lines.append("|---|---|---|---|")
    for name, (a, t, bad, lost) in agree.items():
        lines.append(f"| {name} | {a}/{t} | {bad} | {lost} |")
    lines.append("\nThe shipped rule at wider tolerances (`retrain --tolerance D`), over every candidate and over the new way's:\n")
    lines.append("| tolerance | agrees (all) | promoted a worse model | refused one not worse | agrees (new) |")
    lines.append("|---|---|---|---|---|")
    for tol in (0.01, 0.02, 0.03, 0.05):
        tally = {"all": [0, 0, 0, 0], "new": [0, 0, 0, 0]}
        for r in results:
            for k in KS:
                for w in ("old", "new", "shuffled"):
                    row = r["k"][str(k)][w]
                    unseen_ok = row["mAP"] - r["parent"]["mAP"] >= -TOLERANCE
                    promote = row["gate"]["low"] >= -tol
                    for name in ("all", "new") if w == "new" else ("all",):
                        t = tally[name]
                        t[0] += promote == unseen_ok
                        t[1] += 1
                        t[2] += promote and not unseen_ok
                        t[3] += (not promote) and unseen_ok
        a, n = tally["all"], tally["new"]
        lines.append(f"| {tol} | {a[0]}/{a[1]} | {a[2]} | {a[3]} | {n[0]}/{n[1]} |")
    lines.append("\n| fold | K | way | promoted | unseen not worse | unseen mAP change | gate |")
    lines.append("|---|---|---|---|---|---|---|")
    for d in decisions:
        lines.append(f"| {d[0]} | {d[1]} | {d[2]} | {d[3]} | {d[4]} | {d[5]:+.4f} | {d[6]} |")
    t5 = [r["time_5x"] for r in results if "time_5x" in r]
    if t5:
        t = t5[0]
        lines.append(f"\nTime at 5x the training split ({t['train_images']} rows, K=50, fold {results[0]['fold']}): "
                     f"old {t['old']:.0f} s, new {t['new']:.0f} s, full retrain {t['full']:.0f} s.")
    return "\n".join(lines) + "\n"


def main():
    if not (VOC_ROOT / "JPEGImages").is_dir():
        sys.exit(f"make loop: no VOC photos in {VOC_ROOT}; set VOC_ROOT=/path/to/VOCdevkit/VOC2007")
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = [run_fold(f) for f in FOLDS]
    table = report(results)
    (OUT / "loop.md").write_text(table)
    print(table)
    print(f"(table in {OUT}/loop.md; {time.time() - t0:.0f} s; machine: {os.cpu_count()} cores)", file=sys.stderr)


if __name__ == "__main__":
    main()
