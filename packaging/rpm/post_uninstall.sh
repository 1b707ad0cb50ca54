# %postun. $1 is the number of installed instances left: 0 on final removal,
# 1 or more when this is the old package of an upgrade; RPM runs it after the
# new package's %post, which has already moved the service to the new binary
# (in place or by a restart), so nothing is restarted here.
# The daemon-reload lets systemd see the files this package no longer has.
if command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
# The package owns the files in /etc/seamless and /etc/seamless/seamless.d but
# not the directories themselves (cargo-generate-rpm 0.21 cannot package a
# directory: `dir = true` fails with "No such file or directory"), so rpm never
# removes them. On final removal take them away too, unless they still hold
# something: a modified file saved as .rpmsave, or the administrator's drop-ins.
if [ "$1" -eq 0 ]; then
    rmdir --ignore-fail-on-non-empty /etc/seamless/seamless.d /etc/seamless 2>/dev/null || :
fi
