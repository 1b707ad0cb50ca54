# %preun, as %systemd_preun seamless.socket seamless.service expands.
# $1 is 0 on final removal and 1 on upgrade, when nothing is stopped.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now seamless.socket seamless.service >/dev/null 2>&1 || :
fi
