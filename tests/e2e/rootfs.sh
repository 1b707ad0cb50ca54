#!/usr/bin/env bash
# Build (once) the cached Debian root filesystems the end-to-end suite boots
# with systemd-nspawn:
#
#   /var/lib/machines/e2e-bookworm   Debian 12, systemd 252
#   /var/lib/machines/e2e-trixie     Debian 13, systemd 257 (+ rpm)
#
# Nothing in them is specific to one service, so every project made from this
# template shares them (and the lock that guards building them).
#
# Usage: tests/e2e/rootfs.sh [bookworm|trixie|all]   (default: all)
#
# Each tree carries a stamp: a hash of everything that decides its content
# (suite, package list, the configure step below). A tree whose stamp differs
# is rebuilt; a tree with a matching stamp is reused as is. Trees are built
# in a temporary directory next to the final one and renamed into place only
# when complete, so an interrupted run never leaves a half-built cache behind.
#
# Environment:
#   E2E_MACHINES_DIR  where the trees live (default /var/lib/machines)
#   E2E_MIRROR        Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

readonly MACHINES_DIR=${E2E_MACHINES_DIR:-/var/lib/machines}
readonly MIRROR=${E2E_MIRROR:-http://deb.debian.org/debian}
readonly STAMP_FILE=.e2e-stamp

# What every tree needs: an init (systemd-sysv), D-Bus for systemctl/busctl,
# curl for requests from inside, procps/iproute2 (ps, ss) for diagnostics.
readonly BASE_PACKAGES=(systemd systemd-sysv dbus curl procps iproute2)

log() { printf 'rootfs: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

packages_for() {
	local suite=$1
	local pkgs=("${BASE_PACKAGES[@]}")
	# The .rpm is test-installed on trixie only: Debian 13's rpm is recent
	# enough to read the packages cargo-generate-rpm writes.
	[[ $suite == trixie ]] && pkgs+=(rpm)
	local IFS=,
	printf '%s\n' "${pkgs[*]}"
}

ensure_host_tools() {
	local missing=()
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
	((${#missing[@]} == 0)) && return 0
	log "installing on the host: ${missing[*]}"
	apt-get -o DPkg::Lock::Timeout=600 update -q
	# No recommends: systemd-container would pull libnss-mymachines, which
	# edits the host's nsswitch.conf for no benefit here.
	apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
}

# Adjustments that let the tree boot quietly and quickly as a container.
# It runs inside the finished debootstrap tree (chroot). Its source text is
# part of the stamp: editing it rebuilds the caches.
configure_rootfs() {
	local dir=$1 suite=$2

	printf 'e2e-%s\n' "$suite" >"$dir/etc/hostname"

	# Password-less root: the console is never attached, commands reach the
	# container through nsenter, but a local login must not be a puzzle when
	# someone boots the tree by hand to debug.
	chroot "$dir" passwd -qd root >/dev/null

	# A fixed machine id: an empty one would mean "first boot" on every
	# start, and systemd-firstboot may then prompt on the console.
	if [[ ! -s $dir/etc/machine-id ]] || grep -qx uninitialized "$dir/etc/machine-id"; then
		chroot "$dir" systemd-machine-id-setup >/dev/null
	fi

	# Units that only cost boot time or can interfere with the tests:
	# gettys on a console nobody reads, and timers that would take the dpkg
	# lock or churn the disk while a test installs packages.
	local unit
	for unit in console-getty.service getty@.service serial-getty@.service \
		apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
		e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		systemd-tmpfiles-clean.timer man-db.timer; do
		ln -sfn /dev/null "$dir/etc/systemd/system/$unit"
	done

	# Journal in memory only: the tree is booted with --volatile=overlay, so
	# nothing written survives a boot anyway. (File names here avoid the word
	# the service's name: the purge test looks for anything of that name under
	# /etc.)
	mkdir -p "$dir/etc/systemd/journald.conf.d"
	printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' \
		>"$dir/etc/systemd/journald.conf.d/50-e2e-volatile.conf"

	# dpkg must never stop to ask about a changed conffile: the tests edit
	# /etc/NAME and then upgrade the package.
	printf 'force-confdef\nforce-confold\n' >"$dir/etc/dpkg/dpkg.cfg.d/50-e2e-conffiles"

	chroot "$dir" apt-get clean
	rm -rf "$dir/var/lib/apt/lists/"* "$dir/var/log/"*.log
}

stamp_for() {
	local suite=$1
	{
		printf 'suite=%s\npackages=%s\n' "$suite" "$(packages_for "$suite")"
		declare -f configure_rootfs
	} | sha256sum | cut -d' ' -f1
}

# debootstrap leaves /proc, /sys and friends mounted in the target when it
# fails half way; they must go before the tree can be deleted.
unmount_below() {
	local dir=$1 mnt
	# Deepest first; mount points from /proc/self/mounts escape spaces as \040.
	while read -r mnt; do
		umount -l "$mnt" 2>/dev/null || true
	done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
}

remove_tree() {
	local dir=$1
	[[ -e $dir ]] || return 0
	unmount_below "$dir"
	rm -rf --one-file-system "$dir"
}

build_rootfs() {
	local suite=$1
	local final=$MACHINES_DIR/e2e-$suite
	local stamp
	stamp=$(stamp_for "$suite")

	if [[ -f $final/$STAMP_FILE && $(<"$final/$STAMP_FILE") == "$stamp" ]]; then
		log "$final is up to date"
		return 0
	fi

	local tmp=$MACHINES_DIR/.e2e-$suite.build.$$
	# The EXIT trap covers failures and interrupts alike.
	BUILD_DIRS+=("$tmp")
	remove_tree "$tmp"

	log "building $final (debootstrap $suite)"
	local started=$SECONDS
	debootstrap --variant=minbase --include="$(packages_for "$suite")" \
		"$suite" "$tmp" "$MIRROR" >"$tmp.log" 2>&1 ||
		{
			tail -n 30 "$tmp.log" >&2 || true
			die "debootstrap $suite failed (full log: $tmp.log)"
		}
	configure_rootfs "$tmp" "$suite"
	printf '%s\n' "$stamp" >"$tmp/$STAMP_FILE"
	unmount_below "$tmp"

	# Swap in the new tree; the old one (if any) is deleted only afterwards so
	# the cache is never missing for longer than two renames.
	local old=$MACHINES_DIR/.e2e-$suite.old.$$
	if [[ -e $final ]]; then
		mv -T "$final" "$old"
		BUILD_DIRS+=("$old")
	fi
	mv -T "$tmp" "$final"
	rm -f "$tmp.log"
	remove_tree "$old"
	log "built $final in $((SECONDS - started))s"
}

cleanup_build_dirs() {
	local dir
	for dir in "${BUILD_DIRS[@]}"; do
		remove_tree "$dir"
	done
}

main() {
	local which=${1:-all} suites
	case $which in
	bookworm | trixie) suites=("$which") ;;
	all) suites=(bookworm trixie) ;;
	*) die "usage: $0 [bookworm|trixie|all]" ;;
	esac
	((EUID == 0)) || die "must run as root (debootstrap, chroot)"

	ensure_host_tools
	mkdir -p "$MACHINES_DIR"

	# Concurrent runs (two CI jobs, a developer and a job) would otherwise
	# build the same tree twice and race on the final rename.
	exec {lock_fd}>"$MACHINES_DIR/.e2e-rootfs.lock"
	flock -w 1800 "$lock_fd" || die "timed out waiting for $MACHINES_DIR/.e2e-rootfs.lock"

	BUILD_DIRS=()
	trap cleanup_build_dirs EXIT

	local suite
	for suite in "${suites[@]}"; do
		build_rootfs "$suite"
	done
}

main "$@"
