#!/usr/bin/env bash
# HTTPS throughput and handshake rate, seamless against nginx, alternating in one run.
#
#   bench/tls.sh [--rounds N] [--duration Ds] [--connections C] [--handshake-connections H]
#                [--full-clients F] [--pin] [--seamless BIN] [--loadgen BIN]
#
# A CA and an ECDSA P-256 leaf for localhost and 127.0.0.1 are made with openssl in a temporary
# directory; seamless (self-bound, `[tls]` in a config file, default configuration otherwise)
# and nginx (Debian's package, bench/nginx-tls.conf, a private prefix: never the system
# service) serve the same 21-byte body over HTTPS with that certificate. Each round measures
# both, swapping who goes first every round: keep-alive throughput (`wrk -t1 -cC -dD`, which
# does not verify the certificate: curl checks it against the CA first) and new connections
# (`loadgen --tls --mode close`: a TLS handshake and one request per connection, H clients,
# certificate verified; 0 failed requests or the script fails; loadgen's clients resume their
# TLS 1.3 sessions, so these are resumed handshakes, X25519 and no signature) and full
# handshakes (F `openssl s_time -new` clients, one connection after the other, a GET on
# each, no resumption: an ECDSA signature per connection). The figure is the median of
# the per-round ratios seamless / nginx. nginx runs `worker_processes auto` (one per core, as
# tokio runs one worker thread per core); with --pin both servers are pinned to CPU 1 and the
# clients to CPU 0 (`taskset`), nginx with one worker. Needs wrk, openssl, nginx (installed
# with apt-get if missing) and release builds (`cargo build --release -p seamless -p loadgen`).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NAME=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$REPO/Cargo.toml" | head -n1)
TARGET=${CARGO_TARGET_DIR:-$REPO/target}

ROUNDS=3 DURATION=4s CONNECTIONS=64 HANDSHAKE_CONNECTIONS=32 FULL_CLIENTS=8 PIN=0
SEAMLESS=$TARGET/release/$NAME LOADGEN=$TARGET/release/loadgen
readonly SEAMLESS_HTTP=127.0.0.1:18291 SEAMLESS_ADDR=127.0.0.1:18292 NGINX_ADDR=127.0.0.1:18293

usage() {
	sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}

while (($#)); do
	case $1 in
	--rounds) ROUNDS=$2 ;;
	--duration) DURATION=$2 ;;
	--connections) CONNECTIONS=$2 ;;
	--handshake-connections) HANDSHAKE_CONNECTIONS=$2 ;;
	--full-clients) FULL_CLIENTS=$2 ;;
	--pin)
		PIN=1
		shift
		continue
		;;
	--seamless) SEAMLESS=$2 ;;
	--loadgen) LOADGEN=$2 ;;
	*) usage ;;
	esac
	shift 2
done

die() {
	echo "tls.sh: $*" >&2
	exit 1
}

for tool in wrk openssl curl python3; do
	command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install $tool)"
done
if ! command -v nginx >/dev/null && ! [[ -x /usr/sbin/nginx ]]; then
	echo "tls.sh: installing nginx with apt-get (as root)" >&2
	# No service may start during installation: the package's nginx.service would bind port 80.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends nginx; } >&2 ||
		{
			rm -f /usr/sbin/policy-rc.d
			die "apt-get install nginx failed"
		}
	rm -f /usr/sbin/policy-rc.d
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ $DURATION =~ ^[0-9]+s$ ]] || die "--duration takes whole seconds (4s)"
[[ -x $SEAMLESS && -x $LOADGEN ]] ||
	die "no release build (cargo build --release -p $NAME -p loadgen)"

SRV=() CLI=() WORKERS=auto
if ((PIN)); then
	(($(nproc) >= 2)) || die "--pin needs two CPUs"
	SRV=(taskset -c 1) CLI=(taskset -c 0) WORKERS=1
fi

DIR=$(mktemp -d /tmp/seamless-tls.XXXXXX)
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT

# --- the certificate: a CA, and a leaf for localhost and 127.0.0.1 signed by it ---------------
cat >"$DIR/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid
EOF
{
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/ca.key"
	openssl req -x509 -new -key "$DIR/ca.key" -subj /CN=seamless-bench-ca -days 2 -sha256 \
		-config "$DIR/openssl.cnf" -extensions ca -out "$DIR/ca.pem"
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/key.pem"
	openssl req -new -key "$DIR/key.pem" -subj /CN=localhost -config "$DIR/openssl.cnf" \
		-out "$DIR/leaf.csr"
	openssl x509 -req -in "$DIR/leaf.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
		-CAcreateserial -days 2 -sha256 -extfile "$DIR/openssl.cnf" -extensions leaf \
		-out "$DIR/cert.pem"
} >"$DIR/openssl.log" 2>&1 || {
	cat "$DIR/openssl.log" >&2
	die "openssl could not make the certificate"
}

# --- the servers -------------------------------------------------------------------------------
cat >"$DIR/seamless.toml" <<EOF
[http]
listen = "$SEAMLESS_HTTP"

[tls]
certificate = "$DIR/cert.pem"
key = "$DIR/key.pem"
listen = "$SEAMLESS_ADDR"

[log]
level = "warn"
EOF
"${SRV[@]}" "$SEAMLESS" serve --config "$DIR/seamless.toml" >"$DIR/seamless.log" 2>&1 &
PIDS+=("$!")

mkdir -p "$DIR/tmp"
sed -e "s|@DIR@|$DIR|g" -e "s|@ADDR@|$NGINX_ADDR|g" -e "s|@WORKERS@|$WORKERS|g" \
	"$HERE/nginx-tls.conf" >"$DIR/nginx.conf"
"$NGINX" -t -q -p "$DIR" -e "$DIR/error.log" -c "$DIR/nginx.conf" ||
	die "nginx rejects $DIR/nginx.conf"
"${SRV[@]}" "$NGINX" -p "$DIR" -e "$DIR/error.log" -c "$DIR/nginx.conf" &
PIDS+=("$!")

# Both answer the same body over a verified TLS connection.
for addr in "$SEAMLESS_ADDR" "$NGINX_ADDR"; do
	url="https://localhost:${addr##*:}/"
	for _ in $(seq 1 100); do
		curl --silent --fail --cacert "$DIR/ca.pem" --resolve "localhost:${addr##*:}:127.0.0.1" \
			--output /dev/null "$url" && break
		sleep 0.05
	done
	body=$(curl --silent --fail --http1.1 --cacert "$DIR/ca.pem" \
		--resolve "localhost:${addr##*:}:127.0.0.1" "$url") ||
		die "nothing answers HTTPS on $addr (logs in $DIR)"
	[[ $body == "Hello from seamless!" ]] || die "$addr answers '$body'"
done

# resumed ADDR: whether a second handshake resumes the first one's session (TLS 1.3 ticket).
resumed() {
	local out
	# A request read to its end, so that the ticket sent after the handshake is received.
	local request=$'GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
	out=$(openssl s_client -connect "$1" -servername localhost -CAfile "$DIR/ca.pem" \
		-ign_eof -sess_out "$DIR/session" <<<"$request" 2>&1 &&
		openssl s_client -connect "$1" -servername localhost -CAfile "$DIR/ca.pem" \
			-ign_eof -sess_in "$DIR/session" <<<"$request" 2>&1) || true
	if grep -q '^Reused' <<<"$out"; then echo yes; else echo no; fi
}

# --- the measurements ---------------------------------------------------------------------------
# keepalive ADDR: requests per second wrk measured; non-2xx answers or socket errors fail.
keepalive() {
	local out
	out=$("${CLI[@]}" wrk -t1 "-c$CONNECTIONS" "-d$DURATION" "https://$1/")
	if grep -Eq 'Non-2xx|Socket errors' <<<"$out"; then
		echo "$out" >&2
		die "wrk saw errors against $1"
	fi
	awk '/^Requests\/sec/ { print $2 }' <<<"$out"
}

# handshakes ADDR TAG: requests per second of loadgen, one new TLS connection per request;
# any failed request fails the script.
handshakes() {
	local json=$DIR/$2.json
	"${CLI[@]}" "$LOADGEN" --addr "$1" --tls --cacert "$DIR/ca.pem" --server-name localhost \
		--mode close --connections "$HANDSHAKE_CONNECTIONS" --duration "$DURATION" \
		--json "$json" --quiet || die "loadgen failed against $1"
	python3 - "$json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if r["failed"] or not r["ok"]:
    sys.exit(f"tls.sh: {sys.argv[1]}: {r['ok']} ok, {r['failed']} failed {r['outcomes']}")
print(r["rps"], r["ok"], r["failed"], r["connections_opened"])
EOF
}

# full ADDR: full handshakes per second (no session resumption: `openssl s_time -new`), with
# FULL_CLIENTS clients each opening one connection after the other, a request on each.
full() {
	local i t0 t1 pids=() n
	t0=$EPOCHREALTIME
	for ((i = 1; i <= FULL_CLIENTS; i++)); do
		"${CLI[@]}" openssl s_time -connect "$1" -new -time "${DURATION%s}" -www / \
			-CAfile "$DIR/ca.pem" >"$DIR/s_time.$i" 2>&1 &
		pids+=("$!")
	done
	for i in "${pids[@]}"; do wait "$i" || die "openssl s_time failed against $1"; done
	t1=$EPOCHREALTIME
	grep -qi error "$DIR"/s_time.* && die "openssl s_time saw errors against $1"
	n=$(awk '/connections in .*user sec/ { n += $1 } END { print n + 0 }' "$DIR"/s_time.*)
	awk -v n="$n" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f %d\n", n / (t1 - t0), n }'
}

median() {
	sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

printf '# %s vs nginx %s over HTTPS, %s rounds, %s cores, load average %s\n' "$NAME" \
	"$("$NGINX" -v 2>&1 | sed 's|.*nginx/||')" "$ROUNDS" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)"
printf '# %s; nginx worker_processes %s; %s\n' "$(openssl version)" "$WORKERS" \
	"$( ((PIN)) && echo "servers on CPU 1, clients on CPU 0" || echo "not pinned")"
printf '# session resumed on a second connection: %s %s, nginx %s\n' \
	"$NAME" "$(resumed "$SEAMLESS_ADDR")" "$(resumed "$NGINX_ADDR")"
printf '# keep-alive: wrk -t1 -c%s -d%s; new connection (resumed): loadgen --tls --mode close -c %s -d %s; full handshake: %s x openssl s_time -new -time %s\n' \
	"$CONNECTIONS" "$DURATION" "$HANDSHAKE_CONNECTIONS" "$DURATION" "$FULL_CLIENTS" "${DURATION%s}"
printf '| test | round | %s req/s | nginx req/s | ratio | %s ok / failed | nginx ok / failed |\n' "$NAME" "$NAME"
printf '|---|---|---|---|---|---|---|\n'
keep_ratios=() new_ratios=()
for ((round = 1; round <= ROUNDS; round++)); do
	if ((round % 2)); then
		a=$(keepalive "$SEAMLESS_ADDR")
		b=$(keepalive "$NGINX_ADDR")
	else
		b=$(keepalive "$NGINX_ADDR")
		a=$(keepalive "$SEAMLESS_ADDR")
	fi
	r=$(ratio "$a" "$b")
	keep_ratios+=("$r")
	printf '| keep-alive | %d | %.0f | %.0f | %s | | |\n' "$round" "$a" "$b" "$r"
done
printf '| keep-alive | median | | | **%s** | | |\n' "$(printf '%s\n' "${keep_ratios[@]}" | median)"
for ((round = 1; round <= ROUNDS; round++)); do
	if ((round % 2)); then
		read -r a a_ok a_failed _ < <(handshakes "$SEAMLESS_ADDR" "seamless-$round")
		read -r b b_ok b_failed _ < <(handshakes "$NGINX_ADDR" "nginx-$round")
	else
		read -r b b_ok b_failed _ < <(handshakes "$NGINX_ADDR" "nginx-$round")
		read -r a a_ok a_failed _ < <(handshakes "$SEAMLESS_ADDR" "seamless-$round")
	fi
	[[ -n ${a:-} && -n ${b:-} ]] || die "a loadgen run failed"
	r=$(ratio "$a" "$b")
	new_ratios+=("$r")
	printf '| new connection | %d | %.0f | %.0f | %s | %s / %s | %s / %s |\n' \
		"$round" "$a" "$b" "$r" "$a_ok" "$a_failed" "$b_ok" "$b_failed"
	a='' b=''
done
printf '| new connection | median | | | **%s** | | |\n' "$(printf '%s\n' "${new_ratios[@]}" | median)"
full_ratios=()
for ((round = 1; round <= ROUNDS; round++)); do
	if ((round % 2)); then
		read -r a a_n < <(full "$SEAMLESS_ADDR")
		read -r b b_n < <(full "$NGINX_ADDR")
	else
		read -r b b_n < <(full "$NGINX_ADDR")
		read -r a a_n < <(full "$SEAMLESS_ADDR")
	fi
	[[ -n ${a:-} && -n ${b:-} ]] || die "an openssl s_time run failed"
	r=$(ratio "$a" "$b")
	full_ratios+=("$r")
	printf '| full handshake | %d | %.0f | %.0f | %s | %s / – | %s / – |\n' \
		"$round" "$a" "$b" "$r" "$a_n" "$b_n"
	a='' b=''
done
printf '| full handshake | median | | | **%s** | | |\n' "$(printf '%s\n' "${full_ratios[@]}" | median)"
