# shellcheck shell=bash
# Helpers to boot a real systemd (PID 1) in a systemd-nspawn container and
# drive it from the host. Source this file; it defines functions only.
#
#   e2e_boot NAME ROOTFS            boot ROOTFS as container NAME, wait for it
#   e2e_exec NAME CMD...            run CMD inside (stdin/stdout/stderr pass through)
#   e2e_pid1 NAME                   the container's PID 1, as a host PID
#   e2e_copy_in NAME HOSTFILE PATH  copy a host file into the running container
#   e2e_put NAME PATH CONTENT       write a string to a file in the running container
#   e2e_shutdown NAME               power off (bounded), then kill what is left
#   e2e_cleanup                     shut down every container this shell booted
#
# Containers share the host's network namespace: a socket the container
# listens on is reachable from the host on 127.0.0.1.
#
# The hosts this runs on are CI machines where PID 1 is often not systemd and
# cgroups may be the "hybrid" layout (v1 controllers, cgroup2 at
# /sys/fs/cgroup/unified). Hence:
#   --register=no --keep-unit  no machined and no host systemd to talk to;
#   SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
#                              give the container a pure cgroup2 tree, as on a
#                              real Debian 12/13 host; otherwise nspawn copies
#                              the host's hybrid layout, which systemd 257
#                              only runs in a deprecated, tainted mode;
#   a cgroup of our own        with --keep-unit nspawn puts its "payload" and
#                              "supervisor" cgroups below the cgroup it was
#                              started in; left in the root cgroup, two
#                              containers (or two runs) would share them.
#   --console=passive          CI has neither stdin nor a TTY.
#   --capability=CAP_NET_ADMIN nspawn drops it when the container shares the
#                              host network; without it PrivateNetwork= in a
#                              unit silently degrades (no loopback on 252, no
#                              namespace at all on 257), unlike a real host.
#   --volatile=overlay         the cached tree stays pristine: every write goes
#                              to a tmpfs that disappears with the container.

# Not named after the service: every project made from this template shares
# it, so their suites (all on port 8080 of the shared network) wait for each
# other on its run.lock.
E2E_STATE_DIR=${E2E_STATE_DIR:-/run/nspawn-e2e}
E2E_BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-120}
E2E_SHUTDOWN_TIMEOUT=${E2E_SHUTDOWN_TIMEOUT:-30}
# Where the container's console output goes; run.sh points this at e2e-logs/.
E2E_CONSOLE_DIR=${E2E_CONSOLE_DIR:-$E2E_STATE_DIR}
E2E_BOOTED=()

_e2e_log() { printf 'e2e: %s\n' "$*" >&2; }

# Closes, in the calling (sub)shell, every fd open on the run lock
# ($E2E_STATE_DIR/run.lock). Call it in background children that may outlive
# a killed run (containers, load generators, timers): otherwise they inherit
# the lock and hold it after the run is gone, and the next run waits for them.
e2e_close_lock_fds() {
	local fd
	for fd in /proc/"$BASHPID"/fd/*; do
		[[ $(readlink "$fd" 2>/dev/null) == "$E2E_STATE_DIR/run.lock" ]] || continue
		fd=${fd##*/}
		((fd > 2)) && eval "exec $fd>&-"
	done
	return 0
}

_e2e_state() { printf '%s/%s\n' "$E2E_STATE_DIR" "$1"; }

# True while PID exists and has not exited: a zombie (exited, not yet reaped
# by its parent) still answers kill -0.
_e2e_alive() {
	local pid=$1 state
	[[ -n $pid && -r /proc/$pid/stat ]] || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[[ -n $state && $state != Z ]]
}

_e2e_nspawn_pid() {
	local name=$1 pid
	pid=$(cat "$(_e2e_state "$name")/nspawn.pid" 2>/dev/null) || return 1
	# Guard against PID reuse after the container is long gone.
	_e2e_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == systemd-nspawn ]] || return 1
	printf '%s\n' "$pid"
}

# The container's PID 1 as seen from the host: the child of the nspawn
# process whose PID in its own namespace is 1 (nspawn makes itself the
# subreaper of the container init).
e2e_pid1() {
	local name=$1 npid child
	npid=$(_e2e_nspawn_pid "$name") || return 1
	for child in $(pgrep -P "$npid"); do
		if awk '$1 == "NSpid:" && NF > 2 && $NF == 1 { found = 1 } END { exit !found }' \
			"/proc/$child/status" 2>/dev/null; then
			printf '%s\n' "$child"
			return 0
		fi
	done
	return 1
}

# "MOUNTPOINT OWN-PATH" for the cgroup2 hierarchy and, on a hybrid or legacy
# host, the name=systemd one (nspawn derives the container's cgroup from the
# latter and mirrors it into cgroup2).
_e2e_cgroup_hierarchies() {
	local mnt own
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
	own=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
	[[ -n $mnt && -n $own ]] && printf '%s %s\n' "$mnt" "$own"
	mnt=$(awk '$3 == "cgroup" && $4 ~ /(^|,)name=systemd(,|$)/ { print $2; exit }' /proc/self/mounts)
	own=$(awk -F: '$2 == "name=systemd" { print $3 }' /proc/self/cgroup)
	[[ -n $mnt && -n $own ]] && printf '%s %s\n' "$mnt" "$own"
	return 0
}

# Run in the subshell that becomes nspawn: move it into a fresh cgroup
# "e2e-NAME" below its current one in every relevant hierarchy, and
# record the directories so that e2e_shutdown can remove them.
_e2e_enter_own_cgroup() {
	local name=$1 state=$2 mnt own dir
	: >"$state/cgroups"
	while read -r mnt own; do
		dir=${mnt}${own%/}/e2e-$name
		_e2e_remove_cgroup_tree "$dir"
		mkdir -p "$dir"
		printf '%s\n' "$BASHPID" >"$dir/cgroup.procs"
		printf '%s\n' "$dir" >>"$state/cgroups"
	done < <(_e2e_cgroup_hierarchies)
}

_e2e_remove_cgroup_tree() {
	local dir=$1
	[[ -d $dir ]] || return 0
	# cgroup directories are removed with rmdir, innermost first.
	find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
}

_e2e_start_nspawn() {
	local name=$1 rootfs=$2 state=$3
	(
		_e2e_enter_own_cgroup "$name" "$state"
		e2e_close_lock_fds
		exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 \
			systemd-nspawn --quiet \
			--register=no --keep-unit \
			--volatile=overlay \
			--console=passive \
			--capability=CAP_NET_ADMIN \
			--link-journal=no \
			--machine "$name" \
			-D "$rootfs" \
			-b
	) </dev/null >"$E2E_CONSOLE_DIR/$name-console.log" 2>&1 &
	local pid=$! deadline=$((SECONDS + 10))
	printf '%s\n' "$pid" >"$state/nspawn.pid"
	# Until the subshell has exec'ed, the PID is not yet systemd-nspawn.
	while _e2e_alive "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) != systemd-nspawn ]]; do
		((SECONDS < deadline)) || break
		sleep 0.05
	done
}

# Wait until PID 1 answers and the boot transaction is over.
_e2e_wait_running() {
	local name=$1 deadline=$((SECONDS + E2E_BOOT_TIMEOUT)) status=
	while ((SECONDS < deadline)); do
		if ! _e2e_nspawn_pid "$name" >/dev/null; then
			_e2e_log "$name: systemd-nspawn exited during boot; console log follows"
			tail -n 40 "$E2E_CONSOLE_DIR/$name-console.log" >&2 || true
			return 1
		fi
		if e2e_pid1 "$name" >/dev/null; then
			# --wait blocks until start-up finishes; before PID 1 listens on
			# its private socket it fails at once, hence the loop around it.
			status=$(e2e_exec "$name" timeout $((deadline - SECONDS + 1)) \
				systemctl is-system-running --wait 2>/dev/null </dev/null) || true
			case $status in
			running) return 0 ;;
			degraded)
				_e2e_log "$name: booted degraded; failed units:"
				e2e_exec "$name" systemctl --failed --no-legend --plain </dev/null >&2 || true
				return 0
				;;
			esac
		fi
		sleep 0.2
	done
	_e2e_log "$name: not running after ${E2E_BOOT_TIMEOUT}s (last state: ${status:-none})"
	return 1
}

e2e_boot() {
	local name=$1 rootfs=$2 state started=$SECONDS
	[[ -x $rootfs/sbin/init || -L $rootfs/sbin/init ]] || {
		_e2e_log "$rootfs does not look like a bootable tree (run tests/e2e/rootfs.sh)"
		return 1
	}
	state=$(_e2e_state "$name")
	# A container of the same name left over by a killed run would hold the
	# same ports; take it down first.
	if [[ -d $state ]]; then
		_e2e_log "$name: stale container state found, cleaning up"
		e2e_shutdown "$name" || true
	fi
	mkdir -p "$state" "$E2E_CONSOLE_DIR"
	_e2e_start_nspawn "$name" "$rootfs" "$state"
	E2E_BOOTED+=("$name")
	if ! _e2e_wait_running "$name"; then
		e2e_shutdown "$name" || true
		return 1
	fi
	_e2e_log "$name: booted in $((SECONDS - started))s"
}

# Commands get a clean, predictable environment: nothing of the host's
# (locale, pager, proxy settings, cargo variables) leaks into the container.
e2e_exec() {
	local name=$1 pid1
	shift
	pid1=$(e2e_pid1 "$name") || {
		_e2e_log "$name: not running"
		return 125
	}
	nsenter --target "$pid1" --all -- \
		env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb \
		SYSTEMD_PAGER= SYSTEMD_COLORS=0 DEBIAN_FRONTEND=noninteractive \
		"$@"
}

# Stream the file in rather than writing through /proc/PID/root: paths are
# then resolved inside the container (its symlinks, its overlay upper layer),
# and the read-only cached tree underneath is never touched.
e2e_copy_in() {
	local name=$1 src=$2 dest=$3
	[[ -f $src ]] || {
		_e2e_log "e2e_copy_in: $src is not a file"
		return 1
	}
	# shellcheck disable=SC2016 # expanded by the shell inside the container
	e2e_exec "$name" sh -c 'mkdir -p -- "$(dirname -- "$1")" && cat >"$1"' sh "$dest" <"$src"
}

# e2e_put NAME PATH CONTENT: write a string to a file in the container.
e2e_put() {
	local name=$1 dest=$2 content=$3
	# shellcheck disable=SC2016 # expanded by the shell inside the container
	printf '%s' "$content" |
		e2e_exec "$name" sh -c 'mkdir -p -- "$(dirname -- "$1")" && cat >"$1"' sh "$dest"
}

_e2e_wait_exit() {
	local pid=$1 timeout=$2 deadline
	deadline=$((SECONDS + timeout))
	while _e2e_alive "$pid"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
	# Reap it when it is our child; harmless otherwise.
	wait "$pid" 2>/dev/null || true
	return 0
}

_e2e_force_stop() {
	local name=$1 npid=$2 pid1
	_e2e_log "$name: did not power off in ${E2E_SHUTDOWN_TIMEOUT}s, killing it"
	# Killing the container's init kills every process in its PID namespace;
	# killing only nspawn would leave them running, reparented to the host.
	pid1=$(e2e_pid1 "$name") && kill -KILL "$pid1" 2>/dev/null
	kill -TERM "$npid" 2>/dev/null || true
	_e2e_wait_exit "$npid" 5 && return 0
	kill -KILL "$npid" 2>/dev/null || true
	_e2e_wait_exit "$npid" 5
}

e2e_shutdown() {
	local name=$1 state npid pid1 dir rc=0
	state=$(_e2e_state "$name")
	if npid=$(_e2e_nspawn_pid "$name"); then
		if pid1=$(e2e_pid1 "$name"); then
			# SIGRTMIN+4 asks systemd for a poweroff even when its bus does not
			# answer any more.
			e2e_exec "$name" timeout 10 systemctl poweroff --no-block </dev/null >/dev/null 2>&1 ||
				kill -s RTMIN+4 "$pid1" 2>/dev/null || true
		else
			kill -TERM "$npid" 2>/dev/null || true
		fi
		_e2e_wait_exit "$npid" "$E2E_SHUTDOWN_TIMEOUT" || _e2e_force_stop "$name" "$npid" || rc=1
	fi
	if [[ -f $state/cgroups ]]; then
		while read -r dir; do
			_e2e_remove_cgroup_tree "$dir"
		done <"$state/cgroups"
	fi
	# nspawn refuses to delete its propagation directory when /run is not a
	# tmpfs (as on hosts whose PID 1 is not systemd), so do it here.
	rm -rf "/run/systemd/nspawn/propagate/$name"
	rm -rf "$state"
	return "$rc"
}

# Suitable for `trap e2e_cleanup EXIT`: never leaves an nspawn process behind.
e2e_cleanup() {
	local name
	for name in "${E2E_BOOTED[@]}"; do
		[[ -d $(_e2e_state "$name") ]] || continue
		e2e_shutdown "$name" || true
	done
	E2E_BOOTED=()
}
