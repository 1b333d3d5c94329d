"""Joins the runs of `make quality` into Markdown tables: per recipe, the mean and standard
deviation over seeds of macro/micro F1 (at 0.5 and at the thresholds tuned on val), mAP (and
the validation split's mAP, what recipes are chosen on),
per-class F1 and AP, and the training time; then the recommended recipe's gain over the
reference.

Usage: report_quality.py OUT_DIR CASE... (OUT_DIR/<case>/seed<k>/{runs/, seconds}, and
OUT_DIR/<last case>/ensemble/ when the seeds were also evaluated as one ensemble)
"""
import json
import statistics
import sys
from pathlib import Path


def mean_sd(values):
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, sd


def fmt(values, digits=3):
    m, sd = mean_sd(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def load(out, recipe):
    seeds = []
    for d in sorted((out / recipe).glob("seed*")):
        runs = [p for p in (d / "runs").iterdir() if p.is_dir() and not p.name.startswith(".")]
        ev = json.loads((runs[0] / "evaluation.json").read_text())
        seconds, peak_mib = (float(x) for x in (d / "seconds").read_text().split()[:2])
        val = d / "val_evaluation.json"
        ev["val"] = json.loads(val.read_text()) if val.is_file() else None
        seeds.append((ev, seconds, peak_mib))
    if not seeds:
        sys.exit(f"report_quality: no finished seeds for {recipe} in {out}")
    return seeds


def main():
    out = Path(sys.argv[1])
    recipes = sys.argv[2:]
    data = {r: load(out, r) for r in recipes}
    classes = [c["class"] for c in data[recipes[0]][0][0]["per_class"]]
    first = data[recipes[0]][0][0]
    print(
        f"Test split: the same {first['images']} images for every case (prepared at the case's input size); "
        "mean ± standard deviation over seeds; train s: wall seconds of `train` (feature extraction included), peak RSS: of the train process.\n"
    )
    print("| recipe | seeds | macro-F1 @0.5 | macro-F1 tuned | micro-F1 @0.5 | mAP | val mAP | train s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r, seeds in data.items():
        evs = [e for e, *_ in seeds]
        val = fmt([e["val"]["mAP"] for e in evs]) if all(e["val"] for e in evs) else "-"
        print(
            f"| {r} | {len(seeds)} | {fmt([e['macro_f1'] for e in evs])} | {fmt([e['tuned']['macro_f1'] for e in evs])} "
            f"| {fmt([e['micro_f1'] for e in evs])} | {fmt([e['mAP'] for e in evs])} | {val} | {fmt([s for _, s, _ in seeds], 0)} | {max(p for *_, p in seeds):.0f} |"
        )
    print("\nPer class (F1 at 0.5 / F1 at tuned thresholds / AP):\n")
    print("| recipe | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    for r, seeds in data.items():
        evs = [e for e, *_ in seeds]
        cells = []
        for k in range(len(classes)):
            f1 = statistics.fmean(e["per_class"][k]["f1"] for e in evs)
            tf1 = statistics.fmean(e["tuned"]["per_class"][k]["f1"] for e in evs)
            ap = statistics.fmean(e["per_class"][k]["ap"] or 0.0 for e in evs)
            cells.append(f"{f1:.3f} / {tf1:.3f} / {ap:.3f}")
        print(f"| {r} | " + " | ".join(cells) + " |")
    ensembles = sorted((out / recipes[-1] / "ensemble").glob("*_ensemble/evaluation.json"))
    if ensembles:
        e = json.loads(ensembles[-1].read_text())
        print(
            f"\nEnsemble of the {len(data[recipes[-1]])} {recipes[-1]} runs (evaluate --ensemble): macro-F1 @0.5 "
            f"{e['macro_f1']:.3f}, tuned {e['tuned']['macro_f1']:.3f}, micro-F1 {e['micro_f1']:.3f}, mAP {e['mAP']:.3f}"
        )
    if len(recipes) > 1:
        base, best = data[recipes[0]], data[recipes[-1]]
        def d(pick):
            return statistics.fmean(pick(e) for e, *_ in best) - statistics.fmean(pick(e) for e, *_ in base)

        t = statistics.fmean(s for _, s, _ in best) / statistics.fmean(s for _, s, _ in base)
        print(
            f"\n{recipes[-1]} vs {recipes[0]}: macro-F1 @0.5 {d(lambda e: e['macro_f1']):+.3f}, "
            f"tuned {d(lambda e: e['tuned']['macro_f1']):+.3f}, mAP {d(lambda e: e['mAP']):+.3f}, "
            f"training time x{t:.1f}"
        )


if __name__ == "__main__":
    main()
