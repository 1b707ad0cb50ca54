#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# What each hardening directive of the packaged seamless.service costs at
# start-up, on real systemd (Debian 12 / systemd 252, Debian 13 / systemd 257,
# booted with systemd-nspawn by tests/e2e/lib.sh), and what it is worth in
# `systemd-analyze security`.
#
# Usage:
#   bench/sandbox.sh [--dist bookworm|trixie|all] [--starts N] [--deb PATH]
#                    [--variants singles|groups|all]
#
#   --dist    default: all, one after the other (the containers share the host
#             network)
#   --starts  starts per variant and distribution (default 20)
#   --deb     the package to install (default target/debian/seamless_0.1.0-1_amd64.deb)
#   --variants  singles: one directive reset at a time; groups: the directives
#             that share a mechanism (a kind of namespace, seccomp, the mount
#             namespace) reset together; all (default): both. The packaged
#             unit and the unit without sandbox are always measured.
#
# Variants: the unit as packaged; the unit with ONE sandbox directive reset at a
# time (a drop-in in /run/systemd/system/seamless.service.d/); groups of them
# reset together; the unit with every one of them reset. Each start is a `systemctl restart`, timed with
# systemd's own timestamps like bench/run.sh's restart_unit: fork of the main
# process (ExecMainStartTimestampMonotonic) to READY=1
# (ActiveEnterTimestampMonotonic), sandbox set-up included. The variants take
# turns, a few starts each, so that drift in the machine's load hits them alike.
#
# Output: a Markdown table on stdout and in
# bench/results/sandbox/VARIANTS/SANDBOX.md; raw samples in
# bench/results/sandbox/VARIANTS/DIST/ (git-ignored). Needs root and
# python3. Takes the run lock of tests/e2e/ and bench/run.sh (and waits for it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=../tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

# A port of its own on the shared host network: 8080 (the packaged default)
# may be a development server, 18080-18083 are bench/run.sh's.
readonly ADDR=127.0.0.1:18090
readonly MACHINES_DIR=${E2E_MACHINES_DIR:-/var/lib/machines}
readonly CMD_TIMEOUT=${BENCH_CMD_TIMEOUT:-300}
readonly DROPIN_DIR=/run/systemd/system/seamless.service.d
# Starts per variant per turn: small enough that the variants interleave,
# large enough that a daemon-reload is not needed for every start.
readonly PER_TURN=5

# Each sandbox directive of the packaged unit and the value that turns it off
# (an empty assignment resets list-valued settings). The run refuses to start
# when the unit has a sandbox directive missing here, so a new one is measured
# the day it is added. Several are implied by others (DynamicUser= implies
# ProtectSystem=strict, ProtectHome=read-only, PrivateTmp=, RemoveIPC=,
# NoNewPrivileges= and RestrictSUIDSGID=; PrivateDevices= implies
# DevicePolicy=closed): resetting one of those alone changes little, the
# "no sandbox" variant resets them together.
readonly -a RESETS=(
	DynamicUser=no
	'CapabilityBoundingSet=~'
	AmbientCapabilities=
	NoNewPrivileges=no
	PrivateNetwork=no
	RestrictAddressFamilies=
	IPAddressDeny=
	PrivateUsers=no
	PrivateDevices=no
	DevicePolicy=auto
	PrivateTmp=no
	PrivateIPC=no
	PrivateMounts=no
	ProtectSystem=no
	ProtectHome=no
	ProtectProc=default
	ProcSubset=all
	ProtectHostname=no
	ProtectClock=no
	ProtectKernelTunables=no
	ProtectKernelModules=no
	ProtectKernelLogs=no
	ProtectControlGroups=no
	RestrictNamespaces=no
	RestrictRealtime=no
	RestrictSUIDSGID=no
	LockPersonality=no
	MemoryDenyWriteExecute=no
	RemoveIPC=no
	UMask=0022
	SystemCallArchitectures=
	SystemCallFilter=
	SystemCallErrorNumber=
)

# Groups, "LABEL|RESET...": systemd sets most of the sandbox up in a few
# mechanisms, and several directives share one (every file-system directive
# needs the mount namespace, which DynamicUser= alone already implies), so
# resetting one directive rarely removes a mechanism; these remove whole ones.
readonly -a RESET_GROUPS=(
	'user, network, IPC and UTS namespaces|PrivateUsers=no PrivateNetwork=no PrivateIPC=no ProtectHostname=no'
	'user, IPC and UTS namespaces|PrivateUsers=no PrivateIPC=no ProtectHostname=no'
	'seccomp filters|SystemCallFilter= SystemCallArchitectures= RestrictAddressFamilies= RestrictNamespaces=no MemoryDenyWriteExecute=no LockPersonality=no RestrictRealtime=no'
	'/proc instance|ProtectProc=default ProcSubset=all'
	'file-system directives|PrivateDevices=no PrivateTmp=no PrivateMounts=no ProtectSystem=no ProtectHome=no ProtectProc=default ProcSubset=all ProtectKernelTunables=no ProtectKernelModules=no ProtectKernelLogs=no ProtectControlGroups=no ProtectClock=no'
	'kernel file-system directives|ProtectKernelTunables=no ProtectKernelModules=no ProtectKernelLogs=no ProtectControlGroups=no ProtectClock=no'
	'other file-system directives|PrivateDevices=no PrivateTmp=no PrivateMounts=no ProtectSystem=no ProtectHome=no ProtectProc=default ProcSubset=all'
	'file system and dynamic user|DynamicUser=no PrivateDevices=no PrivateTmp=no PrivateMounts=no ProtectSystem=no ProtectHome=no ProtectProc=default ProcSubset=all ProtectKernelTunables=no ProtectKernelModules=no ProtectKernelLogs=no ProtectControlGroups=no ProtectClock=no'
)

DISTS=() STARTS=20 VARIANTS=all DEB='' ARGS_TEXT='' CT='' DIST='' RES=''

usage() {
	sed -n '/^# Usage:/,/^# Variants:/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

die() {
	printf 'sandbox: %s\n' "$*" >&2
	exit 2
}

say() { printf '# %s\n' "$*" >&2; }

parse_args() {
	local dist=all
	ARGS_TEXT="$*"
	DEB=${CARGO_TARGET_DIR:-$REPO/target}/debian/seamless_0.1.0-1_amd64.deb
	while (($#)); do
		case $1 in
		--dist) dist=${2:?}; shift 2 ;;
		--starts) STARTS=${2:?}; shift 2 ;;
		--deb) DEB=${2:?}; shift 2 ;;
		--variants) VARIANTS=${2:?}; shift 2 ;;
		-h | --help) usage ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	case $dist in
	bookworm | trixie) DISTS=("$dist") ;;
	all) DISTS=(bookworm trixie) ;;
	*) die "--dist must be bookworm, trixie or all" ;;
	esac
	case $VARIANTS in
	singles | groups | all) ;;
	*) die "--variants must be singles, groups or all" ;;
	esac
	[[ $STARTS =~ ^[1-9][0-9]*$ ]] || die "--starts must be a positive number"
	[[ -f $DEB ]] || die "no such package: $DEB"
	DEB=$(realpath "$DEB")
}

# The keys set in the unit's sandbox block (from "# Sandbox." to the end).
unit_sandbox_keys() {
	sed -n '/^# Sandbox\./,$p' "$REPO/units/seamless.service" |
		sed -n 's/^\([A-Za-z]*\)=.*/\1/p' | sort -u
}

# Each of them must have a reset above.
check_resets() {
	local key known
	known=" ${RESETS[*]%%=*} "
	while read -r key; do
		[[ $known == *" $key "* ]] || die "$key in units/seamless.service has no reset in bench/sandbox.sh"
	done < <(unit_sandbox_keys)
}

in_ct() { e2e_exec "$CT" timeout "$CMD_TIMEOUT" "$@" </dev/null; }

# set_variant NAME: the drop-in for variant NAME ("packaged", "no sandbox", a
# directive's reset or a group's label), then daemon-reload and a fresh
# start-limit count.
set_variant() {
	local name=$1 body='' reset group
	case $name in
	packaged) ;;
	'no sandbox')
		for reset in "${RESETS[@]}"; do
			body+=$reset$'\n'
		done
		;;
	*=*) body=$name$'\n' ;;
	*)
		for group in "${RESET_GROUPS[@]}"; do
			[[ ${group%%|*} == "$name" ]] || continue
			for reset in ${group#*|}; do
				body+=$reset$'\n'
			done
		done
		[[ -n $body ]] || die "no variant $name"
		;;
	esac
	if [[ -z $body ]]; then
		in_ct rm -f "$DROPIN_DIR/variant.conf"
	else
		e2e_put "$CT" "$DROPIN_DIR/variant.conf" "[Service]"$'\n'"$body"
	fi
	in_ct systemctl daemon-reload
	in_ct systemctl reset-failed seamless.service
}

# starts COUNT: COUNT restarts, one line "start_ready_us" each. A short pause
# after each lets systemd finish tearing down the previous process (its
# namespaces, its dynamic user) before the next fork, as in an ordinary restart.
starts() {
	# shellcheck disable=SC2016 # expanded by the shell inside the container
	in_ct bash -c '
		for ((i = 0; i < $1; i++)); do
			pid=$(systemctl show -p MainPID --value seamless.service)
			systemctl restart seamless.service || exit 1
			eval "$(systemctl show -p MainPID -p ExecMainStartTimestampMonotonic \
				-p ActiveEnterTimestampMonotonic seamless.service | sed "s/^/P_/")"
			[ "$P_MainPID" != "$pid" ] && [ "$P_MainPID" != 0 ] ||
				{ echo "main PID still $pid" >&2; exit 1; }
			echo $((P_ActiveEnterTimestampMonotonic - P_ExecMainStartTimestampMonotonic))
			sleep 0.2
		done
	' bash "$1"
}

exposure() {
	in_ct systemd-analyze security --no-pager seamless.service | tail -n 1 |
		grep -Eo '[0-9]+\.[0-9]+' | head -n 1
}

run_dist() {
	DIST=$1
	CT=seamless-sandbox-$DIST
	local dir=$RES/$DIST
	mkdir -p "$dir"
	# shellcheck disable=SC2034 # read by e2e_boot in lib.sh
	E2E_CONSOLE_DIR=$dir
	"$REPO/tests/e2e/rootfs.sh" "$DIST" >"$dir/rootfs.log" 2>&1 ||
		die "root filesystem for $DIST: $(tail -n 5 "$dir/rootfs.log")"
	e2e_boot "$CT" "$MACHINES_DIR/e2e-$DIST" 2>"$dir/boot.log" ||
		die "boot $DIST: $(cat "$dir/boot.log")"
	in_ct systemctl --version | awk 'NR == 1 { print $2 }' >"$dir/systemd-version"
	say "$DIST: systemd $(cat "$dir/systemd-version") booted"
	e2e_copy_in "$CT" "$DEB" /root/seamless.deb
	in_ct dpkg -i /root/seamless.deb >"$dir/dpkg.log" 2>&1 || die "dpkg -i: $(tail -n 5 "$dir/dpkg.log")"
	e2e_put "$CT" /etc/systemd/system/seamless.socket.d/address.conf \
		"[Socket]"$'\n'"ListenStream="$'\n'"ListenStream=$ADDR"$'\n'
	in_ct systemctl daemon-reload
	in_ct systemctl restart seamless.socket
	in_ct systemctl start seamless.service
	curl --silent --fail --max-time 10 -o /dev/null "http://$ADDR/" ||
		die "$DIST: seamless does not answer on $ADDR after installation"

	local -a variants=(packaged)
	local variant group done=0 n
	if [[ $VARIANTS != groups ]]; then
		# One per directive the unit sets: a reset kept here for a directive
		# since dropped from the unit would only measure the packaged unit again.
		local reset have
		have=" $(unit_sandbox_keys | tr '\n' ' ') "
		for reset in "${RESETS[@]}"; do
			[[ $have != *" ${reset%%=*} "* ]] || variants+=("$reset")
		done
	fi
	if [[ $VARIANTS != singles ]]; then
		for group in "${RESET_GROUPS[@]}"; do
			variants+=("${group%%|*}")
		done
	fi
	variants+=('no sandbox')
	: >"$dir/starts.txt"
	: >"$dir/exposure.txt"
	for variant in "${variants[@]}"; do
		set_variant "$variant"
		printf '%s\t%s\n' "$variant" "$(exposure)" >>"$dir/exposure.txt"
	done
	while ((done < STARTS)); do
		n=$((STARTS - done < PER_TURN ? STARTS - done : PER_TURN))
		for variant in "${variants[@]}"; do
			set_variant "$variant"
			starts "$n" | awk -v v="$variant" '{ print v "\t" $0 }' >>"$dir/starts.txt"
			# Still serving after the restarts: a variant that breaks the
			# service would otherwise be timed as a fast start.
			curl --silent --fail --max-time 10 -o /dev/null "http://$ADDR/" ||
				die "$DIST, $variant: seamless does not answer after its restarts"
		done
		done=$((done + n))
		say "$DIST: $done of $STARTS starts per variant"
	done
	set_variant packaged
	in_ct journalctl --no-pager -o short-monotonic >"$dir/journal.txt" 2>&1 || true
	# systemd drops what the kernel or container cannot do with a "proceeding
	# without" notice; such a variant would measure a sandbox that was not set up.
	if grep -i 'proceeding without' "$dir/journal.txt" >"$dir/proceeding-without.txt"; then
		say "$DIST: WARNING: systemd proceeded without part of the sandbox:"
		head -n 5 "$dir/proceeding-without.txt" | sed 's/^/#   /' >&2
	fi
	e2e_shutdown "$CT" || say "$DIST: container did not power off cleanly"
	CT=''
}

main() {
	parse_args "$@"
	((EUID == 0)) || die "must run as root (systemd-nspawn)"
	local tool
	for tool in python3 curl flock; do
		command -v "$tool" >/dev/null || die "$tool is required on the host"
	done
	check_resets

	# The same lock as tests/e2e/run.sh and bench/run.sh: their containers
	# share the host network and the CPUs this measures.
	mkdir -p "$E2E_STATE_DIR"
	exec {lock}>"$E2E_STATE_DIR/run.lock"
	local waited=$SECONDS
	flock -w "${SANDBOX_LOCK_WAIT:-3600}" "$lock" || die "another run holds $E2E_STATE_DIR/run.lock"
	waited=$((SECONDS - waited))
	((waited == 0)) || say "waited ${waited}s for $E2E_STATE_DIR/run.lock"

	RES=$HERE/results/sandbox/$VARIANTS
	rm -rf "$RES"
	mkdir -p "$RES"
	trap e2e_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	{
		echo "command=bench/sandbox.sh${ARGS_TEXT:+ $ARGS_TEXT}"
		echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "deb=$(basename "$DEB")"
		echo "starts=$STARTS"
		echo "variants=$VARIANTS"
		echo "git=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
	} >"$RES/run.txt"
	local group
	for group in "${RESET_GROUPS[@]}"; do
		printf '%s\t%s\n' "${group%%|*}" "${group#*|}"
	done >"$RES/groups.txt"
	local dist started=$SECONDS
	for dist in "${DISTS[@]}"; do
		run_dist "$dist"
	done
	echo "elapsed_s=$((SECONDS - started))" >>"$RES/run.txt"
	python3 "$HERE/sandbox_report.py" "$RES" "${DISTS[@]}" | tee "$RES/SANDBOX.md"
}

main "$@"
