#!/usr/bin/env python3
"""Reads what bench/run.sh collected and writes the Markdown report. Standard library only.

    report.py totals REPORT.json        "total ok failed" of one loadgen report
    report.py outcomes REPORT.json      its non-zero failure outcomes, one line
    report.py fields REPORT.json KEY... those top-level values, space-separated
    report.py render RESULTS-DIR OUT.md the report
    report.py fleet FLEET-DIR OUT.md    the fleet section alone (bench/run.sh --fleet-only)
"""

import json
import math
import os
import platform
import re
import statistics
import sys

DISTS = ("bookworm", "trixie")
MODES = ("keepalive", "close")
MODE_NAMES = {"keepalive": "keep-alive", "close": "connection-close"}
# Scenarios whose every request must succeed, with their row titles.
ZERO_DROP = (
    ("restart", "`systemctl restart`"),
    ("reload", "`systemctl reload` (new message each time)"),
    ("upgrade", "binary upgrade (`seamless upgrade`)"),
    ("pkg-upgrade", "package upgrade (`dpkg -i`, higher version)"),
    ("sighup", "`kill -HUP` burst"),
)

# Targets from the issue.
RESTART_MAX_MS = 50.0
DISRUPTION_P99_FACTOR = 2.0
RELOAD_MEDIAN_MS = 50.0
READY_MS = 10.0
IDLE_RSS_KIB = 8 * 1024
THROUGHPUT_RATIO = 0.97


# --- loading -------------------------------------------------------------------


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_kv(path):
    """key=value lines; repeated keys collect into lists under key + 's'."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if "=" not in line:
                    continue
                key, value = line.split("=", 1)
                if key == "sample":
                    out.setdefault("samples", []).append(parse_sample(value))
                elif key in out and out[key].isdigit() and value.isdigit():
                    # Repeated samples of one quantity (RSS per round): the largest.
                    out[key] = str(max(int(out[key]), int(value)))
                else:
                    out[key] = value
    except OSError:
        pass
    return out


def parse_sample(text):
    """'a_us=1 b_us=2' -> {'a_us': 1, 'b_us': 2}; anything else is kept as 'text'."""
    sample = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and re.fullmatch(r"-?\d+", value):
            sample[key] = int(value)
    if not sample:
        sample["text"] = text
    return sample


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


class Run:
    """One loadgen run and what the driver noted about it."""

    def __init__(self, base):
        self.report = load_json(base + ".json")
        self.meta = read_kv(base + ".meta")

    @property
    def ok(self):
        return self.report is not None

    @property
    def events(self):
        return int(self.meta.get("events", "0"))

    def __getitem__(self, key):
        return self.report[key]

    def window_worst(self, key):
        """Worst value of a latency statistic over the event windows, µs."""
        values = [e["latency_us"].get(key) for e in self.report["events"] if e["latency_us"].get("count")]
        values = [v for v in values if v is not None]
        return max(values) if values else None

    def samples(self, key):
        return [s[key] for s in self.meta.get("samples", []) if key in s]


def load_results(res):
    data = {"run": read_kv(os.path.join(res, "run.txt")), "dists": {}}
    data["ready"] = load_json(os.path.join(res, "ready-time.json"))
    data["checks"] = read_text(os.path.join(res, "checks.tap")).splitlines()
    for dist in DISTS:
        d = os.path.join(res, dist)
        if not os.path.isdir(d):
            continue
        runs = {}
        for name in sorted(os.listdir(d)):
            m = re.fullmatch(r"(seamless|naive|nginx)-(.+)-(keepalive|close)\.json", name)
            if m:
                runs[(m.group(1), m.group(2), m.group(3))] = Run(os.path.join(d, name[: -len(".json")]))
        throughput = {}
        for name in sorted(os.listdir(d)):
            m = re.fullmatch(r"throughput-(\d+)-(seamless|nosandbox|naive)\.json", name)
            if m:
                report = load_json(os.path.join(d, name))
                if report:
                    throughput.setdefault(m.group(2), []).append((int(m.group(1)), report))
        latency = []
        for line in read_text(os.path.join(d, "reload-latency.txt")).splitlines():
            parts = line.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                latency.append(tuple(int(p) for p in parts))
        startup = {}
        for line in read_text(os.path.join(d, "startup.txt")).splitlines():
            unit, _, rest = line.partition(" ")
            sample = parse_sample(rest)
            if "start_ready_us" in sample:
                startup.setdefault(unit.removesuffix(".service"), []).append(sample)
        data["dists"][dist] = {
            "startup": startup,
            "os": read_text(os.path.join(d, "os-release"), dist),
            "systemd": read_text(os.path.join(d, "systemd-version"), "?"),
            "nginx": read_text(os.path.join(d, "nginx-version"), ""),
            "runs": runs,
            "throughput": throughput,
            "footprint": read_kv(os.path.join(d, "footprint.txt")),
            "reload_latency": latency,
        }
    return data


# --- formatting ------------------------------------------------------------------


def ms(us, digits=1):
    if us is None:
        return "–"
    return f"{us / 1000:.{digits}f}"


def mib(kib):
    if kib in (None, ""):
        return "–"
    return f"{int(kib) / 1024:.1f}"


def num(n):
    return f"{n:,}".replace(",", " ")


def per(failed, events):
    if not events:
        return "–"
    value = failed / events
    return f"{value:.2f}" if value else "0"


def percentile(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def verdict(met):
    if met is None:
        return "not measured"
    return "**met**" if met else "**missed**"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def failure_kinds(report):
    outcomes = {k: v for k, v in report["outcomes"].items() if k != "ok" and v}
    return ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1])) or "–"


# --- machine ---------------------------------------------------------------------


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    host_os = ""
    for line in read_text("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            host_os = line.split("=", 1)[1].strip('"')
    return {
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "mem": mem,
        "kernel": platform.release(),
        "os": host_os,
    }


# --- sections --------------------------------------------------------------------


def collect(data, server, scenario):
    """[(dist, mode, Run)] for runs that produced a report."""
    out = []
    for dist, d in data["dists"].items():
        for mode in MODES:
            run = d["runs"].get((server, scenario, mode))
            if run and run.ok:
                out.append((dist, mode, run))
    return out


def totals(runs):
    total = sum(r["total"] for _, _, r in runs)
    failed = sum(r["failed"] for _, _, r in runs)
    events = sum(r.events for _, _, r in runs)
    return total, failed, events


def steady_p99(data, dist, mode):
    run = data["dists"][dist]["runs"].get(("seamless", "steady", mode))
    return run["latency_us"]["p99"] if run and run.ok else None


def headline(data, conns):
    lines = []
    rows = []
    spec = [
        ("seamless", "restart", "seamless, `systemctl restart`"),
        ("seamless", "reload", "seamless, `systemctl reload`"),
        ("seamless", "upgrade", "seamless, binary upgrade"),
        ("naive", "restart", "naive axum (`with_graceful_shutdown`), `systemctl restart`"),
        ("nginx", "reload", "nginx, `nginx -s reload`"),
    ]
    for server, scenario, title in spec:
        if not collect(data, server, scenario):
            continue
        cells = [title]
        for mode in MODES:
            runs = [x for x in collect(data, server, scenario) if x[1] == mode]
            if not runs:
                cells += ["–", "–"]
                continue
            total, failed, events = totals(runs)
            cells.append(f"{per(failed, events)} ({num(failed)} of {num(total)}, {events} events)")
            cells.append(per(failed / conns, events) if failed else "0")
        rows.append(cells)
    lines.append(
        table(
            ["", "keep-alive: failed per event", "per event per connection", "close: failed per event", "per event per connection"],
            rows,
        )
    )
    return "\n".join(lines)


def zero_drop_section(data):
    rows = []
    for scenario, title in ZERO_DROP:
        for dist, mode, run in collect(data, "seamless", scenario):
            p99_ref = steady_p99(data, dist, mode)
            rows.append(
                [
                    title,
                    dist,
                    MODE_NAMES[mode],
                    run.events if scenario != "sighup" else f"1 burst of {run.meta.get('sighups', '?')}",
                    num(run["total"]),
                    f"{run['rps']:,.0f}".replace(",", " "),
                    num(run["failed"]) if not run["failed"] else f"**{num(run['failed'])}** ({failure_kinds(run.report)})",
                    ms(run["latency_us"]["p50"], 2),
                    ms(run["latency_us"]["p99"], 2),
                    ms(run.window_worst("p99"), 2),
                    ms(run.window_worst("max"), 1),
                    ms(p99_ref, 2),
                ]
            )
    return table(
        [
            "scenario",
            "dist",
            "load",
            "events",
            "requests",
            "req/s",
            "failed",
            "p50 ms",
            "p99 ms",
            "worst event-window p99 ms",
            "max in event windows ms",
            "steady p99 ms",
        ],
        rows,
    )


def action_timings(data):
    rows = []
    spec = [
        ("seamless", "restart", "restart_us", "seamless: `systemctl restart` (command duration)"),
        ("seamless", "restart", "start_ready_us", "seamless: new process, fork → READY=1 as systemd saw it (sandbox set-up included)"),
        ("naive", "restart", "restart_us", "naive axum: `systemctl restart` (command duration)"),
        ("naive", "restart", "start_ready_us", "naive axum (no sandbox): fork → READY=1 as systemd saw it"),
        ("seamless", "upgrade", "upgrade_us", "seamless: `seamless upgrade` (command duration: successor ready, handed over)"),
        ("seamless", "sighup", "burst_us", "sending the SIGHUP burst"),
        ("seamless", "kill", "active_again_us", "seamless: kill -9 → unit active again with a new process"),
    ]
    for server, scenario, key, title in spec:
        for dist in data["dists"]:
            values = []
            for mode in MODES:
                run = data["dists"][dist]["runs"].get((server, scenario, mode))
                if run:
                    values += run.samples(key)
            if values:
                rows.append(
                    [title, dist, len(values), ms(statistics.median(values), 1), ms(percentile(values, 99), 1), ms(max(values), 1)]
                )
    if not rows:
        return ""
    return table(["action", "dist", "n", "median ms", "p99 ms", "max ms"], rows)


def kill_section(data, conns):
    rows = []
    for dist, mode, run in collect(data, "seamless", "kill"):
        lost = [e["failed"] for e in run["events"]]
        recovery = [e["recovery_us"] for e in run["events"] if e["recovery_us"] is not None]
        worst = [e["latency_us"]["max"] for e in run["events"] if e["latency_us"].get("count")]
        rows.append(
            [
                dist,
                MODE_NAMES[mode],
                run.events,
                " / ".join(str(x) for x in lost),
                f"{statistics.mean(lost):.1f}" if lost else "–",
                f"{num(run['failed'])} of {num(run['total'])}",
                " / ".join(ms(x, 0) for x in recovery) or "–",
                ms(max(worst), 0) if worst else "–",
                failure_kinds(run.report),
            ]
        )
    if not rows:
        return ""
    return table(
        [
            "dist",
            "load",
            "kills",
            "lost per kill",
            "mean lost",
            "failed (whole run)",
            "first failure → next success, ms",
            "max latency in windows ms",
            "failure kinds",
        ],
        rows,
    )


def anchor_section(data, conns):
    if not collect(data, "naive", "restart") and not collect(data, "nginx", "reload"):
        return ""
    rows = []
    for server, scenario, title in (
        ("seamless", "restart", "seamless `systemctl restart`"),
        ("naive", "restart", "naive axum `systemctl restart`"),
        ("nginx", "reload", "nginx `nginx -s reload`"),
    ):
        for dist, mode, run in collect(data, server, scenario):
            rows.append(
                [
                    title,
                    dist,
                    MODE_NAMES[mode],
                    run.events,
                    num(run["total"]),
                    num(run["failed"]),
                    per(run["failed"], run.events),
                    per(run["failed"] / conns, run.events) if run["failed"] else "0",
                    failure_kinds(run.report),
                    ms(run.window_worst("max"), 1),
                ]
            )
    if not rows:
        return ""
    return table(
        [
            "server / event",
            "dist",
            "load",
            "events",
            "requests",
            "failed",
            "failed per event",
            "per event per connection",
            "failure kinds",
            "max in event windows ms",
        ],
        rows,
    )


def throughput_rows(data):
    """Rows per distribution, and the seamless ÷ bare axum ratios (median over cycles)."""
    rows = []
    ratios = []
    counts = set()
    for dist, d in data["dists"].items():
        tp = d["throughput"]
        if not tp.get("seamless") or not tp.get("naive"):
            continue
        # {server: {cycle: report}}
        per_cycle = {server: dict(rounds) for server, rounds in tp.items()}
        cycles = sorted(set(per_cycle["seamless"]) & set(per_cycle["naive"]))
        if not cycles:
            continue
        counts.add(len(cycles))
        failed = sum(r["failed"] for rounds in per_cycle.values() for r in rounds.values())
        f = d["footprint"]
        for server, title in (("seamless", "seamless (packaged unit)"), ("nosandbox", "seamless, no sandbox"), ("naive", "bare axum")):
            rounds = per_cycle.get(server)
            if not rounds:
                continue
            cycle_ratios = [rounds[c]["rps"] / per_cycle["naive"][c]["rps"] for c in cycles if c in rounds]
            median_ratio = statistics.median(cycle_ratios)
            if server == "seamless":
                ratios.append(median_ratio)
            rps = [rounds[c]["rps"] for c in sorted(rounds)]
            rows.append(
                [
                    dist,
                    title,
                    f"{statistics.median(rps):,.0f}".replace(",", " "),
                    f"{median_ratio:.3f}" if server != "naive" else "1",
                    f"{min(cycle_ratios):.3f} to {max(cycle_ratios):.3f}" if server != "naive" else "",
                    " / ".join(f"{x:,.0f}".replace(",", " ") for x in rps),
                    ms(max(r["latency_us"]["p99"] for r in rounds.values()), 2),
                    failed if server == "seamless" else "",
                ]
            )
        rows.append([dist, "host load average before → after", f"{f.get('loadavg_before', '–')} → {f.get('loadavg_after', '–')}", "", "", "", "", ""])
    return rows, ratios, " or ".join(str(n) for n in sorted(counts))


def startup_rows(data):
    rows = []
    for dist, d in data["dists"].items():
        for unit, title in (
            ("seamless", "seamless.service (packaged sandbox)"),
            ("seamless-nosandbox", "seamless, no sandbox"),
            ("naive", "naive.service (bare axum)"),
        ):
            samples = d["startup"].get(unit)
            if not samples:
                continue
            ready = [x["start_ready_us"] for x in samples]
            restart = [x["restart_us"] for x in samples if "restart_us" in x]
            rows.append(
                [
                    dist,
                    title,
                    len(ready),
                    ms(statistics.median(ready), 1),
                    ms(max(ready), 1),
                    ms(statistics.median(restart), 1) if restart else "–",
                ]
            )
    return rows


def footprint_rows(data):
    rows = []
    for dist, d in data["dists"].items():
        f = d["footprint"]
        if not f:
            continue
        for server in ("seamless", "nosandbox", "naive"):
            if not any(k.startswith(server + "_") for k in f):
                continue
            rows.append(
                [
                    dist,
                    server,
                    mib(f.get(f"{server}_idle_kib")),
                    mib(f.get(f"{server}_loaded_kib")),
                    mib(f.get(f"{server}_after_load_kib")),
                ]
            )
    return rows


def reload_latency_rows(data):
    rows = []
    medians = []
    for dist, d in data["dists"].items():
        lat = d["reload_latency"]
        if not lat:
            continue
        cmd = [x[0] for x in lat]
        served = [x[1] for x in lat]
        medians.append(statistics.median(served))
        rows.append(
            [
                dist,
                len(lat),
                ms(statistics.median(served), 1),
                ms(percentile(served, 99), 1),
                ms(statistics.median(cmd), 1),
                ms(percentile(cmd, 99), 1),
                sum(x[2] for x in lat),
            ]
        )
    return rows, medians


# --- targets ---------------------------------------------------------------------------


def reference_p99(data, dist, mode, kind):
    run = data["dists"][dist]["runs"].get(("seamless", kind, mode))
    if not run or not run.ok:
        return None
    if kind == "control":
        # The control's requests around its own events, like the scenarios' windows.
        return run.window_worst("p99")
    return run["latency_us"]["p99"]


def disruption_latency(data, scenario, kind):
    """(all met?, cells) comparing a scenario's worst event-window p99 and max against
    DISRUPTION_P99_FACTOR × the reference p99 (steady run, or control windows)."""
    p99_ok, max_ok, cells = True, True, []
    for dist, mode, run in collect(data, "seamless", scenario):
        ref = reference_p99(data, dist, mode, kind)
        wp99, wmax = run.window_worst("p99"), run.window_worst("max")
        if ref is None or wp99 is None:
            continue
        p99_ok &= wp99 <= DISRUPTION_P99_FACTOR * ref
        max_ok &= wmax <= DISRUPTION_P99_FACTOR * ref
        cells.append(f"{dist} {MODE_NAMES[mode]}: p99 {ms(wp99, 2)}, max {ms(wmax, 1)} vs 2 × {ms(ref, 2)}")
    return (p99_ok, max_ok, cells) if cells else (None, None, [])


def targets(data, conns):
    rows = []

    runs = []
    for scenario, _ in ZERO_DROP:
        runs += collect(data, "seamless", scenario)
    if runs:
        total, failed, events = totals(runs)
        bad = []
        for scenario, _ in ZERO_DROP:
            bad += [f"{scenario} {d} {m}" for d, m, r in collect(data, "seamless", scenario) if r["failed"]]
        rows.append(
            [
                "0 failed requests in every restart, reload, binary-upgrade, package-upgrade (and SIGHUP) scenario, both load modes",
                f"{num(failed)} failed of {num(total)} requests over {events} events" + (f" (in: {', '.join(bad)})" if bad else ""),
                verdict(failed == 0),
            ]
        )

    worst = []
    for dist, mode, run in collect(data, "seamless", "restart"):
        w = run.window_worst("max")
        if w is not None:
            worst.append((w, dist, mode))
    if worst:
        w, dist, mode = max(worst)
        rows.append(
            [
                f"max latency during a restart ≤ {RESTART_MAX_MS:.0f} ms",
                f"{ms(w)} ms (worst of {len(worst)} runs: {dist}, {MODE_NAMES[mode]}); "
                + ", ".join(f"{d} {MODE_NAMES[m]} {ms(x)}" for x, d, m in sorted(worst, key=lambda t: (t[1], t[2]))),
                verdict(w / 1000 <= RESTART_MAX_MS),
            ]
        )

    for scenario, title in (("reload", "reload"), ("upgrade", "binary upgrade")):
        p99_ok, max_ok, cells = disruption_latency(data, scenario, "steady")
        if cells:
            rows.append([f"latency during {title} ≤ 2 × steady p99: worst event-window p99", "; ".join(cells), verdict(p99_ok)])
            rows.append([f"… the same for the maximum latency during {title}", "see above", verdict(max_ok)])
        p99_ok, max_ok, cells = disruption_latency(data, scenario, "control")
        if cells:
            rows.append(
                [
                    f"(for comparison) {title} against the control run's window p99 instead",
                    "; ".join(cells),
                    "met" if p99_ok else "missed",
                ]
            )

    _, medians = reload_latency_rows(data)
    if medians:
        rows.append(
            [
                f"`systemctl reload` → new message served, median ≤ {RELOAD_MEDIAN_MS:.0f} ms",
                " / ".join(f"{ms(m)} ms" for m in medians),
                verdict(max(medians) / 1000 <= RELOAD_MEDIAN_MS),
            ]
        )

    ready = data.get("ready")
    if ready and "seamless" in ready["results"]:
        median = ready["results"]["seamless"]["median_ms"]
        rows.append([f"start → READY=1 ≤ {READY_MS:.0f} ms (median of {ready['runs']}, local harness)", f"{median:.2f} ms", verdict(median <= READY_MS)])

    idle = [int(d["footprint"]["seamless_idle_kib"]) for d in data["dists"].values() if d["footprint"].get("seamless_idle_kib")]
    if idle:
        rows.append(
            [
                f"idle RSS ≤ {IDLE_RSS_KIB // 1024} MiB",
                " / ".join(f"{mib(k)} MiB" for k in idle),
                verdict(max(idle) <= IDLE_RSS_KIB),
            ]
        )

    _, ratios, _ = throughput_rows(data)
    if ratios:
        rows.append(
            [
                f"hello-world throughput ≥ {THROUGHPUT_RATIO} × bare axum",
                " / ".join(f"{r:.3f} ×" for r in ratios),
                verdict(min(ratios) >= THROUGHPUT_RATIO),
            ]
        )
    return rows


def reference_section(data):
    rows = []
    for kind, title in (("steady", "steady (no events)"), ("control", "control (driver activity, no disruption)")):
        for dist, mode, run in collect(data, "seamless", kind):
            lat = run["latency_us"]
            rows.append(
                [
                    title,
                    dist,
                    MODE_NAMES[mode],
                    num(run["total"]),
                    f"{run['rps']:,.0f}".replace(",", " "),
                    ms(lat["p50"], 2),
                    ms(lat["p99"], 2),
                    ms(lat["p999"], 2),
                    ms(lat["max"], 1),
                    ms(run.window_worst("p99"), 2) if kind == "control" else "–",
                    num(run["failed"]),
                ]
            )
    if not rows:
        return ""
    return table(
        ["run", "dist", "load", "requests", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "worst event-window p99 ms", "failed"],
        rows,
    )


def sighup_note(data):
    notes = []
    for dist, mode, run in collect(data, "seamless", "sighup"):
        generations = sorted(int(g) for g in run["captured"] if g.isdigit())
        if generations:
            notes.append(
                f"{dist} {MODE_NAMES[mode]}: {run.meta.get('sighups', '?')} signals → "
                f"{generations[-1] - generations[0]} reload(s) applied (configuration generation "
                f"{generations[0]} → {generations[-1]})"
            )
    return notes


# --- restarts that close no connection -------------------------------------------------

# (server, scenario, row title) of bench/run.sh's scenario_keep_connections.
KEEP_ROWS = (
    ("seamless", "keep-thinking", "seamless, keep on (as packaged): {clients} thinking clients, {restarts} restarts"),
    ("seamless", "keep-off-thinking", "seamless, keep off (`keep_connections = false`, before): {clients} thinking clients, {restarts} restarts"),
    ("naive", "keep-thinking", "naive axum (`with_graceful_shutdown`): {clients} thinking clients, {restarts} restarts"),
    ("seamless", "keep-busy", "seamless, keep on: {clients} busy clients, {restarts} restarts + {upgrades} binary upgrades"),
)


def keep_section(data):
    """Markdown lines of "Restarts that close no connection", or [] without its runs."""
    dists = [d for d in data["dists"] if any(("keep-" in k[1]) for k in data["dists"][d]["runs"])]
    if not dists:
        return []
    rows = []
    notes = []
    failures = []
    for server, scenario, title in KEEP_ROWS:
        cells = []
        counts = None
        for dist in dists:
            run = data["dists"][dist]["runs"].get((server, scenario, "keepalive"))
            if not run or not run.ok:
                cells += ["–", "–", "–"]
                continue
            clients = int(run.meta.get("clients") or run.report.get("connections", 0))
            these = {
                "clients": clients,
                "restarts": run.meta.get("restarts", run.events),
                "upgrades": run.meta.get("upgrades", 0),
            }
            if counts is None:
                counts = these
            elif counts != these:
                these_text = ", ".join(f"{k} {v}" for k, v in these.items())
                notes.append(f"{dist} ran {title.split(':')[0].format(**these)} with {these_text}")
            failed = num(run["failed"]) if not run["failed"] else f"**{num(run['failed'])}**"
            cells.append(f"{failed} / {num(run['total'])}")
            cells.append(f"{num(run['connections_opened'])} (for {clients})")
            cells.append(f"{run['max_connections_per_worker']} ({run['workers_reconnected']})")
            if run["failed"]:
                failures.append(f"{title.split(':')[0]}, {dist}: {failure_kinds(run.report)}")
        if counts is not None:
            rows.append([title.format(**counts)] + cells)
    header = [""]
    for dist in dists:
        header += [f"{dist}: failed / total", "connections opened", "most per client (clients that reconnected)"]
    md = ["## Restarts that close no connection", ""]
    md.append(
        "Keep-alive clients across `systemctl restart` (and binary upgrades), with every request counted "
        "and nothing retried. *Thinking* clients pause 0.2–2.5 s between requests "
        "(`loadgen --mode keepalive --think 200ms..2500ms`) and then reuse their connection without "
        "checking whether the server closed it meanwhile, as simple clients do; *busy* clients send "
        "their next request as soon as the response arrives (closed loop). seamless keeps each "
        "connection in systemd's fd store between two requests and the next process serves it "
        "(`shutdown.keep_connections`, default `true`); with `false` (set by a drop-in plus "
        "`systemctl reload` for that run) idle connections are closed after `shutdown.linger` and "
        "busy ones get `Connection: close`, as before; the naive anchor closes idle connections when "
        "its graceful shutdown starts. “Connections opened” counts loadgen's successful connects over "
        "the whole run: equal to the number of clients means no client ever reconnected; “most per "
        "client” 1 means each client used one TCP connection, so one local port, from the first "
        "request to the last."
    )
    md.append("")
    md.append(table(header, rows))
    md.append("")
    for note in failures:
        md.append(f"- failure kinds, {note}.")
    for note in notes:
        md.append(f"- counts differ: {note}.")
    if failures or notes:
        md.append("")
    return md


# --- fleet -----------------------------------------------------------------------------

FLEET_SETUPS = {
    "self-bound": "self-bound",
    "systemd bookworm": "Debian 12 machines",
    "systemd trixie": "Debian 13 machines",
}
FLEET_BALANCERS = {"haproxy": "HAProxy", "nginx": "nginx"}


def load_fleet(fleet_dir):
    """The lines tests/fleet/*.sh --results wrote (results_line in tests/fleet/lib.sh), grouped
    by row in the order they first appear: several runs of one row share it."""
    rows = {}
    for line in read_text(os.path.join(fleet_dir, "results.tsv")).splitlines():
        parts = line.split("\t")
        if len(parts) != 10 or not (parts[5].isdigit() and parts[6].isdigit()):
            continue
        setup, balancer, operation, mode, announce, failed, total, _ok, statuses, outcomes = parts
        rows.setdefault((setup, balancer, operation, mode, announce), []).append(
            (int(failed), int(total), statuses, outcomes)
        )
    return rows


def fleet_failures(runs):
    """What the failed requests were, over all runs of a row: statuses other than 200, and the
    failure outcomes that are not a status."""
    kinds = {}
    for _failed, _total, statuses, outcomes in runs:
        for field, skip in ((statuses, ("200",)), (outcomes, ())):
            for pair in field.split(","):
                name, _, count = pair.partition(":")
                if count.isdigit() and name not in skip and not name.startswith("status_"):
                    label = f"`{name}`" if name.isdigit() else name.replace("_", " ")
                    kinds[label] = kinds.get(label, 0) + int(count)
    return ", ".join(f"{k} × {num(v)}" for k, v in kinds.items()) or "–"


def fleet_section(fleet_dir):
    """The section, as lines; none without results."""
    rows = load_fleet(fleet_dir)
    if not rows:
        return []
    meta = read_kv(os.path.join(fleet_dir, "run.txt"))
    runs = {len(r) for r in rows.values()}
    md = ["## Fleet behind a load balancer", ""]
    md.append(
        f"Three instances behind a load balancer on the host, measured by `{meta.get('command', '?')}` "
        f"on {meta.get('started', '?')} in {meta.get('elapsed_s', '?')} s: "
        f"16 strict loadgen connections through the balancer on 127.0.0.1:18100, each row "
        f"{' or '.join(str(n) for n in sorted(runs))} run(s), counts of each run in order. "
        "A rolling operation takes each instance in turn and waits until the balancer routes to it "
        "again before the next. Rows with `shutdown.announce` set fail the run on any failed "
        "request; `\"0s\"` rows are for comparison."
    )
    md.append("")
    md.append(
        f"- self-bound (`tests/fleet/run.sh`): the release binary on 127.0.0.2–4:18101, "
        f"{meta.get('restarts', '?')} rolling restarts per run (SIGTERM, exit, start again)."
    )
    md.append(
        f"- HAProxy {meta.get('haproxy', '?')}: `option httpchk GET /readyz`, "
        "`default-server inter 200ms fall 1 rise 1`, default `retries 3`, no `option redispatch`; "
        "routing again means its stats page shows the server `UP`."
    )
    md.append(
        f"- nginx {meta.get('nginx', '?')}: no active health check (open source); "
        "`max_fails=1 fail_timeout=1s`, `keepalive 32` with `proxy_http_version 1.1` and "
        "`proxy_set_header Connection \"\"`, `proxy_next_upstream error timeout http_502 http_503` "
        "(loadgen sends GET, which nginx may pass to the next server); routing again means "
        "`fail_timeout` elapsed after the instance answered `/readyz`."
    )
    if any(k[0].startswith("systemd") for k in rows):
        md.append(
            "- Debian machines (`tests/fleet/systemd.sh`): three systemd-nspawn machines from one "
            "cached tree, the `.deb` installed on each, `NAME.socket` on 127.0.0.2–4:18101 "
            "(socket-activated: systemd keeps the listening socket through a restart), one rolling "
            "`systemctl restart` or package upgrade (`dpkg -i` of a higher version) per run, behind "
            "the same HAProxy backend."
        )
    md.append("")
    out = []
    for (setup, balancer, operation, mode, announce), r in rows.items():
        out.append(
            [
                FLEET_SETUPS.get(setup, setup),
                FLEET_BALANCERS.get(balancer, balancer),
                operation,
                MODE_NAMES.get(mode, mode),
                f"`\"{announce}\"`",
                " and ".join(f"{num(f)} / {num(t)}" for f, t, _s, _o in r),
                fleet_failures(r),
            ]
        )
    md.append(
        table(["instances", "balancer", "operation", "clients", "`shutdown.announce`", "failed / total", "failed requests"], out)
    )
    md.append("")
    return md


# --- render ----------------------------------------------------------------------------


def render(res, out_path):
    data = load_results(res)
    run = data["run"]
    conns = int(run.get("connections", "32"))
    host = machine()
    dists = data["dists"]
    md = []
    add = md.append

    add("# Benchmarks")
    add("")
    add(
        "How seamless behaves when it is restarted, reloaded, upgraded and killed under load, on real "
        "systemd, next to the usual axum graceful shutdown and nginx's reload measured in the same run; "
        "plus throughput, start-up time, memory and reload latency."
    )
    add("")
    add(
        f"Generated by `{run.get('command', 'bench/run.sh')}` (as root) on {run.get('started', '?')} "
        f"in {run.get('elapsed_s', '?')} s, from `{run.get('git', '?')}` ({run.get('deb', '?')}). "
        "Every number below comes from that one run; rerun the command to reproduce. "
        "`bench/run.sh --short` is the CI variant: a few events per scenario on one distribution, "
        "no anchors or performance runs, failing on any failed request; it writes its report to "
        "`bench/results/short/` instead of this file."
    )
    add("")
    add("## Machine")
    add("")
    sys_rows = [
        ["CPU", f"{host['cpu']}, {host['nproc']} CPUs (nproc)"],
        ["memory", host["mem"]],
        ["kernel", host["kernel"]],
        ["host", host["os"]],
    ]
    for dist, d in dists.items():
        nginx = f", nginx {d['nginx']}" if d["nginx"] else ""
        sys_rows.append([f"container {dist}", f"{d['os']}, systemd {d['systemd']}{nginx}"])
    loads = [
        float(r.meta["loadavg"])
        for d in dists.values()
        for r in d["runs"].values()
        if r.meta.get("loadavg", "").replace(".", "", 1).isdigit()
    ]
    if loads:
        sys_rows.append(
            [
                "host load average",
                f"{min(loads):.2f} to {max(loads):.2f} (1 min, sampled after each load run; the benchmark "
                "itself keeps 2 to 3 tasks runnable, the rest is other work on the machine)",
            ]
        )
    sys_rows.append(
        [
            "load",
            f"`loadgen` on the host, {conns} connections per run, keep-alive and connection-close in "
            "separate runs; every request counted once, nothing retried",
        ]
    )
    add(table(["", ""], sys_rows))
    add("")
    add(
        "The containers are booted with `systemd-nspawn` (systemd as PID 1, host network) by "
        "`tests/e2e/lib.sh`; the package is installed with `dpkg -i` and runs under its packaged, "
        "sandboxed units (a drop-in moves `seamless.socket` to 127.0.0.1:18080). Load generator, "
        "services and systemd share the same CPUs, and the closed-loop load keeps them busy, so "
        "every other process (systemctl, dpkg, the driver) costs request latency too."
    )
    add("")

    if any(collect(data, server, scenario) for server, scenario in (("seamless", "restart"), ("seamless", "reload"), ("seamless", "upgrade"), ("naive", "restart"), ("nginx", "reload"))):
        add("## Headline")
        add("")
        add(f"Failed requests per disruption (lower is better; “per connection” divides by the {conns} concurrent connections):")
        add("")
        add(headline(data, conns))
        add("")
    tp_rows, ratios, tp_cycles = throughput_rows(data)
    ready = data.get("ready")
    bullets = []
    if ratios:
        bullets.append(
            "throughput, seamless ÷ bare axum (hello world, keep-alive): "
            + " / ".join(f"{r:.3f}" for r in ratios)
            + f" ({' / '.join(d for d in dists if dists[d]['throughput'])})"
        )
    if ready:
        r = ready["results"]
        line = f"start → READY=1 (local harness): seamless {r['seamless']['median_ms']:.2f} ms median"
        if "naive" in r:
            line += f", bare axum {r['naive']['median_ms']:.2f} ms"
        bullets.append(line)
    fp = [(dist, d["footprint"]) for dist, d in dists.items() if d["footprint"].get("seamless_idle_kib")]
    if fp:
        bullets.append(
            "RSS of seamless, idle / under load: "
            + "; ".join(f"{dist} {mib(f.get('seamless_idle_kib'))} / {mib(f.get('seamless_loaded_kib'))} MiB" for dist, f in fp)
        )
    rl_rows, _ = reload_latency_rows(data)
    if rl_rows:
        bullets.append(
            "`systemctl reload` → new message served: " + "; ".join(f"{row[0]} median {row[2]} ms, p99 {row[3]} ms" for row in rl_rows)
        )
    for b in bullets:
        add(f"- {b}")
    if bullets:
        add("")

    target_rows = targets(data, conns)
    if target_rows:
        add("## Targets")
        add("")
        add(table(["target", "measured", ""], target_rows))
        add("")
    if target_rows:
        add(
            "Timing targets are reported, not asserted (they depend on the machine); only failed requests "
            "fail the run. An event window holds the requests started from 100 ms before an event to 1 s "
            "after it. “Steady” is a run of the same load with no events, just before the scenarios; "
            "the control run repeats what the driver does around each reload (rewrite the configuration "
            "file, one `systemctl show`, one request) without reloading, and shows how much latency the "
            "driver's own processes cost on these saturated CPUs. A maximum is compared with a p99 only "
            "because the target says so: even the steady run's maximum is many times its p99."
        )
        add("")

    if any(collect(data, "seamless", scenario) for scenario, _ in ZERO_DROP):
        add("## seamless: restarts, reloads, upgrades")
        add("")
        add(zero_drop_section(data))
        add("")
    for note in sighup_note(data):
        add(f"- SIGHUP burst, {note}.")
    if sighup_note(data):
        add("")
    ref = reference_section(data)
    if ref:
        add("Latency references, same load without disruptions:")
        add("")
        add(ref)
        add("")
    at = action_timings(data)
    if at:
        add("What the disruptions themselves took (measured inside the container):")
        add("")
        add(at)
        add("")

    md.extend(keep_section(data))

    ks = kill_section(data, conns)
    if ks:
        add("## seamless: `kill -9`")
        add("")
        add(
            "A killed process loses what it was serving: requests in flight and, with keep-alive, the "
            "connections themselves. The listening socket stays in systemd, so connections made while "
            "no process runs wait in the backlog and are answered by the restarted process "
            "(`Restart=on-failure`, 100 ms `RestartSec=` default); the maximum latency in the window "
            "is how long they waited. “First failure → next success” is loadgen's recovery time: from "
            "the start of the first failed request to the completion of the first successful request "
            "started after it; it is near 0 when the dying process still answered a request started "
            "just after the one it lost. Event window: 100 ms before to 2.5 s after each kill."
        )
        add("")
        add(ks)
        add("")

    an = anchor_section(data, conns)
    if an:
        add("## Anchors: the usual graceful shutdown, and nginx")
        add("")
        add(
            "- **naive**: `bench/naive`, axum 0.8 `serve(listener, app).with_graceful_shutdown(SIGTERM)` "
            "with the listener from `listenfd` and `READY=1` from `sd-notify`, under "
            "`bench/units/naive.{socket,service}` (the same socket shape as `seamless.socket`, "
            "`Type=notify`), restarted as often as seamless, under the same load."
        )
        add(
            "- **nginx**: the distribution's package, `bench/nginx.conf` (hello world via `return 200`, "
            "`keepalive_requests` raised so that only reloads end connections), `nginx -s reload` as "
            "often as seamless is reloaded, 0.5 s apart."
        )
        add("")
        add(an)
        add("")

    if tp_rows:
        add("## Throughput")
        add("")
        add(
            f"Hello world (`GET /`, the same 21-byte body), keep-alive, {conns} connections, 3 s per "
            f"round; {tp_cycles} cycles of one round per server, in alternating order (A B C, C B A, …), and "
            "each ratio is taken within a cycle, then the median over cycles, so that other work on the "
            "machine, which comes and goes, weighs on all servers alike. All three are socket-activated "
            "under systemd in the same container. “No sandbox” is the packaged binary under a unit with only `DynamicUser=` "
            "(`bench/units/seamless-nosandbox.*`, like `naive.service`): it separates what the sandbox "
            "costs (the seccomp system call filter runs on every system call) from what the service's "
            "own request path costs."
        )
        add("")
        add(
            table(
                ["dist", "server", "median req/s", "÷ bare axum (median of cycles)", "range over cycles", "rounds req/s", "worst round p99 ms", "failed"],
                tp_rows,
            )
        )
        add("")

    fr = footprint_rows(data)
    st = startup_rows(data)
    if fr or ready or rl_rows or st:
        add("## Start-up, memory, reload latency")
        add("")
    if ready:
        add(
            "Start → READY=1 on the host (`bench/ready_time.py`): the binary is forked and executed "
            "with a listening socket as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID`, `LISTEN_FDNAMES=http`) and "
            "`NOTIFY_SOCKET`; the clock runs from fork to the READY=1 datagram. "
            f"{ready['runs']} starts each, interleaved; seamless reads a one-line configuration file."
        )
        add("")
        add(
            table(
                ["binary", "median ms", "p90 ms", "min ms", "max ms"],
                [
                    [name, f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['min_ms']:.2f}", f"{r['max_ms']:.2f}"]
                    for name, r in ready["results"].items()
                ],
            )
        )
        add("")
    if st:
        add(
            "The same under systemd, idle, 10 restarts per unit: fork of the main process "
            "(`ExecMainStartTimestampMonotonic`) to READY=1 (`ActiveEnterTimestampMonotonic`), which "
            "includes setting up the unit's sandbox, and the whole `systemctl restart`:"
        )
        add("")
        add(table(["dist", "unit", "n", "fork → READY=1 median ms", "max ms", "`systemctl restart` median ms"], st))
        add("")
    if fr:
        add(
            "VmRSS of the main process (`/proc/PID/status`): idle = freshly restarted, one request "
            "answered, 1 s later; under load = sampled 1.5 s into each throughput round (largest shown); "
            "after = idle again after all rounds."
        )
        add("")
        add(table(["dist", "server", "idle MiB", "under load MiB", "after load MiB"], fr))
        add("")
    if rl_rows:
        add(
            "`systemctl reload` latency, idle service: a new message is written, then the clock runs "
            "from the start of `systemctl reload` to the first response carrying it (requests over "
            "bash's `/dev/tcp` inside the container, so no process start-up is counted). With 20 "
            "samples the p99 is their maximum. “Stale” counts responses that still carried the old "
            "message after `systemctl reload` returned (must be 0: reload is synchronous)."
        )
        add("")
        add(
            table(
                ["dist", "n", "served median ms", "served p99 ms", "command median ms", "command p99 ms", "stale responses"],
                rl_rows,
            )
        )
        add("")

    md.extend(fleet_section(os.path.join(res, "fleet")))

    add("## Method")
    add("")
    add(
        "- Build: `cargo build --release --workspace`, `cargo deb --no-build`. Package upgrades install "
        "the same package repacked with `+benchN` appended to its version (`dpkg-deb -R`/`-b`), so "
        "dpkg runs the maintainer scripts' full upgrade path (`try-restart` of the service; the socket "
        "is left alone)."
    )
    add(
        "- Each scenario is one `loadgen` run per load mode: 1 s of load before the first event, "
        "then the events, then 1 s more. Each event starts 0.5 s after the previous one finished "
        "(reloads and control 0.25 s, kills 3 s). Event times go to loadgen's events file, so its "
        "report has a window per event."
    )
    add(
        "- Binary upgrade: a copy of `/usr/bin/seamless` renamed over it, then `seamless upgrade --pid "
        "$(systemctl show -p MainPID --value seamless) --verdict-file /run/seamless/upgrade-verdict`; "
        "the driver checks that the main PID changed and that it runs `/usr/bin/seamless`."
    )
    add(
        "- SIGHUP burst: `kill -HUP $MAINPID` in a tight bash loop inside the container; signals that "
        "arrive during a reload coalesce into one more reload."
    )
    add("- Raw data (loadgen JSON reports, event files, journals): `bench/results/` (not committed).")
    add("")

    if data["checks"]:
        add("## Checks")
        add("")
        add("```")
        md.extend(data["checks"])
        passed = sum(1 for c in data["checks"] if c.startswith("ok"))
        failed = sum(1 for c in data["checks"] if c.startswith("FAIL"))
        add(f"{passed} passed, {failed} failed")
        add("```")
        add("")

    with open(out_path, "w") as f:
        f.write("\n".join(md).rstrip() + "\n")
    # The same targets, machine-readable, beside the raw data.
    with open(os.path.join(res, "summary.json"), "w") as f:
        json.dump(
            {
                "run": run,
                "machine": host,
                "targets": [{"target": t, "measured": m, "verdict": v.strip("*")} for t, m, v in targets(data, conns)],
                "checks": data["checks"],
            },
            f,
            indent=2,
            ensure_ascii=False,
        )
        f.write("\n")


def main(argv):
    if len(argv) == 3 and argv[1] == "totals":
        r = load_json(argv[2])
        if r is None:
            return 1
        print(r["total"], r["ok"], r["failed"])
        return 0
    if len(argv) >= 4 and argv[1] == "fields":
        r = load_json(argv[2])
        if r is None:
            return 1
        print(*(r[k] for k in argv[3:]))
        return 0
    if len(argv) == 3 and argv[1] == "outcomes":
        r = load_json(argv[2])
        if r is None:
            return 1
        print(failure_kinds(r))
        return 0
    if len(argv) == 4 and argv[1] == "fleet":
        with open(argv[3], "w") as f:
            f.write("\n".join(fleet_section(argv[2])).rstrip() + "\n")
        return 0
    if len(argv) == 4 and argv[1] == "render":
        render(argv[2], argv[3])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
