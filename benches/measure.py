"""Runs a command and prints "<wall seconds> <peak RSS MiB>" of it (and its children) on one
line to stdout; the command's own stdout goes to stderr so the figures stay parseable.

Usage: measure.py CMD [ARGS...]
"""
import resource
import subprocess
import sys
import time


def main():
    t0 = time.perf_counter()
    rc = subprocess.call(sys.argv[1:], stdout=sys.stderr)
    sec = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"{sec:.2f} {peak_kib / 1024:.0f}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
