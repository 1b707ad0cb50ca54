#!/usr/bin/env bash
# Lints the built packages of the service NAME. It builds nothing.
#
# Build them first, from the repository root:
#   cargo install --locked cargo-deb cargo-generate-rpm   # once
#   cargo deb            # release build, then target/debian/NAME_*.deb
#   cargo generate-rpm   # packages that same target/release/NAME
# and check them:
#   packaging/check.sh --deb target/debian/*.deb --rpm target/generate-rpm/*.rpm
#
# Options:
#   --deb FILE...         Debian packages to check
#   --rpm FILE...         RPM packages to check
#   --systemd-root DIR    also run systemd-analyze from the root filesystem DIR,
#                         e.g. a Debian 13 tree for systemd 257 (repeatable).
#                         Needs root and overlayfs; DIR is not modified.
#
# NAME is the [package] name in Cargo.toml next to this directory.
#
# Every check runs; the script exits 1 if any failed. What it checks:
#   .deb  lintian: no error or warning (overrides need a reason in
#         packaging/NAME.lintian-overrides).
#   .rpm  rpmlint: no error (settings and filters in packaging/rpm/rpmlint.toml);
#         /etc/NAME/NAME.toml is %config(noreplace).
#   both  maintainer scripts / scriptlets, run against recording stand-ins for
#         systemctl, deb-systemd-invoke and deb-systemd-helper through install,
#         upgrade and removal: an upgrade restarts NAME.service and never
#         stops or restarts NAME.socket (that would close the listening
#         socket and reset queued connections); install enables the socket;
#         removal stops it; neither install nor upgrade touches
#         NAME-https.socket (shipped disabled: it needs a certificate first).
#         Purge is checked by reading postrm, not run. The
#         stand-ins report no running service, so the upgrade in place that
#         replaces the restart is left to the e2e suite (tests/e2e).
#   both  the shipped units: `systemd-analyze verify` prints nothing (it exits
#         0 on unknown keys, so its output is what counts) and
#         `systemd-analyze security --offline=yes` exposure is at most 0.5;
#         with the shipped example drop-in that allows outbound connections
#         (/usr/share/doc/NAME/examples/outbound.conf) verify still prints
#         nothing and the exposure is at most 1.5; with the one for HTTPS
#         (examples/https.conf) verify prints nothing and the exposure stays
#         at most 0.5. The units are NAME.socket, NAME-https.socket and
#         NAME.service.
#   both  the package ships the drop-in directory /etc/NAME/NAME.d/ (with a README)
#         (neither cargo-deb nor cargo-generate-rpm can package an empty
#         directory, so postinst / %post make it; purge / erase remove it).
#
# Needs: lintian, rpmlint, rpm (rpm, rpm2cpio), cpio, dpkg-deb, systemd-analyze,
# man (Documentation=man: is checked against the packaged page).
set -euo pipefail

readonly MAX_EXPOSURE=0.5
# With the shipped example drop-in that allows outbound connections (measured
# 1.2 on systemd 252): the rest of the sandbox must stay.
readonly MAX_EXPOSURE_OUTBOUND=1.5
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
# The service's name: [package] name in the Cargo.toml next to this directory.
NAME=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"/\1/p' "$HERE/../Cargo.toml")
readonly NAME
[[ -n $NAME ]] || { echo "no [package] name in $HERE/../Cargo.toml" >&2; exit 2; }
# Regular expressions matching the unit names.
readonly SOCKET_RE="$NAME\\.socket" SERVICE_RE="$NAME\\.service" HTTPS_SOCKET_RE="$NAME-https\\.socket"
readonly UNITS=("$NAME.socket" "$NAME-https.socket" "$NAME.service")
# Actions that, applied to the socket during an upgrade, close it.
readonly SOCKET_BREAKING='(stop|restart|try-restart|reload-or-restart|try-reload-or-restart|condrestart|force-reload|kill|disable|mask|reenable)'

debs=() rpms=() systemd_roots=()
failures=0
work=
mounts=()

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

ok() { printf 'ok    %s\n' "$*"; }
fail() {
	printf 'FAIL  %s\n' "$*"
	failures=$((failures + 1))
}
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/        /'; }

cleanup() {
	local m
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
	[[ -n $work ]] && rm -rf "$work"
}

parse_args() {
	local list=
	while (($#)); do
		case $1 in
		--deb) list=debs ;;
		--rpm) list=rpms ;;
		--systemd-root)
			systemd_roots+=("${2:?--systemd-root needs a directory}")
			shift
			list=
			;;
		-h | --help) usage ;;
		-*) printf 'unknown option: %s\n' "$1" >&2; usage ;;
		*)
			case $list in
			debs) debs+=("$1") ;;
			rpms) rpms+=("$1") ;;
			*) printf 'file without --deb or --rpm: %s\n' "$1" >&2; usage ;;
			esac
			;;
		esac
		shift
	done
	((${#debs[@]} + ${#rpms[@]})) || usage
	local f
	for f in "${debs[@]}" "${rpms[@]}"; do
		[[ -f $f ]] || { printf 'no such package: %s\n' "$f" >&2; exit 2; }
	done
}

require_tools() {
	local tools=(systemd-analyze man) t missing=()
	((${#debs[@]})) && tools+=(lintian dpkg-deb)
	((${#rpms[@]})) && tools+=(rpmlint rpm rpm2cpio cpio)
	((${#systemd_roots[@]})) && tools+=(chroot mount umount)
	for t in "${tools[@]}"; do command -v "$t" >/dev/null || missing+=("$t"); done
	if ((${#missing[@]})); then
		printf 'missing tools: %s (apt-get install lintian rpmlint rpm cpio man-db)\n' "${missing[*]}" >&2
		exit 2
	fi
}

# --- maintainer script simulation --------------------------------------------

# Stand-ins that only record their arguments (mkdir too: postinst creates a
# directory under /etc). `was-enabled` and friends answer
# yes, as on a system where the socket is enabled.
make_stubs() {
	mkdir -p "$work/stubs" "$work/run-systemd-system"
	local cmd
	for cmd in systemctl deb-systemd-invoke deb-systemd-helper mkdir; do
		# shellcheck disable=SC2016 # $* and $SIM_LOG belong to the stub.
		printf '#!/bin/sh\necho "%s $*" >>"$SIM_LOG"\n' "$cmd" >"$work/stubs/$cmd"
		chmod 755 "$work/stubs/$cmd"
	done
}

# run_script SCRIPT INTERPRETER_FLAGS ARGS...: runs a copy of SCRIPT with only
# the stand-ins on PATH, and with /run/systemd/system pointing at a directory
# that exists, so the "systemd is running" branches execute.
run_script() {
	local script=$1 flags=$2
	shift 2
	[[ -s $script ]] || return 0
	sed "s#/run/systemd/system#$work/run-systemd-system#g" "$script" >"$work/sim-script"
	if ! env -i PATH="$work/stubs" SIM_LOG="$work/sim.log" /bin/sh ${flags:+"$flags"} "$work/sim-script" "$@" \
		>>"$work/sim.out" 2>&1; then
		fail "$(basename "$script") $* exited non-zero: $(tail -n 3 "$work/sim.out" | tr '\n' ' ')"
	fi
}

sim_begin() { : >"$work/sim.log"; : >"$work/sim.out"; }

# Prints the recorded calls, indented, for the CI log.
sim_show() { indent <"$work/sim.log"; }

expect_call() {
	local what=$1 regex=$2
	if grep -Eq -- "$regex" "$work/sim.log"; then ok "$what"; else fail "$what (no call matching /$regex/)"; fi
}

# expect_no_call WHAT REGEX: no recorded call matches.
expect_no_call() {
	local what=$1 regex=$2 bad
	bad=$(grep -E -- "$regex" "$work/sim.log" || true)
	if [[ -z $bad ]]; then ok "$what"; else fail "$what: $bad"; fi
}

expect_no_socket_breakage() {
	local what=$1 bad
	bad=$(grep -E -- "(^| )$SOCKET_BREAKING( .*)? '?$SOCKET_RE" "$work/sim.log" || true)
	if [[ -z $bad ]]; then ok "$what"; else fail "$what: $bad"; fi
}

check_deb_scripts() {
	local deb=$1 ctl=$work/deb-control old_version
	rm -rf "$ctl"
	dpkg-deb -e "$deb" "$ctl"
	old_version=$(dpkg-deb -f "$deb" Version)

	sim_begin
	run_script "$ctl/preinst" -e install
	run_script "$ctl/postinst" -e configure
	printf '      fresh install calls:\n'; sim_show
	expect_call "deb install enables $NAME.socket" "^deb-systemd-helper enable .*$SOCKET_RE|^systemctl .*enable .*$SOCKET_RE"
	expect_call "deb install starts $NAME.socket" "^(deb-systemd-invoke|systemctl) .*start .*$SOCKET_RE"
	expect_no_call "deb install neither enables nor starts $NAME-https.socket" "$HTTPS_SOCKET_RE"
	# Listed first, then searched: `grep -q` quits at the first match, and with pipefail the
	# listing's broken pipe would count as a failure.
	local contents
	contents=$(dpkg-deb -c "$deb")
	if grep -Eq "\./etc/$NAME/$NAME\.d/README\$" <<<"$contents"; then
		ok "deb ships the drop-in directory /etc/$NAME/$NAME.d (with its README)"
	else
		fail "deb does not ship /etc/$NAME/$NAME.d/README"
	fi

	# dpkg's order for an upgrade: old prerm, new preinst, old postrm, new
	# postinst. This package's scripts play both the old and the new side.
	# The stand-ins report no running service, so postinst takes the restart
	# path (the e2e suite runs the in-place one for real).
	sim_begin
	run_script "$ctl/prerm" -e upgrade "$old_version"
	run_script "$ctl/preinst" -e upgrade "$old_version"
	run_script "$ctl/postrm" -e upgrade "$old_version"
	run_script "$ctl/postinst" -e configure "$old_version"
	printf '      upgrade calls:\n'; sim_show
	expect_no_socket_breakage "deb upgrade leaves $NAME.socket open"
	expect_no_call "deb upgrade leaves $NAME-https.socket alone" "$HTTPS_SOCKET_RE"
	expect_call "deb upgrade restarts $NAME.service" "^(deb-systemd-invoke|systemctl) .*(restart|try-restart) .*$SERVICE_RE"

	sim_begin
	run_script "$ctl/prerm" -e remove
	run_script "$ctl/postrm" -e remove
	printf '      removal calls:\n'; sim_show
	expect_call "deb removal stops $NAME.socket" "^(deb-systemd-invoke|systemctl) .*stop .*$SOCKET_RE"
	expect_call "deb removal stops $NAME-https.socket" "^(deb-systemd-invoke|systemctl) .*stop .*$HTTPS_SOCKET_RE"

	# Purge deletes files, so it is read rather than run.
	if grep -Eq "sockets\.target\.wants/$HTTPS_SOCKET_RE" "$ctl/postrm" 2>/dev/null; then
		ok "deb purge drops $NAME-https.socket's enablement link"
	else
		fail "deb postrm does not remove $NAME-https.socket from sockets.target.wants"
	fi
	if grep -Eq "deb-systemd-helper purge .*$SOCKET_RE" "$ctl/postrm" 2>/dev/null; then
		ok "deb purge drops $NAME.socket's enablement state"
	else
		fail "deb postrm does not run 'deb-systemd-helper purge $NAME.socket'"
	fi
}

check_rpm_scripts() {
	local rpm_file=$1 tag
	for tag in PREIN POSTIN PREUN POSTUN; do
		rpm -qp --qf "%{$tag}" "$rpm_file" >"$work/rpm-$tag"
		# rpm prints "(none)" for a missing scriptlet.
		[[ $(cat "$work/rpm-$tag") == '(none)' ]] && : >"$work/rpm-$tag"
	done

	# RPM passes the number of instances left after the operation.
	sim_begin
	run_script "$work/rpm-PREIN" '' 1
	run_script "$work/rpm-POSTIN" '' 1
	printf '      fresh install calls:\n'; sim_show
	expect_call "rpm install presets $NAME.socket" "^systemctl .*preset .*$SOCKET_RE"
	expect_no_call "rpm install neither presets nor starts $NAME-https.socket" "$HTTPS_SOCKET_RE"
	local config_files
	config_files=$(rpm -qpc "$rpm_file" 2>/dev/null)
	if grep -qx "/etc/$NAME/$NAME.d/README" <<<"$config_files"; then
		ok "rpm ships the drop-in directory /etc/$NAME/$NAME.d (its README, a config file)"
	else
		fail "rpm does not ship /etc/$NAME/$NAME.d/README as a config file"
	fi

	# Upgrade: new %pre and %post, then the old package's %preun and %postun.
	# The stand-ins report no running service, so %post takes the restart
	# path (the e2e suite runs the in-place one for real).
	sim_begin
	run_script "$work/rpm-PREIN" '' 2
	run_script "$work/rpm-POSTIN" '' 2
	run_script "$work/rpm-PREUN" '' 1
	run_script "$work/rpm-POSTUN" '' 1
	printf '      upgrade calls:\n'; sim_show
	expect_no_socket_breakage "rpm upgrade leaves $NAME.socket open"
	expect_no_call "rpm upgrade leaves $NAME-https.socket alone" "$HTTPS_SOCKET_RE"
	expect_call "rpm upgrade restarts $NAME.service" "^systemctl .*(restart|try-restart) .*$SERVICE_RE"

	sim_begin
	run_script "$work/rpm-PREUN" '' 0
	run_script "$work/rpm-POSTUN" '' 0
	printf '      erase calls:\n'; sim_show
	expect_call "rpm erase stops $NAME.socket" "^systemctl .*(stop|disable --now) .*$SOCKET_RE"
	expect_call "rpm erase stops $NAME-https.socket" "^systemctl .*(stop|disable --now) .*$HTTPS_SOCKET_RE"
}

# --- units -------------------------------------------------------------------

# check_units PKGDIR LABEL: verify and score the units of the package unpacked
# in PKGDIR, with the host's systemd.
check_units() {
	local pkgdir=$1 label=$2 root=$work/verify-root unit out
	for unit in "${UNITS[@]}"; do
		[[ -f $pkgdir/usr/lib/systemd/system/$unit ]] || fail "$label does not ship /usr/lib/systemd/system/$unit"
	done
	rm -rf "$root"
	mkdir -p "$root/usr/lib/systemd/system"
	cp -a "$pkgdir/." "$root/"
	# verify resolves dependencies such as sockets.target inside --root, so
	# the host's units are put beside the packaged ones (never over them).
	cp -a --no-clobber /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/" 2>/dev/null || true
	# Documentation=man:NAME(1) must resolve to the packaged page.
	if out=$(MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" \
		"${UNITS[@]/#/$root/usr/lib/systemd/system/}" 2>&1) && [[ -z $out ]]; then
		ok "$label: systemd-analyze verify ($(systemd_version systemd-analyze)) is silent"
	else
		fail "$label: systemd-analyze verify: ${out:-non-zero exit}"
	fi
	score_exposure "$label ($(systemd_version systemd-analyze))" "$MAX_EXPOSURE" \
		systemd-analyze security --offline=yes --root="$root" "$NAME.service"
	check_example "$pkgdir" "$label" "$root" outbound.conf "$MAX_EXPOSURE_OUTBOUND"
	check_example "$pkgdir" "$label" "$root" https.conf "$MAX_EXPOSURE"
}

# check_example PKGDIR LABEL ROOT FILE MAX: a documented drop-in for the
# service (outbound.conf lets it connect out, https.conf hands it the TLS key),
# applied as an administrator would (ROOT is check_units' tree): verify stays
# silent, the exposure stays at most MAX.
check_example() {
	local pkgdir=$1 label=$2 root=$3 file=$4 max=$5 example out dropins
	example=usr/share/doc/$NAME/examples/$file
	if [[ ! -f $pkgdir/$example ]]; then
		fail "$label does not ship /$example"
		return
	fi
	dropins=$root/etc/systemd/system/$NAME.service.d
	mkdir -p "$dropins"
	cp "$pkgdir/$example" "$dropins/$file"
	if out=$(MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" \
		"${UNITS[@]/#/$root/usr/lib/systemd/system/}" 2>&1) && [[ -z $out ]]; then
		ok "$label + /$example: systemd-analyze verify is silent"
	else
		fail "$label + /$example: systemd-analyze verify: ${out:-non-zero exit}"
	fi
	score_exposure "$label + $file ($(systemd_version systemd-analyze))" "$max" \
		systemd-analyze security --offline=yes --root="$root" "$NAME.service"
	rm -rf "$dropins"
}

# score_exposure LABEL MAX COMMAND...: COMMAND prints systemd-analyze
# security's table; the overall exposure must be at most MAX.
score_exposure() {
	local label=$1 max=$2 out score
	shift 2
	out=$("$@" 2>&1) || true
	score=$(sed -n "s/.*Overall exposure level for $SERVICE_RE: \([0-9.]*\).*/\1/p" <<<"$out")
	if [[ -z $score ]]; then
		fail "$label: no exposure level in: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
	elif awk -v s="$score" -v max="$max" 'BEGIN { exit !(s <= max) }'; then
		ok "$label: exposure $score (at most $max)"
	else
		fail "$label: exposure $score above $max; the weak points:"
		grep '✗' <<<"$out" | indent || true
	fi
}

systemd_version() { "$@" --version | sed -n '1s/^systemd \([0-9]*\).*/systemd \1/p'; }

# check_units_in_root DIR PKGDIR: the same checks with DIR's systemd, on an
# overlay of DIR so nothing is written to it.
check_units_in_root() {
	local dir=$1 pkgdir=$2 ovl out version
	[[ -x $dir/usr/bin/systemd-analyze ]] || { fail "$dir has no /usr/bin/systemd-analyze"; return; }
	((EUID == 0)) || { fail "--systemd-root needs root (overlay mount, chroot)"; return; }
	ovl=$(mktemp -d "$work/overlay.XXXXXX")
	mkdir "$ovl/upper" "$ovl/work" "$ovl/root"
	mount -t overlay overlay -o "lowerdir=$dir,upperdir=$ovl/upper,workdir=$ovl/work" "$ovl/root"
	mounts=("$ovl/root" "${mounts[@]}")
	cp -a "$pkgdir/." "$ovl/root/"
	version=$(systemd_version chroot "$ovl/root" systemd-analyze)
	# The page itself was checked against the host's man above.
	if out=$(chroot "$ovl/root" systemd-analyze verify --man=no \
		"${UNITS[@]/#//usr/lib/systemd/system/}" 2>&1) && [[ -z $out ]]; then
		ok "$dir: systemd-analyze verify ($version) is silent"
	else
		fail "$dir: systemd-analyze verify ($version): ${out:-non-zero exit}"
	fi
	score_exposure "$dir ($version)" "$MAX_EXPOSURE" \
		chroot "$ovl/root" systemd-analyze security --offline=yes "/usr/lib/systemd/system/$NAME.service"
	local example file max
	for file in outbound.conf https.conf; do
		example=usr/share/doc/$NAME/examples/$file
		max=$MAX_EXPOSURE_OUTBOUND
		[[ $file == https.conf ]] && max=$MAX_EXPOSURE
		[[ -f $pkgdir/$example ]] || continue
		mkdir -p "$ovl/root/etc/systemd/system/$NAME.service.d"
		cp "$pkgdir/$example" "$ovl/root/etc/systemd/system/$NAME.service.d/"
		if out=$(chroot "$ovl/root" systemd-analyze verify --man=no \
			"${UNITS[@]/#//usr/lib/systemd/system/}" 2>&1) && [[ -z $out ]]; then
			ok "$dir + /$example: systemd-analyze verify ($version) is silent"
		else
			fail "$dir + /$example: systemd-analyze verify ($version): ${out:-non-zero exit}"
		fi
		score_exposure "$dir + $file ($version)" "$max" \
			chroot "$ovl/root" systemd-analyze security --offline=yes "$NAME.service"
		rm -f "$ovl/root/etc/systemd/system/$NAME.service.d/$file"
	done
	umount "$ovl/root"
	mounts=("${mounts[@]:1}")
}

# --- packages ----------------------------------------------------------------

check_deb() {
	local deb=$1 out pkgdir=$work/deb-files dir
	section "deb: $deb"

	# Debian refuses to run lintian as root but works; silence that notice.
	if out=$(lintian --fail-on error,warning --display-info "$deb" 2>&1 |
		grep -v 'running with root privileges is not recommended'); then :; fi
	[[ -n $out ]] && indent <<<"$out"
	if grep -Eq '^[EW]: ' <<<"$out"; then
		fail "lintian reports errors or warnings"
	else
		ok "lintian: no errors or warnings"
	fi

	check_deb_scripts "$deb"

	rm -rf "$pkgdir"
	dpkg-deb -x "$deb" "$pkgdir"
	check_units "$pkgdir" "deb units"
	for dir in "${systemd_roots[@]}"; do
		check_units_in_root "$dir" "$pkgdir"
	done
}

check_rpm() {
	local rpm_file=$1 out flags pkgdir=$work/rpm-files
	section "rpm: $rpm_file"

	if out=$(rpmlint -c "$HERE/rpm/rpmlint.toml" "$rpm_file" 2>&1); then
		indent <<<"$out"
		ok "rpmlint: no errors"
	else
		indent <<<"$out"
		fail "rpmlint reports errors"
	fi

	flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" |
		sed -n "s#^\\([a-z]*\\) /etc/$NAME/$NAME\\.toml\$#\\1#p")
	if [[ $flags == *c* && $flags == *n* ]]; then
		ok "rpm: /etc/$NAME/$NAME.toml is %config(noreplace)"
	else
		fail "rpm: /etc/$NAME/$NAME.toml is not %config(noreplace) (flags: '${flags:-missing}')"
	fi

	check_rpm_scripts "$rpm_file"

	rm -rf "$pkgdir" && mkdir -p "$pkgdir"
	# Debian 12's rpm2cpio (rpm 4.18) exits 1 on these packages although it
	# writes the whole archive (rpm 4.20 exits 0); missing files are caught by
	# check_units.
	{ rpm2cpio "$rpm_file" || true; } | (cd "$pkgdir" && cpio -idm --quiet)
	check_units "$pkgdir" "rpm units"
}

main() {
	parse_args "$@"
	require_tools
	trap cleanup EXIT
	work=$(mktemp -d)
	make_stubs

	local f
	for f in "${debs[@]}"; do check_deb "$f"; done
	for f in "${rpms[@]}"; do check_rpm "$f"; done

	section "result"
	if ((failures)); then
		printf '%d check(s) failed\n' "$failures"
		exit 1
	fi
	printf 'all checks passed\n'
}

main "$@"
