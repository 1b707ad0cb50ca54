# %post. $1 is the number of installed instances after this one: 1 on first
# install, 2 or more on upgrade.
# First install: as %systemd_post seamless.socket seamless.service expands.
# Presets decide whether the socket is enabled (on Fedora and RHEL they keep
# it disabled until `systemctl enable --now seamless.socket`).
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset seamless.socket seamless.service >/dev/null 2>&1 || :
fi
# Upgrade: what %systemd_postun_with_restart seamless.service would do in the
# old package's %postun, done here instead, because only the new package's
# scriptlet can choose how: if the service is running and the package left
# its units as they were (%pre recorded their checksums), `seamless upgrade`
# hands over to the new binary — no moment without a process, the same unit
# invocation. Otherwise (units changed, so only a restart applies them; not
# running; the upgrade refused) try-restart, and the socket queues
# connections meanwhile. Never seamless.socket: restarting it closes it and
# resets the connections waiting in its queue. One line says which path.
# The old package's %preun and %postun run after this; from this version on
# they restart nothing on upgrade (an older package's %postun still does).
if [ "$1" -ge 2 ] && command -v systemctl >/dev/null 2>&1; then
    # The restart, if any, must use the new unit files.
    systemctl daemon-reload >/dev/null 2>&1 || :
    restart=yes
    state=$(systemctl show --property=ActiveState --value seamless.service 2>/dev/null) || state=
    pid=$(systemctl show --property=MainPID --value seamless.service 2>/dev/null) || pid=
    if [ ! -s /run/seamless.rpm-units.sha256 ]; then
        echo "seamless: restarting the service: no record of the previous package's units"
    elif ! sha256sum --check --status /run/seamless.rpm-units.sha256 2>/dev/null; then
        echo "seamless: restarting the service: the package changed seamless.service or seamless.socket"
    elif [ "$state" != active ] || [ -z "$pid" ] || [ "$pid" = 0 ]; then
        # Only `active`: while it starts, reloads or stops, the process
        # cannot hand over, and a restart is what those states expect.
        echo "seamless: the service is not running (${state:-state unknown}); the socket starts the new binary on the next connection"
    elif out=$(seamless upgrade --pid "$pid" --timeout 60s 2>&1); then
        # The old process started /usr/bin/seamless with the listening
        # sockets and handed over once it served.
        restart=no
        new_pid=$(systemctl show --property=MainPID --value seamless.service 2>/dev/null) || new_pid=
        echo "seamless: upgraded the running service in place (PID $pid -> ${new_pid:-?})"
    else
        # The old process keeps serving; the restart brings the new binary.
        echo "seamless: restarting the service: seamless upgrade --pid $pid failed: $(printf '%s' "$out" | tr '\n' ' ')"
    fi
    rm -f /run/seamless.rpm-units.sha256 2>/dev/null || :
    if [ "$restart" = yes ]; then
        systemctl try-restart seamless.service >/dev/null 2>&1 || :
    fi
fi
:
