"""Active-learning experiment: does choosing what to label by `predict --rank` beat random
choice at equal label count?

From a voc-prep output DATA (train/val/test), each seed labels a random START images of the
train split and trains the default recipe on them; the rest of the train split is the pool.
Each strategy (uncertainty, entropy, margin: `predict --rank ... --select`; NAME+diverse adds
`--diverse`) and random choice
then adds K pool images (K in KS), the model is retrained from scratch on the START + K
images, and every model is scored on the same held-out test split (`evaluate --split test`).
Training uses the recommended recipe (configs/voc4-best.toml) at the data's image size, one
augmented view; --train-args replaces it. The binaries come from $VOCML_BIN (default
target/release), so a build during the experiment does not change them under it.

Usage: active_learning.py DATA OUT_DIR [--seeds 5] [--start 100] [--ks 50,100,200]
       [--strategies uncertainty,entropy,margin,random,entropy+diverse,margin+diverse]
       [--train-args "..."]
       active_learning.py report OUT_DIR RESULTS.json... [--start 100]   (runs on the same seeds)
Writes OUT_DIR/results.json, prints a markdown table, and plots OUT_DIR/active_learning.png.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.environ.get("VOCML_BIN", os.path.join(REPO, "target", "release"))
RECIPE = os.path.join(REPO, "configs", "voc4-best.toml")


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


def train_and_test(data, runs, seed, train_args):
    tool("train", "--data", data, "--runs-dir", runs, "-q", "--seed", seed, *train_args)
    run = sorted(os.path.join(runs, d) for d in os.listdir(runs) if not d.startswith(".") and d != "best")[-1]
    tool("evaluate", "--data", data, "--run", run, "--split", "test", "-q", "--no-select")
    e = json.load(open(os.path.join(run, "evaluation.json")))
    return run, {"mAP": e["mAP"], "macro_f1": e["macro_f1"]}


def pick(run, flags, pool_files, by_path):
    """Pool indices in the order `predict --run RUN FLAGS` lists them."""
    rows = tool("predict", "-q", "--run", run, *flags, *pool_files)
    return [by_path[line.split(",")[0]] for line in rows.splitlines()[1:]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--ks", default="50,100,200")
    ap.add_argument("--strategies", default="uncertainty,entropy,margin,random,entropy+diverse,margin+diverse")
    ap.add_argument("--train-args", help="train flags (default: the recommended recipe at the data's size)")
    a = ap.parse_args()
    ks = [int(k) for k in a.ks.split(",")]
    strategies = a.strategies.split(",")
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    m = json.load(open(os.path.join(a.data, "manifest.json")))
    train_args = a.train_args.split() if a.train_args else [
        "--config", RECIPE, "--image-size", m["image"]["size"], "--aug-views", "1"]
    root = m["source"]["root"]
    ids = m["splits"]["train"]["ids"]
    results = []
    for seed in range(1, a.seeds + 1):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(ids))
        start, pool = sorted(order[: a.start].tolist()), order[a.start:].tolist()
        work = os.path.join(a.out, f"seed{seed}")
        base_run, base = train_and_test(subset(a.data, start, os.path.join(work, "start")), os.path.join(work, "runs"), seed, train_args)
        results.append({"seed": seed, "strategy": "start", "k": 0, **base})
        print(f"seed {seed}: start {a.start} images: {base}", file=sys.stderr)
        pool_files = [os.path.join(root, "JPEGImages", ids[i] + ".jpg") for i in pool]
        by_path = {p: i for p, i in zip(pool_files, pool)}
        for strategy in strategies:
            if strategy == "random":
                picked = rng.permutation(pool)[: max(ks)].tolist()
            elif not strategy.endswith("+diverse"):
                picked = pick(base_run, ["--rank", strategy, "--select", max(ks)], pool_files, by_path)
            for k in ks:
                if strategy.endswith("+diverse"):
                    # A diverse selection of K is not the start of a larger one: picked per K.
                    picked = pick(base_run, ["--rank", strategy.split("+")[0], "--select", k, "--diverse"], pool_files, by_path)
                d = subset(a.data, sorted(start + picked[:k]), os.path.join(work, f"{strategy}{k}"))
                _, score = train_and_test(d, os.path.join(work, "runs"), seed, train_args)
                results.append({"seed": seed, "strategy": strategy, "k": k, **score})
                print(f"seed {seed}: {strategy} +{k}: {score}", file=sys.stderr)
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    report(results, ks, a.start, strategies, a.out)


def report(results, ks, start, strategies, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def stat(strategy, k, key):
        v = [r[key] for r in results if r["strategy"] == strategy and r["k"] == k]
        return np.mean(v), np.std(v)

    def versus_random(strategy, k, key):
        """Mean difference to random choice with the same seed, and the seeds it wins."""
        rand = {r["seed"]: r[key] for r in results if r["strategy"] == "random" and r["k"] == k}
        d = [r[key] - rand[r["seed"]] for r in results if r["strategy"] == strategy and r["k"] == k and r["seed"] in rand]
        return f"{np.mean(d):+.4f} ({sum(x > 0 for x in d)}/{len(d)})" if d and strategy != "random" else ""

    base = {key: stat("start", 0, key) for key in ["mAP", "macro_f1"]}
    print("| strategy | labelled | test mAP (mean ± sd) | test macro-F1 (mean ± sd) | mAP gain per 100 labels "
          "| mAP vs random, same seed (seeds won) | macro-F1 vs random (seeds won) |")
    print("|---|---|---|---|---|---|---|")
    print(f"| start (random) | {start} | {base['mAP'][0]:.4f} ± {base['mAP'][1]:.4f} | {base['macro_f1'][0]:.4f} ± {base['macro_f1'][1]:.4f} | | | |")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for strategy in strategies:
        for i, key in enumerate(["mAP", "macro_f1"]):
            means = [base[key][0]] + [stat(strategy, k, key)[0] for k in ks]
            sds = [base[key][1]] + [stat(strategy, k, key)[1] for k in ks]
            axes[i].errorbar([start] + [start + k for k in ks], means, yerr=sds, label=strategy, capsize=3, marker="o")
        for k in ks:
            (mm, ms), (fm, fs) = stat(strategy, k, "mAP"), stat(strategy, k, "macro_f1")
            print(f"| {strategy} | {start}+{k} | {mm:.4f} ± {ms:.4f} | {fm:.4f} ± {fs:.4f} | {100 * (mm - base['mAP'][0]) / k:+.4f} "
                  f"| {versus_random(strategy, k, 'mAP')} | {versus_random(strategy, k, 'macro_f1')} |")
    for ax, key in zip(axes, ["test mAP", "test macro-F1"]):
        ax.set_xlabel("labelled training images")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "active_learning.png"), dpi=110)


def report_files(argv):
    """`report OUT_DIR RESULTS.json... [--start N]`: one table and plot of several runs on the
    same seeds (each file's own strategies; the start models of the first)."""
    ap = argparse.ArgumentParser(prog="active_learning.py report")
    ap.add_argument("out")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--start", type=int, default=100)
    a = ap.parse_args(argv)
    out, files = a.out, a.files
    results, strategies, ks = [], [], set()
    for i, f in enumerate(files):
        for r in json.load(open(f)):
            if r["strategy"] == "start" and i > 0:
                continue
            results.append(r)
            if r["strategy"] != "start" and r["strategy"] not in strategies:
                strategies.append(r["strategy"])
            ks.add(r["k"])
    report(results, sorted(ks - {0}), a.start, strategies, out)


if __name__ == "__main__":
    if sys.argv[1:2] == ["report"]:
        report_files(sys.argv[2:])
    else:
        main()
