#!/usr/bin/env bash
# Instructions per request, seamless against bare axum (bench/naive), counted by callgrind:
# unlike requests per second, the count does not depend on what else the machine is doing, so
# a change to the per-request path can be judged on a busy 2-core machine.
#
# Usage: bench/instructions.sh [--seconds N] [--top N]
#
# Builds both with the `profiling` profile (release with symbols), runs each under
# `valgrind --tool=callgrind` while loadgen sends keep-alive `GET /` on 8 connections for N
# seconds (default 8), subtracts a run that served one request (start-up and shutdown), and
# divides by the requests answered. With --top, also prints the N functions whose own cost per
# request differs most between the two. Needs valgrind (apt-get install valgrind).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NAME=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
readonly SEAMLESS_ADDR=127.0.0.1:18283 NAIVE_ADDR=127.0.0.1:18284

SECONDS_LOADED=8 TOP=0
while (($#)); do
	case $1 in
	--seconds) SECONDS_LOADED=$2 ;;
	--top) TOP=$2 ;;
	*)
		sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
	shift 2
done
command -v valgrind >/dev/null || {
	echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2
	exit 2
}

(cd "$REPO" && cargo build --quiet --profile profiling -p "$NAME" -p naive &&
	cargo build --quiet --release -p loadgen)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
prefix=$(tr 'a-z-' 'A-Z_' <<<"$NAME")

# run LABEL ADDR SECONDS: one server under callgrind; prints "instructions requests".
run() {
	local label=$1 addr=$2 seconds=$3 pid requests=1 total
	case $label in
	seamless*)
		env "${prefix}_HTTP__LISTEN=$addr" "${prefix}_LOG__LEVEL=warn" \
			valgrind --tool=callgrind --callgrind-out-file="$WORK/$label.out" \
			"$TARGET/profiling/$NAME" serve --config /dev/null >"$WORK/$label.log" 2>&1 &
		;;
	*)
		env NAIVE_LISTEN="$addr" valgrind --tool=callgrind \
			--callgrind-out-file="$WORK/$label.out" \
			"$TARGET/profiling/naive" >"$WORK/$label.log" 2>&1 &
		;;
	esac
	pid=$!
	for _ in $(seq 1 200); do
		curl --silent --fail --output /dev/null "http://$addr/" && break
		sleep 0.1
	done
	if ((seconds > 0)); then
		"$TARGET/release/loadgen" --addr "$addr" --connections 8 --duration "${seconds}s" \
			--threads 1 --quiet --fail-on-error --json "$WORK/$label.json"
		requests=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"] + 1)' \
			"$WORK/$label.json")
	fi
	kill -TERM "$pid"
	wait "$pid" || true
	total=$(callgrind_annotate "$WORK/$label.out" 2>/dev/null |
		awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }')
	echo "$total $requests"
}

per_request() { # LABEL ADDR
	local idle loaded
	read -r idle _ < <(run "$1-idle" "$2" 0)
	read -r loaded requests < <(run "$1" "$2" "$SECONDS_LOADED")
	python3 -c 'import sys; l, i, n = map(int, sys.argv[1:]); print(f"{(l - i) / (n - 1):.0f} {n - 1}")' \
		"$loaded" "$idle" "$requests"
}

read -r seamless seamless_n < <(per_request seamless "$SEAMLESS_ADDR")
read -r naive naive_n < <(per_request naive "$NAIVE_ADDR")
echo "# instructions per keep-alive GET /, callgrind, $(git -C "$REPO" rev-parse --short HEAD)"
echo "| server | requests | instructions/request |"
echo "|---|---|---|"
echo "| $NAME | $seamless_n | $seamless |"
echo "| bare axum | $naive_n | $naive |"
python3 -c 'import sys; s, n = map(int, sys.argv[2:]); print(f"| axum ÷ {sys.argv[1]} | | {n / s:.3f} |")' \
	"$NAME" "$seamless" "$naive"

if ((TOP > 0)); then
	python3 - "$WORK/seamless.out" "$seamless_n" "$WORK/naive.out" "$naive_n" "$TOP" <<'EOF'
import re, subprocess, sys

def own_costs(path, requests):
    """Each function's own instructions per request, by `file:function`."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                          capture_output=True, text=True).stdout
    costs = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(\S.*)$", line)
        if not m or "=>" in line or not re.search(r"\.(rs|c|S|h):", m.group(2)):
            continue
        name = re.sub(r" \[/[^\]]*\]$", "", m.group(2))
        name = re.sub(r"^/\S*/(registry/src/[^/]+|library)/", "", name)
        costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", "")) / requests
    return costs

ours, theirs = own_costs(sys.argv[1], int(sys.argv[2])), own_costs(sys.argv[3], int(sys.argv[4]))
names = sorted(set(ours) | set(theirs), key=lambda k: -(ours.get(k, 0) - theirs.get(k, 0)))
print("\n| seamless | axum | difference | function |\n|---|---|---|---|")
for name in names[: int(sys.argv[5])]:
    a, b = ours.get(name, 0), theirs.get(name, 0)
    print(f"| {a:.0f} | {b:.0f} | {a - b:+.0f} | `{name[:110]}` |")
EOF
fi
