#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A fleet behind a load balancer: three self-bound instances of the release
# binary on 127.0.0.2-4, a balancer in front, and a rolling restart (each
# instance in turn: SIGTERM, wait for its exit, start it again, wait until the
# balancer routes to it) under strict load through the balancer (loadgen: every
# request counted, nothing retried), with keep-alive and with connection-close
# clients. The balancer is one of:
#
#   haproxy  health-checks /readyz every 200 ms and takes a server out at the
#            first failed check; "routes to it" is its stats page saying UP.
#   nginx    open source: no active health checks, it never asks /readyz.
#            Passive failure handling instead: a refused or reset connection
#            (or a 502/503) takes the server out for fail_timeout (1s) and the
#            request, a GET, goes to the next server. No status to poll either:
#            "routes to it" is fail_timeout elapsed after the instance is ready.
#
# Each mode runs twice: with shutdown.announce set, where any failed request
# fails the script, and with announce 0s, whose failures are only printed, for
# comparison: an instance that stops accepting at once gets the requests the
# balancer sends it before its next health check (HAProxy), or refuses them and
# nginx tries another server.
#
# Usage:
#   tests/fleet/run.sh [--balancer haproxy|nginx] [--bin PATH] [--loadgen PATH]
#                      [--announce DURATION] [--restarts N] [--results FILE]
#
#   --balancer  the load balancer in front (default haproxy)
#   --bin       the service binary (default: target/release/NAME, NAME from
#               Cargo.toml's [package]; CARGO_TARGET_DIR is honoured)
#   --loadgen   the load generator (default: target/release/loadgen)
#   --announce  shutdown.announce of the checked runs (default 1s: at least
#               HAProxy's inter x fall plus a check's round trip)
#   --restarts  rolling restarts per run (default 1)
#   --results   append one tab-separated line per run to FILE (for
#               bench/report.py; see results_line in lib.sh)
#
# Output: one "ok - ..." or "FAIL - ..." line per checked run and one
# "info - ..." line per comparison run, each with the exact counts (prefixed
# "nginx, " with --balancer nginx); the exit status is non-zero when a check
# failed. Logs and loadgen's JSON reports go to a temporary directory, kept
# (and named) when something failed.
# Needs haproxy or nginx, curl and python3; installs nothing. All traffic stays
# on loopback; every wait is bounded.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=lib.sh
source "$REPO/tests/fleet/lib.sh"
NAME=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"/\1/p' "$REPO/Cargo.toml")
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}")
readonly REPO NAME TARGET

# The balancer's frontend and HAProxy's stats page; each instance listens on
# PORT at its own loopback address (all of 127.0.0.0/8 is loopback on Linux).
readonly FRONTEND=127.0.0.1:18100 STATS=127.0.0.1:18109 PORT=18101
readonly HOSTS=(127.0.0.2 127.0.0.3 127.0.0.4)
# The health check, as a load balancer in front of real instances would have it.
readonly CHECK_INTER=200ms CHECK_FALL=1 CHECK_RISE=1
# nginx's passive failure handling: one failed attempt takes a server out for
# a second, as long as a failed health check does in HAProxy's backend.
readonly NGINX_MAX_FAILS=1 NGINX_FAIL_TIMEOUT=1s
readonly CONNECTIONS=16 MODES=(keepalive close)
# Fewer successful requests than this means the load proved nothing.
readonly MIN_OK=500
# Upper bounds, in seconds, for things that take well under a second.
readonly READY_WITHIN=20 LOAD_BOUND=300

BIN=$TARGET/release/$NAME LOADGEN=$TARGET/release/loadgen ANNOUNCE=1s RESTARTS=1
BALANCER=haproxy RESULTS=''
WORK='' BALANCER_PID='' LOAD_PID='' FAILED=0
# Instance N's PID; the counts of the last run.
PIDS=() COUNTS=()

usage() {
	sed -n '/^# Usage:/,/^# Output:/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

die() {
	printf 'fleet: %s\n' "$*" >&2
	FAILED=1
	exit 2
}

say() { printf '# %s\n' "$*"; }

# Stops whatever this script started, by PID, and removes the work directory
# unless a check failed.
cleanup() {
	local pid
	for pid in "${PIDS[@]}" "$LOAD_PID"; do
		if [[ -n $pid ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
	done
	# TERM, not KILL: nginx's master stops its workers, which would outlive it.
	if [[ -n $BALANCER_PID ]]; then
		kill -TERM "$BALANCER_PID" 2>/dev/null || true
		within 10 gone "$BALANCER_PID" || kill -KILL "$BALANCER_PID" 2>/dev/null || true
	fi
	wait 2>/dev/null || true
	if [[ -n $WORK ]]; then
		if ((FAILED)); then
			echo "fleet: logs and reports kept in $WORK" >&2
		else
			rm -rf "$WORK"
		fi
	fi
}

# Whether PID is alive (an exited child not yet reaped is not).
alive() {
	local state
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[[ -n $state && $state != Z ]]
}

gone() { ! alive "$1"; }


# Whether ADDR (host:port) accepts a TCP connection; nothing is sent.
accepts() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

answers_ready() { curl -fs -o /dev/null --max-time 1 "http://$1:$PORT/readyz"; }


# Writes instance N's configuration: its address and shutdown.announce.
write_config() {
	printf '[http]\nlisten = "%s:%s"\n\n[shutdown]\nannounce = "%s"\n' \
		"${HOSTS[$1]}" "$PORT" "$2" >"$WORK/i$1.toml"
}

# Starts instance N self-bound (nothing inherited from a manager that may run
# this script), waits until it answers /readyz and the balancer routes to it.
# RESTART says whether it replaces one stopped under load.
start_instance() {
	local n=$1 restart=${2:-no}
	env -u NOTIFY_SOCKET -u LISTEN_FDS -u LISTEN_PID -u LISTEN_FDNAMES \
		-u WATCHDOG_USEC -u WATCHDOG_PID \
		"$BIN" serve --config "$WORK/i$n.toml" >>"$WORK/i$n.log" 2>&1 &
	PIDS[n]=$!
	within "$READY_WITHIN" answers_ready "${HOSTS[$n]}" ||
		die "instance $n (${HOSTS[$n]}:$PORT) not ready within ${READY_WITHIN}s; see $WORK/i$n.log"
	case $BALANCER in
	haproxy)
		within "$READY_WITHIN" haproxy_sees_up "$n" ||
			die "HAProxy does not see instance $n up within ${READY_WITHIN}s (status: $(haproxy_status "$n"))"
		;;
	nginx)
		# A server nginx took out gets requests again once fail_timeout has passed;
		# before the load nothing has failed, so nothing is out.
		[[ $restart == no ]] || sleep "$NGINX_FAIL_TIMEOUT"
		;;
	esac
}

# Sends SIGNAL to instance N and waits for its exit: within the announce, the
# drain and a margin; a stop must end with status 0.
stop_instance() {
	local n=$1 signal=$2 pid=${PIDS[$1]} status=0
	kill "-$signal" "$pid"
	within 60 gone "$pid" || die "instance $n (PID $pid) still runs 60s after SIG$signal"
	wait "$pid" || status=$?
	PIDS[n]=''
	if [[ $signal == TERM ]] && ((status != 0)); then
		die "instance $n exited with status $status after SIGTERM; see $WORK/i$n.log"
	fi
}

start_haproxy() {
	haproxy_config >"$WORK/haproxy.cfg"
	haproxy -c -q -f "$WORK/haproxy.cfg" || die "HAProxy rejects $WORK/haproxy.cfg"
	haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
	BALANCER_PID=$!
	within "$READY_WITHIN" curl -fs -o /dev/null --max-time 1 "http://$STATS/stats;csv" ||
		die "HAProxy's stats page does not answer; see $WORK/haproxy.log"
}

# nginx in the foreground, everything under $WORK/nginx: -e stderr so that it
# does not even open the packaged error log before reading the configuration.
start_nginx() {
	local dir=$WORK/nginx
	mkdir -p "$dir"
	nginx_config "$dir" >"$dir/nginx.conf"
	nginx -t -q -e stderr -p "$dir" -c "$dir/nginx.conf" 2>"$WORK/nginx.log" ||
		die "nginx rejects $dir/nginx.conf; see $WORK/nginx.log"
	nginx -e stderr -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >>"$WORK/nginx.log" 2>&1 &
	BALANCER_PID=$!
	# Listening is enough. Not a request: with no instance up yet it would fail
	# on every server, and nginx would take them all out for fail_timeout.
	within "$READY_WITHIN" accepts "$FRONTEND" ||
		die "nginx does not listen on $FRONTEND; see $WORK/nginx.log"
}

# One run: a fresh fleet with shutdown.announce = ANNOUNCE, MODE clients
# through the balancer, RESTARTS rolling restarts. Sets COUNTS to failed, total,
# ok, and the statuses and failure kinds seen.
run() {
	local mode=$1 announce=$2 label="$1-announce-$2" n restart
	for n in "${!HOSTS[@]}"; do
		write_config "$n" "$announce"
		start_instance "$n"
	done
	"$LOADGEN" --addr "$FRONTEND" --connections "$CONNECTIONS" --mode "$mode" \
		--duration "${LOAD_BOUND}s" --json "$WORK/$label.json" --quiet \
		2>"$WORK/$label.loadgen.log" &
	LOAD_PID=$!
	sleep 1
	for ((restart = 1; restart <= RESTARTS; restart++)); do
		for n in "${!HOSTS[@]}"; do
			stop_instance "$n" TERM
			start_instance "$n" restart
		done
	done
	sleep 1
	# loadgen stops on SIGINT without failing anything: requests in flight complete.
	kill -INT "$LOAD_PID"
	wait "$LOAD_PID" || die "loadgen failed; see $WORK/$label.loadgen.log"
	LOAD_PID=''
	for n in "${!HOSTS[@]}"; do
		stop_instance "$n" QUIT
	done
	load_counts "$WORK/$label.json" || die "cannot read $WORK/$label.json"
}

main() {
	while (($#)); do
		case $1 in
		--bin) BIN=${2:?--bin needs a path}; shift 2 ;;
		--loadgen) LOADGEN=${2:?--loadgen needs a path}; shift 2 ;;
		--announce) ANNOUNCE=${2:?--announce needs a duration}; shift 2 ;;
		--restarts) RESTARTS=${2:?--restarts needs a number}; shift 2 ;;
		--balancer) BALANCER=${2:?--balancer needs haproxy or nginx}; shift 2 ;;
		--results) RESULTS=$(realpath -m "${2:?--results needs a file}"); shift 2 ;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	[[ -x $BIN ]] || die "no binary at $BIN (cargo build --release --workspace)"
	[[ -x $LOADGEN ]] || die "no load generator at $LOADGEN"
	[[ $BALANCER == haproxy || $BALANCER == nginx ]] || die "--balancer must be haproxy or nginx"
	local tool
	for tool in "$BALANCER" curl python3; do
		command -v "$tool" >/dev/null || die "$tool is needed (apt-get install $tool)"
	done
	[[ $ANNOUNCE != 0s ]] || die "--announce 0s would compare a run with itself"

	WORK=$(mktemp -d)
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	local prefix=''
	case $BALANCER in
	haproxy)
		start_haproxy
		say "$NAME behind HAProxy $FRONTEND: ${#HOSTS[@]} self-bound instances (${HOSTS[*]}:$PORT)," \
			"option httpchk GET /readyz, inter $CHECK_INTER fall $CHECK_FALL rise $CHECK_RISE;" \
			"$CONNECTIONS connections, $RESTARTS rolling restart(s) per run"
		;;
	nginx)
		start_nginx
		prefix='nginx, '
		say "$NAME behind nginx $FRONTEND: ${#HOSTS[@]} self-bound instances (${HOSTS[*]}:$PORT)," \
			"max_fails=$NGINX_MAX_FAILS fail_timeout=$NGINX_FAIL_TIMEOUT," \
			"proxy_next_upstream error timeout http_502 http_503, no active health check;" \
			"$CONNECTIONS connections, $RESTARTS rolling restart(s) per run"
		;;
	esac

	local mode announce failed total ok line
	for mode in "${MODES[@]}"; do
		for announce in "$ANNOUNCE" 0s; do
			run "$mode" "$announce"
			failed=${COUNTS[0]} total=${COUNTS[1]} ok=${COUNTS[2]}
			results_line "$RESULTS" self-bound "$BALANCER" "rolling restart x$RESTARTS" \
				"$mode" "$announce" "${COUNTS[@]}"
			line="$prefix$mode, shutdown.announce $announce: $failed failed of $total"
			line+=" (statuses ${COUNTS[3]}; outcomes ${COUNTS[4]})"
			if [[ $announce == 0s ]]; then
				echo "info - $line (for comparison)"
			elif ((failed == 0 && ok >= MIN_OK)); then
				echo "ok - $line"
			else
				echo "FAIL - $line (expected 0 failed, at least $MIN_OK ok)"
				FAILED=1
			fi
		done
	done
	return "$FAILED"
}

main "$@"
