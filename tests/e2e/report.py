#!/usr/bin/env python3
"""Small readers for the e2e suite: journal entries and loadgen reports.

  report.py journal-match FIELD~REGEX... < journalctl-json-lines
      Print the first entry in which every FIELD has a value matching REGEX
      (re.search, case-insensitive) as KEY=VALUE lines; exit 1 when none
      does. FIELD "*" stands for any field the logger set (not the trusted
      "_" ones), e.g. to find an error message wherever it was put.

  report.py loadgen FILE...
      Sum total/ok/failed over loadgen JSON reports and print one line
      "total=N ok=N failed=N". Exit 1 if a request failed, if nothing
      succeeded, or if the counts do not add up.

Kept in Python rather than jq because the journal exports non-UTF-8 fields
as byte arrays, and jq may not be installed on the machine running the suite.
"""

import json
import re
import sys


def field_text(value):
    """journalctl -o json writes binary-unsafe fields as arrays of bytes."""
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):
        # A field present several times in one entry.
        return "\n".join(field_text(v) for v in value)
    return str(value)


def parse_conditions(args):
    conditions = []
    for arg in args:
        field, sep, pattern = arg.partition("~")
        if not sep or not field:
            raise SystemExit(f"journal-match: expected FIELD~REGEX, got {arg!r}")
        conditions.append((field, re.compile(pattern, re.IGNORECASE)))
    return conditions


def entry_matches(entry, field, regex):
    if field == "*":
        values = [v for k, v in entry.items() if not k.startswith("_")]
    else:
        values = [entry[field]] if field in entry else []
    return any(regex.search(field_text(v)) for v in values)


def journal_match(args):
    conditions = parse_conditions(args)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        entry = json.loads(line)
        if all(entry_matches(entry, field, regex) for field, regex in conditions):
            for key in sorted(entry):
                text = field_text(entry[key]).replace("\n", "\\n")
                print(f"{key}={text}")
            return 0
    return 1


def find_count(report, key):
    """Top-level key, or one level down (e.g. {"requests": {"ok": ...}})."""
    if key in report:
        return report[key]
    for value in report.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    raise KeyError(f"no '{key}' count in report")


def loadgen(paths):
    totals = {"total": 0, "ok": 0, "failed": 0}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        for key in totals:
            totals[key] += int(find_count(report, key))
    print(" ".join(f"{k}={v}" for k, v in totals.items()))
    consistent = totals["total"] == totals["ok"] + totals["failed"]
    if not consistent:
        print("counts do not add up: total != ok + failed", file=sys.stderr)
    return 0 if consistent and totals["failed"] == 0 and totals["ok"] > 0 else 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "journal-match":
        return journal_match(argv[1:])
    if len(argv) >= 2 and argv[0] == "loadgen":
        return loadgen(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
