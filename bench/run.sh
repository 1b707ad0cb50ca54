#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Zero-downtime benchmark: seamless installed from its .deb into real Debian
# systems (systemd 252 and 257, booted with systemd-nspawn) and restarted,
# reloaded, upgraded and killed under strict load (loadgen: every request
# counted, nothing retried). Anchors measured in the same run: the textbook
# axum graceful shutdown under the same socket unit (bench/naive) and nginx's
# own reload. Keep-alive clients, thinking and busy, across restarts and
# upgrades with shutdown.keep_connections on and off. Also throughput against
# bare axum, start-up time to READY=1, memory and `systemctl reload` latency.
# Then the fleet tests (tests/fleet/): three instances behind HAProxy and
# behind nginx on the host, rolling restarts and package upgrades under the
# same strict load.
#
# Usage:
#   bench/run.sh [--short | --fleet-only] [--dist bookworm|trixie|all] [--no-build]
#                [--only SCENARIO[,SCENARIO...]] [--cycles N]
#
#   --short     CI mode: few events (restart x3, reload x3, upgrade x2,
#               package upgrade x1, SIGHUP x100), one distribution (trixie
#               unless --dist says otherwise), no anchors, no throughput or
#               footprint, no fleet; the report goes to bench/results/short/
#               instead of BENCHMARKS.md
#   --fleet-only  only the fleet part of a full run: tests/fleet/run.sh behind
#               HAProxy and behind nginx, tests/fleet/systemd.sh on the first
#               --dist (default bookworm), each twice; its section of the
#               report goes to bench/results/fleet/FLEET.md
#   --dist      default: all (full), trixie (short); one after the other since
#               every container shares the host network
#   --no-build  use the binaries and .deb already in target/ instead of
#               running `cargo build --release --workspace` + `cargo deb --no-build`
#   --only      only these scenarios (names of the scenario_* functions
#               without the prefix, e.g. restart), with the counts
#               of a full run (or of --short); no fleet, no host start-up
#               timing; the report goes to bench/results/only/
#   --cycles    throughput cycles (default 4); more give a median that moves
#               less with the machine's other work
#
# Output: "ok - ..." / "FAIL - ..." per correctness check (0 failed requests
# in each seamless restart/reload/upgrade/package-upgrade/SIGHUP scenario,
# each mode; one connection per client across restarts with
# shutdown.keep_connections on), then "N passed, M failed"; the exit status
# is non-zero when a check failed. Performance targets are reported in the
# Markdown report, not asserted. Raw data: bench/results/{full,short,fleet,only}/
# (git-ignored).
# Needs root (systemd-nspawn), python3, curl, and haproxy and nginx for the
# fleet; reuses tests/e2e/ to build and boot the containers.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# Where cargo builds (CI shares one target directory between runs).
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
# shellcheck source=../tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

# Ports of their own: the containers share the host's network, where 8080 (the
# packaged default) may well be taken by a development server.
# naive.socket, nginx.conf and seamless-nosandbox.socket use the next three.
readonly PORT=18080
readonly SEAMLESS_ADDR=127.0.0.1:$PORT NAIVE_ADDR=127.0.0.1:$((PORT + 1)) NGINX_ADDR=127.0.0.1:$((PORT + 2))
readonly NOSANDBOX_ADDR=127.0.0.1:$((PORT + 3))
readonly MACHINES_DIR=${E2E_MACHINES_DIR:-/var/lib/machines}
readonly CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-120}
# Downloaded nginx packages, per distribution, so later runs need no mirror.
readonly NGINX_CACHE=${BENCH_NGINX_CACHE:-/var/cache/seamless-bench}
readonly CONNECTIONS=32
readonly MODES=(keepalive close)
# Fewer successful requests than this means the load proved nothing.
readonly MIN_OK=200
readonly CONFIG=/etc/seamless/seamless.toml
readonly DEFAULT_MESSAGE='Hello from seamless!\n'

SHORT=0 FLEET_ONLY=0 BUILD=1 DISTS=() ARGS_TEXT='' DEB='' ONLY='' CYCLES=4
RES='' CHECKS='' DIST='' CT='' DIR='' STEPS=()
LOAD_PID='' CUR='' STEP_PID='' WATCHDOG_PID='' SUMMARY_PRINTED=0

usage() {
	sed -n '/^# Usage:/,/^# Output:/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

die() {
	printf 'bench: %s\n' "$*" >&2
	exit 2
}

say() { printf '# %s\n' "$*"; }

parse_args() {
	local dist=''
	ARGS_TEXT="$*"
	while (($#)); do
		case $1 in
		--short) SHORT=1; shift ;;
		--fleet-only) FLEET_ONLY=1; shift ;;
		--no-build) BUILD=0; shift ;;
		--dist) dist=${2:?}; shift 2 ;;
		--only) ONLY=${2:?}; shift 2 ;;
		--cycles) CYCLES=${2:?}; shift 2 ;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	((SHORT + FLEET_ONLY < 2)) || die "--short and --fleet-only exclude each other"
	[[ $CYCLES =~ ^[1-9][0-9]*$ ]] || die "--cycles: a positive number, not $CYCLES"
	[[ -z $ONLY ]] || ((FLEET_ONLY == 0)) || die "--only and --fleet-only exclude each other"
	local name
	for name in ${ONLY//,/ }; do
		declare -F "scenario_$name" >/dev/null || die "--only: no scenario $name"
	done
	[[ -n $dist ]] || { ((SHORT)) && dist=trixie || dist=all; }
	case $dist in
	bookworm | trixie) DISTS=("$dist") ;;
	all) DISTS=(bookworm trixie) ;;
	*) die "--dist must be bookworm, trixie or all" ;;
	esac
}

# Event counts. Short mode exists to catch a regression in CI within minutes:
# every kind of disruption once or a few times, nothing that only measures.
set_counts() {
	if ((SHORT)); then
		N_RESTART=3 N_RELOAD=3 N_UPGRADE=2 N_PKG=1 N_SIGHUP=100 N_KILL=0
		STEADY_S=3 ANCHORS=0 PERF=0 FLEET=0
	else
		N_RESTART=20 N_RELOAD=20 N_UPGRADE=10 N_PKG=3 N_SIGHUP=1000 N_KILL=5
		STEADY_S=5 ANCHORS=1 PERF=1 FLEET=1
	fi
	[[ -z $ONLY ]] || FLEET=0
	# Thinking clients of scenario_keep_connections (a short run keeps them:
	# they check the restarts that close no connection).
	KEEP_CLIENTS=200 KEEP_THINK=200ms..2500ms
	# Fleet: runs of each fleet test, rolling restarts per self-bound run.
	FLEET_REPEAT=2 FLEET_RESTARTS=3
	readonly N_RESTART N_RELOAD N_UPGRADE N_PKG N_SIGHUP N_KILL STEADY_S ANCHORS PERF FLEET
	readonly KEEP_CLIENTS KEEP_THINK
	readonly FLEET_REPEAT FLEET_RESTARTS
}

# --- checks ------------------------------------------------------------------

pass() { printf 'ok - %s: %s\n' "$DIST" "$1" | tee -a "$CHECKS"; }

fail() {
	local desc=$1
	shift
	printf 'FAIL - %s: %s\n' "$DIST" "$desc" | tee -a "$CHECKS"
	local line
	for line in "$@"; do
		printf '%s\n' "$line" | sed 's/^/#   /'
	done
}

# --- container helpers -------------------------------------------------------

in_ct() { e2e_exec "$CT" timeout "$CMD_TIMEOUT" "$@" </dev/null; }

# in_ct_bash SCRIPT [ARG...]: a bash script inside the container; it gets
# $EPOCHREALTIME and builtins, so timings do not include process start-up.
in_ct_bash() {
	local script=$1
	shift
	e2e_exec "$CT" timeout "$CMD_TIMEOUT" bash -c "$script" bash "$@" </dev/null
}

prop() { in_ct systemctl show --property "$2" --value "$1"; }

put_file() { e2e_put "$CT" "$@"; }

set_message() {
	put_file "$CONFIG" "message = \"$1\""$'\n'
}

port_in_use() {
	(exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# --- load --------------------------------------------------------------------

# load_begin NAME MODE ADDR [WINDOW_AFTER [CONNECTIONS [LOADGEN-ARG...]]]:
# loadgen in the background, its files under $DIR/NAME-MODE.*; the events
# file collects "NANOS LABEL" lines.
load_begin() {
	local name=$1 mode=$2 addr=$3 after=${4:-1s} conns=${5:-$CONNECTIONS}
	shift $(($# < 5 ? $# : 5))
	CUR=$DIR/$name-$mode
	: >"$CUR.events"
	: >"$CUR.meta"
	rm -f "$CUR.json"
	"$LOADGEN" --addr "$addr" --connections "$conns" --mode "$mode" \
		--events "$CUR.events" --json "$CUR.json" --window-after "$after" \
		--capture-header x-config-generation --quiet "$@" >"$CUR.log" 2>&1 &
	LOAD_PID=$!
	# Every connection established and past its first requests.
	sleep 1
}

mark() { printf '%s %s\n' "$(date +%s%N)" "$1" >>"$CUR.events"; }

meta() { printf '%s=%s\n' "$1" "${2//$'\n'/ }" >>"$CUR.meta"; }

# Stop the load (loadgen finishes requests in flight on SIGINT and reports).
load_end() {
	local settle=${1:-1}
	sleep "$settle"
	kill -INT "$LOAD_PID" 2>/dev/null || true
	if ! _e2e_wait_exit "$LOAD_PID" 30; then
		kill -KILL "$LOAD_PID" 2>/dev/null || true
		echo "loadgen did not stop within 30s" >>"$CUR.log"
	fi
	wait "$LOAD_PID" 2>/dev/null || true
	LOAD_PID=''
	# Other work on a shared machine shows up here (this run itself keeps about
	# 2-3 tasks runnable).
	meta loadavg "$(cut -d' ' -f1 /proc/loadavg)"
}

# "total ok failed" of the report just written, or nothing.
load_totals() {
	[[ -s $CUR.json ]] || return 1
	python3 "$HERE/report.py" totals "$CUR.json"
}

# check_run DESCRIPTION PROBLEMS: 0 failed requests, enough successful ones,
# and every action did what it should.
check_run() {
	local desc=$1 problems=$2 totals total ok failed
	if ! totals=$(load_totals); then
		fail "$desc" "no loadgen report ($(tail -n 3 "$CUR.log" 2>/dev/null))"
		return 0
	fi
	read -r total ok failed <<<"$totals"
	if ((failed == 0 && ok >= MIN_OK)) && [[ -z $problems ]]; then
		pass "$desc: 0 of $total requests failed"
	else
		local why=()
		((failed == 0)) || why+=("$failed of $total requests failed: $(python3 "$HERE/report.py" outcomes "$CUR.json")")
		((ok >= MIN_OK)) || why+=("only $ok requests succeeded (want >= $MIN_OK)")
		[[ -z $problems ]] || why+=("$problems")
		fail "$desc" "${why[@]}"
	fi
}

# --- seamless scenarios --------------------------------------------------------

main_pid() { prop seamless.service MainPID; }

# Steady state: the reference for latency during disruptions.
scenario_steady() {
	local mode
	for mode in "${MODES[@]}"; do
		load_begin seamless-steady "$mode" "$SEAMLESS_ADDR"
		sleep "$STEADY_S"
		load_end 0
		meta events 0
	done
}

# Control: exactly what the reload loop does from outside (rewrite the
# configuration file, ask systemd something, one request), minus the reload.
# On a machine whose CPUs the load already saturates, the driver's own
# processes cost latency too; this run shows how much.
scenario_control() {
	local mode i
	for mode in "${MODES[@]}"; do
		load_begin seamless-control "$mode" "$SEAMLESS_ADDR"
		for ((i = 1; i <= N_RELOAD; i++)); do
			set_message "$DEFAULT_MESSAGE"
			mark "control-$i"
			in_ct systemctl show --property ActiveState seamless.service >/dev/null
			curl --silent --max-time 5 -o /dev/null "http://$SEAMLESS_ADDR/" || true
			sleep 0.25
		done
		load_end
		meta events "$N_RELOAD"
	done
}

# restart_unit UNIT: systemctl restart inside the container; prints its wall
# time and systemd's own view of the new process's start-up, fork
# (ExecMainStart) to READY=1 (ActiveEnter), which includes the sandbox set-up.
restart_unit() {
	# shellcheck disable=SC2016
	in_ct_bash '
		pid=$(systemctl show -p MainPID --value "$1")
		t0=$EPOCHREALTIME
		systemctl restart "$1" || exit 1
		t1=$EPOCHREALTIME
		eval "$(systemctl show -p MainPID -p ExecMainStartTimestampMonotonic \
			-p ActiveEnterTimestampMonotonic "$1" | sed "s/^/P_/")"
		[ "$P_MainPID" != "$pid" ] && [ "$P_MainPID" != 0 ] ||
			{ echo "main PID still $pid"; exit 1; }
		echo "restart_us=$(( ${t1/./} - ${t0/./} )) start_ready_us=$((P_ActiveEnterTimestampMonotonic - P_ExecMainStartTimestampMonotonic))"
	' "$1" 2>&1
}

# restarts_under_load TAG UNIT ADDR MODE: N_RESTART restarts of UNIT under MODE
# load on ADDR; sets PROBLEMS to what went wrong with the restarts themselves.
restarts_under_load() {
	local tag=$1 unit=$2 addr=$3 mode=$4
	load_begin "$tag" "$mode" "$addr"
	PROBLEMS=''
	restart_loop "$unit" "$N_RESTART"
	load_end
	meta events "$N_RESTART"
}

# restart_loop UNIT COUNT: COUNT restarts of UNIT, 0.5 s apart, marked in the
# current load's events; what went wrong is appended to PROBLEMS.
restart_loop() {
	local unit=$1 count=$2 i
	for ((i = 1; i <= count; i++)); do
		restart_once "$unit" "$i"
		sleep 0.5
	done
}

restart_once() { # UNIT N
	local out
	mark "restart-$2"
	if out=$(restart_unit "$1"); then
		meta sample "$out"
	else
		PROBLEMS+="restart $2: $out; "
	fi
}

scenario_restart() {
	local mode
	for mode in "${MODES[@]}"; do
		restarts_under_load seamless-restart seamless.service "$SEAMLESS_ADDR" "$mode"
		check_run "seamless: systemctl restart x$N_RESTART under $mode load" "$PROBLEMS"
	done
}

scenario_reload() {
	local mode i out problems body
	for mode in "${MODES[@]}"; do
		load_begin seamless-reload "$mode" "$SEAMLESS_ADDR"
		problems=''
		for ((i = 1; i <= N_RELOAD; i++)); do
			set_message "reload $mode $i\\n"
			mark "reload-$i"
			if ! out=$(in_ct systemctl reload seamless.service 2>&1); then
				problems+="reload $i: $out; "
			fi
			body=$(curl --silent --max-time 5 "http://$SEAMLESS_ADDR/" 2>&1 || true)
			[[ $body == "reload $mode $i" ]] || problems+="reload $i: served \"$body\"; "
			sleep 0.25
		done
		load_end
		meta events "$N_RELOAD"
		check_run "seamless: systemctl reload x$N_RELOAD (new message each) under $mode load" "$problems"
	done
}

# upgrade_once N: one binary upgrade, marked in the current load's events;
# what went wrong is appended to PROBLEMS.
upgrade_once() {
	local out
	in_ct sh -c 'cp /usr/bin/seamless /usr/bin/.seamless.new && mv -f /usr/bin/.seamless.new /usr/bin/seamless'
	mark "upgrade-$1"
	# shellcheck disable=SC2016
	if out=$(in_ct_bash '
		pid=$(systemctl show -p MainPID --value seamless.service)
		t0=$EPOCHREALTIME
		said=$(seamless upgrade --pid "$pid" --verdict-file /run/seamless/upgrade-verdict 2>&1) ||
			{ echo "$said"; exit 1; }
		t1=$EPOCHREALTIME
		new=$(systemctl show -p MainPID --value seamless.service)
		[ "$new" != "$pid" ] && [ "$new" != 0 ] || { echo "MainPID still $pid"; exit 1; }
		[ "$(readlink /proc/$new/exe)" = /usr/bin/seamless ] || { echo "PID $new runs $(readlink /proc/$new/exe)"; exit 1; }
		echo "upgrade_us=$(( ${t1/./} - ${t0/./} ))"
	' 2>&1); then
		meta sample "$out"
	else
		PROBLEMS+="upgrade $1: $out; "
	fi
}

# Binary upgrade: a new file renamed over /usr/bin/seamless, then the running
# process starts it with the listening socket and drains once it serves.
scenario_upgrade() {
	local mode i
	for mode in "${MODES[@]}"; do
		load_begin seamless-upgrade "$mode" "$SEAMLESS_ADDR"
		PROBLEMS=''
		for ((i = 1; i <= N_UPGRADE; i++)); do
			upgrade_once "$i"
			sleep 0.5
		done
		load_end
		meta events "$N_UPGRADE"
		check_run "seamless: binary upgrade (seamless upgrade) x$N_UPGRADE under $mode load" "$PROBLEMS"
	done
	local state
	state=$(prop seamless.service ActiveState)
	[[ $state == active ]] || fail "seamless.service active after the upgrades" "ActiveState=$state"
}

PKG_SEQ=0

scenario_pkg_upgrade() {
	local mode i out problems want got pid
	for mode in "${MODES[@]}"; do
		load_begin seamless-pkg-upgrade "$mode" "$SEAMLESS_ADDR"
		problems=''
		for ((i = 1; i <= N_PKG; i++)); do
			PKG_SEQ=$((PKG_SEQ + 1))
			want=$(dpkg-deb --field "$RES/debs/seamless-bench$PKG_SEQ.deb" Version)
			pid=$(main_pid)
			mark "pkg-upgrade-$i"
			if ! out=$(in_ct dpkg -i "/root/seamless-bench$PKG_SEQ.deb" 2>&1); then
				problems+="dpkg -i $want: $out; "
			fi
			# shellcheck disable=SC2016 # dpkg-query's own format syntax
			got=$(in_ct dpkg-query --show --showformat='${Version}' seamless)
			[[ $got == "$want" ]] || problems+="installed $got, not $want; "
			[[ $(main_pid) != "$pid" ]] || problems+="$want: service not restarted; "
			sleep 0.5
		done
		load_end
		meta events "$N_PKG"
		check_run "seamless: package upgrade (dpkg -i, higher version) x$N_PKG under $mode load" "$problems"
	done
}

# SIGHUP as fast as a shell can send it, to the main process directly.
scenario_sighup() {
	local mode out problems pid
	for mode in "${MODES[@]}"; do
		load_begin seamless-sighup "$mode" "$SEAMLESS_ADDR"
		problems=''
		pid=$(main_pid)
		mark "sighup-burst"
		# shellcheck disable=SC2016
		if out=$(in_ct_bash '
			t0=$EPOCHREALTIME
			for ((i = 0; i < $2; i++)); do kill -HUP "$1" || exit 1; done
			t1=$EPOCHREALTIME
			echo "burst_us=$(( ${t1/./} - ${t0/./} ))"
		' "$pid" "$N_SIGHUP" 2>&1); then
			meta sample "$out"
		else
			problems+="kill -HUP: $out; "
		fi
		# Coalesced reloads finish, the unit leaves "reloading".
		local deadline=$((SECONDS + 20)) state=''
		while ((SECONDS < deadline)); do
			state=$(prop seamless.service ActiveState)
			[[ $state == active ]] && break
			sleep 0.1
		done
		[[ $state == active ]] || problems+="unit is $state after the burst; "
		[[ $(main_pid) == "$pid" ]] || problems+="main process changed; "
		load_end
		meta events 1
		meta sighups "$N_SIGHUP"
		check_run "seamless: $N_SIGHUP x kill -HUP in a tight loop under $mode load" "$problems"
	done
}

# kill -9: requests are lost by nature; measured, not checked.
scenario_kill() {
	local mode i out
	for mode in "${MODES[@]}"; do
		load_begin seamless-kill "$mode" "$SEAMLESS_ADDR" 2500ms
		for ((i = 1; i <= N_KILL; i++)); do
			mark "kill-$i"
			# shellcheck disable=SC2016
			out=$(in_ct_bash '
				pid=$(systemctl show -p MainPID --value seamless.service)
				t0=$EPOCHREALTIME
				kill -KILL "$pid"
				for ((n = 0; n < 1000; n++)); do
					eval "$(systemctl show -p MainPID -p ActiveState seamless.service | sed "s/^/P_/")"
					if [ "$P_MainPID" != "$pid" ] && [ "$P_MainPID" != 0 ] && [ "$P_ActiveState" = active ]; then
						t1=$EPOCHREALTIME
						echo "active_again_us=$(( ${t1/./} - ${t0/./} ))"
						exit 0
					fi
					sleep 0.01
				done
				echo "not restarted"; exit 1
			' 2>&1) || true
			meta sample "$out"
			sleep 3
		done
		load_end 0
		meta events "$N_KILL"
	done
}

# --- anchors -------------------------------------------------------------------

scenario_naive_restart() {
	local mode
	for mode in "${MODES[@]}"; do
		restarts_under_load naive-restart naive.service "$NAIVE_ADDR" "$mode"
		[[ -z $PROBLEMS ]] || say "naive: $PROBLEMS"
		meta problems "${PROBLEMS:-none}"
	done
}

scenario_nginx_reload() {
	local mode i out problems
	for mode in "${MODES[@]}"; do
		load_begin nginx-reload "$mode" "$NGINX_ADDR"
		problems=''
		for ((i = 1; i <= N_RELOAD; i++)); do
			mark "reload-$i"
			out=$(in_ct nginx -c /etc/nginx/bench.conf -s reload 2>&1) || problems+="reload $i: $out; "
			sleep 0.5
		done
		load_end
		meta events "$N_RELOAD"
		[[ -z $problems ]] || say "nginx: $problems"
		meta problems "${problems:-none}"
	done
}

# --- restarts that close no connection -------------------------------------------

readonly KEEP_OFF_DROPIN=/etc/seamless/seamless.d/50-bench-keep-off.toml

# keep_run NAME UNIT ADDR CLIENTS [LOADGEN-ARG...]: keep-alive load from
# CLIENTS workers across N_RESTART restarts of UNIT; sets PROBLEMS.
keep_run() {
	local name=$1 unit=$2 addr=$3 clients=$4
	shift 4
	load_begin "$name" keepalive "$addr" 1s "$clients" "$@"
	# Every client has its connection and has used it before the first restart.
	sleep 2
	PROBLEMS=''
	restart_loop "$unit" "$N_RESTART"
	# Long enough for every client to send once more after the last restart
	# (think time at most 2.5 s), on the connection it then holds.
	load_end 3
	meta events "$N_RESTART"
	meta clients "$clients"
}

# "failed total connections_opened max_connections_per_worker" of the load
# just ended.
keep_counts() {
	[[ -s $CUR.json ]] || return 1
	python3 "$HERE/report.py" fields "$CUR.json" failed total connections_opened max_connections_per_worker
}

# check_keep DESCRIPTION CLIENTS: 0 failed, enough successful requests, and
# exactly one connection per client over the whole run.
check_keep() {
	local desc=$1 clients=$2 counts failed total opened most totals ok
	if ! counts=$(keep_counts) || ! totals=$(load_totals); then
		fail "$desc" "no loadgen report ($(tail -n 3 "$CUR.log" 2>/dev/null))"
		return 0
	fi
	read -r failed total opened most <<<"$counts"
	read -r _ ok _ <<<"$totals"
	if ((failed == 0 && opened == clients && ok >= MIN_OK)) && [[ -z $PROBLEMS ]]; then
		pass "$desc: 0 of $total requests failed, $opened connections for $clients clients (at most $most per client)"
	else
		local why=()
		((failed == 0)) || why+=("$failed of $total requests failed: $(python3 "$HERE/report.py" outcomes "$CUR.json")")
		((opened == clients)) || why+=("$opened connections opened for $clients clients (at most $most per client)")
		((ok >= MIN_OK)) || why+=("only $ok requests succeeded (want >= $MIN_OK)")
		[[ -z $PROBLEMS ]] || why+=("$PROBLEMS")
		fail "$desc" "${why[@]}"
	fi
}

# note_keep LABEL: the counts of a comparison run, printed, not checked.
note_keep() {
	local counts failed total opened most
	counts=$(keep_counts) || { say "$DIST: $1: no loadgen report"; return 0; }
	read -r failed total opened most <<<"$counts"
	say "$DIST: $1: $failed of $total requests failed, $opened connections (at most $most per client)${PROBLEMS:+; $PROBLEMS}"
	meta problems "${PROBLEMS:-none}"
}

# Restarts that close no connection. Clients that think 0.2-2.5 s between
# requests and reuse their connection without checking it (as simple clients
# do) across restarts of seamless as packaged, of seamless with
# shutdown.keep_connections = false (idle connections closed after linger,
# the behaviour before the fd store) and of the naive anchor; then busy
# clients (closed loop) across restarts and binary upgrades, alternating.
scenario_keep_connections() {
	local think=(--think "$KEEP_THINK")
	keep_run seamless-keep-thinking seamless.service "$SEAMLESS_ADDR" "$KEEP_CLIENTS" "${think[@]}"
	check_keep "seamless: $KEEP_CLIENTS thinking keep-alive clients across $N_RESTART restarts" "$KEEP_CLIENTS"
	if ((ANCHORS)); then
		put_file "$KEEP_OFF_DROPIN" "[shutdown]"$'\n'"keep_connections = false"$'\n'
		in_ct systemctl reload seamless.service
		keep_run seamless-keep-off-thinking seamless.service "$SEAMLESS_ADDR" "$KEEP_CLIENTS" "${think[@]}"
		in_ct rm -f "$KEEP_OFF_DROPIN"
		in_ct systemctl reload seamless.service
		note_keep "seamless, keep_connections = false, $KEEP_CLIENTS thinking clients, $N_RESTART restarts"
		keep_run naive-keep-thinking naive.service "$NAIVE_ADDR" "$KEEP_CLIENTS" "${think[@]}"
		note_keep "naive, $KEEP_CLIENTS thinking clients, $N_RESTART restarts"
	fi

	local i last=$((N_RESTART > N_UPGRADE ? N_RESTART : N_UPGRADE))
	load_begin seamless-keep-busy keepalive "$SEAMLESS_ADDR"
	PROBLEMS=''
	for ((i = 1; i <= last; i++)); do
		if ((i <= N_RESTART)); then
			restart_once seamless.service "$i"
			sleep 0.5
		fi
		if ((i <= N_UPGRADE)); then
			upgrade_once "$i"
			sleep 0.5
		fi
	done
	load_end
	meta events "$((N_RESTART + N_UPGRADE))"
	meta restarts "$N_RESTART"
	meta upgrades "$N_UPGRADE"
	meta clients "$CONNECTIONS"
	check_keep "seamless: $CONNECTIONS busy keep-alive clients across $N_RESTART restarts and $N_UPGRADE binary upgrades" "$CONNECTIONS"
}

# HTTPS across restarts: the certificate installed the README's way (HTTPS:
# the key through LoadCredential=, seamless-https.socket moved by a drop-in to
# a port of its own), then busy keep-alive clients over TLS across
# N_TLS_RESTART restarts, and the same over plain HTTP for contrast. Plain
# connections stay open across a restart (the fd store); TLS connections are
# drained instead, so each TLS client reconnects, once per restart at most.
# Checked: 0 failed requests in both, one connection per plain client.
scenario_tls_restart() {
	local n=10 addr=127.0.0.1:$((PORT + 4)) tls=$DIR/tls counts
	local desc="seamless: $CONNECTIONS busy HTTPS keep-alive clients across $n restarts"
	if port_in_use "$addr"; then
		fail "$desc" "$addr is already in use on this host"
		return 0
	fi
	mkdir -p "$tls"
	# A CA and an ECDSA P-256 leaf for localhost and 127.0.0.1, made for this run.
	printf '%s\n' '[req]' 'distinguished_name = dn' '[dn]' '[ca]' \
		'basicConstraints = critical, CA:TRUE' 'keyUsage = critical, keyCertSign' '[leaf]' \
		'basicConstraints = critical, CA:FALSE' 'extendedKeyUsage = serverAuth' \
		'subjectAltName = DNS:localhost, IP:127.0.0.1' >"$tls/openssl.cnf"
	{
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/ca.key"
		openssl req -x509 -new -key "$tls/ca.key" -subj /CN=seamless-bench-ca -days 2 \
			-config "$tls/openssl.cnf" -extensions ca -out "$tls/ca.pem"
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/key.pem"
		openssl req -new -key "$tls/key.pem" -subj /CN=localhost -config "$tls/openssl.cnf" \
			-out "$tls/leaf.csr"
		openssl x509 -req -in "$tls/leaf.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
			-CAcreateserial -days 2 -extfile "$tls/openssl.cnf" \
			-extensions leaf -out "$tls/cert.pem"
	} >"$tls/openssl.log" 2>&1
	put_file /etc/seamless/tls/cert.pem "$(cat "$tls/cert.pem")"$'\n'
	put_file /etc/seamless/tls/key.pem "$(cat "$tls/key.pem")"$'\n'
	in_ct chmod 600 /etc/seamless/tls/key.pem
	put_file /etc/systemd/system/seamless.service.d/https.conf \
		$'[Unit]\nWants=seamless-https.socket\n[Service]\nLoadCredential=tls.key:/etc/seamless/tls/key.pem\n'
	put_file /etc/systemd/system/seamless-https.socket.d/address.conf \
		"[Socket]"$'\n'"ListenStream="$'\n'"ListenStream=$addr"$'\n'
	put_file /etc/seamless/seamless.d/tls.toml \
		$'[tls]\ncertificate = "/etc/seamless/tls/cert.pem"\nkey = "tls.key"\n'
	in_ct systemctl daemon-reload
	in_ct systemctl enable --quiet seamless-https.socket
	in_ct systemctl restart seamless.service
	local curl_tls=(--cacert "$tls/ca.pem" --resolve "localhost:${addr##*:}:127.0.0.1")
	if ! curl --silent --fail --max-time 10 "${curl_tls[@]}" -o /dev/null "https://localhost:${addr##*:}/"; then
		fail "$desc" "no HTTPS answer on $addr" \
			"$(in_ct systemctl status --no-pager seamless.service seamless-https.socket 2>&1 | tail -n 20)"
		return 0
	fi

	local name
	for name in https http; do
		if [[ $name == https ]]; then
			load_begin seamless-https-restart keepalive "$addr" 1s "$CONNECTIONS" \
				--tls --cacert "$tls/ca.pem" --server-name localhost
		else
			load_begin seamless-http-restart keepalive "$SEAMLESS_ADDR" 1s "$CONNECTIONS"
		fi
		sleep 1
		PROBLEMS=''
		restart_loop seamless.service "$n"
		load_end
		meta events "$n"
		meta clients "$CONNECTIONS"
		if [[ $name == http ]]; then
			check_keep "seamless: $CONNECTIONS busy plain HTTP keep-alive clients across $n restarts (HTTPS configured)" "$CONNECTIONS"
			continue
		fi
		if ! counts=$(python3 - "$CUR.json" <<-'PY'
			import json, sys
			r = json.load(open(sys.argv[1]))
			print(r["total"], r["ok"], r["failed"], r["connections_opened"], r["latency_us"]["max"])
		PY
		); then
			fail "$desc" "no loadgen report ($(tail -n 3 "$CUR.log" 2>/dev/null))"
			continue
		fi
		local total ok failed opened max_us
		read -r total ok failed opened max_us <<<"$counts"
		if ((failed == 0 && ok >= MIN_OK)) && [[ -z $PROBLEMS ]]; then
			pass "$desc: 0 of $total requests failed, $opened connections for $CONNECTIONS clients ($((opened - CONNECTIONS)) reconnects), max latency $((max_us / 1000)) ms"
		else
			fail "$desc" "$failed of $total requests failed: $(python3 "$HERE/report.py" outcomes "$CUR.json")" \
				"${PROBLEMS:-restarts ok}"
		fi
	done

	# Back to plain HTTP only, for whatever runs next.
	in_ct rm -f /etc/systemd/system/seamless.service.d/https.conf /etc/seamless/seamless.d/tls.toml
	in_ct systemctl disable --quiet seamless-https.socket
	in_ct systemctl daemon-reload
	in_ct systemctl --quiet stop seamless.service seamless-https.socket
	in_ct systemctl start seamless.socket
}

# nginx from the distribution's archive, installed into the container's
# overlay (the cached tree stays untouched). The packages are kept on the host
# after the first download.
install_nginx() {
	local cache=$NGINX_CACHE/$DIST deb
	# No service may start during installation: nginx.service would bind
	# port 80 of the host network.
	put_file /usr/sbin/policy-rc.d $'#!/bin/sh\nexit 101\n'
	in_ct chmod 755 /usr/sbin/policy-rc.d
	if compgen -G "$cache/*.deb" >/dev/null; then
		in_ct mkdir -p /root/nginx-debs
		for deb in "$cache"/*.deb; do
			e2e_copy_in "$CT" "$deb" "/root/nginx-debs/$(basename "$deb")"
		done
		in_ct sh -c 'dpkg -i /root/nginx-debs/*.deb' >"$DIR/nginx-install.log" 2>&1
	else
		say "downloading nginx for $DIST (cached in $cache afterwards)"
		{
			in_ct apt-get update -q
			in_ct apt-get install -y -q --no-install-recommends nginx
		} >"$DIR/nginx-install.log" 2>&1
		mkdir -p "$cache"
		local f
		for f in $(in_ct sh -c 'ls /var/cache/apt/archives/*.deb'); do
			in_ct cat "$f" >"$cache/$(basename "$f")"
		done
	fi
	in_ct rm -f /usr/sbin/policy-rc.d
	e2e_copy_in "$CT" "$HERE/nginx.conf" /etc/nginx/bench.conf
	in_ct nginx -t -c /etc/nginx/bench.conf >>"$DIR/nginx-install.log" 2>&1
	in_ct systemd-run --quiet --unit=bench-nginx --property=Type=forking \
		--property=PIDFile=/run/bench-nginx.pid /usr/sbin/nginx -c /etc/nginx/bench.conf
	in_ct nginx -v 2>&1 | sed 's/^nginx version: //' >"$DIR/nginx-version"
}

# --- throughput and footprint ------------------------------------------------------

rss_kib() { # UNIT
	# shellcheck disable=SC2016
	in_ct_bash 'awk "/^VmRSS:/ { print \$2 }" /proc/$(systemctl show -p MainPID --value "$1")/status' "$1"
}

# Fresh process, one request answered, then idle for a second.
idle_rss() { # UNIT ADDR
	in_ct systemctl restart "$1"
	curl --silent --fail --max-time 5 -o /dev/null "http://$2/"
	sleep 1
	rss_kib "$1"
}

# Start-up as systemd sees it (fork to READY=1, sandbox set-up included),
# idle, each unit restarted in turn.
scenario_startup() {
	local i unit
	for ((i = 1; i <= 10; i++)); do
		for unit in seamless.service seamless-nosandbox.service naive.service; do
			printf '%s %s\n' "$unit" "$(restart_unit "$unit")" >>"$DIR/startup.txt"
		done
	done
}

# Hello-world throughput: seamless as packaged, seamless without the sandbox,
# bare axum. --cycles cycles (4) of one short round each, alternating the
# order (A B C, C B A, ...): the report compares servers within a cycle, so
# that other work on the machine, which comes and goes, hits all of them alike.
scenario_throughput() {
	set_message "$DEFAULT_MESSAGE"
	in_ct systemctl reload seamless.service
	{
		echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
		echo "seamless_idle_kib=$(idle_rss seamless.service "$SEAMLESS_ADDR")"
		echo "naive_idle_kib=$(idle_rss naive.service "$NAIVE_ADDR")"
	} >"$DIR/footprint.txt"
	local cycle order server unit addr round
	for ((cycle = 1; cycle <= CYCLES; cycle++)); do
		order=(seamless nosandbox naive)
		((cycle % 2)) || order=(naive nosandbox seamless)
		for server in "${order[@]}"; do
			case $server in
			seamless) unit=seamless.service addr=$SEAMLESS_ADDR ;;
			nosandbox) unit=seamless-nosandbox.service addr=$NOSANDBOX_ADDR ;;
			naive) unit=naive.service addr=$NAIVE_ADDR ;;
			esac
			round=$DIR/throughput-$cycle-$server
			"$LOADGEN" --addr "$addr" --connections "$CONNECTIONS" --mode keepalive \
				--duration 3s --json "$round.json" --quiet >"$round.log" 2>&1 &
			LOAD_PID=$!
			sleep 1.5
			echo "${server}_loaded_kib=$(rss_kib "$unit")" >>"$DIR/footprint.txt"
			wait "$LOAD_PID" || true
			LOAD_PID=''
		done
	done
	{
		echo "seamless_after_load_kib=$(rss_kib seamless.service)"
		echo "naive_after_load_kib=$(rss_kib naive.service)"
		echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)"
	} >>"$DIR/footprint.txt"
}

# systemctl reload, from the command's start to the first response with the
# new message (requests through bash's /dev/tcp: no process start-up in the
# measurement), idle service.
scenario_reload_latency() {
	# shellcheck disable=SC2016
	in_ct_bash '
		addr=$2
		get() {
			exec 3<>/dev/tcp/${addr%:*}/${addr##*:} || return 1
			printf "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" >&3
			body=""
			while IFS= read -r -u 3 line; do body=$line; done
			exec 3<&-
		}
		for ((i = 1; i <= $1; i++)); do
			printf "%s\n" "message = \"latency $i\\n\"" >/etc/seamless/seamless.toml
			t0=$EPOCHREALTIME
			systemctl reload seamless.service || { echo "reload $i failed"; exit 1; }
			t1=$EPOCHREALTIME
			tries=0
			until get && [ "$body" = "latency $i" ]; do
				tries=$((tries + 1))
				[ $tries -lt 1000 ] || { echo "reload $i: never served"; exit 1; }
			done
			t2=$EPOCHREALTIME
			echo "$(( ${t1/./} - ${t0/./} )) $(( ${t2/./} - ${t0/./} )) $tries"
		done
	' "$N_RELOAD" "$SEAMLESS_ADDR" >"$DIR/reload-latency.txt" 2>&1 || say "reload latency: $(tail -n1 "$DIR/reload-latency.txt")"
	set_message "$DEFAULT_MESSAGE"
	in_ct systemctl reload seamless.service
}

# --- per distribution --------------------------------------------------------

setup_dist() {
	local i
	e2e_copy_in "$CT" "$DEB" /root/seamless.deb
	for ((i = 1; i <= 2 * N_PKG; i++)); do
		e2e_copy_in "$CT" "$RES/debs/seamless-bench$i.deb" "/root/seamless-bench$i.deb"
	done
	local out
	if ! out=$(in_ct dpkg -i /root/seamless.deb 2>&1); then
		fail "dpkg -i $(basename "$DEB")" "$out"
		return 1
	fi
	# The operator's way to move the socket (README): a drop-in, then one
	# restart of the socket unit, before the service ever ran.
	put_file /etc/systemd/system/seamless.socket.d/address.conf \
		"[Socket]"$'\n'"ListenStream="$'\n'"ListenStream=$SEAMLESS_ADDR"$'\n'
	in_ct systemctl daemon-reload
	in_ct systemctl restart seamless.socket
	if ! curl --silent --fail --max-time 10 -o /dev/null "http://$SEAMLESS_ADDR/"; then
		fail "seamless answers after installation" "$(in_ct systemctl status --no-pager seamless.service 2>&1 | tail -n 20)"
		return 1
	fi
	if needs_naive; then
		e2e_copy_in "$CT" "$NAIVE" /usr/local/bin/naive
		in_ct chmod 755 /usr/local/bin/naive
		e2e_copy_in "$CT" "$HERE/units/naive.socket" /etc/systemd/system/naive.socket
		e2e_copy_in "$CT" "$HERE/units/naive.service" /etc/systemd/system/naive.service
		in_ct systemctl daemon-reload
		in_ct systemctl start naive.socket
		curl --silent --fail --max-time 10 -o /dev/null "http://$NAIVE_ADDR/"
	fi
	if has_step scenario_startup || has_step scenario_throughput; then
		e2e_copy_in "$CT" "$HERE/units/seamless-nosandbox.socket" /etc/systemd/system/seamless-nosandbox.socket
		e2e_copy_in "$CT" "$HERE/units/seamless-nosandbox.service" /etc/systemd/system/seamless-nosandbox.service
		in_ct systemctl daemon-reload
		in_ct systemctl start seamless-nosandbox.socket
		curl --silent --fail --max-time 10 -o /dev/null "http://$NOSANDBOX_ADDR/"
	fi
	if has_step scenario_nginx_reload; then
		install_nginx
		curl --silent --fail --max-time 10 -o /dev/null "http://$NGINX_ADDR/"
	fi
}

has_step() {
	local step
	for step in "${STEPS[@]}"; do
		[[ $step != "$1" ]] || return 0
	done
	return 1
}

needs_naive() {
	has_step scenario_naive_restart || has_step scenario_startup || has_step scenario_throughput ||
		{ ((ANCHORS)) && has_step scenario_keep_connections; }
}

# The scenarios of this run, in order, into STEPS.
plan_steps() {
	if [[ -n $ONLY ]]; then
		local name
		STEPS=()
		for name in ${ONLY//,/ }; do
			STEPS+=("scenario_$name")
		done
		return
	fi
	STEPS=(scenario_steady scenario_control scenario_restart scenario_reload scenario_upgrade
		scenario_pkg_upgrade scenario_sighup)
	((N_KILL == 0)) || STEPS+=(scenario_kill)
	((ANCHORS == 0)) || STEPS+=(scenario_naive_restart scenario_nginx_reload)
	STEPS+=(scenario_keep_connections)
	((SHORT)) || STEPS+=(scenario_tls_restart)
	((PERF == 0)) || STEPS+=(scenario_startup scenario_throughput scenario_reload_latency)
}

# run_step FUNCTION: in a subshell with errexit, so that an unexpected error
# ends only that step, reported as a failure, and takes its load generator
# with it. Run in the background and waited for: errexit does not apply to
# anything run as part of `||`, `&&` or `if`.
run_step() {
	local fn=$1 rc=0 started=$SECONDS
	(
		set -eE
		trap 'exit 143' TERM
		trap '[[ -z $LOAD_PID ]] || kill -KILL "$LOAD_PID" 2>/dev/null || true' EXIT
		trap 'fail "$fn stopped: \"$BASH_COMMAND\" exited $? (line $LINENO)"; exit 86' ERR
		"$fn"
	) &
	STEP_PID=$!
	wait "$STEP_PID" || rc=$?
	STEP_PID=''
	((rc == 0 || rc == 86)) || fail "$fn ended with status $rc"
	say "$DIST: $fn: $((SECONDS - started))s"
	return "$rc"
}

run_dist() {
	DIST=$1
	CT=seamless-bench-$DIST
	DIR=$RES/$DIST
	mkdir -p "$DIR"
	# shellcheck disable=SC2034 # read by e2e_boot in lib.sh
	E2E_CONSOLE_DIR=$DIR
	local addr
	for addr in "$SEAMLESS_ADDR" "$NAIVE_ADDR" "$NGINX_ADDR" "$NOSANDBOX_ADDR"; do
		if port_in_use "$addr"; then
			fail "boot: $addr is already in use on this host"
			return 0
		fi
	done
	"$REPO/tests/e2e/rootfs.sh" "$DIST" >"$DIR/rootfs.log" 2>&1 ||
		{ fail "root filesystem for $DIST" "$(tail -n 20 "$DIR/rootfs.log")"; return 0; }
	if ! e2e_boot "$CT" "$MACHINES_DIR/e2e-$DIST" 2>"$DIR/boot.log"; then
		fail "boot $DIST" "$(cat "$DIR/boot.log")"
		return 0
	fi
	in_ct systemctl --version | awk 'NR == 1 { print $2 }' >"$DIR/systemd-version"
	# shellcheck disable=SC2016 # expanded inside the container
	in_ct sh -c '. /etc/os-release; echo "$PRETTY_NAME"' >"$DIR/os-release"
	say "$DIST: $(cat "$DIR/os-release"), systemd $(cat "$DIR/systemd-version") booted"
	plan_steps
	if run_step setup_dist; then
		local step
		for step in "${STEPS[@]}"; do
			run_step "$step" || true
		done
	else
		say "$DIST: setup failed, scenarios skipped"
	fi
	in_ct journalctl --no-pager -o short-monotonic >"$DIR/journal.txt" 2>&1 || true
	e2e_shutdown "$CT" || fail "shutdown: container did not power off cleanly"
	CT=''
}

# --- fleet ---------------------------------------------------------------------------

# Copies a fleet script's output to stdout and its "ok"/"FAIL" lines, labelled
# "fleet, LABEL", to the checks.
fleet_checks() {
	local label=$1 line
	while IFS= read -r line; do
		printf '%s\n' "$line"
		case $line in
		'ok - '* | 'FAIL - '*)
			printf '%s - fleet, %s: %s\n' "${line%% - *}" "$label" "${line#* - }" >>"$CHECKS"
			;;
		esac
	done
}

# fleet_run LABEL SCRIPT [ARG...]: one fleet script, its counts appended to
# $RES/fleet/results.tsv; a script that ends without saying why fails too.
fleet_run() {
	local label=$1 rc=0
	shift
	"$@" --results "$RES/fleet/results.tsv" 2>&1 | fleet_checks "$label" || rc=$?
	# 1: a check failed, and said so above.
	((rc == 0 || rc == 1)) || DIST=fleet fail "$label: ${1#"$REPO"/} ended with status $rc"
}

# Three instances behind a balancer on the host (tests/fleet/). After the
# containers of the distributions are gone: the fleet has its own, and ports
# 18100-18109 on the host.
run_fleet() {
	local dir=$RES/fleet started=$SECONDS i balancer label
	mkdir -p "$dir"
	{
		echo "command=bench/run.sh${ARGS_TEXT:+ $ARGS_TEXT}"
		echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "restarts=$FLEET_RESTARTS"
		echo "haproxy=$(haproxy -v | awk 'NR == 1 { print $3 }')"
		echo "nginx=$(nginx -v 2>&1 | sed 's|^.*nginx/||')"
	} >"$dir/run.txt"
	for ((i = 1; i <= FLEET_REPEAT; i++)); do
		for balancer in haproxy nginx; do
			say "fleet: self-bound behind $balancer, run $i of $FLEET_REPEAT"
			# run.sh's own lines start with "nginx, " behind nginx.
			label=self-bound
			[[ $balancer == nginx ]] || label+=", $balancer"
			fleet_run "$label" "$REPO/tests/fleet/run.sh" --balancer "$balancer" \
				--bin "$SEAMLESS" --loadgen "$LOADGEN" --restarts "$FLEET_RESTARTS"
		done
	done
	for ((i = 1; i <= FLEET_REPEAT; i++)); do
		say "fleet: ${DISTS[0]} machines behind haproxy, run $i of $FLEET_REPEAT"
		fleet_run "${DISTS[0]} machines, haproxy" "$REPO/tests/fleet/systemd.sh" --deb "$DEB" \
			--loadgen "$LOADGEN" --dist "${DISTS[0]}" --announce 1s
	done
	echo "elapsed_s=$((SECONDS - started))" >>"$dir/run.txt"
	say "fleet: $((SECONDS - started))s"
}

# --- whole run -------------------------------------------------------------------

build() {
	if ((BUILD)); then
		say "cargo build --release --workspace"
		(cd "$REPO" && cargo build --release --workspace --quiet)
		say "cargo deb --no-build"
		# cargo deb prints the path of the package it wrote.
		DEB=$(cd "$REPO" && cargo deb --no-build --quiet | tail -n1)
	else
		local f
		for f in "$TARGET"/debian/seamless_*.deb; do
			[[ -f $f && ( -z $DEB || $f -nt $DEB ) ]] && DEB=$f
		done
	fi
	[[ -n $DEB && -f $DEB ]] || die "no package in target/debian (run without --no-build)"
	LOADGEN=$TARGET/release/loadgen
	NAIVE=$TARGET/release/naive
	SEAMLESS=$TARGET/release/seamless
	local f
	for f in "$LOADGEN" "$NAIVE" "$SEAMLESS"; do
		[[ -x $f ]] || die "missing $f (run without --no-build)"
	done
}

# The package with "+benchN" appended to its version: same files, a higher
# version each time, so dpkg runs the full upgrade path of the maintainer
# scripts (as tests/e2e/run.sh does).
make_upgrade_debs() {
	local tmp version i
	mkdir -p "$RES/debs"
	tmp=$(mktemp -d)
	dpkg-deb --raw-extract "$DEB" "$tmp/pkg"
	version=$(dpkg-deb --field "$DEB" Version)
	for ((i = 1; i <= 2 * N_PKG; i++)); do
		sed -i "s/^Version: .*/Version: ${version}+bench$i/" "$tmp/pkg/DEBIAN/control"
		dpkg-deb --root-owner-group --build "$tmp/pkg" "$RES/debs/seamless-bench$i.deb" >/dev/null
	done
	rm -rf "$tmp"
}

cleanup() {
	local rc=$?
	if [[ -n $STEP_PID ]]; then
		kill -TERM "$STEP_PID" 2>/dev/null || true
		_e2e_wait_exit "$STEP_PID" 10 || kill -KILL "$STEP_PID" 2>/dev/null || true
	fi
	[[ -z $WATCHDOG_PID ]] || kill -TERM "$WATCHDOG_PID" 2>/dev/null || true
	e2e_cleanup
	if ((SUMMARY_PRINTED == 0)) && [[ -n $CHECKS ]]; then
		DIST=run fail "benchmark aborted (exit status $rc)"
		summary || true
	fi
}

summary() {
	local passed failed
	passed=$(grep -c '^ok' "$CHECKS" || true)
	failed=$(grep -c '^FAIL' "$CHECKS" || true)
	SUMMARY_PRINTED=1
	printf '%d passed, %d failed\n' "$passed" "$failed"
	((failed == 0))
}

# start_watchdog SECONDS LOCK-FD: TERM to this script when time runs out. It
# must not keep the run lock open, nor leave its sleep behind when stopped.
start_watchdog() {
	local limit=$1 lock_fd=$2 me=$$
	(
		exec {lock_fd}>&-
		sleeper=''
		trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
		sleep "$limit" &
		sleeper=$!
		wait "$sleeper"
		printf 'bench: time limit of %ss reached, aborting\n' "$limit" >&2
		kill -TERM "$me"
	) </dev/null >/dev/null 2>&1 &
	WATCHDOG_PID=$!
}

main() {
	parse_args "$@"
	set_counts
	((EUID == 0)) || die "must run as root (systemd-nspawn)"
	local tool
	for tool in python3 curl dpkg-deb flock; do
		command -v "$tool" >/dev/null || die "$tool is required on the host"
	done
	if ((FLEET || FLEET_ONLY)); then
		for tool in haproxy nginx systemd-nspawn; do
			command -v "$tool" >/dev/null || die "$tool is required on the host for the fleet"
		done
	fi
	local started=$SECONDS
	build

	# Runs of this benchmark and of tests/e2e/run.sh share port 8080: the
	# second one waits for the first.
	mkdir -p "$E2E_STATE_DIR"
	exec {lock}>"$E2E_STATE_DIR/run.lock"
	local waited=$SECONDS
	flock -w 1800 "$lock" || die "another run holds $E2E_STATE_DIR/run.lock"
	waited=$((SECONDS - waited))
	((waited == 0)) || say "waited ${waited}s for $E2E_STATE_DIR/run.lock"

	local kind=full
	((SHORT == 0)) || kind=short
	((FLEET_ONLY == 0)) || kind=fleet
	[[ -z $ONLY ]] || kind=only
	RES=$HERE/results/$kind
	rm -rf "$RES"
	mkdir -p "$RES"
	CHECKS=$RES/checks.tap
	: >"$CHECKS"
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	start_watchdog "${BENCH_TIMEOUT:-$((SHORT ? 600 : FLEET_ONLY || ${#ONLY} ? 1200 : 3600))}" "$lock"
	{
		echo "command=bench/run.sh${ARGS_TEXT:+ $ARGS_TEXT}"
		echo "kind=$kind"
		echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "deb=$(basename "$DEB")"
		echo "connections=$CONNECTIONS"
		echo "git=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
	} >"$RES/run.txt"

	if ((FLEET_ONLY)); then
		# tests/fleet/systemd.sh takes the run lock itself.
		exec {lock}>&-
		run_fleet
		echo "elapsed_s=$((SECONDS - started - waited))" >>"$RES/run.txt"
		python3 "$HERE/report.py" fleet "$RES/fleet" "$RES/FLEET.md"
		say "report: ${RES#"$REPO"/}/FLEET.md ($((SECONDS - started - waited))s)"
		summary
		return
	fi
	make_upgrade_debs
	local dist
	for dist in "${DISTS[@]}"; do
		run_dist "$dist"
	done
	if ((FLEET)); then
		exec {lock}>&-
		run_fleet
	fi
	DIST=host
	if ((PERF)) && [[ -z $ONLY ]]; then
		say "start to READY=1 on the host (20 starts each)"
		python3 "$HERE/ready_time.py" --runs 20 --json "$RES/ready-time.json" \
			seamless="$SEAMLESS" naive="$NAIVE"
	fi
	echo "elapsed_s=$((SECONDS - started - waited))" >>"$RES/run.txt"

	local out=$REPO/BENCHMARKS.md
	((SHORT == 0)) && [[ -z $ONLY ]] || out=$RES/BENCHMARKS.md
	python3 "$HERE/report.py" render "$RES" "$out"
	say "report: ${out#"$REPO"/}; raw data: ${RES#"$REPO"/}/ ($((SECONDS - started - waited))s)"
	summary
}

main "$@"
