#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# End-to-end suite: installs the seamless .deb into real Debian systems booted
# with systemd as PID 1 (systemd-nspawn) and checks what an operator relies on:
# socket activation, journald fields, synchronous reloads, zero-drop restarts,
# package upgrades and binary hot upgrades (seamless upgrade), crash recovery,
# clean stop and purge, and the .rpm's contents.
#
# Usage:
#   tests/e2e/run.sh --deb PATH [--deb-upgrade PATH] [--rpm PATH]
#                    [--loadgen PATH] [--stall-binary PATH]
#                    [--dist bookworm|trixie|all] [--core]
#
#   --deb          the package under test (cargo deb → target/debian/*.deb)
#   --deb-upgrade  the package to upgrade to; by default the --deb package
#                  repacked with "+e2e1" appended to its version, which is
#                  what matters here: same files, higher version, dpkg runs the
#                  full upgrade path of the maintainer scripts
#   --rpm          checked on trixie only (cargo generate-rpm →
#                  target/generate-rpm/*.rpm); skipped when not given
#   --loadgen      load generator binary (default target/release/loadgen)
#   --stall-binary a seamless built with the test-only `stall-hook` feature
#                  (cargo build -p seamless --features stall-hook, then copy target/debug/seamless): proves the
#                  watchdog restarts a hung service; skipped when not given
#   --dist         default all; distributions run one after the other since
#                  both containers share the host network and port 8080
#   --core         only the core scenarios: install, socket activation,
#                  synchronous and failing reloads, restarts under load,
#                  package upgrade, binary upgrade, HTTPS, purge (no journal fields,
#                  failed binary upgrade, SIGHUP storm, crash, watchdog, stop
#                  or rpm)
#
# Environment: E2E_PORT (default 8080, the packaged socket's) when 8080 is
# taken on this host, E2E_HTTPS_PORT (default 8443, the packaged HTTPS
# socket's) likewise; E2E_SUITE_TIMEOUT, E2E_CMD_TIMEOUT (seconds).
#
# Output: one "ok - ..." or "FAIL - ..." line per check, then
# "N passed, M failed"; the exit status is non-zero when a check failed.
# Logs (console, journal, failure snapshots, loadgen reports) go to e2e-logs/.
# Needs root, systemd-nspawn and debootstrap (installed by rootfs.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# The service's name, [package] name in Cargo.toml: the package, the binary
# and the units are named after it.
NAME=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"/\1/p' "$REPO/Cargo.toml")
[[ -n $NAME ]] || { echo "run.sh: no [package] name in $REPO/Cargo.toml" >&2; exit 2; }
readonly NAME SERVICE=$NAME.service SOCKET=$NAME.socket HTTPS_SOCKET=$NAME-https.socket
# The kernel keeps the first 15 bytes of a process name (journal field _COMM).
readonly COMM=${NAME:0:15}
# shellcheck source=lib.sh
source "$HERE/lib.sh"
# shellcheck source=scenarios.sh
source "$HERE/scenarios.sh"

# The packaged socket's address. E2E_PORT moves it (through a drop-in written
# before the package is installed) when a development server already holds
# 8080 on this host, which the containers share.
readonly PACKAGED_PORT=8080
readonly ADDR=127.0.0.1:${E2E_PORT:-$PACKAGED_PORT}
readonly PORT_DROPIN=/etc/systemd/system/$SOCKET.d/e2e-port.conf
# The packaged HTTPS socket's address (scenario_https enables it for a while);
# E2E_HTTPS_PORT moves it the same way.
readonly PACKAGED_HTTPS_PORT=8443
readonly HTTPS_ADDR=127.0.0.1:${E2E_HTTPS_PORT:-$PACKAGED_HTTPS_PORT}
readonly MACHINES_DIR=${E2E_MACHINES_DIR:-/var/lib/machines}
readonly LOG_ROOT=$REPO/e2e-logs
# Upper bound for any single command run inside a container.
readonly CMD_TIMEOUT=${E2E_CMD_TIMEOUT:-90}

DEB='' DEB_UPGRADE='' RPM='' LOADGEN='' STALL_BIN='' DISTS=() CORE=0
# The whole run is bounded: past this many seconds it is aborted (and
# reported as a failure) even if some step hangs in a way no timeout caught.
readonly SUITE_TIMEOUT=${E2E_SUITE_TIMEOUT:-1200}
SCENARIO_PID='' WATCHDOG_PID='' SUMMARY_PRINTED=0
# Per-distribution state, set by run_dist; CERTS is where scenario_https
# makes its certificates on the host.
DIST=suite CT='' LOG_DIR='' CERTS=''
RESULTS=''

usage() {
	sed -n '/^# Usage:/,/^# Output:/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

die() {
	printf 'run.sh: %s\n' "$*" >&2
	exit 2
}

parse_args() {
	local dist=all
	while (($#)); do
		case $1 in
		--deb) DEB=${2:?}; shift 2 ;;
		--deb-upgrade) DEB_UPGRADE=${2:?}; shift 2 ;;
		--rpm) RPM=${2:?}; shift 2 ;;
		--loadgen) LOADGEN=${2:?}; shift 2 ;;
		--stall-binary) STALL_BIN=${2:?}; shift 2 ;;
		--dist) dist=${2:?}; shift 2 ;;
		--core) CORE=1; shift ;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	[[ -n $DEB ]] || usage
	[[ -f $DEB ]] || die "no such package: $DEB"
	[[ -z $DEB_UPGRADE || -f $DEB_UPGRADE ]] || die "no such package: $DEB_UPGRADE"
	[[ -z $RPM || -f $RPM ]] || die "no such package: $RPM"
	LOADGEN=${LOADGEN:-${CARGO_TARGET_DIR:-$REPO/target}/release/loadgen}
	[[ -x $LOADGEN ]] || die "no load generator at $LOADGEN (cargo build --release -p loadgen, or --loadgen PATH)"
	case $dist in
	bookworm | trixie) DISTS=("$dist") ;;
	all) DISTS=(bookworm trixie) ;;
	*) die "--dist must be bookworm, trixie or all" ;;
	esac
	DEB=$(realpath "$DEB")
	[[ -z $DEB_UPGRADE ]] || DEB_UPGRADE=$(realpath "$DEB_UPGRADE")
	[[ -z $RPM ]] || RPM=$(realpath "$RPM")
	LOADGEN=$(realpath "$LOADGEN")
	[[ -z $STALL_BIN || -x $STALL_BIN ]] || die "no such binary: $STALL_BIN"
	[[ -z $STALL_BIN ]] || STALL_BIN=$(realpath "$STALL_BIN")
}

# --- reporting ---------------------------------------------------------------

pass() {
	printf 'ok - %s: %s\n' "$DIST" "$1" | tee -a "$RESULTS"
}

# fail DESCRIPTION [DIAGNOSTIC...]: each diagnostic may span several lines.
fail() {
	local desc=$1 diag
	shift
	printf 'FAIL - %s: %s\n' "$DIST" "$desc" | tee -a "$RESULTS"
	for diag in "$@"; do
		printf '%s\n' "$diag" | sed 's/^/#   /'
	done
	snapshot_failure "$desc"
}

# check DESCRIPTION COMMAND...: what COMMAND prints becomes the diagnostic.
check() {
	local desc=$1 diag
	shift
	diag=$(mktemp)
	if "$@" >"$diag" 2>&1; then
		pass "$desc"
	else
		fail "$desc" "$(cat "$diag")"
	fi
	rm -f "$diag"
}

# Everything needed to understand a failure without re-running: unit state and
# the journal of both units.
snapshot_failure() {
	local desc=$1 file n
	[[ -n $CT && -n $LOG_DIR ]] || return 0
	n=$(grep -c '^FAIL' "$RESULTS" || true)
	file=$LOG_DIR/failure-$n-$(printf '%s' "$desc" | tr -cs 'A-Za-z0-9' '-' | cut -c1-60).log
	{
		printf '# %s: %s\n\n' "$DIST" "$desc"
		in_ct systemctl status --no-pager --full "$SOCKET" "$HTTPS_SOCKET" "$SERVICE" 2>&1 || true
		printf '\n# journal\n'
		in_ct journalctl --no-pager -o short-monotonic -u "$SOCKET" -u "$HTTPS_SOCKET" -u "$SERVICE" 2>&1 || true
	} >"$file" 2>&1
	printf '#   log: %s\n' "${file#"$REPO"/}"
}

# --- container helpers -------------------------------------------------------

# Inside the current container, stdin closed, bounded in time.
in_ct() {
	e2e_exec "$CT" timeout "$CMD_TIMEOUT" "$@" </dev/null
}

unit_prop() {
	in_ct systemctl show --property "$2" --value "$1"
}

# Write a file inside the container from a string.
put_file() { e2e_put "$CT" "$@"; }

# GET PATH from the host; prints the body, fails on a connection error or a
# status other than 2xx.
http_get() {
	curl --fail --silent --show-error --max-time 10 "http://$ADDR${1:-/}"
}

# The listening socket's inode, from the kernel: it changes only when the
# socket is closed and bound again.
listen_inode() {
	in_ct ss -Hltne "sport = :${ADDR##*:}" | grep -o 'ino:[0-9]*' | head -n1
}

port_in_use() {
	(exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null
}

# --- load --------------------------------------------------------------------

LOAD_PIDS=() LOAD_REPORTS=()

# load_start TAG EVENTS-FILE [ADDR LOADGEN-OPTION...]: keep-alive and
# connection-close clients at once, each counting every request, with no
# retries, until load_stop. EVENTS-FILE collects "NANOS LABEL" lines
# (restarts, upgrade) so the reports show what happened around each of them.
# ADDR defaults to $ADDR; the options go to loadgen as they are (--tls ...).
load_start() {
	local tag=$1 events=$2 addr=${3:-$ADDR} mode
	local extra=("${@:4}")
	LOAD_PIDS=() LOAD_REPORTS=()
	for mode in keepalive close; do
		local report=$LOG_DIR/load-$tag-$mode.json
		rm -f "$report"
		(
			e2e_close_lock_fds
			exec "$LOADGEN" --addr "$addr" --connections 16 --mode "$mode" \
				--events "$events" --json "$report" "${extra[@]}"
		) >"$LOG_DIR/load-$tag-$mode.log" 2>&1 &
		LOAD_PIDS+=("$!")
		LOAD_REPORTS+=("$report")
	done
	# Let every connection get going before the disruption starts.
	sleep 1
}

# The summaries loadgen printed (they list the first failures).
load_failure_summary() {
	local report
	for report in "${LOAD_REPORTS[@]}"; do
		printf '%s:\n' "${report%.json}.log" | sed "s|^$REPO/||"
		tail -n 25 "${report%.json}.log" 2>/dev/null || true
	done
}

# Stop the load (loadgen reports on SIGINT) and print its totals; fails when
# a request failed or the reports are missing.
load_stop() {
	local pid rc=0
	for pid in "${LOAD_PIDS[@]}"; do
		kill -INT "$pid" 2>/dev/null || true
	done
	for pid in "${LOAD_PIDS[@]}"; do
		if ! _e2e_wait_exit "$pid" 30; then
			kill -KILL "$pid" 2>/dev/null || true
			echo "loadgen $pid did not stop within 30s" >&2
			rc=1
		fi
		wait "$pid" 2>/dev/null || true
	done
	LOAD_PIDS=()
	local report
	for report in "${LOAD_REPORTS[@]}"; do
		[[ -s $report ]] || {
			echo "no report: ${report#"$REPO"/}" >&2
			rc=1
		}
	done
	((rc == 0)) || return "$rc"
	python3 "$HERE/report.py" loadgen "${LOAD_REPORTS[@]}"
}

kill_load() {
	local pid
	for pid in "${LOAD_PIDS[@]}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
	LOAD_PIDS=()
}

# --- per distribution --------------------------------------------------------

# The --deb package with "+e2e1" appended to its version.
make_upgrade_deb() {
	local src=$1 out=$2 tmp version
	tmp=$(mktemp -d)
	dpkg-deb --raw-extract "$src" "$tmp/pkg"
	version=$(dpkg-deb --field "$src" Version)
	sed -i "s/^Version: .*/Version: ${version}+e2e1/" "$tmp/pkg/DEBIAN/control"
	dpkg-deb --root-owner-group --build "$tmp/pkg" "$out" >/dev/null
	rm -rf "$tmp"
}

# Run one scenario function in a subshell with errexit, so that an unexpected
# error ends only that scenario (reported as a failure) and not the suite.
# It runs in the background and is waited for because errexit is ignored in
# anything run as part of `||`, `&&` or `if`.
run_scenario() {
	local fn=$1 rc=0
	(
		set -eE
		trap 'fail "$fn stopped: \"$BASH_COMMAND\" exited $? (line $LINENO)"; kill_load; exit 86' ERR
		"$fn"
	) &
	SCENARIO_PID=$!
	wait "$SCENARIO_PID" || rc=$?
	SCENARIO_PID=''
	if ((rc != 0 && rc != 86)); then
		fail "$fn ended with status $rc"
	fi
}

run_dist() {
	DIST=$1
	CT=$NAME-e2e-$DIST
	LOG_DIR=$LOG_ROOT/$DIST
	CERTS=$LOG_DIR/tls
	rm -rf "$LOG_DIR"
	mkdir -p "$LOG_DIR"
	E2E_CONSOLE_DIR=$LOG_DIR

	# A container of this name left over by a killed run would hold the port.
	if [[ -d $(_e2e_state "$CT") ]]; then
		e2e_shutdown "$CT" 2>>"$LOG_DIR/boot.log" || true
	fi
	if port_in_use; then
		CT='' fail "boot: $ADDR is already in use on this host" \
			"$(ss -Hltnp "sport = :${ADDR##*:}" 2>&1)" \
			"(E2E_PORT=N runs the suite on another port)"
		return 0
	fi
	if ! e2e_boot "$CT" "$MACHINES_DIR/e2e-$DIST" 2>"$LOG_DIR/boot.log"; then
		CT='' fail "boot $DIST with systemd as PID 1" "$(cat "$LOG_DIR/boot.log")"
		return 0
	fi
	pass "boot with systemd $(in_ct systemctl --version | awk 'NR == 1 { print $2 }') as PID 1 ($(in_ct systemctl is-system-running || true))"

	local failed_before
	failed_before=$(grep -c '^FAIL' "$RESULTS" || true)
	run_scenario scenario_install
	if (($(grep -c '^FAIL' "$RESULTS" || true) != failed_before)); then
		printf '# %s: package not installed, remaining scenarios skipped\n' "$DIST"
	elif ((CORE)); then
		local fn
		for fn in scenario_socket_activation scenario_reload scenario_restart_under_load \
			scenario_keep_connections scenario_upgrade_under_load \
			scenario_binary_upgrade_under_load scenario_https scenario_purge; do
			run_scenario "$fn"
		done
	else
		local fn
		for fn in scenario_socket_activation scenario_journal_fields scenario_reload \
			scenario_restart_under_load scenario_keep_connections \
			scenario_keep_connections_faults scenario_upgrade_under_load \
			scenario_binary_upgrade_under_load scenario_binary_upgrade_fails \
			scenario_sighup_storm scenario_kill_main; do
			run_scenario "$fn"
		done
		if [[ -n $STALL_BIN ]]; then
			run_scenario scenario_watchdog_stall
		else
			printf '# %s: watchdog stall scenario skipped (no --stall-binary given)\n' "$DIST"
		fi
		for fn in scenario_https scenario_stop scenario_purge; do
			run_scenario "$fn"
		done
		if [[ $DIST == trixie ]]; then
			if [[ -n $RPM ]]; then
				run_scenario scenario_rpm
			else
				printf '# %s: rpm scenario skipped (no --rpm given)\n' "$DIST"
			fi
		fi
	fi

	in_ct journalctl --no-pager -o short-monotonic >"$LOG_DIR/journal.txt" 2>&1 || true
	# The sandbox must apply as on a real host: systemd says "proceeding
	# without" when it silently drops part of it (a namespace the kernel or
	# the container refuses), and the scenarios would then pass against a
	# weaker unit than the one packaged.
	local hits
	hits=$(grep -i 'proceeding without' "$LOG_DIR/journal.txt" || true)
	if [[ -z $hits ]]; then
		pass "no \"proceeding without\" in the journal (sandbox applied)"
	else
		fail "the journal says \"proceeding without\"" "$(printf '%s\n' "$hits" | head -n 5)"
	fi
	e2e_shutdown "$CT" || fail "shutdown: container did not power off cleanly"
	CT=''
}

# PID and all its descendants, children first.
descendants() {
	local child
	for child in $(pgrep -P "$1" || true); do
		descendants "$child"
		printf '%s\n' "$child"
	done
}

# kill_tree PID: TERM to PID and everything it started, children first.
kill_tree() {
	local pid
	for pid in $(descendants "$1") "$1"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
}

# On any exit: stop a scenario still running in the background (and the load
# generators it started), power off the containers, and make sure the last
# line is still the summary when the run was interrupted.
cleanup() {
	local rc=$?
	if [[ -n $SCENARIO_PID ]]; then
		kill_tree "$SCENARIO_PID"
		_e2e_wait_exit "$SCENARIO_PID" 10 || kill -KILL "$SCENARIO_PID" 2>/dev/null || true
	fi
	kill_load
	[[ -z $WATCHDOG_PID ]] || kill_tree "$WATCHDOG_PID"
	if ((SUMMARY_PRINTED == 0)) && [[ -n $RESULTS ]]; then
		# Recorded while the container is still up, so the snapshot has its journal.
		fail "suite aborted (exit status $rc)"
		e2e_cleanup
		print_summary || true
	else
		e2e_cleanup
	fi
}

print_summary() {
	local passed failed
	passed=$(grep -c '^ok' "$RESULTS" || true)
	failed=$(grep -c '^FAIL' "$RESULTS" || true)
	printf '# logs: %s/\n' "${LOG_ROOT#"$REPO"/}"
	printf '%d passed, %d failed\n' "$passed" "$failed"
	SUMMARY_PRINTED=1
	((failed == 0))
}

# Sends TERM to the suite when it runs out of time.
start_watchdog() {
	local suite=$$
	(
		e2e_close_lock_fds
		sleep "$SUITE_TIMEOUT"
		printf 'run.sh: time limit of %ss reached, aborting\n' "$SUITE_TIMEOUT" >&2
		kill -TERM "$suite"
	) </dev/null &
	WATCHDOG_PID=$!
}

main() {
	parse_args "$@"
	((EUID == 0)) || die "must run as root (systemd-nspawn)"
	command -v curl >/dev/null || die "curl is required on the host"
	command -v python3 >/dev/null || die "python3 is required on the host"
	# scenario_https makes its certificates and reads the served one.
	if ! command -v openssl >/dev/null; then
		apt-get -o DPkg::Lock::Timeout=600 update -q >&2
		apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends openssl >&2
	fi

	# Two suites on one host would fight over port 8080 and the container
	# names; the second one waits.
	mkdir -p "$E2E_STATE_DIR"
	exec {run_lock}>"$E2E_STATE_DIR/run.lock"
	flock -w "$SUITE_TIMEOUT" "$run_lock" || die "another e2e run holds $E2E_STATE_DIR/run.lock"

	rm -rf "$LOG_ROOT"
	mkdir -p "$LOG_ROOT"
	RESULTS=$LOG_ROOT/results.tap
	: >"$RESULTS"
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	if [[ -z $DEB_UPGRADE ]]; then
		DEB_UPGRADE=$LOG_ROOT/$(basename "${DEB%.deb}")+e2e1.deb
		make_upgrade_deb "$DEB" "$DEB_UPGRADE"
	fi

	start_watchdog
	local dist started=$SECONDS
	for dist in "${DISTS[@]}"; do
		"$HERE/rootfs.sh" "$dist"
		run_dist "$dist"
	done
	printf '# %s: %ss\n' "${DISTS[*]}" "$((SECONDS - started))"
	print_summary
}

main "$@"
