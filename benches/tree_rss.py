"""Peak resident memory of a process and all its descendants (a server with worker
processes): samples /proc every 100 ms until PID exits, rewriting OUT with the peak so far in
MiB (summed over the tree at each sample).

Usage: tree_rss.py PID OUT &
"""
import os
import sys
import time


def tree_rss_kib(root):
    children = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = open(f"/proc/{p}/stat").read()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(p))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    pid, out = int(sys.argv[1]), sys.argv[2]
    peak = 0
    while os.path.exists(f"/proc/{pid}"):
        peak = max(peak, tree_rss_kib(pid))
        with open(out, "w") as f:
            f.write(f"{peak / 1024:.0f}\n")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
