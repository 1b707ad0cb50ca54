# %post, as %systemd_post seamless.socket seamless.service expands.
# $1 is the number of installed instances after this one: 1 on first install.
# Presets decide whether the socket is enabled (on Fedora and RHEL they keep
# it disabled until `systemctl enable --now seamless.socket`).
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset seamless.socket seamless.service >/dev/null 2>&1 || :
fi
