#!/usr/bin/env python3
"""Markdown table of bench/sandbox.sh's results.

    sandbox_report.py RESULTS_DIR DIST [DIST...]

Reads RESULTS_DIR/groups.txt ("LABEL<TAB>RESETS", listed under the table),
RESULTS_DIR/DIST/starts.txt ("VARIANT<TAB>MICROSECONDS" per start) and
RESULTS_DIR/DIST/exposure.txt ("VARIANT<TAB>SCORE"), prints one row per variant
in the order first seen: median and p90 of fork -> READY=1 in ms, the median's
difference to the packaged unit, and the `systemd-analyze security` exposure.
Standard library only.
"""

import math
import statistics
import sys
from pathlib import Path


def p90(values):
    # Nearest rank: with 20 starts, the 18th fastest.
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]


def read_tsv(path):
    rows = []
    for line in path.read_text().splitlines():
        if "\t" in line:
            key, value = line.split("\t", 1)
            rows.append((key, value.strip()))
    return rows


def label(variant):
    # Single directives are unit-file lines; groups and the two ends are names.
    return f"`{variant}`" if "=" in variant else variant


def main():
    res = Path(sys.argv[1])
    dists = sys.argv[2:]
    order, starts, exposure, version = [], {}, {}, {}
    for dist in dists:
        d = res / dist
        version[dist] = (d / "systemd-version").read_text().strip()
        for variant, us in read_tsv(d / "starts.txt"):
            if variant not in order:
                order.append(variant)
            starts.setdefault((dist, variant), []).append(int(us) / 1000)
        for variant, score in read_tsv(d / "exposure.txt"):
            exposure[(dist, variant)] = score or "?"

    head = ["variant"]
    for dist in dists:
        head += [
            f"{dist} (systemd {version[dist]}): median / p90 ms",
            "Δ median",
            "exposure",
        ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for variant in order:
        row = [label(variant)]
        for dist in dists:
            samples = starts.get((dist, variant), [])
            base = starts.get((dist, "packaged"), [])
            if not samples:
                row += ["–", "–", exposure.get((dist, variant), "–")]
                continue
            med = statistics.median(samples)
            cell = f"{med:.1f} / {p90(samples):.1f}"
            if variant == "packaged" or not base:
                delta = "–"
            else:
                delta = f"{med - statistics.median(base):+.1f}"
            row += [cell, delta, exposure.get((dist, variant), "–")]
        print("| " + " | ".join(row) + " |")
    counts = sorted({len(v) for v in starts.values()})
    print()
    print(
        "Starts per variant: "
        + ", ".join(str(c) for c in counts)
        + ". Fork → READY=1 as systemd records it (ExecMainStartTimestampMonotonic → "
        "ActiveEnterTimestampMonotonic); Δ is the median's difference to the packaged unit "
        "(negative: the directive costs that much); exposure from "
        "`systemd-analyze security seamless.service` (0 safest, 10 none)."
    )
    groups = res / "groups.txt"
    if groups.exists():
        for name, resets in read_tsv(groups):
            if name in order:
                items = ", ".join(f"`{r}`" for r in resets.split())
                print(f"- {name}: {items}")


if __name__ == "__main__":
    main()
