# %pre. $1 is the number of installed instances after this one: 2 or more on
# upgrade. Records the checksums of the units the installed package put in
# place, before rpm replaces them; %post compares the new units with them:
# unchanged units let the running service take the new binary in place
# (`seamless upgrade`), changed ones need a restart to apply. Checksums rather
# than systemd's NeedDaemonReload=, which compares modification times.
# In /run: no process runs the old binary after a reboot anyway.
# A scriptlet that fails would fail the transaction: every step may fail
# quietly, and without a record %post restarts.
if [ "$1" -ge 2 ]; then
    rm -f /run/seamless.rpm-units.sha256 2>/dev/null || :
    sums=$(sha256sum /usr/lib/systemd/system/seamless.service \
        /usr/lib/systemd/system/seamless.socket 2>/dev/null) || sums=
    if [ -n "$sums" ]; then
        (printf '%s\n' "$sums" >/run/seamless.rpm-units.sha256) 2>/dev/null || :
    fi
fi
:
