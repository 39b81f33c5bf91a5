"""Summarise py-spy's collapsed stacks (``--format raw``): the functions with the most own
samples and the most inclusive samples, overall and per thread, as Markdown.

    python tools/collapse_top.py results/profile-X/pyspy.txt [TOP]
"""
from __future__ import annotations

import collections
import sys


def main() -> None:
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        # frames look like "func (file.py:line)"; drop line numbers so functions aggregate
        names = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in frames[1:]]
        if names:
            own[names[-1]] += count
        for name in set(names):
            incl[name] += count
    print(f"# py-spy summary: {total} samples\n")
    print("## threads / processes\n")
    for t, c in threads.most_common(12):
        print(f"- {c / total:6.1%} {t}")
    for title, counter in (("own time", own), ("inclusive time", incl)):
        print(f"\n## top {top} by {title}\n")
        print("| share | function |\n|---|---|")
        for name, c in counter.most_common(top):
            print(f"| {c / total:6.1%} | `{name}` |")


if __name__ == "__main__":
    main()
