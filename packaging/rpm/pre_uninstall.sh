# %preun, as %systemd_preun seamless-https.socket seamless.socket seamless.service
# expands (the HTTPS socket is enabled by the administrator, if at all).
# $1 is 0 on final removal and 1 on upgrade, when nothing is stopped.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable --now seamless-https.socket seamless.socket seamless.service >/dev/null 2>&1 || :
fi
