# shellcheck shell=bash
# What run.sh (self-bound instances) and systemd.sh (instances under their own
# systemd) share: HAProxy in front of the fleet, and polling. Source this file;
# it defines functions only. The HAProxy ones read FRONTEND and STATS
# (addresses), HOSTS (one address per instance) and PORT, and CHECK_INTER,
# CHECK_FALL and CHECK_RISE (the health check of /readyz, as README "Running
# more than one" documents it).

# Polls COMMAND... every 50 ms until it succeeds, at most SECONDS.
within() {
	local seconds=$1 deadline
	shift
	deadline=$((SECONDS + seconds))
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.05
	done
}

# The configuration, on stdout: round robin over HOSTS, server iN for HOSTS[N].
haproxy_config() {
	local n
	cat <<-EOF
		global
		    maxconn 4096
		defaults
		    mode http
		    timeout connect 1s
		    timeout client 10s
		    timeout server 10s
		frontend front
		    bind $FRONTEND
		    default_backend fleet
		backend fleet
		    balance roundrobin
		    option httpchk GET /readyz
		    http-check expect status 200
		    default-server inter $CHECK_INTER fall $CHECK_FALL rise $CHECK_RISE
	EOF
	for n in "${!HOSTS[@]}"; do
		printf '    server i%s %s:%s check\n' "$n" "${HOSTS[$n]}" "$PORT"
	done
	cat <<-EOF
		frontend stats
		    bind $STATS
		    stats enable
		    stats uri /stats
	EOF
}

# HAProxy's view of instance N: UP, DOWN, ... (the stats CSV's 18th column).
haproxy_status() {
	curl -fs --max-time 1 "http://$STATS/stats;csv" |
		awk -F, -v server="i$1" '$1 == "fleet" && $2 == server { print $18 }'
}

haproxy_sees_up() { [[ $(haproxy_status "$1") == UP ]]; }
