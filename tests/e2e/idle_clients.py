#!/usr/bin/env python3
"""Idle keep-alive clients, as simple scripts behave: each opens one connection, asks
`GET /version` (which names the answering PID), stays idle, and asks again on the same
connection without checking it first and without retrying.

    idle_clients.py HOST:PORT --clients N --hold SECONDS [--close K] [--json FILE]

Phase 1 at start: every client connects and asks once. Phase 2 after --hold seconds: the
first K clients close their connection, the others ask again. Prints and writes a JSON
report: per client the local port, the PIDs that answered (or the error), so a test can
tell whether the same TCP connection was served by a new process, or was closed.
"""

import argparse
import json
import socket
import sys
import time

REQUEST = b"GET /version HTTP/1.1\r\nHost: e2e\r\n\r\n"


def ask(sock):
    """One request on `sock`; the answering PID, or raises with what went wrong."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = dict(
        (k.strip().lower(), v.strip()) for k, v in (l.split(":", 1) for l in lines[1:])
    )
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server mid-response")
        body += chunk
    if status != 200:
        raise ConnectionError(f"status {status}")
    if headers.get("connection", "").lower() == "close":
        raise ConnectionError("told to close the connection")
    # "NAME VERSION (pid PID)"
    return int(body.decode().rsplit("(pid ", 1)[1].rstrip(")\n"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addr")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--hold", type=float, default=3.0)
    parser.add_argument("--close", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    host, port = args.addr.rsplit(":", 1)

    clients = []
    for _ in range(args.clients):
        sock = socket.create_connection((host, int(port)), timeout=10)
        clients.append({"sock": sock, "port": sock.getsockname()[1]})
    for client in clients:
        try:
            client["before"] = ask(client["sock"])
        except (OSError, ValueError, IndexError) as error:
            client["error"] = f"phase 1: {error}"
    time.sleep(args.hold)
    for i, client in enumerate(clients):
        if i < args.close:
            client["sock"].close()
            client["closed_by_client"] = True
        elif "error" not in client:
            try:
                client["after"] = ask(client["sock"])
            except (OSError, ValueError, IndexError) as error:
                client["error"] = f"phase 2: {error}"
    report = {
        "clients": [
            {k: v for k, v in client.items() if k != "sock"} for client in clients
        ],
        "answered_twice": sum(1 for c in clients if "after" in c),
        "failed": sum(1 for c in clients if "error" in c),
        "pids_after": sorted({c["after"] for c in clients if "after" in c}),
    }
    text = json.dumps(report, indent=1)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    print(
        f"answered twice {report['answered_twice']}, failed {report['failed']}, "
        f"closed by the client {args.close}, PIDs after {report['pids_after']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
