#!/usr/bin/env python3
"""Time from process start to READY=1, the way systemd starts a socket-activated service.

    ready_time.py [--runs N] [--json FILE] NAME='COMMAND [ARG...]' ...

For each run: a listening TCP socket on 127.0.0.1 (an ephemeral port) and a notification
socket are created, the command is forked and executed with the listener as fd 3 and
LISTEN_FDS=1, LISTEN_PID=<its PID>, LISTEN_FDNAMES=http, NOTIFY_SOCKET=<path>; the clock
runs from just before fork() to the arrival of the datagram carrying READY=1. The process is
then stopped with SIGTERM (SIGKILL after 5 s). Commands are interleaved run by run, so drift
in the machine's load hits them alike. stdout/stderr of the commands go to /dev/null.

Prints one line per command (median, p90, min, max in ms) and writes every sample to --json.
Standard library only.
"""

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time

READY_TIMEOUT_S = 10.0


def one_start(argv, tmpdir, n):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    notify_path = os.path.join(tmpdir, f"notify-{n}")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    devnull = os.open(os.devnull, os.O_RDWR)
    base_env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LISTEN_FDS": "1",
        "LISTEN_FDNAMES": "http",
        "NOTIFY_SOCKET": notify_path,
    }
    started = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:
        try:
            if listener.fileno() == 3:
                os.set_inheritable(3, True)
            else:
                os.dup2(listener.fileno(), 3)  # the copy is inheritable
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            env = dict(base_env, LISTEN_PID=str(os.getpid()))
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(devnull)
    ready_ns = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready_ns is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            notify.settimeout(remaining)
            try:
                data = notify.recv(4096)
            except socket.timeout:
                break
            if b"READY=1" in data.split(b"\n"):
                ready_ns = time.monotonic_ns()
    finally:
        stop(pid)
        notify.close()
        listener.close()
        os.unlink(notify_path)
    if ready_ns is None:
        raise RuntimeError(f"{argv[0]}: no READY=1 within {READY_TIMEOUT_S}s")
    return (ready_ns - started) / 1e6


def stop(pid):
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def summary(samples):
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": p90,
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "samples_ms": samples,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json")
    parser.add_argument("commands", nargs="+", metavar="NAME=COMMAND")
    args = parser.parse_args()
    commands = {}
    for spec in args.commands:
        name, _, command = spec.partition("=")
        argv = shlex.split(command)
        if not name or not argv or not os.access(argv[0], os.X_OK):
            parser.error(f"{spec!r}: expected NAME=EXECUTABLE [ARG...]")
        commands[name] = argv
    samples = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="ready-time-") as tmpdir:
        n = 0
        for _ in range(args.runs):
            for name, argv in commands.items():
                n += 1
                samples[name].append(one_start(argv, tmpdir, n))
    result = {name: summary(s) for name, s in samples.items()}
    for name, r in result.items():
        print(
            f"# {name}: start to READY=1 median {r['median_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms "
            f"(min {r['min_ms']:.2f}, max {r['max_ms']:.2f}; {len(r['samples_ms'])} starts)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "commands": {k: " ".join(v) for k, v in commands.items()}, "results": result}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
