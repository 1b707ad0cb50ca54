# shellcheck shell=bash
# What run.sh (self-bound instances) and systemd.sh (instances under their own
# systemd) share: the load balancer in front of the fleet (HAProxy, or nginx),
# polling, and the results line. Source this file; it defines functions only.
# The balancer ones read FRONTEND and STATS (addresses), HOSTS (one address per
# instance) and PORT; HAProxy's also CHECK_INTER, CHECK_FALL and CHECK_RISE (the
# health check of /readyz), nginx's NGINX_MAX_FAILS and NGINX_FAIL_TIMEOUT (its
# passive failure handling), as README "Running more than one" documents them.

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

# nginx's configuration, on stdout, for a prefix directory DIR (pid file and
# temporary paths live there, so nginx needs nothing outside it). Open-source
# nginx has no active health checks: it never asks /readyz. What it has is
# passive: a connection refused or reset, a timeout, a 502 or 503 counts as a
# failure of that server (max_fails within fail_timeout take it out for
# fail_timeout), and the request goes to the next server if nothing was sent
# yet or the method is idempotent (GET, HEAD, PUT, DELETE, ...; POST, PATCH
# and LOCK only with `non_idempotent`, which this configuration leaves out).
nginx_config() {
	local dir=$1 host
	cat <<-EOF
		worker_processes 1;
		pid $dir/nginx.pid;
		error_log stderr notice;
		events {
		    worker_connections 1024;
		}
		http {
		    access_log off;
		    # Client connections end only when the client ends them, as with HAProxy.
		    keepalive_requests 1000000;
		    # Responses are small: nothing is ever written to a temporary file.
		    proxy_max_temp_file_size 0;
		    client_body_temp_path $dir/client_body;
		    proxy_temp_path $dir/proxy;
		    fastcgi_temp_path $dir/fastcgi;
		    uwsgi_temp_path $dir/uwsgi;
		    scgi_temp_path $dir/scgi;
		    upstream fleet {
	EOF
	for host in "${HOSTS[@]}"; do
		printf '        server %s:%s max_fails=%s fail_timeout=%s;\n' \
			"$host" "$PORT" "$NGINX_MAX_FAILS" "$NGINX_FAIL_TIMEOUT"
	done
	cat <<-EOF
		        keepalive 32;
		        keepalive_requests 1000000;
		    }
		    server {
		        listen $FRONTEND;
		        location / {
		            proxy_pass http://fleet;
		            proxy_http_version 1.1;
		            proxy_set_header Connection "";
		            proxy_next_upstream error timeout http_502 http_503;
		            proxy_connect_timeout 1s;
		            proxy_send_timeout 10s;
		            proxy_read_timeout 10s;
		        }
		    }
		}
	EOF
}

# load_counts REPORT: loadgen's JSON report as COUNTS: failed, total, ok, and
# the statuses and outcomes other than ok ("-" when none). Fails when the
# report cannot be read.
load_counts() {
	read -r -a COUNTS < <(python3 - "$1" <<-'EOF'
		import json, sys
		report = json.load(open(sys.argv[1]))
		def pairs(counts):
		    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items()) if k != "ok" and v) or "-"
		print(report["failed"], report["total"], report["ok"],
		      pairs(report["statuses"]), pairs(report["outcomes"]))
	EOF
	)
	((${#COUNTS[@]} == 5))
}

# One run's counts as a tab-separated line appended to FILE (nothing when FILE
# is empty), for bench/report.py: setup, balancer, operation, clients,
# announce, failed, total, ok, statuses, outcomes.
results_line() {
	local file=$1
	shift
	[[ -z $file ]] || { local IFS=$'\t'; printf '%s\n' "$*" >>"$file"; }
}
