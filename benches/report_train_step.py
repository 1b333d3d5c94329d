"""Joins the JSON lines of `vocml-bench` and `benches/peer/train_step_torch.py` into one
Markdown table: images/s of both tools per case and the ratio (vocml / PyTorch).

Usage: report_train_step.py FILE.jsonl...   (lines of both tools, any order)
"""
import json
import sys


def key(r):
    c = r["case"]
    s = c["speed"]
    variant = "bf16+cl" if s["bf16"] else ("channels-last" if s["channels_last"] else "fp32")
    return (c["model"], "fine-tune" if c["fine_tune"] else "frozen", c["batch_size"], variant)


def main():
    rows = {}
    for path in sys.argv[1:]:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                rows.setdefault(key(r), {})[r["tool"]] = r["timing"]["images_per_s"]
    print("| model | mode | batch | variant | vocml img/s | PyTorch img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    worst = None
    for k in sorted(rows):
        v = rows[k]
        ours, peer = v.get("vocml"), v.get("pytorch")
        ratio = ours / peer if ours and peer else None
        if ratio is not None:
            worst = ratio if worst is None else min(worst, ratio)
        fmt = lambda x: f"{x:.1f}" if x else "-"
        print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {fmt(ours)} | {fmt(peer)} | "
              f"{f'{ratio:.2f}x' if ratio else '-'} |")
    if worst is not None:
        print(f"\nlowest ratio: {worst:.2f}x")


if __name__ == "__main__":
    main()
