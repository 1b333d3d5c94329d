"""The table of `make quality-cv`: per case, mean ± sd over the folds of macro-F1 at 0.5, at the
thresholds tuned on each fold's val split, and mAP; the paired per-fold difference of each case
against the first (same folds, same test images) with its 95% interval (Student's t over the
folds); a case is "better" or "worse" only when that interval excludes 0. Train seconds and
peak RSS of the train process; macro-F1 at the stored rule (shrunk thresholds) paired the same way.

Usage: report_cv.py OUT_DIR CASE... (OUT_DIR/<case>/fold<i>/{runs/, seconds})
"""
import json
import statistics
import sys
from pathlib import Path

# Two-sided 95% quantiles of Student's t by degrees of freedom (1..30).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def metrics(ev):
    shrunk = (ev.get("shrunk") or {}).get("macro_f1")
    return {"f1": ev["macro_f1"], "tuned": ev["tuned"]["macro_f1"], "shrunk": shrunk, "map": ev["mAP"]}


def load(out, case):
    folds = {}
    for d in sorted((out / case).glob("fold*")):
        if not (d / "seconds").is_file():
            continue
        runs = [p for p in (d / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
        ev = json.loads((runs[0] / "evaluation.json").read_text())
        seconds, peak = (float(x) for x in (d / "seconds").read_text().split()[:2])
        folds[d.name] = (metrics(ev), ev["images"], seconds, peak)
    if not folds:
        sys.exit(f"report_cv: no finished folds for {case} in {out}")
    return folds


def mean_sd(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def interval(diffs):
    """Mean of the paired differences and its 95% interval (None with one fold)."""
    m, sd = mean_sd(diffs)
    if len(diffs) < 2:
        return m, None
    half = T975[min(len(diffs) - 2, len(T975) - 1)] * sd / len(diffs) ** 0.5
    return m, (m - half, m + half)


def verdict(iv):
    if iv is None:
        return "one fold"
    lo, hi = iv
    return "better" if lo > 0 else "worse" if hi < 0 else "not resolved"


def main():
    out = Path(sys.argv[1])
    cases = sys.argv[2:]
    data = {c: load(out, c) for c in cases}
    ref = cases[0]
    images = sum(n for _, n, _, _ in data[ref].values())
    print(f"{len(data[ref])} folds, {images} test images in all (each image scored once, by models that did not see it); "
          "mean ± sd over folds; differences paired by fold against the first case, with 95% intervals.\n")
    print("| case | folds | macro-F1 @0.5 | macro-F1 tuned | mAP | Δ mAP vs " + ref + " [95% CI] | Δ tuned F1 [95% CI] | verdict (mAP) | train s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c, folds in data.items():
        ms = [m for m, *_ in folds.values()]
        cell = lambda k: "{:.3f} ± {:.3f}".format(*mean_sd([m[k] for m in ms]))
        common = [f for f in folds if f in data[ref]]
        deltas = []
        for k in ("map", "tuned"):
            d = [folds[f][0][k] - data[ref][f][0][k] for f in common]
            deltas.append(interval(d) if d else (0.0, None))
        fmt = lambda mi: f"{mi[0]:+.3f}" + (f" [{mi[1][0]:+.3f}, {mi[1][1]:+.3f}]" if mi[1] else "")
        d_map, d_tuned = ("-", "-") if c == ref else (fmt(deltas[0]), fmt(deltas[1]))
        v = "reference" if c == ref else verdict(deltas[0][1])
        secs = mean_sd([s for *_, s, _ in folds.values()])[0]
        peak = max(p for *_, p in folds.values())
        print(f"| {c} | {len(folds)} | {cell('f1')} | {cell('tuned')} | {cell('map')} | {d_map} | {d_tuned} | {v} | {secs:.0f} | {peak:.0f} |")
    # The stored rule (shrunk thresholds, what predict and serve decide with) against the first case.
    if all(m["shrunk"] is not None for folds in data.values() for m, *_ in folds.values()):
        print(f"\nAt the stored rule (shrunk thresholds), paired by fold against {ref}:\n")
        print("| case | macro-F1 (stored rule) | Δ vs " + ref + " [95% CI] | verdict |")
        print("|---|---|---|---|")
        for c, folds in data.items():
            ms = [m["shrunk"] for m, *_ in folds.values()]
            d = [folds[f][0]["shrunk"] - data[ref][f][0]["shrunk"] for f in folds if f in data[ref]]
            m, iv = interval(d)
            delta = "-" if c == ref else f"{m:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "")
            print(f"| {c} | {'{:.3f} ± {:.3f}'.format(*mean_sd(ms))} | {delta} | {'reference' if c == ref else verdict(iv)} |")
    # Threshold rules (evaluate --thresholds): tuned and shrunk against 0.5, and shrunk against
    # tuned, paired over the folds of each case; pooled over every case at the end.
    print("\nThreshold rules (macro-F1 on each fold's test split, paired by fold):\n")
    print("| case | shrunk macro-F1 | tuned - 0.5 [95% CI] | shrunk - 0.5 [95% CI] | shrunk - tuned [95% CI] |")
    print("|---|---|---|---|---|")
    pooled = {"tuned - 0.5": [], "shrunk - 0.5": [], "shrunk - tuned": []}
    pairs = {"tuned - 0.5": ("tuned", "f1"), "shrunk - 0.5": ("shrunk", "f1"), "shrunk - tuned": ("shrunk", "tuned")}
    for c, folds in data.items():
        ms = [m for m, *_ in folds.values()]
        has_shrunk = all(m["shrunk"] is not None for m in ms)
        cells = ["{:.3f} ± {:.3f}".format(*mean_sd([m["shrunk"] for m in ms])) if has_shrunk else "-"]
        for name, (a, b) in pairs.items():
            if None in (ms[0][a], ms[0][b]) or not has_shrunk and "shrunk" in name:
                cells.append("-")
                continue
            d = [m[a] - m[b] for m in ms]
            pooled[name] += d
            m, iv = interval(d)
            cells.append(f"{m:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "") + f" {verdict(iv)}")
        print(f"| {c} | " + " | ".join(cells) + " |")
    cells = []
    for d in pooled.values():
        m, iv = interval(d) if d else (0.0, None)
        cells.append(f"{m:+.3f}" + (f" [{iv[0]:+.3f}, {iv[1]:+.3f}]" if iv else "") + f" {verdict(iv)}" if d else "-")
    print("| all cases' folds pooled (they share test images: indicative) | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
