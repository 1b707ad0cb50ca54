# %postun, as %systemd_postun_with_restart seamless.service expands. RPM runs
# the old package's %postun, after the new files are in place.
# Only the service is restarted, never seamless.socket: restarting the socket
# closes it and resets the connections waiting in its queue.
# The daemon-reload makes the restart use the new unit file on systems whose
# systemd package reloads only at the end of the transaction.
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart seamless.service >/dev/null 2>&1 || :
    fi
fi
# The package owns the files in /etc/seamless and /etc/seamless/seamless.d but
# not the directories themselves (cargo-generate-rpm 0.21 cannot package a
# directory: `dir = true` fails with "No such file or directory"), so rpm never
# removes them. On final removal take them away too, unless they still hold
# something: a modified file saved as .rpmsave, or the administrator's drop-ins.
if [ "$1" -eq 0 ]; then
    rmdir --ignore-fail-on-non-empty /etc/seamless/seamless.d /etc/seamless 2>/dev/null || :
fi
