# shellcheck shell=bash
# The e2e scenarios, sourced by run.sh. Each scenario_* function runs against
# the container $CT (booted, package installed by scenario_install) and reports
# through check/pass/fail. They run in order and build on each other: the
# service started by the socket scenario is the one reloaded, restarted,
# upgraded, killed, stopped and finally purged.

# NAME (the package, binary and unit name), SERVICE, SOCKET and COMM come from
# run.sh, which reads NAME from Cargo.toml.
readonly CONFIG=/etc/$NAME/$NAME.toml

# --- predicates: stdout/stderr become the diagnostic of a failed check --------

expect_eq() {
	local what=$1 want=$2 got=$3
	[[ $got == "$want" ]] && return 0
	printf '%s: expected "%s", got "%s"\n' "$what" "$want" "$got"
	return 1
}

expect_ne() {
	local what=$1 unwanted=$2 got=$3
	[[ $got != "$unwanted" ]] && return 0
	printf '%s: got "%s"\n' "$what" "$got"
	return 1
}

# expect_match WHAT EXTENDED-REGEX TEXT
expect_match() {
	local what=$1 regex=$2 text=$3
	grep -Eq -- "$regex" <<<"$text" && return 0
	printf '%s: nothing matches /%s/ in:\n%s\n' "$what" "$regex" "$text"
	return 1
}

# expect_all_match EXTENDED-REGEX TEXT...: every TEXT has a matching line.
expect_all_match() {
	local regex=$1 text
	shift
	for text in "$@"; do
		expect_match "entry" "$regex" "$text" || return 1
	done
}

expect_no_match() {
	local what=$1 regex=$2 text=$3
	grep -Eq -- "$regex" <<<"$text" || return 0
	printf '%s: unexpected /%s/ in:\n%s\n' "$what" "$regex" "$text"
	return 1
}

expect_at_most() {
	local what=$1 most=$2 got=$3
	((got <= most)) && return 0
	printf '%s: expected at most %s, got %s\n' "$what" "$most" "$got"
	return 1
}

expect_empty() {
	local what=$1 text=$2
	[[ -z $text ]] && return 0
	printf '%s:\n%s\n' "$what" "$text"
	return 1
}

# expect_fields KEY=VALUE-LINES FIELD...
expect_fields() {
	local entry=$1 field missing=()
	shift
	for field in "$@"; do
		grep -q "^$field=" <<<"$entry" || missing+=("$field")
	done
	((${#missing[@]} == 0)) && return 0
	printf 'missing fields: %s\n' "${missing[*]}"
	return 1
}

# fails COMMAND...: COMMAND must fail; its output is the diagnostic otherwise.
fails() {
	if "$@" 2>&1; then
		printf 'succeeded: %s\n' "$*"
		return 1
	fi
}

# Run a command and pass its output through on failure.
succeeds() {
	"$@" 2>&1
}

# wait_until TIMEOUT_SECONDS COMMAND...: poll every 100ms.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

unit_state_is() {
	[[ $(unit_prop "$1" ActiveState) == "$2" ]]
}

# The journal position now, to read only what a step logs afterwards.
journal_cursor() {
	in_ct journalctl --quiet --lines=0 --show-cursor | sed -n 's/^-- cursor: //p'
}

journal_json_after() {
	local cursor=$1
	shift
	in_ct journalctl --no-pager --output=json --after-cursor="$cursor" "$@"
}

# Filters the suite's own E2E_PORT drop-in (and its directory) out of a file list.
without_port_dropin() {
	grep -vxF -e "$PORT_DROPIN" -e "${PORT_DROPIN%/*}" || true
}

# --- scenarios ---------------------------------------------------------------

scenario_install() {
	e2e_copy_in "$CT" "$DEB" "/root/$NAME.deb"
	e2e_copy_in "$CT" "$DEB_UPGRADE" "/root/$NAME-upgrade.deb"
	if [[ ${ADDR##*:} != "$PACKAGED_PORT" ]]; then
		put_file "$PORT_DROPIN" "[Socket]"$'\n'"ListenStream="$'\n'"ListenStream=$ADDR"$'\n'
		printf '# %s: %s moved to %s by %s\n' "$DIST" "$SOCKET" "$ADDR" "$PORT_DROPIN"
	fi
	local out
	if out=$(in_ct dpkg -i "/root/$NAME.deb" 2>&1); then
		pass "dpkg -i $(basename "$DEB")"
	else
		fail "dpkg -i $(basename "$DEB")" "$out"
		return 0
	fi
	check "$NAME --version runs ($(in_ct "$NAME" --version 2>&1 | head -n1))" \
		in_ct "$NAME" --version
}

# The socket listens before the service runs; the first request starts it.
scenario_socket_activation() {
	check "$SOCKET is enabled by the package" \
		expect_eq "is-enabled" enabled "$(in_ct systemctl is-enabled "$SOCKET" || true)"
	check "$SOCKET is active after installation" \
		expect_eq "socket ActiveState" active "$(unit_prop "$SOCKET" ActiveState)"
	check "systemd (PID 1) holds the listening socket $ADDR" \
		expect_match "listening sockets" '"systemd",pid=1,' "$(in_ct ss -Hltnp "sport = :${ADDR##*:}")"
	check "$SERVICE is not running before the first request" \
		expect_eq "service ActiveState" inactive "$(unit_prop "$SERVICE" ActiveState)"

	local body
	if body=$(http_get / 2>&1); then
		pass "first request is answered (body: ${body:0:60})"
	else
		fail "first request is answered" "$body"
	fi
	check "the first request started $SERVICE" \
		expect_eq "service ActiveState" active "$(unit_prop "$SERVICE" ActiveState)"
	check "$SERVICE was triggered by $SOCKET" \
		expect_match "TriggeredBy" "$NAME\.socket" "$(unit_prop "$SERVICE" TriggeredBy)"
	check "service started after the socket was listening" \
		test "$(unit_prop "$SERVICE" ExecMainStartTimestampMonotonic)" -gt \
		"$(unit_prop "$SOCKET" ActiveEnterTimestampMonotonic)"
}

# Logs reach journald through the native protocol, with priorities and the
# service's own fields.
scenario_journal_fields() {
	local json ready listening
	json=$(in_ct journalctl --no-pager --output=json "--unit=$SERVICE")
	ready=$(journal_entry "$json" 'MESSAGE~^ready$' "_COMM~^$COMM\$" || true)
	listening=$(journal_entry "$json" 'MESSAGE~^listening$' "_COMM~^$COMM\$" || true)
	if [[ -z $ready || -z $listening ]]; then
		fail "journal has the service's \"listening\" and \"ready\" events" \
			"$(in_ct journalctl --no-pager "--unit=$SERVICE" | tail -n 20)"
		return 0
	fi
	pass "journal has the service's \"listening\" and \"ready\" events"
	check "both came in over the native journal protocol (_TRANSPORT=journal)" \
		expect_all_match '^_TRANSPORT=journal$' "$ready" "$listening"
	check "\"ready\" carries a syslog priority ($(grep '^PRIORITY=' <<<"$ready"))" \
		expect_match "ready" '^PRIORITY=[0-7]$' "$ready"
	check "\"ready\" carries its source location (CODE_FILE, CODE_LINE)" \
		expect_fields "$ready" CODE_FILE CODE_LINE
	# Field names are part of the interface (journalctl GENERATION=3 finds
	# the entries), so they are pinned: tracing-journald would prefix them
	# with F_ unless the service sets an empty field prefix.
	check "\"ready\" carries the configuration generation ($(grep '^GENERATION=' <<<"$ready"))" \
		expect_match "ready" '^GENERATION=[0-9]+$' "$ready"
	check "\"listening\" names the socket systemd passed in (SOCKET=http, ADDRESS=$ADDR)" \
		expect_eq "SOCKET ADDRESS" "http $ADDR" \
		"$(sed -n 's/^SOCKET=//p' <<<"$listening") $(sed -n 's/^ADDRESS=//p' <<<"$listening")"
}

# journal_entry JSON-LINES FIELD~REGEX...: the first matching entry as
# KEY=VALUE lines.
journal_entry() {
	local json=$1
	shift
	python3 "$HERE/report.py" journal-match "$@" <<<"$json"
}

# systemctl reload is synchronous: it returns once the new configuration
# serves, and fails (keeping the old one) when the configuration is broken.
scenario_reload() {
	local pid i body out errors=()
	pid=$(unit_prop "$SERVICE" MainPID)
	for i in $(seq 1 20); do
		put_file "$CONFIG" "message = \"reload $i\\n\""$'\n'
		if ! out=$(in_ct systemctl reload "$SERVICE" 2>&1); then
			errors+=("reload $i: systemctl reload failed: $out")
			continue
		fi
		body=$(http_get / 2>&1) || true
		[[ $body == "reload $i" ]] || errors+=("reload $i: next request got \"$body\"")
	done
	if ((${#errors[@]} == 0)); then
		pass "20 reloads: the very next request after each systemctl reload serves the new message"
	else
		fail "20 reloads: the very next request after each systemctl reload serves the new message" "${errors[@]}"
	fi
	check "reloads kept the same main process" \
		expect_eq "MainPID" "$pid" "$(unit_prop "$SERVICE" MainPID)"

	reload_broken "syntax error" 'message = '$'\n' "$NAME\.toml"
	reload_broken "unknown key" 'message = "x"'$'\n''no_such_key = 1'$'\n' 'no_such_key'

	check "reloads and rejected reloads kept the same main process" \
		expect_eq "MainPID" "$pid" "$(unit_prop "$SERVICE" MainPID)"
	put_file "$CONFIG" 'message = "after reloads\n"'$'\n'
	check "a valid configuration reloads again after rejected ones" \
		succeeds in_ct systemctl reload "$SERVICE"
	check "... and is served" expect_eq "body" "after reloads" "$(http_get / 2>&1 || true)"
}

# reload_broken LABEL CONFIG-TEXT REGEX-THE-ERROR-MUST-SHOW
reload_broken() {
	local label=$1 text=$2 error_regex=$3 out rc=0 status cursor
	put_file "$CONFIG" "$text"
	rc=0
	out=$(in_ct "$NAME" check-config 2>&1) || rc=$?
	check "broken config ($label): $NAME check-config exits 78" expect_eq "exit status" 78 "$rc"

	cursor=$(journal_cursor)
	rc=0
	out=$(in_ct systemctl reload "$SERVICE" 2>&1) || rc=$?
	check "broken config ($label): systemctl reload exits non-zero" expect_ne "exit status" 0 "$rc"

	status=$(in_ct systemctl status --no-pager --full --lines=20 "$SERVICE" 2>&1 || true)
	check "broken config ($label): the error is shown by systemctl reload or status" \
		expect_match "systemctl reload output + status" "$error_regex" "$out"$'\n'"$status"
	local entry
	entry=$(journal_entry "$(journal_json_after "$cursor" "--unit=$SERVICE")" \
		"*~$error_regex" "_COMM~^$COMM\$" '_TRANSPORT~^journal$' 'PRIORITY~^[0-3]$' || true)
	check "broken config ($label): the service logs the error at error priority" \
		expect_match "journal entry of the service naming the error at PRIORITY<=3" . "$entry"
	check "broken config ($label): the unit is back to active, not stuck reloading" \
		wait_until 5 unit_state_is "$SERVICE" active
	check "broken config ($label): the previous message is still served" \
		expect_eq "body" "reload 20" "$(http_get / 2>&1 || true)"
}

# restart_loop COUNT: systemctl restart COUNT times, recording main PIDs and
# marking each restart in the loadgen events file.
restart_loop() {
	local count=$1 events=$2 i out pids=()
	for i in $(seq 1 "$count"); do
		printf '%s restart-%d\n' "$(date +%s%N)" "$i" >>"$events"
		if ! out=$(in_ct systemctl restart "$SERVICE" 2>&1); then
			echo "restart $i failed: $out"
		fi
		pids+=("$(unit_prop "$SERVICE" MainPID)")
		# Let each new process serve both kinds of clients for a while.
		sleep 0.5
	done
	local distinct
	distinct=$(printf '%s\n' "${pids[@]}" | grep -v '^0$' | sort -u | wc -l)
	[[ $distinct == "$count" ]] || echo "expected $count distinct main PIDs, got: ${pids[*]}"
}

scenario_restart_under_load() {
	local events=$LOG_DIR/events-restart.txt problems totals rc=0
	: >"$events"
	load_start restart "$events"
	problems=$(restart_loop 10 "$events")
	totals=$(load_stop 2>&1) || rc=$?
	check "10 x systemctl restart: each succeeded with a new main process" expect_empty "problems" "$problems"
	if ((rc == 0)); then
		pass "10 x systemctl restart under keep-alive + close load: 0 failed requests ($totals)"
	else
		fail "10 x systemctl restart under keep-alive + close load: 0 failed requests" \
			"$totals"$'\n'"$(load_failure_summary)"
	fi
	check "$SOCKET stayed active (no start limit hit)" \
		expect_eq "socket ActiveState/Result" "active/success" \
		"$(unit_prop "$SOCKET" ActiveState)/$(unit_prop "$SOCKET" Result)"
	check "the 16 busy keep-alive clients kept their connections across the restarts" \
		expect_eq "connections opened" 16 \
		"$(json_fields "$LOG_DIR/load-restart-keepalive.json" connections_opened 2>&1)"
}

# --- restarts that close no connection (systemd's fd store) -----------------

# fields JSON-FILE KEY...: the values of top-level KEYs, joined by "/".
json_fields() {
	python3 - "$@" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print("/".join(str(report.get(key)) for key in sys.argv[2:]))
PY
}

# PID 1's own fds come and go a little (journal streams, unit files): a leak
# of stored connections is 20 at a time.
readonly FD_SLACK=5

# How many fds PID 1 holds: stored connections are among them.
pid1_fds() {
	in_ct sh -c 'ls /proc/1/fd | wc -l'
}

# Server-side connections on the service's port that are still established.
established_on_port() {
	ss -Htn state established "( sport = :${ADDR##*:} )" | wc -l
}

# idle_clients TAG ARGS...: runs tests/e2e/idle_clients.py in the background.
IDLE_PID=''
idle_clients() {
	local tag=$1
	shift
	(
		e2e_close_lock_fds
		exec python3 "$HERE/idle_clients.py" "$ADDR" --json "$LOG_DIR/idle-$tag.json" "$@"
	) >"$LOG_DIR/idle-$tag.log" 2>&1 &
	IDLE_PID=$!
}

# idle_clients_wait TAG: waits for the clients (not in a subshell: only this
# shell can wait for its child) and sets IDLE_OUT to what they printed.
IDLE_OUT=''
idle_clients_wait() {
	wait "$IDLE_PID" || true
	IDLE_OUT=$(cat "$LOG_DIR/idle-$1.log")
}

# Clients that think 0.2-2.5 s between requests and reuse their connection
# without checking it (as simple scripts do) keep that one connection across
# 20 restarts, and none of their requests fails.
scenario_keep_connections() {
	local clients=200 report=$LOG_DIR/load-keep.json events=$LOG_DIR/events-keep.txt
	local pid problems
	: >"$events"
	(
		e2e_close_lock_fds
		exec "$LOADGEN" --addr "$ADDR" --connections "$clients" --mode keepalive \
			--think 200ms..2500ms --events "$events" --json "$report"
	) >"$LOG_DIR/load-keep.log" 2>&1 &
	pid=$!
	# Every client has its connection before the first restart.
	sleep 3
	problems=$(restart_loop 20 "$events")
	sleep 3
	kill -INT "$pid" 2>/dev/null || true
	_e2e_wait_exit "$pid" 30 || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	check "20 x systemctl restart: each succeeded with a new main process" expect_empty "problems" "$problems"
	local got
	got=$(json_fields "$report" failed connections_opened ok 2>&1 || true)
	check "$clients thinking keep-alive clients across 20 restarts: 0 failed, $clients connections (failed/connections/ok: $got)" \
		expect_match "failed/connections_opened/ok" "^0/$clients/[1-9][0-9]*$" "$got"
}

# service_dropin CONTENT...: a runtime drop-in for the service, one line per
# argument, in effect at its next start; service_dropin_remove undoes it.
readonly E2E_DROPIN_DIR=/run/systemd/system/$SERVICE.d
service_dropin() {
	put_file "$E2E_DROPIN_DIR/e2e.conf" "$(printf '%s\n' "[Service]" "$@")"$'\n'
	in_ct systemctl daemon-reload
}

service_dropin_remove() {
	in_ct rm -rf "$E2E_DROPIN_DIR"
	in_ct systemctl daemon-reload
}

# The same TCP connections (same client ports) are served by the next process,
# also when a client sent its request while no process ran or closed its
# connection meanwhile; the fd store empties each time: no fd outlives its
# connection, in systemd or in the service, after 100 restarts.
scenario_keep_connections_faults() {
	local out pid fds_before
	fds_before=$(pid1_fds)

	# A gap between the old process's exit and the new one's start: requests
	# sent into it wait in the stored sockets; closed ones are not leaked.
	service_dropin "ExecStartPre=+/bin/sleep 1"
	idle_clients gap --clients 20 --close 5 --hold 1.5
	sleep 1
	in_ct systemctl restart "$SERVICE"
	idle_clients_wait gap
	out=$IDLE_OUT
	pid=$(unit_prop "$SERVICE" MainPID)
	check "requests sent while no process ran are answered by the next one on the same connections ($out)" \
		expect_eq "answered twice/failed/PIDs after" "15/0/[$pid]" \
		"$(json_fields "$LOG_DIR/idle-gap.json" answered_twice failed pids_after | tr -d ' ')"
	service_dropin_remove

	# A start that fails before the new process runs: systemd restarts the
	# service (Restart=on-failure) and the next process adopts the connections.
	service_dropin "ExecStartPre=+/bin/sh -c 'if [ -e /run/e2e-fail-once ]; then rm /run/e2e-fail-once; exit 1; fi'"
	in_ct touch /run/e2e-fail-once
	idle_clients fail --clients 20 --hold 3
	sleep 1
	in_ct systemctl restart "$SERVICE" >/dev/null 2>&1 || true
	wait_until 10 unit_state_is "$SERVICE" active || true
	idle_clients_wait fail
	out=$IDLE_OUT
	pid=$(unit_prop "$SERVICE" MainPID)
	check "a failed start keeps the stored connections for the restart after it ($out)" \
		expect_eq "answered twice/failed/PIDs after" "20/0/[$pid]" \
		"$(json_fields "$LOG_DIR/idle-fail.json" answered_twice failed pids_after | tr -d ' ')"
	in_ct rm -f /run/e2e-fail-once
	service_dropin_remove

	# 100 restarts with 20 connections kept all along.
	local i problems=''
	# A full store keeps what fits; the rest close as before (after shutdown.linger).
	service_dropin "FileDescriptorStoreMax=5" "Environment=FDSTORE=5"
	idle_clients full --clients 20 --hold 3
	sleep 1
	in_ct systemctl restart "$SERVICE"
	idle_clients_wait full
	pid=$(unit_prop "$SERVICE" MainPID)
	check "a store for 5 keeps 5 connections; the other 15 are closed as without a store ($IDLE_OUT)" \
		expect_eq "answered twice/failed/PIDs after" "5/15/[$pid]" \
		"$(json_fields "$LOG_DIR/idle-full.json" answered_twice failed pids_after | tr -d ' ')"
	service_dropin_remove
	in_ct systemctl restart "$SERVICE"

	# A reload stores nothing: the same process serves on, PID 1 holds nothing new.
	idle_clients reload --clients 20 --hold 3
	sleep 1
	pid=$(unit_prop "$SERVICE" MainPID)
	in_ct systemctl reload "$SERVICE"
	check "a reload stores nothing in PID 1 (fds before/after: $fds_before/$(pid1_fds))" \
		expect_at_most "PID 1 fds" "$((fds_before + FD_SLACK))" "$(pid1_fds)"
	idle_clients_wait reload
	check "connections stay with the same process across a reload ($IDLE_OUT)" \
		expect_eq "answered twice/failed/PIDs after" "20/0/[$pid]" \
		"$(json_fields "$LOG_DIR/idle-reload.json" answered_twice failed pids_after | tr -d ' ')"

	# The starts above count against StartLimitBurst= (50 in 10 s) too.
	in_ct systemctl reset-failed "$SERVICE"
	idle_clients hundred --clients 20 --hold 120
	sleep 1
	for i in $(seq 1 100); do
		out=$(in_ct systemctl restart "$SERVICE" 2>&1) || problems+="restart $i: $out"$'\n'
		# Well under StartLimitBurst=, as scripted restarts should be: a restart takes
		# about 0.1 s here.
		sleep 0.25
	done
	check "100 x systemctl restart with idle connections kept" expect_empty "problems" "$problems"
	local service_fds
	pid=$(unit_prop "$SERVICE" MainPID)
	check "PID 1 holds no stored fd once the service adopted them (fds before/after: $fds_before/$(pid1_fds))" \
		expect_at_most "PID 1 fds" "$((fds_before + FD_SLACK))" "$(pid1_fds)"
	service_fds=$(in_ct sh -c "ls /proc/$pid/fd | wc -l")
	check "the service holds the 20 connections and its own fds, nothing more (fds: $service_fds; established: $(established_on_port))" \
		expect_eq "established connections" 20 "$(established_on_port)"
	kill "$IDLE_PID" 2>/dev/null || true
	wait "$IDLE_PID" 2>/dev/null || true

	# A real stop closes what the store holds, as systemd releases it.
	idle_clients stop --clients 20 --hold 3
	sleep 1
	in_ct systemctl stop "$SERVICE"
	idle_clients_wait stop
	out=$IDLE_OUT
	check "systemctl stop closes every kept connection ($out)" \
		expect_eq "answered twice/failed" "0/20" \
		"$(json_fields "$LOG_DIR/idle-stop.json" answered_twice failed)"
	check "nothing stays stored in PID 1 after the stop (fds before/after: $fds_before/$(pid1_fds))" \
		expect_at_most "PID 1 fds" "$((fds_before + FD_SLACK))" "$(pid1_fds)"
	in_ct systemctl start "$SERVICE"
}

# --- package upgrades ---------------------------------------------------------

# deb_variant OUT VERSION EDIT: $DEB_UPGRADE rebuilt on the host as VERSION at
# OUT, after the function EDIT changed its unpacked tree (given as $1).
deb_variant() {
	local out=$1 version=$2 edit=$3 tmp rc=0
	tmp=$(mktemp -d)
	dpkg-deb --raw-extract "$DEB_UPGRADE" "$tmp/pkg"
	sed -i "s/^Version: .*/Version: $version/" "$tmp/pkg/DEBIAN/control"
	"$edit" "$tmp/pkg" || rc=$?
	if ((rc == 0)); then
		if [[ -f $tmp/pkg/DEBIAN/md5sums ]]; then
			(cd "$tmp/pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
				sort -z | xargs -0 md5sum >DEBIAN/md5sums)
		fi
		dpkg-deb --root-owner-group --build "$tmp/pkg" "$out" >/dev/null || rc=$?
	fi
	rm -rf "$tmp"
	return "$rc"
}

# The version the binary of the in-place upgrade reports: the installed one
# with its last character changed, so it is as long.
other_version() {
	local v=$1
	if [[ ${v: -1} == 9 ]]; then printf '%s8\n' "${v%?}"; else printf '%s9\n' "${v%?}"; fi
}

# EDIT for deb_variant: the binary reports $E2E_NEW_VERSION instead of
# $E2E_OLD_VERSION, so GET /version tells the new binary from the old without
# a second build. The version string is rewritten in place (as long, so
# nothing moves); every copy of it must be the version (the check that
# --version prints the new one catches a wrong guess).
E2E_OLD_VERSION='' E2E_NEW_VERSION=''
binary_reports_new_version() {
	python3 - "$1/usr/bin/$NAME" "$E2E_OLD_VERSION" "$E2E_NEW_VERSION" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
data = open(path, "rb").read()
if len(old) != len(new) or data.count(old) == 0:
    sys.exit(f"cannot rewrite {old!r} as {new!r} in {path}")
open(path, "wb").write(data.replace(old, new))
PY
}

# EDIT for deb_variant: seamless.service gains a setting, so the package's
# postinst must restart the service to apply it (and the process shows it).
service_unit_changes() {
	sed -i 's/^\[Service\]$/&\nEnvironment=E2E_UNIT_CHANGED=1/' "$1/usr/lib/systemd/system/$SERVICE"
	grep -qx 'Environment=E2E_UNIT_CHANGED=1' "$1/usr/lib/systemd/system/$SERVICE"
}

# The line the maintainer scripts print about the path they took.
path_line() {
	grep -E "^$NAME: (upgraded|restarting|not restarting|the service)" <<<"$1" | head -n1 || true
}

# A package upgrade whose units are unchanged replaces the running process in
# place (`seamless upgrade` from postinst): the same unit invocation, a new
# main process running the new binary, no moment without a process. It must
# not touch the socket: restarting it would reset the connections in its
# queue. A package that changes a unit restarts the service instead.
scenario_upgrade_under_load() {
	local before_enter before_exit before_inode pid invocation events=$LOG_DIR/events-upgrade.txt
	local out rc=0 totals want_version inplace=$LOG_DIR/$NAME-inplace.deb
	want_version=$(dpkg-deb --field "$DEB_UPGRADE" Version)
	E2E_OLD_VERSION=$(in_ct "$NAME" --version | awk '{ print $2 }')
	E2E_NEW_VERSION=$(other_version "$E2E_OLD_VERSION")
	deb_variant "$inplace" "$want_version" binary_reports_new_version
	e2e_copy_in "$CT" "$inplace" "/root/$NAME-inplace.deb"

	before_enter=$(unit_prop "$SOCKET" ActiveEnterTimestampMonotonic)
	before_exit=$(unit_prop "$SOCKET" InactiveExitTimestampMonotonic)
	before_inode=$(listen_inode)
	pid=$(unit_prop "$SERVICE" MainPID)
	invocation=$(unit_prop "$SERVICE" InvocationID)

	: >"$events"
	load_start upgrade "$events"
	printf '%s upgrade\n' "$(date +%s%N)" >>"$events"
	out=$(in_ct dpkg -i "/root/$NAME-inplace.deb" 2>&1) || rc=$?
	printf '%s\n' "$out" >"$LOG_DIR/dpkg-upgrade-inplace.out"
	# Requests to the upgraded process count too.
	sleep 1
	local load_rc=0
	totals=$(load_stop 2>&1) || load_rc=$?

	if ((rc == 0)); then
		pass "dpkg -i upgrade to $want_version under load"
	else
		fail "dpkg -i upgrade to $want_version under load" "$out"
	fi
	check "upgraded version is installed" \
		expect_eq "version" "$want_version" "$(in_ct dpkg-query --show --showformat="\${Version}" "$NAME")"
	if ((load_rc == 0)); then
		pass "upgrade under keep-alive + close load: 0 failed requests ($totals)"
	else
		fail "upgrade under keep-alive + close load: 0 failed requests" \
			"$totals"$'\n'"$(load_failure_summary)"
	fi
	check "the 16 busy keep-alive clients kept their connections across the package upgrade" \
		expect_eq "connections opened" 16 \
		"$(json_fields "$LOG_DIR/load-upgrade-keepalive.json" connections_opened 2>&1)"
	check "$SOCKET was not restarted (activation timestamps unchanged)" \
		expect_eq "ActiveEnter/InactiveExit" "$before_enter/$before_exit" \
		"$(unit_prop "$SOCKET" ActiveEnterTimestampMonotonic)/$(unit_prop "$SOCKET" InactiveExitTimestampMonotonic)"
	check "the listening socket is the same kernel object ($before_inode)" \
		expect_eq "listening socket inode" "$before_inode" "$(listen_inode)"
	local new_pid
	new_pid=$(unit_prop "$SERVICE" MainPID)
	check "postinst upgraded in place (printed: $(path_line "$out"))" \
		expect_match "dpkg -i output" "^$NAME: upgraded the running service in place \\(PID $pid -> $new_pid\\)\$" "$out"
	check "same unit invocation across the package upgrade (InvocationID $invocation)" \
		expect_eq "InvocationID" "$invocation" "$(unit_prop "$SERVICE" InvocationID)"
	check "MainPID moved to the new binary ($pid -> $new_pid)" expect_ne "MainPID" "$pid" "$new_pid"
	check "the running process is the new binary (not a deleted file)" \
		expect_eq "exe" "/usr/bin/$NAME" "$(in_ct readlink "/proc/$new_pid/exe")"
	check "GET /version: the new version ($E2E_NEW_VERSION, was $E2E_OLD_VERSION), from the new main process" \
		expect_eq "GET /version" "$NAME $E2E_NEW_VERSION (pid $new_pid)" "$(http_get /version 2>&1)"
	check "the old process $pid exits after its drain" wait_until 15 fails in_ct test -e "/proc/$pid"

	upgrade_changing_the_unit
}

# The fallback: a package that changes seamless.service restarts the service,
# since only a new invocation applies the unit.
upgrade_changing_the_unit() {
	local version changed=$LOG_DIR/$NAME-unit-changed.deb out rc=0 pid invocation inode new_pid
	version=$(dpkg-deb --field "$DEB_UPGRADE" Version)+unit1
	deb_variant "$changed" "$version" service_unit_changes
	e2e_copy_in "$CT" "$changed" "/root/$NAME-unit-changed.deb"
	pid=$(unit_prop "$SERVICE" MainPID)
	invocation=$(unit_prop "$SERVICE" InvocationID)
	inode=$(listen_inode)
	out=$(in_ct dpkg -i "/root/$NAME-unit-changed.deb" 2>&1) || rc=$?
	printf '%s\n' "$out" >"$LOG_DIR/dpkg-upgrade-unit-changed.out"
	if ((rc == 0)); then
		pass "dpkg -i upgrade to $version (changes $SERVICE)"
	else
		fail "dpkg -i upgrade to $version (changes $SERVICE)" "$out"
	fi
	check "postinst restarted the service instead (printed: $(path_line "$out"))" \
		expect_match "dpkg -i output" "^$NAME: restarting the service: the package changed " "$out"
	new_pid=$(unit_prop "$SERVICE" MainPID)
	check "a new unit invocation (InvocationID was $invocation)" \
		expect_ne "InvocationID" "$invocation" "$(unit_prop "$SERVICE" InvocationID)"
	check "the restarted service runs with the changed unit (PID $pid -> $new_pid)" \
		in_ct grep -qzx E2E_UNIT_CHANGED=1 "/proc/$new_pid/environ"
	check "the service answers after the restart" succeeds http_get /version
	check "the listening socket is still the same kernel object ($inode)" \
		expect_eq "listening socket inode" "$inode" "$(listen_inode)"
}

# A crash (SIGKILL) is recovered by systemd; the socket keeps accepting.
scenario_kill_main() {
	local pid restarts
	pid=$(unit_prop "$SERVICE" MainPID)
	restarts=$(unit_prop "$SERVICE" NRestarts)
	in_ct kill -KILL "$pid"
	check "after kill -9 systemd restarts the service (Restart=on-failure)" \
		wait_until 15 main_pid_replaced "$pid"
	check "NRestarts went up by one" \
		expect_eq "NRestarts" "$((restarts + 1))" "$(unit_prop "$SERVICE" NRestarts)"
	check "the socket kept accepting: a request succeeds" succeeds http_get /
	check "$SOCKET is still active" \
		expect_eq "socket ActiveState" active "$(unit_prop "$SOCKET" ActiveState)"
}

main_pid_replaced() {
	local old=$1 now
	now=$(unit_prop "$SERVICE" MainPID)
	[[ $now != 0 && $now != "$old" ]] && unit_state_is "$SERVICE" active
}

# Resident memory of a process in the container, in kB.
rss_kb() {
	in_ct sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"
}

# 1000 SIGHUPs as fast as a shell sends them, under load: nothing fails, the
# storm coalesces into far fewer reloads, and memory stays flat.
scenario_sighup_storm() {
	local pid rss_before rss_after load_rc=0 totals
	pid=$(unit_prop "$SERVICE" MainPID)
	load_start sighup "$LOG_DIR/events-sighup.txt"
	rss_before=$(rss_kb "$pid")
	echo "$(date +%s%N) sighup-storm" >>"$LOG_DIR/events-sighup.txt"
	# shellcheck disable=SC2016 # expanded by the container's shell, not this one
	in_ct sh -c 'i=0; while [ $i -lt 1000 ]; do kill -HUP "$1"; i=$((i + 1)); done' sh "$pid"
	sleep 2
	rss_after=$(rss_kb "$pid")
	totals=$(load_stop 2>&1) || load_rc=$?
	if ((load_rc == 0)); then
		pass "1000 x SIGHUP under keep-alive + close load: 0 failed requests ($totals)"
	else
		fail "1000 x SIGHUP under keep-alive + close load: requests failed" "$totals" "$(load_failure_summary)"
	fi
	check "same main PID, still active after the storm" \
		expect_eq "MainPID/ActiveState" "$pid/active" \
		"$(unit_prop "$SERVICE" MainPID)/$(unit_prop "$SERVICE" ActiveState)"
	# A leak of even 1 KiB per reload would show as 1000 KiB here.
	check "RSS flat across the storm (${rss_before} kB -> ${rss_after} kB)" \
		test "$((rss_after - rss_before))" -lt 1024
}

# A hung service is restarted by systemd's watchdog: a test build of the binary
# (cargo feature stall-hook) blocks every runtime thread on SIGUSR1; pings stop,
# WatchdogSec=10s passes, systemd aborts and restarts it, and the socket keeps
# accepting throughout.
scenario_watchdog_stall() {
	local pid restarts cursor
	e2e_exec "$CT" cp "/usr/bin/$NAME" "/root/$NAME.packaged" </dev/null
	e2e_copy_in "$CT" "$STALL_BIN" "/usr/bin/$NAME.stall"
	in_ct chmod 755 "/usr/bin/$NAME.stall"
	in_ct mv "/usr/bin/$NAME.stall" "/usr/bin/$NAME"
	in_ct systemctl restart "$SERVICE"
	http_get / >/dev/null
	pid=$(unit_prop "$SERVICE" MainPID)
	restarts=$(unit_prop "$SERVICE" NRestarts)
	cursor=$(journal_cursor)
	in_ct kill -USR1 "$pid"
	check "a stalled runtime is restarted by the watchdog within WatchdogSec" \
		wait_until 30 main_pid_replaced "$pid"
	check "systemd logged the watchdog timeout" \
		expect_match "journal" 'atchdog timeout' "$(in_ct journalctl --no-pager --after-cursor="$cursor" -u "$SERVICE")"
	check "NRestarts went up by one" \
		expect_eq "NRestarts" "$((restarts + 1))" "$(unit_prop "$SERVICE" NRestarts)"
	check "the socket kept accepting: a request succeeds" succeeds http_get /
	in_ct mv "/root/$NAME.packaged" "/usr/bin/$NAME"
	in_ct systemctl restart "$SERVICE"
	check "the packaged binary serves again" succeeds http_get /
}

# systemctl stop drains: an in-flight request completes, the process exits 0
# and the service logs its drain.
scenario_stop() {
	put_file "$CONFIG" 'message = "stopping\n"'$'\n\n''[demo]'$'\n''slow_endpoint = true'$'\n'
	check "config with the slow demo endpoint reloads" succeeds in_ct systemctl reload "$SERVICE"

	local slow_out=$LOG_DIR/stop-slow-request.txt cursor curl_pid
	cursor=$(journal_cursor)
	# A request still being answered when the stop begins keeps the drain
	# (and thus the "deactivating" state) open for about two seconds.
	curl --silent --show-error --max-time 20 --output /dev/null --write-out '%{http_code}' \
		"http://$ADDR/slow?ms=2500" >"$slow_out" 2>&1 &
	curl_pid=$!
	sleep 0.5
	in_ct systemctl stop --no-block "$SERVICE"

	# Sample the unit while it stops: the state and the STATUS= text the
	# service sends with STOPPING=1.
	local states=() state sample deadline=$((SECONDS + 40))
	while ((SECONDS < deadline)); do
		state=$(unit_prop "$SERVICE" ActiveState)
		sample="$state ($(unit_prop "$SERVICE" StatusText))"
		((${#states[@]} > 0)) && [[ ${states[${#states[@]} - 1]} == "$sample" ]] || states+=("$sample")
		[[ $state == inactive || $state == failed ]] && break
		sleep 0.05
	done
	wait "$curl_pid" || true
	local seen
	seen=$(printf '%s; ' "${states[@]}")

	check "systemd showed deactivating with the service's drain status (seen: ${seen%; })" \
		expect_match "states" 'deactivating \(draining' "$seen"
	check "the service stopped" expect_match "states" '^inactive' "${states[${#states[@]} - 1]}"
	check "the request in flight during the stop completed with 200" \
		expect_eq "status" 200 "$(cat "$slow_out")"
	check "clean exit: Result=success, ExecMainCode=exited, ExecMainStatus=0" \
		expect_eq "Result/ExecMainCode/ExecMainStatus" "success/1/0" \
		"$(unit_prop "$SERVICE" Result)/$(unit_prop "$SERVICE" ExecMainCode)/$(unit_prop "$SERVICE" ExecMainStatus)"

	local json entry
	json=$(journal_json_after "$cursor" "--unit=$SERVICE")
	entry=$(journal_entry "$json" 'MESSAGE~^draining$' "_COMM~^$COMM\$" '_TRANSPORT~^journal$' || true)
	check "the service logged \"draining\" ($(grep '^OPEN_CONNECTIONS=' <<<"$entry"))" \
		expect_match "draining entry" '^OPEN_CONNECTIONS=[1-9]' "$entry"
	entry=$(journal_entry "$json" 'MESSAGE~^drained$' "_COMM~^$COMM\$" || true)
	check "the service logged \"drained\"" expect_match "drained entry" . "$entry"
	entry=$(journal_entry "$json" "MESSAGE~^Stopping $NAME\.service" '_PID~^1$' || true)
	check "systemd logged \"Stopping $SERVICE\"" expect_match "entry of systemd" . "$entry"
	check "the socket keeps listening after the service stopped" \
		expect_eq "socket ActiveState" active "$(unit_prop "$SOCKET" ActiveState)"
}

# dpkg --purge leaves nothing behind: no units, no configuration, no
# enablement or mask symlinks, no listener.
scenario_purge() {
	local out
	if out=$(in_ct dpkg --purge "$NAME" 2>&1); then
		pass "dpkg --purge $NAME"
	else
		fail "dpkg --purge $NAME" "$out"
	fi
	check "package is gone from dpkg's database" fails in_ct dpkg-query --show "$NAME"
	local leftovers
	# shellcheck disable=SC2016 # expanded by the shell inside the container
	leftovers=$(in_ct sh -c '
		ls -d /usr/lib/systemd/system/"$1".* /lib/systemd/system/"$1".* \
			/etc/"$1" /usr/bin/"$1" 2>/dev/null
		find /etc/systemd /run/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \
			/var/lib/systemd/deb-systemd-helper-masked -name "*$1*" 2>/dev/null
		true' sh "$NAME" | without_port_dropin)
	check "no unit file, /etc/$NAME, binary, enablement or mask symlink is left" \
		expect_empty "left behind" "$leftovers"
	check "systemd no longer knows the units" \
		expect_empty "list-unit-files" "$(in_ct systemctl list-unit-files --no-legend "$NAME*" || true)"
	check "nothing listens on $ADDR any more" \
		expect_empty "listening" "$(in_ct ss -Hltn "sport = :${ADDR##*:}")"
}

# The .rpm: contents and scriptlets, then a real install/remove with Debian's
# rpm (dependencies cannot be resolved against dpkg's database: --nodeps).
scenario_rpm() {
	e2e_copy_in "$CT" "$RPM" "/root/$NAME.rpm"
	local scripts files configs
	scripts=$(in_ct rpm -qp --scripts "/root/$NAME.rpm" 2>&1)
	check "rpm scriptlets: %post presets the units on first install" \
		expect_match "scripts" "preset $NAME\.socket" "$scripts"
	check "rpm scriptlets: %preun disables and stops the units on removal" \
		expect_match "scripts" "disable --now ($NAME-https\.socket )?$NAME\.socket" "$scripts"
	check "rpm scriptlets: %preun also stops and disables the HTTPS socket on removal" \
		expect_match "scripts" "disable --now $NAME-https\.socket" "$scripts"
	check "rpm scriptlets: %post upgrades the running service in place on upgrade" \
		expect_match "scripts" "$NAME upgrade --pid" "$scripts"
	check "rpm scriptlets: %post restarts only the service when it cannot" \
		expect_match "scripts" "try-restart $NAME\.service" "$scripts"
	check "rpm scriptlets: %pre records the units before an upgrade replaces them" \
		expect_match "scripts" "sha256sum /usr/lib/systemd/system/$NAME\.service" "$scripts"
	# The messages the scriptlets print name the units too.
	check "rpm scriptlets: the socket is never restarted" \
		expect_no_match "scripts (comments and messages left out)" "restart[^|;&]*$NAME\.socket" \
		"$(grep -Ev '^[[:space:]]*(#|echo )' <<<"$scripts")"

	files=$(in_ct rpm -qpl "/root/$NAME.rpm" 2>&1)
	configs=$(in_ct rpm -qpc "/root/$NAME.rpm" 2>&1)
	local f
	for f in /usr/bin/$NAME /usr/lib/systemd/system/$SERVICE \
		/usr/lib/systemd/system/$SOCKET /etc/$NAME/$NAME.toml; do
		check "rpm contains $f" expect_match "rpm -qpl" "^$f\$" "$files"
	done
	check "rpm marks /etc/$NAME/$NAME.toml as a config file" \
		expect_match "rpm -qpc" "^/etc/$NAME/$NAME\\.toml\$" "$configs"

	local out
	if ! out=$(in_ct rpm -i --nodeps "/root/$NAME.rpm" 2>&1); then
		fail "rpm -i --nodeps $NAME.rpm" "$out"
		return 0
	fi
	pass "rpm -i --nodeps $NAME.rpm"
	check "rpm -V: installed files match the package" succeeds in_ct rpm -V --nodeps "$NAME"
	check "%post enabled $SOCKET (Debian presets enable by default)" \
		expect_eq "is-enabled" enabled "$(in_ct systemctl is-enabled "$SOCKET" 2>&1 || true)"
	in_ct systemctl daemon-reload
	check "the rpm's units start" succeeds in_ct systemctl start "$SOCKET"
	check "the rpm-installed service answers" succeeds http_get /

	# Reinstalling the same package runs the upgrade scriptlets (%pre and
	# %post with 2, then the old package's %preun and %postun with 1) and
	# replaces every file: with the units unchanged, %post upgrades in place.
	local pid invocation new_pid
	pid=$(unit_prop "$SERVICE" MainPID)
	invocation=$(unit_prop "$SERVICE" InvocationID)
	if out=$(in_ct rpm -U --replacepkgs --nodeps "/root/$NAME.rpm" 2>&1); then
		pass "rpm -U --replacepkgs --nodeps $NAME.rpm (an upgrade)"
	else
		fail "rpm -U --replacepkgs --nodeps $NAME.rpm (an upgrade)" "$out"
	fi
	new_pid=$(unit_prop "$SERVICE" MainPID)
	check "rpm upgrade: %post upgraded in place (printed: $(path_line "$out"))" \
		expect_match "rpm -U output" "^$NAME: upgraded the running service in place \\(PID $pid -> $new_pid\\)\$" "$out"
	check "rpm upgrade: same unit invocation ($invocation), MainPID moved ($pid -> $new_pid)" \
		expect_eq "InvocationID/MainPID changed" "$invocation/yes" \
		"$(unit_prop "$SERVICE" InvocationID)/$([[ $new_pid != "$pid" && $new_pid != 0 ]] && echo yes || echo no)"
	check "rpm upgrade: GET /version answered by the new main process" \
		expect_eq "GET /version pid" "$new_pid" "$(version_pid || true)"
	check "rpm upgrade: the old process $pid exits after its drain" \
		wait_until 15 fails in_ct test -e "/proc/$pid"

	if out=$(in_ct rpm -e "$NAME" 2>&1); then
		pass "rpm -e $NAME"
	else
		fail "rpm -e $NAME" "$out"
	fi
	check "%preun stopped the socket" \
		expect_eq "socket ActiveState" inactive "$(unit_prop "$SOCKET" ActiveState)"
	check "%preun disabled the socket (no sockets.target.wants link)" \
		expect_empty "left behind" "$(in_ct find /etc/systemd/system -name "$NAME.*" | without_port_dropin)"
	check "the rpm's files are gone" \
		expect_empty "left behind" \
		"$(in_ct sh -c "ls -d /usr/bin/$NAME /usr/lib/systemd/system/$NAME.* /etc/$NAME/* 2>/dev/null; true")"
	# Directories the package creates must be owned by it, or rpm -e leaves
	# them behind.
	check "rpm -e removes /etc/$NAME" \
		expect_empty "left behind" "$(in_ct sh -c "ls -d /etc/$NAME 2>/dev/null; true")"
}

# --- binary hot upgrade (seamless upgrade, SIGUSR2) ----------------------------

# Puts the binary of the upgrade package at /usr/bin/seamless the way dpkg
# does: unpack beside it, then rename over it. The running process keeps its
# old, now deleted, inode.
replace_binary() {
	# shellcheck disable=SC2016 # expanded by the shell inside the container
	in_ct sh -ec '
		dpkg-deb --fsys-tarfile "$1" | tar -xOf - "./usr/bin/$2" >"/usr/bin/$2.dpkg-new"
		chmod 0755 "/usr/bin/$2.dpkg-new"
		mv -f "/usr/bin/$2.dpkg-new" "/usr/bin/$2"' sh "/root/$NAME-upgrade.deb" "$NAME"
}

# replace_binary_with_script TEXT: the same, with a script instead.
replace_binary_with_script() {
	put_file "/usr/bin/$NAME.dpkg-new" "$1"
	in_ct sh -ec "chmod 0755 /usr/bin/$NAME.dpkg-new; mv -f /usr/bin/$NAME.dpkg-new /usr/bin/$NAME"
}

# The PID that GET /version reports ("seamless VERSION (pid PID)").
version_pid() {
	http_get /version | sed -n "s/^$NAME .* (pid \\([0-9]*\\))\$/\\1/p"
}

inode_of() {
	in_ct stat -L --format=%i "$1"
}

# pid1_lines CURSOR EXTENDED-REGEX: what systemd (PID 1) logged about
# seamless.service after CURSOR, matching REGEX.
pid1_lines() {
	in_ct journalctl --no-pager -o cat --after-cursor="$1" _PID=1 "UNIT=$SERVICE" |
		grep -E -- "$2" || true
}

# upgrade_once N EVENTS: one `seamless upgrade` of the main process, with the
# binary replaced first; prints problems, one a line. Leaves the new PID in
# $LOG_DIR/upgrade-N.pid.
upgrade_once() {
	local n=$1 events=$2 old new out rc=0 answered exe
	replace_binary
	old=$(unit_prop "$SERVICE" MainPID)
	printf '%s binary-upgrade-%d\n' "$(date +%s%N)" "$n" >>"$events"
	# No --verdict-file and no RUNTIME_DIRECTORY: the operator's form, which
	# finds the packaged unit's /run/seamless by default.
	out=$(in_ct "$NAME" upgrade --pid "$old" --timeout 60s 2>&1) || rc=$?
	printf '%s\n' "$out" >"$LOG_DIR/upgrade-$n.out"
	((rc == 0)) || echo "upgrade $n: $NAME upgrade --pid $old exited $rc: $out"
	new=$(unit_prop "$SERVICE" MainPID)
	printf '%s\n' "$new" >"$LOG_DIR/upgrade-$n.pid"
	[[ $new != 0 && $new != "$old" ]] || echo "upgrade $n: MainPID is $new (was $old)"
	answered=$(version_pid) || true
	[[ $answered == "$new" ]] || echo "upgrade $n: GET /version answered by PID ${answered:-?}, MainPID is $new"
	exe=$(in_ct readlink "/proc/$new/exe" 2>&1) || true
	[[ $exe == /usr/bin/$NAME ]] || echo "upgrade $n: /proc/$new/exe is \"$exe\""
	[[ $(inode_of "/proc/$new/exe" 2>&1) == "$(inode_of "/usr/bin/$NAME")" ]] ||
		echo "upgrade $n: PID $new does not run the file now at /usr/bin/$NAME"
	# The old process drains (linger, then its last connections) and exits.
	wait_until 15 fails in_ct test -e "/proc/$old" ||
		echo "upgrade $n: the old process $old is still running 15s after the handover"
	# Requests to each new process count too.
	sleep 0.5
}

# `seamless upgrade` ×3 under load: the installed binary takes over from the
# running process without a failed request and without systemd noticing
# anything but a new main PID.
scenario_binary_upgrade_under_load() {
	local before_enter before_exit before_inode restarts cursor events=$LOG_DIR/events-binary-upgrade.txt
	before_enter=$(unit_prop "$SOCKET" ActiveEnterTimestampMonotonic)
	before_exit=$(unit_prop "$SOCKET" InactiveExitTimestampMonotonic)
	before_inode=$(listen_inode)
	restarts=$(unit_prop "$SERVICE" NRestarts)
	cursor=$(journal_cursor)

	local problems totals load_rc=0 n
	: >"$events"
	load_start binary-upgrade "$events"
	problems=$(for n in 1 2 3; do upgrade_once "$n" "$events"; done)
	totals=$(load_stop 2>&1) || load_rc=$?
	local last_upgrade=$SECONDS pids
	pids=$(cat "$LOG_DIR"/upgrade-{1,2,3}.pid 2>/dev/null | paste -sd' ' || true)

	check "3 x $NAME upgrade: each exits 0, MainPID follows to the PID that answers GET /version, runs /usr/bin/$NAME (not deleted), the old process exits (PIDs: $pids)" \
		expect_empty "problems" "$problems"
	if ((load_rc == 0)); then
		pass "3 x $NAME upgrade under keep-alive + close load: 0 failed requests ($totals)"
	else
		fail "3 x $NAME upgrade under keep-alive + close load: 0 failed requests" \
			"$totals"$'\n'"$(load_failure_summary)"
	fi
	check "the 16 busy keep-alive clients kept their connections across the upgrades (handed to each new process)" \
		expect_eq "connections opened" 16 \
		"$(json_fields "$LOG_DIR/load-binary-upgrade-keepalive.json" connections_opened 2>&1)"
	local pid
	pid=$(unit_prop "$SERVICE" MainPID)
	check "$NAME upgrade prints what happened ($(tail -n1 "$LOG_DIR/upgrade-3.out"))" \
		expect_match "$NAME upgrade output" "PID $pid serves now" "$(cat "$LOG_DIR/upgrade-3.out")"
	check "systemctl status shows the new main PID $pid" \
		expect_match "systemctl status" "Main PID: $pid\\b" \
		"$(in_ct systemctl status --no-pager --full --lines=0 "$SERVICE" 2>&1 || true)"
	check "the journal has the new process's own log lines (_PID=$pid, \"took over from the previous process\")" \
		expect_match "journalctl _SYSTEMD_UNIT=$SERVICE _PID=$pid" '^took over from the previous process$' \
		"$(in_ct journalctl --no-pager -o cat "_SYSTEMD_UNIT=$SERVICE" "_PID=$pid")"
	local json entry
	json=$(journal_json_after "$cursor" "--unit=$SERVICE")
	entry=$(journal_entry "$json" 'MESSAGE~^handed over; draining$' "SUCCESSOR~^$pid\$" "_COMM~^$COMM\$" || true)
	check "the previous process logged the handover to $pid" expect_match "journal entry" . "$entry"
	check "$SOCKET was not restarted (activation timestamps unchanged)" \
		expect_eq "ActiveEnter/InactiveExit" "$before_enter/$before_exit" \
		"$(unit_prop "$SOCKET" ActiveEnterTimestampMonotonic)/$(unit_prop "$SOCKET" InactiveExitTimestampMonotonic)"
	check "the listening socket is the same kernel object ($before_inode)" \
		expect_eq "listening socket inode" "$before_inode" "$(listen_inode)"

	# WatchdogSec=10s: a successor whose pings systemd ignored would be killed
	# within 10s of the handover. Stay well past two intervals. The previous
	# process stops pinging at the handover, so any ping systemd records
	# afterwards is the new main process's.
	local handover_ping
	handover_ping=$(unit_prop "$SERVICE" WatchdogTimestampMonotonic)
	while ((SECONDS - last_upgrade < 22)); do sleep 1; done
	check "22s after the last upgrade: active, same main PID, NRestarts unchanged ($restarts)" \
		expect_eq "ActiveState/MainPID/NRestarts" "active/$pid/$restarts" \
		"$(unit_prop "$SERVICE" ActiveState)/$(unit_prop "$SERVICE" MainPID)/$(unit_prop "$SERVICE" NRestarts)"
	check "systemd receives the new main process's watchdog pings" \
		test "$(unit_prop "$SERVICE" WatchdogTimestampMonotonic)" -gt "$handover_ping"
	# Were NotifyAccess= `main`, systemd would drop what the successor sends
	# before the handover: its READY=1 and, depending on timing, its first
	# watchdog ping (systemd 252 logs each at warning level, 257 at debug
	# level), and upgrades in quick succession could run into WatchdogSec=.
	# A successor started by the old process is not systemd's child when it
	# becomes the main process ("not our child"): systemd, as PID 1, reaps it
	# once the old process has exited (scenario_kill_main runs against an
	# upgraded process), but does not wait for it on stop (checked below).
	local refused alien
	refused=$(pid1_lines "$cursor" 'reception only permitted for main PID' | wc -l)
	alien=$(pid1_lines "$cursor" 'which is not our child' | wc -l)
	check "systemd accepted every handover and the watchdog never fired (pre-handover messages refused: $refused, \"not our child\": $alien)" \
		expect_empty "systemd (PID 1) about $SERVICE" \
		"$(pid1_lines "$cursor" 'does not belong to service|[Rr]efusing|[Ww]atchdog timeout|[Kk]illing')"

	# Reload and stop work on the process systemd did not start itself, and
	# the stop still drains: a request in flight completes.
	put_file "$CONFIG" 'message = "after binary upgrades\n"'$'\n\n''[demo]'$'\n''slow_endpoint = true'$'\n'
	check "systemctl reload after the upgrades" succeeds in_ct systemctl reload "$SERVICE"
	check "... the next request serves the new message" \
		expect_eq "body" "after binary upgrades" "$(http_get / 2>&1 || true)"
	check "... and the reload kept the main process" \
		expect_eq "MainPID" "$pid" "$(unit_prop "$SERVICE" MainPID)"
	local slow_out=$LOG_DIR/binary-upgrade-stop-slow-request.txt curl_pid
	curl --silent --show-error --max-time 20 --output /dev/null --write-out '%{http_code}' \
		"http://$ADDR/slow?ms=2000" >"$slow_out" 2>&1 &
	curl_pid=$!
	sleep 0.5
	check "systemctl stop after the upgrades" succeeds in_ct systemctl stop "$SERVICE"
	wait "$curl_pid" || true
	check "... ends with Result=success, exit status 0" \
		expect_eq "ActiveState/Result/ExecMainCode/ExecMainStatus" "inactive/success/1/0" \
		"$(unit_prop "$SERVICE" ActiveState)/$(unit_prop "$SERVICE" Result)/$(unit_prop "$SERVICE" ExecMainCode)/$(unit_prop "$SERVICE" ExecMainStatus)"
	check "... after draining: the request in flight during the stop completed with 200" \
		expect_eq "status" 200 "$(cat "$slow_out")"
	check "... and no process of the unit is left (PID $pid gone)" fails in_ct test -e "/proc/$pid"
	check "the next request starts the service again" succeeds http_get /
}

# An upgrade whose new binary cannot start changes nothing: `seamless upgrade`
# fails with the reason, the old process serves on as the main process.
scenario_binary_upgrade_fails() {
	local pid restarts out rc=0 events=$LOG_DIR/events-binary-upgrade-fails.txt totals load_rc=0
	pid=$(unit_prop "$SERVICE" MainPID)
	restarts=$(unit_prop "$SERVICE" NRestarts)
	# `seamless upgrade` itself runs from a copy: /usr/bin/seamless is the
	# broken one now.
	in_ct cp "/usr/bin/$NAME" "/root/$NAME-cli"
	replace_binary_with_script $'#!/bin/sh\necho "broken build" >&2\nexit 3\n'

	local cursor
	cursor=$(journal_cursor)
	: >"$events"
	load_start binary-upgrade-fails "$events"
	printf '%s failed-binary-upgrade\n' "$(date +%s%N)" >>"$events"
	out=$(in_ct "/root/$NAME-cli" upgrade --pid "$pid" --timeout 60s 2>&1) || rc=$?
	sleep 0.5
	totals=$(load_stop 2>&1) || load_rc=$?

	check "$NAME upgrade to a binary that exits 3 exits non-zero (status $rc)" \
		expect_ne "exit status" 0 "$rc"
	check "... and says why ($out)" expect_match "$NAME upgrade output" 'exited before it was ready' "$out"
	local entry
	entry=$(journal_entry "$(journal_json_after "$cursor" "--unit=$SERVICE")" \
		'MESSAGE~^upgrade failed' '*~exited before it was ready' "_PID~^$pid\$" 'PRIORITY~^[0-3]$' || true)
	check "the service logged the failed upgrade at error priority" \
		expect_match "journal entry of PID $pid" . "$entry"
	check "the old process is still the main process and serving" \
		expect_eq "MainPID/GET /version pid/ActiveState/NRestarts" "$pid/$pid/active/$restarts" \
		"$(unit_prop "$SERVICE" MainPID)/$(version_pid || true)/$(unit_prop "$SERVICE" ActiveState)/$(unit_prop "$SERVICE" NRestarts)"
	if ((load_rc == 0)); then
		pass "failed upgrade under keep-alive + close load: 0 failed requests ($totals)"
	else
		fail "failed upgrade under keep-alive + close load: 0 failed requests" \
			"$totals"$'\n'"$(load_failure_summary)"
	fi

	# Restored; the process upgraded to here is the one scenario_kill_main kills.
	replace_binary
	check "the binary restored, the next upgrade succeeds" \
		succeeds in_ct "$NAME" upgrade --pid "$pid" --timeout 60s
	in_ct rm -f "/root/$NAME-cli"
	check "... with a new main process that answers GET /version" \
		expect_eq "GET /version pid" "$(unit_prop "$SERVICE" MainPID)" "$(version_pid || true)"
}

# --- HTTPS ($NAME-https.socket) ------------------------------------------------

readonly TLS_DIR=/etc/$NAME/tls
readonly TLS_SERVICE_DROPIN=/etc/systemd/system/$SERVICE.d/https.conf
readonly TLS_CONFIG_DROPIN=/etc/$NAME/$NAME.d/tls.toml
readonly HTTPS_PORT_DROPIN=/etc/systemd/system/$HTTPS_SOCKET.d/e2e-port.conf

# make_certs DIR: on the host, a CA and three leaf certificates it signs, all
# for localhost and 127.0.0.1: cert.pem (serial 1001, key.pem), its renewal
# cert-renewed.pem (serial 1002, the same key, as `certbot renew --reuse-key`
# makes) and cert-other-key.pem (serial 1003, another key: a mismatch with
# key.pem).
make_certs() {
	local dir=$1
	rm -rf "$dir"
	mkdir -p "$dir"
	cat >"$dir/openssl.cnf" <<-'CNF'
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		CN = e2e
		[ca]
		basicConstraints = critical, CA:TRUE
		keyUsage = critical, keyCertSign, cRLSign
		subjectKeyIdentifier = hash
		[leaf]
		subjectAltName = DNS:localhost, IP:127.0.0.1
		basicConstraints = critical, CA:FALSE
		keyUsage = critical, digitalSignature
		extendedKeyUsage = serverAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	CNF
	local key
	for key in ca.key key.pem other-key.pem; do
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$key"
	done
	openssl req -x509 -new -config "$dir/openssl.cnf" -extensions ca -key "$dir/ca.key" \
		-subj "/CN=$NAME e2e CA" -days 3 -set_serial 1 -out "$dir/ca.pem"
	make_leaf "$dir" key.pem 0x1001 cert.pem
	make_leaf "$dir" key.pem 0x1002 cert-renewed.pem
	make_leaf "$dir" other-key.pem 0x1003 cert-other-key.pem
}

make_leaf() {
	local dir=$1 key=$2 serial=$3 out=$4
	openssl req -new -config "$dir/openssl.cnf" -key "$dir/$key" -subj /CN=localhost \
		-out "$dir/$out.csr"
	openssl x509 -req -in "$dir/$out.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-set_serial "$serial" -days 3 -extfile "$dir/openssl.cnf" -extensions leaf \
		-out "$dir/$out" 2>/dev/null
}

# GET PATH over HTTPS from the host, trusting only the test CA; extra curl
# options before it. Prints the body, then "HTTP_VERSION" on the last line.
https_get() {
	local path=$1
	shift
	curl --fail --silent --show-error --max-time 10 --cacert "$CERTS/ca.pem" \
		--resolve "localhost:${HTTPS_ADDR##*:}:${HTTPS_ADDR%:*}" \
		--write-out '\n%{http_version}' "$@" "https://localhost:${HTTPS_ADDR##*:}$path"
}

# The serial of the certificate a new TLS connection is served.
served_serial() {
	timeout 10 openssl s_client -connect "$HTTPS_ADDR" -servername localhost </dev/null 2>/dev/null |
		openssl x509 -noout -serial
}

# install_cert FILE: the certificate at its configured path, as an
# administrator (or a deploy hook) replaces it: a new file renamed over it.
install_cert() {
	e2e_copy_in "$CT" "$CERTS/$1" "$TLS_DIR/cert.pem.new"
	in_ct sh -ec "chmod 0644 $TLS_DIR/cert.pem.new; mv -f $TLS_DIR/cert.pem.new $TLS_DIR/cert.pem"
}

# tls_load_totals TAG: after load_stop, every report of the run must be a TLS
# one with at least MIN_OK successful requests. Prints
# "requests/failed/connections" per mode.
tls_load_totals() {
	local tag=$1 mode report problems=() got tls ok failed
	for mode in keepalive close; do
		report=$LOG_DIR/load-$tag-$mode.json
		got=$(json_fields "$report" tls total ok failed connections_opened 2>&1) || got="unreadable: $got"
		printf '%s: tls/total/ok/failed/connections %s\n' "$mode" "$got"
		IFS=/ read -r tls _ ok failed _ <<<"$got"
		[[ $tls == True ]] || problems+=("$mode: not a TLS report (tls=$tls)")
		[[ $failed == 0 ]] || problems+=("$mode: $failed failed")
		[[ $ok =~ ^[0-9]+$ ]] && ((ok >= HTTPS_MIN_OK)) ||
			problems+=("$mode: only $ok successful requests (at least $HTTPS_MIN_OK expected)")
	done
	((${#problems[@]} == 0)) || { printf '%s\n' "${problems[@]}"; return 1; }
}

# https_remove: disables the HTTPS socket and removes what scenario_https
# installed; the service keeps the socket it has until its next restart.
https_remove() {
	in_ct systemctl disable --now "$HTTPS_SOCKET" >/dev/null 2>&1 || true
	in_ct rm -rf "$TLS_SERVICE_DROPIN" "$TLS_CONFIG_DROPIN" "$TLS_DIR" "${HTTPS_PORT_DROPIN%/*}" || true
	in_ct rmdir --ignore-fail-on-non-empty "${TLS_SERVICE_DROPIN%/*}" || true
	in_ct systemctl daemon-reload || true
}

# Under load, each run's keep-alive and close clients together must get at
# least this many answers: the restarts must not stop traffic for long.
readonly HTTPS_MIN_OK=500

# HTTPS as the README sets it up: the certificate by an absolute path, the
# key through LoadCredential=, the HTTPS socket started with the service. Both
# protocols answer, a renewed certificate goes live on `systemctl reload`, a
# certificate for another key is refused and the old one keeps serving, and
# restarts and binary upgrades under TLS load fail no request.
scenario_https() {
	if (exec 3<>"/dev/tcp/${HTTPS_ADDR%:*}/${HTTPS_ADDR##*:}") 2>/dev/null; then
		fail "https: $HTTPS_ADDR is free on this host" \
			"$(ss -Hltnp "sport = :${HTTPS_ADDR##*:}" 2>&1)" "(E2E_HTTPS_PORT=N moves the HTTPS socket)"
		return 0
	fi
	make_certs "$CERTS" >"$LOG_DIR/certs.log" 2>&1 ||
		{ fail "https: test certificates made with openssl" "$(cat "$LOG_DIR/certs.log")"; return 0; }

	check "$HTTPS_SOCKET is shipped but neither enabled nor active" \
		expect_eq "is-enabled/ActiveState" "disabled/inactive" \
		"$(in_ct systemctl is-enabled "$HTTPS_SOCKET" || true)/$(unit_prop "$HTTPS_SOCKET" ActiveState)"

	# The README's steps.
	in_ct install -d -m 0755 "$TLS_DIR"
	e2e_copy_in "$CT" "$CERTS/cert.pem" "$TLS_DIR/cert.pem"
	e2e_copy_in "$CT" "$CERTS/key.pem" "$TLS_DIR/key.pem"
	in_ct chmod 0644 "$TLS_DIR/cert.pem"
	in_ct chmod 0600 "$TLS_DIR/key.pem"
	in_ct install -D -m 0644 "/usr/share/doc/$NAME/examples/https.conf" "$TLS_SERVICE_DROPIN"
	put_file "$TLS_CONFIG_DROPIN" "[tls]"$'\n'"certificate = \"$TLS_DIR/cert.pem\""$'\n''key = "tls.key"'$'\n'
	if [[ ${HTTPS_ADDR##*:} != "$PACKAGED_HTTPS_PORT" ]]; then
		put_file "$HTTPS_PORT_DROPIN" "[Socket]"$'\n'"ListenStream="$'\n'"ListenStream=$HTTPS_ADDR"$'\n'
	fi
	# Whatever stops this scenario, the scenarios after it get the default
	# installation back.
	trap 'https_remove; in_ct systemctl restart "$SERVICE" || true' EXIT
	in_ct systemctl daemon-reload
	check "systemctl enable $HTTPS_SOCKET" succeeds in_ct systemctl enable "$HTTPS_SOCKET"
	local cursor pid
	cursor=$(journal_cursor)
	check "systemctl restart $SERVICE starts $HTTPS_SOCKET with it (the drop-in's Wants=)" \
		succeeds in_ct systemctl restart "$SERVICE"
	check "$HTTPS_SOCKET and $SERVICE are active" \
		expect_eq "ActiveState" "active/active" \
		"$(unit_prop "$HTTPS_SOCKET" ActiveState)/$(unit_prop "$SERVICE" ActiveState)"
	check "systemd (PID 1) holds the HTTPS listening socket $HTTPS_ADDR" \
		expect_match "listening sockets" '"systemd",pid=1,' \
		"$(in_ct ss -Hltnp "sport = :${HTTPS_ADDR##*:}")"
	pid=$(unit_prop "$SERVICE" MainPID)

	local out
	out=$(https_get / --http1.1 2>&1) || true
	check "HTTPS over HTTP/1.1 answers (curl --cacert, $(tail -n1 <<<"$out"))" \
		expect_eq "http_version" 1.1 "$(tail -n1 <<<"$out")"
	out=$(https_get / --http2 2>&1) || true
	check "HTTPS over HTTP/2 answers (ALPN h2, $(tail -n1 <<<"$out"))" \
		expect_eq "http_version" 2 "$(tail -n1 <<<"$out")"
	check "plain HTTP on $ADDR still answers" succeeds http_get /
	check "the journal since the restart has no \"proceeding without\" (LoadCredential= applied)" \
		expect_no_match "journal" 'proceeding without' \
		"$(in_ct journalctl --no-pager -o cat --after-cursor="$cursor")"
	check "the certificate served is the installed one (serial 1001)" \
		expect_eq "serial" serial=1001 "$(served_serial 2>&1)"

	# Renewal with the same key: a reload takes it.
	install_cert cert-renewed.pem
	check "renewed certificate (same key): systemctl reload exits 0" \
		succeeds in_ct systemctl reload "$SERVICE"
	check "... a new connection is served the renewed certificate (serial 1002)" \
		expect_eq "serial" serial=1002 "$(served_serial 2>&1)"

	# A certificate for another key: refused, the renewed one keeps serving.
	install_cert cert-other-key.pem
	local rc=0 status
	cursor=$(journal_cursor)
	out=$(in_ct systemctl reload "$SERVICE" 2>&1) || rc=$?
	check "certificate for another key: systemctl reload exits non-zero" expect_ne "exit status" 0 "$rc"
	status=$(in_ct systemctl status --no-pager --full --lines=20 "$SERVICE" 2>&1 || true)
	check "... and systemctl reload or status names the key mismatch" \
		expect_match "systemctl reload output + status" 'does not match the certificate' "$out"$'\n'"$status"
	check "... the service logged it at error priority" \
		expect_match "journal entry naming the mismatch at PRIORITY<=3" . \
		"$(journal_entry "$(journal_json_after "$cursor" "--unit=$SERVICE")" \
			'*~does not match the certificate' "_COMM~^$COMM\$" 'PRIORITY~^[0-3]$' || true)"
	check "... the unit is back to active" wait_until 5 unit_state_is "$SERVICE" active
	check "... a new connection is still served the renewed certificate (serial 1002)" \
		expect_eq "serial" serial=1002 "$(served_serial 2>&1)"
	install_cert cert-renewed.pem
	check "the good certificate restored: systemctl reload exits 0" \
		succeeds in_ct systemctl reload "$SERVICE"
	check "reloads kept the same main process" expect_eq "MainPID" "$pid" "$(unit_prop "$SERVICE" MainPID)"
	local metric=${NAME//-/_}_tls_certificate_expiry_seconds
	check "/metrics has $metric for $TLS_DIR/cert.pem" \
		expect_match "/metrics" "^$metric\\{certificate=\"$TLS_DIR/cert\\.pem\"\\} [0-9]" \
		"$(http_get /metrics 2>&1)"

	# Restarts and binary upgrades under TLS load.
	local events=$LOG_DIR/events-https-restart.txt totals load_rc=0 problems counts
	local tls_load=("$HTTPS_ADDR" --tls --cacert "$CERTS/ca.pem" --server-name localhost)
	: >"$events"
	load_start https-restart "$events" "${tls_load[@]}"
	problems=$(restart_loop 10 "$events")
	totals=$(load_stop 2>&1) || load_rc=$?
	check "10 x systemctl restart with HTTPS: each succeeded with a new main process" \
		expect_empty "problems" "$problems"
	counts=$(tls_load_totals https-restart 2>&1) || load_rc=1
	if ((load_rc == 0)); then
		pass "10 x systemctl restart under TLS keep-alive + close load: 0 failed requests ($totals; $(tr '\n' ';' <<<"$counts"))"
	else
		fail "10 x systemctl restart under TLS keep-alive + close load: 0 failed requests" \
			"$totals"$'\n'"$counts"$'\n'"$(load_failure_summary)"
	fi

	events=$LOG_DIR/events-https-upgrade.txt load_rc=0
	: >"$events"
	load_start https-upgrade "$events" "${tls_load[@]}"
	problems=$(for n in 101 102 103 104 105; do upgrade_once "$n" "$events"; done)
	totals=$(load_stop 2>&1) || load_rc=$?
	check "5 x $NAME upgrade with HTTPS: each exits 0 and hands over" expect_empty "problems" "$problems"
	counts=$(tls_load_totals https-upgrade 2>&1) || load_rc=1
	if ((load_rc == 0)); then
		pass "5 x $NAME upgrade under TLS keep-alive + close load: 0 failed requests ($totals; $(tr '\n' ';' <<<"$counts"))"
	else
		fail "5 x $NAME upgrade under TLS keep-alive + close load: 0 failed requests" \
			"$totals"$'\n'"$counts"$'\n'"$(load_failure_summary)"
	fi
	check "after the upgrades the HTTPS socket still serves the renewed certificate" \
		expect_eq "serial" serial=1002 "$(served_serial 2>&1)"

	# Back to the default installation for the scenarios after this one.
	trap - EXIT
	https_remove
	check "HTTPS removed again: systemctl restart $SERVICE" succeeds in_ct systemctl restart "$SERVICE"
	check "... nothing listens on $HTTPS_ADDR, plain HTTP answers" \
		expect_eq "listeners on :${HTTPS_ADDR##*:} / GET /" "0/ok" \
		"$(in_ct ss -Hltn "sport = :${HTTPS_ADDR##*:}" | wc -l)/$(http_get / >/dev/null 2>&1 && echo ok)"
}
