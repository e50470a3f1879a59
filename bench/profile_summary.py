#!/usr/bin/env python3
"""Self time per operator of a Chrome trace written by `bench_unet --profile TRACE.json` (LibTorch's legacy profiler):
each event's duration minus that of the events nested inside it, summed by name, as a share of the traced wall time.

    python3 bench/profile_summary.py TRACE.json [--top 15]
"""
import argparse
import collections
import json


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace")
    p.add_argument("--top", type=int, default=15)
    a = p.parse_args()
    with open(a.trace) as f:
        events = [e for e in json.load(f) if e.get("ph") == "X"]
    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e["tid"]].append(e)
    self_time = collections.Counter()
    wall = 0.0
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # open events: [end, name, child time]
        start = min(e["ts"] for e in evs)
        end = max(e["ts"] + e["dur"] for e in evs)
        wall = max(wall, end - start)

        def close(upto):
            while stack and stack[-1][0] <= upto:
                done = stack.pop()
                self_time[done[1]] += done[3] - done[2]
                if stack:
                    stack[-1][2] += done[3]

        for e in evs:
            close(e["ts"])
            stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["dur"]])
        close(float("inf"))
    total = sum(self_time.values())
    print(f"traced wall time {wall / 1e3:.1f} ms, operator time {total / 1e3:.1f} ms")
    print(f"{'operator':40s} {'self ms':>9s} {'share':>7s}")
    for name, t in self_time.most_common(a.top):
        print(f"{name:40s} {t / 1e3:9.1f} {100 * t / wall:6.1f}%")
    print(f"{'(outside any operator)':40s} {(wall - total) / 1e3:9.1f} {100 * (wall - total) / wall:6.1f}%")


if __name__ == "__main__":
    main()
