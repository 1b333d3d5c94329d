"""make loop: do corrections improve the model on photos nobody corrected, and can the
promotion gate tell? Measured the way a user meets it, on real VOC photos.

Per fold f (voc-prep --fold f/FOLDS: fold f is the untouched split, "unseen"), POOL images
of the training split are held out as a correction pool and GATE others as the data's own test
split (what a user's voc-prep keeps back, and what retrain's gate judges on); the recipe
(RECIPE, default configs/voc4-best.toml) trains on the rest (the parent). The parent scores
the pool and the K photos it gets most wrong (largest binary cross-entropy against the true
labels) are corrected with their true labels, for each K in KS. Each K is learnt four ways:
  old       retrain's reference recipe (corrections x10, replay 3 per correction, 30 epochs)
  new       retrain NEW_FLAGS (default --config configs/retrain-gentle.toml: the head
            fine-tuned on the whole training split with each correction once, 8 epochs at 1e-4;
            the 2026-12-02 table used --replay-all --replicate 1, 30 epochs at 3e-4)
  shuffled  as new, with the K label sets shuffled among the K photos (a no-op baseline)
  full      the recipe trained from scratch with the K photos added to its training split
and each result is scored on the unseen split (mAP, macro-F1 at 0.5). Every candidate's gate
measurements (retrain.json: `gate` on the test split with the run's TTA, the shipped gate;
`validation` on the validation split, the gate before 2026-12-06) are set against the unseen
verdict. The gate's tolerance is chosen on the folds CHOOSE (default the first two) and its
decisions are reported on the others.
Seconds are wall time of the process. Unless TIME_5X=0, the first fold also times `old`, `new`
and `full` at K=50 with the training split repeated 5 times (the same photos: time only).

Raw results: OUT/fold<f>/results.json; the table: OUT/loop.md.
Usage: loop.py (environment: VOC_ROOT FOLDS KS POOL GATE CHOOSE RECIPE NEW_FLAGS OUT B TIME_5X)
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
POOL = int(os.environ.get("POOL", "300"))
GATE = int(os.environ.get("GATE", "160"))
CHOOSE = [int(f) for f in os.environ.get("CHOOSE", "1 2").split()]
RECIPE = os.environ.get("RECIPE", "configs/voc4-best.toml")
SIZE = int(os.environ.get("SIZE", "320"))
OUT = Path(os.environ.get("OUT", "target/loop"))
NEW_FLAGS = os.environ.get("NEW_FLAGS", "--config configs/retrain-gentle.toml").split()
VERDICT = 0.01
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


def subset(full, out, keep, gate=None, extra_rows=(), repeat=1):
    """A prepared-data directory like `full` whose training split is the rows `keep` (then
    `extra_rows` of the same split), all `repeat` times, and whose test split is the training
    rows `gate` (full's own test split when None); val is full's."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    m = json.loads((full / "manifest.json").read_text())
    x = np.load(full / "X_train.npy", mmap_mode="r")
    y = np.load(full / "y_train.npy")
    ids = m["splits"]["train"]["ids"]
    splits = [("train", (list(keep) + list(extra_rows)) * repeat)] + ([("test", list(gate))] if gate is not None else [])
    for split, rows in splits:
        np.save(out / f"X_{split}.npy", np.ascontiguousarray(x[rows]))
        np.save(out / f"y_{split}.npy", y[rows])
        m["splits"][split] = {"count": len(rows), "per_class": {c: int(y[rows, k].sum()) for k, c in enumerate(m["classes"])},
                              "ids": [ids[i] for i in rows]}
    for name in ("X_val.npy", "y_val.npy") + (("X_test.npy", "y_test.npy") if gate is None else ()):
        os.link(full / name, out / name)
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
    drawn = rng.sample(range(len(ids)), POOL + GATE)
    pool, gate = sorted(drawn[:POOL]), sorted(drawn[POOL:])
    keep = [i for i in range(len(ids)) if i not in set(drawn)]
    base = subset(full, fold_dir / "base", keep, gate)
    print(f"make loop: fold {fold}: parent on {len(keep)} photos, pool {POOL}, gate {GATE}, unseen {m['splits']['test']['count']}",
          file=sys.stderr)
    parent, parent_seconds = train(base, fold_dir / "parent")
    res = {"fold": fold, "train_images": len(keep), "pool": POOL, "gate": GATE, "unseen": m["splits"]["test"]["count"],
           "parent": evaluate(full, parent), "parent_seconds": parent_seconds, "k": {}}
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
            row[way] = {**evaluate(full, run), "seconds": seconds, "promoted": outcome["promoted"], "reason": outcome["reason"],
                        "val_macro_f1": [outcome["parent_val_macro_f1"], outcome["new_val_macro_f1"]],
                        "gate": outcome["gate"], "validation": outcome["validation"]}
        data = subset(full, kd / "data-full", keep, gate, picked)
        run, seconds = train(data, kd / "full" / "runs")
        row["full"] = {**evaluate(full, run), "seconds": seconds}
        res["k"][str(k)] = row
        print(f"make loop: fold {fold} K={k}: " + ", ".join(f"{w} {row[w]['mAP']:.4f}" for w in WAYS) +
              f" (parent {res['parent']['mAP']:.4f})", file=sys.stderr)
    if os.environ.get("TIME_5X", "1") == "1" and fold == FOLDS[0] and 50 in KS:
        picked = [pool[i] for i in order[:50]]
        big = subset(full, fold_dir / "base-5x", keep, gate, repeat=5)
        big_parent, _ = train(big, fold_dir / "parent-5x")
        _, new_s, _ = retrain(big_parent, fold_dir / "k50" / "corrections.csv", big, fold_dir / "k50-5x-new", NEW_FLAGS)
        _, old_s, _ = retrain(big_parent, fold_dir / "k50" / "corrections.csv", big, fold_dir / "k50-5x-old", [])
        data = subset(full, fold_dir / "data-full-5x", keep, gate, picked, repeat=5)
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


TOLERANCES = (0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.07, 0.1)
RULES = {
    "change": "the change itself >= -tolerance (shipped since 2026-12-06)",
    "interval": "the 95% interval's lower end >= -tolerance (shipped before)",
}


def candidates(results):
    """Every gated candidate: (fold, K, way, unseen mAP change, its retrain.json gates, reason)."""
    out = []
    for r in results:
        for k in KS:
            for w in ("old", "new", "shuffled"):
                row = r["k"][str(k)][w]
                out.append((r["fold"], k, w, row["mAP"] - r["parent"]["mAP"], row["gate"], row["validation"], row["reason"]))
    return out


def promotes(g, rule, tol):
    return (g["after"] - g["before"] if rule == "change" else g["low"]) >= -tol


def tally(cands, which, rule, tol):
    """How a gate (`gate`: the test split, shipped; `validation`: the split the gate used
    before) decides `cands` under `rule` at `tol`, against the unseen verdict: (candidates,
    not worse (unseen change >= -VERDICT), of those promoted, worse by more than tol, of those
    promoted, agreement)."""
    n = ok = ok_promoted = bad = bad_promoted = agree = 0
    for c in cands:
        promote, delta = promotes(c[4] if which == "gate" else c[5], rule, tol), c[3]
        n += 1
        ok += delta >= -VERDICT
        ok_promoted += promote and delta >= -VERDICT
        bad += delta < -tol
        bad_promoted += promote and delta < -tol
        agree += promote == (delta >= -VERDICT)
    return n, ok, ok_promoted, bad, bad_promoted, agree


def meets(t):
    n, ok, ok_p, bad, bad_p, _ = t
    return ok_p >= 0.9 * ok and bad_p == 0


def choose(cands):
    """The rule and the smallest tolerance at which the test-split gate, on `cands`, promotes
    at least 90% of the candidates not worse on unseen photos and none worse by more than the
    tolerance (the interval rule first on a tie); else the pair that agrees most."""
    for tol in TOLERANCES:
        for rule in ("interval", "change"):
            if meets(tally(cands, "gate", rule, tol)):
                return rule, tol, True
    best = max(((r, t) for t in TOLERANCES for r in RULES), key=lambda rt: tally(cands, "gate", *rt)[5])
    return best[0], best[1], False


def gate_report(results):
    cands = candidates(results)
    chosen_on = [c for c in cands if c[0] in CHOOSE]
    judged = [c for c in cands if c[0] not in CHOOSE] or cands
    rule, tol, met = choose(chosen_on)
    lines = [f"\nThe gate against the unseen photos' verdict (not worse: unseen mAP change >= -{VERDICT}). Chosen on "
             f"fold(s) {', '.join(map(str, CHOOSE))} ({len(chosen_on)} candidates): **{RULES[rule]}, tolerance {tol}** "
             f"({'meets' if met else 'does not meet'} >= 90% of not-worse promoted and none worse by more than the tolerance "
             f"there). Decisions on the other folds ({len(judged)} candidates):\n",
             "| gate | rule | tolerance | not worse: promoted | worse by more than the tolerance: promoted | agrees |",
             "|---|---|---|---|---|---|"]
    rows = [("gate", rule, tol), ("validation", "interval", 0.01), ("validation", "interval", 0.03), ("validation", rule, tol)]
    for which, r, t in rows:
        n, ok, ok_p, bad, bad_p, agree = tally(judged, which, r, t)
        name = "test split, flip TTA (shipped)" if which == "gate" else "validation split (before)"
        lines.append(f"| {name} | {r} | {t} | {ok_p}/{ok} ({ok_p / max(ok, 1):.0%}) | {bad_p}/{bad} | {agree}/{n} |")
    lines.append("\nEvery rule and tolerance on the choosing folds (test-split gate):\n")
    lines.append("| rule | tolerance | not worse: promoted | worse by more than it: promoted | agrees |")
    lines.append("|---|---|---|---|---|")
    for r in RULES:
        for t in TOLERANCES:
            n, ok, ok_p, bad, bad_p, agree = tally(chosen_on, "gate", r, t)
            lines.append(f"| {r} | {t} | {ok_p}/{ok} | {bad_p}/{bad} | {agree}/{n} |")
    lines.append("\n| fold | K | way | unseen mAP change | test-split change [95% interval] | validation change [95% interval] | "
                 "promoted by the chosen gate |")
    lines.append("|---|---|---|---|---|---|---|")
    for f, k, w, d, g, v, _ in cands:
        lines.append(f"| {f} | {k} | {w} | {d:+.4f} | {g['after'] - g['before']:+.3f} [{g['low']:+.3f}, {g['high']:+.3f}] | "
                     f"{v['after'] - v['before']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] | {promotes(g, rule, tol)} |")
    return lines


def report(results):
    n = len(results)
    lines = [f"{n} fold(s) of {OF} (each: parent trained on ~{results[0]['train_images']} photos, a pool of {POOL}, a test split of {GATE}, "
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
    lines += gate_report(results)
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
