#!/usr/bin/env bash
# Hello-world throughput, seamless against bare axum (bench/naive), alternating in one run.
#
#   bench/ab.sh [--rounds N] [--duration D] [--connections C] [--mode keepalive|close|both]
#               [--seamless BIN] [--naive BIN]
#
# Both serve GET / with the same body, self-bound on loopback (seamless with its default
# configuration: every protection on). Each round runs `wrk -t1` against one, then the other,
# swapping who goes first every round, so that whatever else the machine does hits both alike;
# the figure is the median of the per-round ratios seamless / axum. Needs wrk (Debian: wrk) and
# release builds (`cargo build --release --workspace`).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NAME=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

ROUNDS=6 DURATION=4s CONNECTIONS=64 MODE=both
SEAMLESS=$TARGET/release/$NAME NAIVE=$TARGET/release/naive
readonly SEAMLESS_ADDR=127.0.0.1:18281 NAIVE_ADDR=127.0.0.1:18282

usage() {
	sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}

while (($#)); do
	case $1 in
	--rounds) ROUNDS=$2 ;;
	--duration) DURATION=$2 ;;
	--connections) CONNECTIONS=$2 ;;
	--mode) MODE=$2 ;;
	--seamless) SEAMLESS=$2 ;;
	--naive) NAIVE=$2 ;;
	*) usage ;;
	esac
	shift 2
done
case $MODE in keepalive | close | both) ;; *) usage ;; esac
command -v wrk >/dev/null || {
	echo "ab.sh: wrk is not installed (apt-get install wrk)" >&2
	exit 2
}

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# The service reads NAME_HTTP__LISTEN (its name in upper case, dashes as underscores).
prefix=$(tr 'a-z-' 'A-Z_' <<<"$NAME")
env "${prefix}_HTTP__LISTEN=$SEAMLESS_ADDR" "${prefix}_LOG__LEVEL=warn" \
	"$SEAMLESS" serve --config /dev/null >/dev/null 2>&1 &
PIDS+=("$!")
NAIVE_LISTEN=$NAIVE_ADDR "$NAIVE" >/dev/null 2>&1 &
PIDS+=("$!")
for addr in "$SEAMLESS_ADDR" "$NAIVE_ADDR"; do
	for _ in $(seq 1 100); do
		curl --silent --fail --output /dev/null "http://$addr/" && break
		sleep 0.05
	done
	curl --silent --fail --output /dev/null "http://$addr/" || {
		echo "ab.sh: nothing answers on $addr" >&2
		exit 1
	}
done

# rps ADDR MODE: requests per second wrk measured.
rps() {
	local header=()
	[[ $2 == close ]] && header=(-H "Connection: close")
	wrk -t1 "-c$CONNECTIONS" "-d$DURATION" "${header[@]}" "http://$1/" |
		awk '/^Requests\/sec/ { print $2 }'
}

modes=(keepalive close)
[[ $MODE == both ]] || modes=("$MODE")
printf '# %s vs axum: wrk -t1 -c%s -d%s, %s rounds, %s cores\n' \
	"$NAME" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$(nproc)"
printf '| mode | round | %s req/s | axum req/s | ratio |\n|---|---|---|---|---|\n' "$NAME"
for mode in "${modes[@]}"; do
	ratios=()
	for ((round = 1; round <= ROUNDS; round++)); do
		if ((round % 2)); then
			a=$(rps "$SEAMLESS_ADDR" "$mode")
			b=$(rps "$NAIVE_ADDR" "$mode")
		else
			b=$(rps "$NAIVE_ADDR" "$mode")
			a=$(rps "$SEAMLESS_ADDR" "$mode")
		fi
		ratio=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')
		ratios+=("$ratio")
		printf '| %s | %d | %.0f | %.0f | %s |\n' "$mode" "$round" "$a" "$b" "$ratio"
	done
	median=$(printf '%s\n' "${ratios[@]}" | sort -n |
		awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
	printf '| %s | median | | | **%s** |\n' "$mode" "$median"
done
