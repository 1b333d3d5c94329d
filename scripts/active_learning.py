"""Active-learning experiment: does choosing what to label by `predict --rank` beat random
choice at equal label count?

From a voc-prep output DATA (train/val/test), each seed labels a random START images of the
train split and trains the default recipe on them; the rest of the train split is the pool.
Each strategy (uncertainty, entropy, margin: `predict --rank ... --select`) and random choice
then adds K pool images (K in KS), the model is retrained from scratch on the START + K
images, and every model is scored on the same held-out test split (`evaluate --split test`).

Usage: active_learning.py DATA OUT_DIR [--seeds 3] [--start 100] [--ks 50,100,200]
Writes OUT_DIR/results.json, prints a markdown table, and plots OUT_DIR/active_learning.png.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release")
STRATEGIES = ["uncertainty", "entropy", "margin", "random"]


def tool(name, *args):
    out = subprocess.run([os.path.join(BIN, name), *map(str, args)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{name} failed: {out.stderr}")
    return out.stdout


def subset(data, rows, out):
    """A copy of DATA whose train split holds only `rows` (val and test linked unchanged)."""
    os.makedirs(out, exist_ok=True)
    m = json.load(open(os.path.join(data, "manifest.json")))
    x = np.load(os.path.join(data, "X_train.npy"), mmap_mode="r")
    y = np.load(os.path.join(data, "y_train.npy"))
    np.save(os.path.join(out, "X_train.npy"), np.ascontiguousarray(x[rows]))
    np.save(os.path.join(out, "y_train.npy"), np.ascontiguousarray(y[rows]))
    for f in ["X_val.npy", "y_val.npy", "X_test.npy", "y_test.npy"]:
        os.symlink(os.path.abspath(os.path.join(data, f)), os.path.join(out, f))
    ids = [m["splits"]["train"]["ids"][i] for i in rows]
    m["splits"]["train"].update({"count": len(rows), "ids": ids,
                                 "per_class": {c: int(y[rows][:, j].sum()) for j, c in enumerate(m["classes"])}})
    json.dump(m, open(os.path.join(out, "manifest.json"), "w"), indent=2)
    return out


def train_and_test(data, runs, seed):
    tool("train", "--data", data, "--runs-dir", runs, "-q", "--seed", seed, "--aug-views", "1")
    run = sorted(os.path.join(runs, d) for d in os.listdir(runs) if not d.startswith(".") and d != "best")[-1]
    tool("evaluate", "--data", data, "--run", run, "--split", "test", "-q", "--no-select")
    e = json.load(open(os.path.join(run, "evaluation.json")))
    return run, {"mAP": e["mAP"], "macro_f1": e["macro_f1"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--ks", default="50,100,200")
    a = ap.parse_args()
    ks = [int(k) for k in a.ks.split(",")]
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    m = json.load(open(os.path.join(a.data, "manifest.json")))
    root = m["source"]["root"]
    ids = m["splits"]["train"]["ids"]
    results = []
    for seed in range(1, a.seeds + 1):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(ids))
        start, pool = sorted(order[: a.start].tolist()), order[a.start:].tolist()
        work = os.path.join(a.out, f"seed{seed}")
        base_run, base = train_and_test(subset(a.data, start, os.path.join(work, "start")), os.path.join(work, "runs"), seed)
        results.append({"seed": seed, "strategy": "start", "k": 0, **base})
        print(f"seed {seed}: start {a.start} images: {base}", file=sys.stderr)
        pool_files = [os.path.join(root, "JPEGImages", ids[i] + ".jpg") for i in pool]
        by_path = {p: i for p, i in zip(pool_files, pool)}
        for strategy in STRATEGIES:
            if strategy == "random":
                picked = rng.permutation(pool)[: max(ks)].tolist()
            else:
                rows = tool("predict", "-q", "--run", base_run, "--rank", strategy, "--select", max(ks), *pool_files)
                picked = [by_path[line.split(",")[0]] for line in rows.splitlines()[1:]]
            for k in ks:
                d = subset(a.data, sorted(start + picked[:k]), os.path.join(work, f"{strategy}{k}"))
                _, score = train_and_test(d, os.path.join(work, "runs"), seed)
                results.append({"seed": seed, "strategy": strategy, "k": k, **score})
                print(f"seed {seed}: {strategy} +{k}: {score}", file=sys.stderr)
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    report(results, ks, a.start, a.out)


def report(results, ks, start, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stat(strategy, k, key):
        v = [r[key] for r in results if r["strategy"] == strategy and r["k"] == k]
        return np.mean(v), np.std(v)

    base = {key: stat("start", 0, key) for key in ["mAP", "macro_f1"]}
    print(f"| strategy | labelled | test mAP (mean ± sd) | test macro-F1 (mean ± sd) | mAP gain per 100 labels |")
    print("|---|---|---|---|---|")
    print(f"| start (random) | {start} | {base['mAP'][0]:.4f} ± {base['mAP'][1]:.4f} | {base['macro_f1'][0]:.4f} ± {base['macro_f1'][1]:.4f} | |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for strategy in STRATEGIES:
        for i, key in enumerate(["mAP", "macro_f1"]):
            means = [base[key][0]] + [stat(strategy, k, key)[0] for k in ks]
            sds = [base[key][1]] + [stat(strategy, k, key)[1] for k in ks]
            axes[i].errorbar([start] + [start + k for k in ks], means, yerr=sds, label=strategy, capsize=3, marker="o")
        for k in ks:
            (mm, ms), (fm, fs) = stat(strategy, k, "mAP"), stat(strategy, k, "macro_f1")
            print(f"| {strategy} | {start}+{k} | {mm:.4f} ± {ms:.4f} | {fm:.4f} ± {fs:.4f} | {100 * (mm - base['mAP'][0]) / k:+.4f} |")
    for ax, key in zip(axes, ["test mAP", "test macro-F1"]):
        ax.set_xlabel("labelled training images")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "active_learning.png"), dpi=110)


if __name__ == "__main__":
    main()
