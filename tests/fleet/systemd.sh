#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The fleet as it is deployed: three Debian machines (systemd-nspawn
# containers booted from one distribution's cached root filesystem, sharing
# the host network), the same .deb installed on each, systemd holding each
# instance's listening socket on 127.0.0.(i+2):18101, and HAProxy on the host
# in front of them, health-checking /readyz every 200 ms (the backend of
# tests/fleet/run.sh). Under strict load through HAProxy (loadgen: every
# request counted, nothing retried), with keep-alive and connection-close
# clients:
#
#   restart  a rolling `systemctl restart NAME.service`: each machine in turn,
#            restarted, then waited for until HAProxy sees it UP again;
#   upgrade  a rolling package upgrade: each machine in turn, `dpkg -i` of the
#            --deb package repacked with a higher version (the maintainer
#            scripts restart the service), then waited for the same way.
#
# Each runs with shutdown.announce set (any failed request fails the script)
# and with announce 0s, whose counts are only printed: systemd keeps the
# socket open across the restart, so a refused connection is not expected
# even then, but HAProxy may still send requests to a draining instance.
#
# Usage:
#   tests/fleet/systemd.sh --deb PATH [--loadgen PATH] [--dist bookworm|trixie]
#                          [--announce DURATION] [--actions restart,upgrade]
#                          [--results FILE]
#
#   --deb       the package under test (cargo deb → target/debian/*.deb)
#   --loadgen   the load generator (default: target/release/loadgen;
#               CARGO_TARGET_DIR is honoured)
#   --dist      the cached root filesystem all three boot (default bookworm)
#   --announce  shutdown.announce of the checked runs (default 1s)
#   --actions   which rolling operations to run (default restart,upgrade)
#   --results   append one tab-separated line per run to FILE (for
#               bench/report.py; see results_line in lib.sh)
#
# Environment: FLEET_TIMEOUT (seconds, default 600) bounds the whole run.
#
# Output: one "ok - ..." or "FAIL - ..." line per check and checked run, one
# "info - ..." line per comparison run, then "N passed, M failed"; the exit
# status is non-zero when a check failed. Logs (consoles, journals, HAProxy,
# loadgen reports) go to e2e-logs/fleet/. Needs root, systemd-nspawn, haproxy,
# curl and python3; takes the e2e run lock, so it never overlaps an e2e run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NAME=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"/\1/p' "$REPO/Cargo.toml")
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}")
readonly HERE REPO NAME TARGET SERVICE=$NAME.service SOCKET=$NAME.socket
[[ -n $NAME ]] || { echo "fleet: no [package] name in $REPO/Cargo.toml" >&2; exit 2; }
# shellcheck source=../e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

readonly FRONTEND=127.0.0.1:18100 STATS=127.0.0.1:18109 PORT=18101
readonly HOSTS=(127.0.0.2 127.0.0.3 127.0.0.4)
readonly CHECK_INTER=200ms CHECK_FALL=1 CHECK_RISE=1
readonly CONNECTIONS=16 MODES=(keepalive close)
# Fewer successful requests than this means the load proved nothing.
readonly MIN_OK=500
# Upper bounds, in seconds.
readonly UP_WITHIN=30 LOAD_BOUND=300 CMD_TIMEOUT=90
readonly TIMEOUT=${FLEET_TIMEOUT:-600}
readonly MACHINES_DIR=${E2E_MACHINES_DIR:-/var/lib/machines}
readonly LOG_DIR=$REPO/e2e-logs/fleet
readonly SOCKET_DROPIN=/etc/systemd/system/$SOCKET.d/50-fleet.conf
readonly CONFIG_DROPIN=/etc/$NAME/$NAME.d/50-fleet.toml

DEB='' LOADGEN=$TARGET/release/loadgen DIST=bookworm ANNOUNCE=1s ACTIONS=restart,upgrade
RESULTS=''
CTS=() HAPROXY_PID='' LOAD_PID='' WATCHDOG_PID='' PASSED=0 FAILED=0 SUMMARY=0
# Package versions handed out so far: every upgrade installs a higher one.
UPGRADES=0 BASE_VERSION=''
COUNTS=()

usage() {
	sed -n '/^# Usage:/,/^# Environment:/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

die() {
	printf 'fleet: %s\n' "$*" >&2
	exit 2
}

say() { printf '# %s\n' "$*"; }

pass() {
	printf 'ok - %s\n' "$1"
	PASSED=$((PASSED + 1))
}

fail() {
	printf 'FAIL - %s\n' "$1"
	FAILED=$((FAILED + 1))
}

summary() {
	printf '# logs: %s/\n' "${LOG_DIR#"$REPO"/}"
	printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
	SUMMARY=1
}

# Inside container N, stdin closed, bounded in time.
in_ct() {
	local n=$1
	shift
	e2e_exec "${CTS[$n]}" timeout "$CMD_TIMEOUT" "$@" </dev/null
}

wait_up() {
	within "$UP_WITHIN" haproxy_sees_up "$1" || {
		echo "HAProxy does not see instance $1 UP within ${UP_WITHIN}s (status: $(haproxy_status "$1"))" >&2
		return 1
	}
}

start_haproxy() {
	haproxy_config >"$LOG_DIR/haproxy.cfg"
	haproxy -c -q -f "$LOG_DIR/haproxy.cfg" || die "HAProxy rejects $LOG_DIR/haproxy.cfg"
	(
		e2e_close_lock_fds
		exec haproxy -db -f "$LOG_DIR/haproxy.cfg"
	) >"$LOG_DIR/haproxy.log" 2>&1 &
	HAPROXY_PID=$!
	within 20 curl -fs -o /dev/null --max-time 1 "http://$STATS/stats;csv" ||
		die "HAProxy's stats page does not answer; see $LOG_DIR/haproxy.log"
}

# The --deb package with "+fleetK" appended to its version, K one higher on
# every call, so each rolling upgrade is a real upgrade.
next_upgrade_deb() {
	local out tmp
	UPGRADES=$((UPGRADES + 1))
	out=$LOG_DIR/${NAME}-upgrade$UPGRADES.deb
	tmp=$(mktemp -d)
	dpkg-deb --raw-extract "$DEB" "$tmp/pkg"
	sed -i "s/^Version: .*/Version: ${BASE_VERSION}+fleet$UPGRADES/" "$tmp/pkg/DEBIAN/control"
	dpkg-deb --root-owner-group -Zgzip --build "$tmp/pkg" "$out" >/dev/null
	rm -rf "$tmp"
	printf '%s\n' "$out"
}

# Boots the three machines at once, each on its own overlay of the cached tree.
boot_all() {
	local n pids=() rc=0
	for n in "${!HOSTS[@]}"; do
		CTS[n]=$NAME-fleet$n
		E2E_BOOTED+=("${CTS[$n]}")
		e2e_boot "${CTS[$n]}" "$MACHINES_DIR/e2e-$DIST" 2>"$LOG_DIR/boot$n.log" &
		pids+=("$!")
	done
	for n in "${!pids[@]}"; do
		if wait "${pids[$n]}"; then
			pass "$DIST machine $n boots with systemd $(in_ct "$n" systemctl --version | awk 'NR == 1 { print $2 }') as PID 1"
		else
			fail "$DIST machine $n boots"
			sed 's/^/#   /' "$LOG_DIR/boot$n.log"
			rc=1
		fi
	done
	return "$rc"
}

# Instance N's socket on its own address only, announce in its configuration,
# then the package; the socket drop-in is there before the package starts the
# socket, so it never listens on the packaged port.
install_on() {
	local n=$1
	e2e_put "${CTS[$n]}" "$SOCKET_DROPIN" "[Socket]"$'\n'"ListenStream="$'\n'"ListenStream=${HOSTS[$n]}:$PORT"$'\n'
	write_announce "$n" "$ANNOUNCE"
	e2e_copy_in "${CTS[$n]}" "$DEB" "/root/$NAME.deb"
	in_ct "$n" dpkg -i "/root/$NAME.deb" >"$LOG_DIR/install$n.log" 2>&1
}

write_announce() {
	e2e_put "${CTS[$1]}" "$CONFIG_DROPIN" "[shutdown]"$'\n'"announce = \"$2\""$'\n'
}

# Every instance gets shutdown.announce = VALUE, live by a reload (or at the
# first start, when the socket has not started the service yet).
set_announce() {
	local n
	for n in "${!HOSTS[@]}"; do
		write_announce "$n" "$1" || return 1
		in_ct "$n" systemctl try-reload-or-restart "$SERVICE" || return 1
	done
}

restart_instance() { in_ct "$1" systemctl restart "$SERVICE"; }

upgrade_instance() {
	in_ct "$1" dpkg -i "/root/$NAME-upgrade.deb" >>"$LOG_DIR/upgrade$1.log" 2>&1
}

# One run: ACTION on each instance in turn under MODE clients through
# HAProxy. Sets COUNTS to failed, total, ok, statuses, outcomes.
run() {
	local action=$1 mode=$2 announce=$3 label="$1-$2-announce-$3" n deb
	COUNTS=()
	set_announce "$announce" || { echo "cannot set shutdown.announce $announce" >&2; return 1; }
	if [[ $action == upgrade ]]; then
		deb=$(next_upgrade_deb)
		for n in "${!HOSTS[@]}"; do
			e2e_copy_in "${CTS[$n]}" "$deb" "/root/$NAME-upgrade.deb" || return 1
		done
	fi
	for n in "${!HOSTS[@]}"; do
		wait_up "$n" || return 1
	done
	(
		e2e_close_lock_fds
		exec "$LOADGEN" --addr "$FRONTEND" --connections "$CONNECTIONS" --mode "$mode" \
			--duration "${LOAD_BOUND}s" --json "$LOG_DIR/$label.json" --quiet
	) 2>"$LOG_DIR/$label.loadgen.log" &
	LOAD_PID=$!
	sleep 1
	for n in "${!HOSTS[@]}"; do
		"${action}_instance" "$n" || {
			echo "$action of instance $n failed" >&2
			return 1
		}
		wait_up "$n" || return 1
	done
	sleep 1
	# loadgen stops on SIGINT without failing anything: requests in flight complete.
	kill -INT "$LOAD_PID"
	wait "$LOAD_PID" || { echo "loadgen failed; see $LOG_DIR/$label.loadgen.log" >&2; return 1; }
	LOAD_PID=''
	load_counts "$LOG_DIR/$label.json"
}

report_run() {
	local action=$1 mode=$2 announce=$3 what line
	[[ $action == restart ]] && what="rolling systemctl restart" || what="rolling package upgrade"
	line="$DIST, $what, $mode, shutdown.announce $announce"
	if ! run "$action" "$mode" "$announce"; then
		fail "$line: did not complete"
		return 0
	fi
	line+=": ${COUNTS[0]} failed of ${COUNTS[1]} (statuses ${COUNTS[3]}; outcomes ${COUNTS[4]})"
	results_line "$RESULTS" "systemd $DIST" haproxy "$what" "$mode" "$announce" "${COUNTS[@]}"
	if [[ $announce == 0s ]]; then
		echo "info - $line (for comparison)"
	elif ((COUNTS[0] == 0 && COUNTS[2] >= MIN_OK)); then
		pass "$line"
	else
		fail "$line (expected 0 failed, at least $MIN_OK ok)"
	fi
}

# The sandbox must apply as on a real host: systemd says "proceeding
# without" when it silently drops part of it.
check_journals() {
	local n hits
	for n in "${!HOSTS[@]}"; do
		in_ct "$n" journalctl --no-pager -o short-monotonic >"$LOG_DIR/journal$n.txt" 2>&1 || true
		hits=$(grep -i 'proceeding without' "$LOG_DIR/journal$n.txt" || true)
		if [[ -z $hits ]]; then
			pass "machine $n: no \"proceeding without\" in the journal (sandbox applied)"
		else
			fail "machine $n: the journal says \"proceeding without\""
			printf '%s\n' "$hits" | head -n 5 | sed 's/^/#   /'
		fi
	done
}

cleanup() {
	local rc=$?
	[[ -z $LOAD_PID ]] || kill -KILL "$LOAD_PID" 2>/dev/null || true
	[[ -z $HAPROXY_PID ]] || kill -TERM "$HAPROXY_PID" 2>/dev/null || true
	if [[ -n $WATCHDOG_PID ]]; then
		# Its sleep first: left running, it would hold our stdout and stderr open.
		kill -TERM $(pgrep -P "$WATCHDOG_PID") "$WATCHDOG_PID" 2>/dev/null || true
	fi
	e2e_cleanup
	wait 2>/dev/null || true
	if ((SUMMARY == 0)); then
		fail "run aborted (exit status $rc)"
		summary
	fi
}

start_watchdog() {
	local me=$$
	(
		e2e_close_lock_fds
		sleep "$TIMEOUT"
		printf 'fleet: time limit of %ss reached, aborting\n' "$TIMEOUT" >&2
		kill -TERM "$me"
	) </dev/null >/dev/null &
	WATCHDOG_PID=$!
}

main() {
	while (($#)); do
		case $1 in
		--deb) DEB=${2:?--deb needs a path}; shift 2 ;;
		--loadgen) LOADGEN=${2:?--loadgen needs a path}; shift 2 ;;
		--dist) DIST=${2:?--dist needs bookworm or trixie}; shift 2 ;;
		--announce) ANNOUNCE=${2:?--announce needs a duration}; shift 2 ;;
		--actions) ACTIONS=${2:?--actions needs restart, upgrade or both}; shift 2 ;;
		--results) RESULTS=$(realpath -m "${2:?--results needs a file}"); shift 2 ;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	[[ -n $DEB ]] || usage
	[[ -f $DEB ]] || die "no such package: $DEB"
	[[ -x $LOADGEN ]] || die "no load generator at $LOADGEN"
	[[ $DIST == bookworm || $DIST == trixie ]] || die "--dist must be bookworm or trixie"
	[[ $ANNOUNCE != 0s ]] || die "--announce 0s would compare a run with itself"
	((EUID == 0)) || die "must run as root (systemd-nspawn)"
	local tool
	for tool in haproxy curl python3 systemd-nspawn; do
		command -v "$tool" >/dev/null || die "$tool is needed"
	done
	DEB=$(realpath "$DEB") LOADGEN=$(realpath "$LOADGEN")
	BASE_VERSION=$(dpkg-deb --field "$DEB" Version)

	mkdir -p "$E2E_STATE_DIR"
	exec {run_lock}>"$E2E_STATE_DIR/run.lock"
	flock -w "$TIMEOUT" "$run_lock" || die "another e2e run holds $E2E_STATE_DIR/run.lock"
	rm -rf "$LOG_DIR"
	mkdir -p "$LOG_DIR"
	E2E_CONSOLE_DIR=$LOG_DIR
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	start_watchdog

	"$REPO/tests/e2e/rootfs.sh" "$DIST" >"$LOG_DIR/rootfs.log" 2>&1 ||
		die "no $DIST root filesystem; see $LOG_DIR/rootfs.log"
	local started=$SECONDS n action mode announce
	if ! boot_all; then
		summary
		return 1
	fi
	for n in "${!HOSTS[@]}"; do
		if install_on "$n"; then
			pass "machine $n: dpkg -i $(basename "$DEB"), $SOCKET on ${HOSTS[$n]}:$PORT"
		else
			fail "machine $n: dpkg -i $(basename "$DEB")"
			tail -n 20 "$LOG_DIR/install$n.log" | sed 's/^/#   /'
			summary
			return 1
		fi
	done
	start_haproxy
	say "$NAME behind HAProxy $FRONTEND: ${#HOSTS[@]} $DIST machines (${HOSTS[*]}:$PORT)," \
		"option httpchk GET /readyz, inter $CHECK_INTER fall $CHECK_FALL rise $CHECK_RISE;" \
		"$CONNECTIONS connections"
	for action in ${ACTIONS//,/ }; do
		[[ $action == restart || $action == upgrade ]] || die "unknown action: $action"
		for mode in "${MODES[@]}"; do
			for announce in "$ANNOUNCE" 0s; do
				report_run "$action" "$mode" "$announce"
			done
		done
	done
	check_journals
	say "$DIST: $((SECONDS - started))s"
	summary
	((FAILED == 0))
}

main "$@"
