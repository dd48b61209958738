#!/usr/bin/env bash
# Side-by-side load benchmark on loopback, in one run:
#   upstream       nginx answering a ~200-byte JSON body (1 worker), the "fast upstream"
#   nginx          nginx as a plain reverse proxy to it (worker_processes auto, keep-alive upstream)
#   haproxy        HAProxy doing tokengate's job the way an ops team would without it: the
#                  Bearer token hashed (sha2(256) converter) and looked up in a map file of
#                  1,000 users, 401 when absent, X-Remote-User set (threads auto, keep-alive)
#   tg-pass        tokengate, requests without credentials (forwarded unchanged)
#   tg-token       tokengate, every request with a valid Bearer token (checked, swapped)
# For each number of connections in CONNECTIONS, every target is driven by the
# same wrk settings in alternating rounds; the script prints requests/s, p50
# and p99 per run, the medians, and tokengate's ratios to nginx and HAProxy.
# Before measuring it checks that HAProxy and tokengate answer a right token
# with 200 and a wrong one with 401.
#
#   bash benches/load.sh                 # 5 rounds of 5 s at 32 and at 256 connections, 1 wrk thread
#   ROUNDS=9 DURATION=10s CONNECTIONS="64" bash benches/load.sh
#   BIN_BEFORE=/path/to/older/tokengate bash benches/load.sh
#                                        # adds tg-before: the older build with
#                                        # tokens, in the same alternating rounds
#   TARGETS="nginx haproxy tg-token" bash benches/load.sh
#                                        # only these targets
#   TG_SERVER='...' TG_BEFORE_SERVER='...' bash benches/load.sh
#                                        # extra lines for [server] of tokengate
#                                        # and of the older build
#   WORKERS=1 WORKERS_BEFORE=2 BIN_BEFORE=target/release/tokengate bash benches/load.sh
#                                        # one build, two settings side by side
#
# Installs nginx, HAProxy and wrk (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32 256}
THREADS=${THREADS:-1}
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
TG_PORT=${TG_PORT:-18082}
WORKERS=${WORKERS:-0}   # tokengate's server.workers (0 = one per core)
TG_BEFORE_PORT=${TG_BEFORE_PORT:-18083}
HAPROXY_PORT=${HAPROXY_PORT:-18084}
TG_SERVER=${TG_SERVER:-}
TG_BEFORE_SERVER=${TG_BEFORE_SERVER:-}
WORKERS_BEFORE=${WORKERS_BEFORE:-$WORKERS}

. benches/lib.sh
install_missing nginx:nginx-light wrk:wrk haproxy:haproxy
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

release_bin
bench_workdir

mkdir -p "$work/proxy"
write_upstream_conf "$work/up" "$UP_PORT"
cat >"$work/proxy/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $work/proxy/nginx.pid;
error_log $work/proxy/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    upstream jira { server 127.0.0.1:$UP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://jira;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
EOF
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)
"$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf" & pids+=($!)

# HAProxy's map: the hex SHA-256 of each of 1,000 tokens, and its user. The
# measured token is the last one.
mkdir -p "$work/haproxy"
for i in $(seq 1 1000); do
    t="hp_$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')"
    printf '%s user%s\n' "$(printf %s "$t" | sha256sum | cut -d' ' -f1)" "$i"
done >"$work/haproxy/tokens.map"
hp_token=$t
cat >"$work/haproxy/haproxy.cfg" <<EOF
global
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend gate
    bind 127.0.0.1:$HAPROXY_PORT
    http-request set-var(txn.user) req.hdr(authorization),regsub("^Bearer ",""),sha2(256),hex,lower,map($work/haproxy/tokens.map)
    http-request return status 401 content-type application/json string '{"message":"Unauthorized"}' unless { var(txn.user) -m found }
    http-request del-header authorization
    http-request set-header X-Remote-User %[var(txn.user)]
    default_backend jira
backend jira
    http-reuse always
    server up 127.0.0.1:$UP_PORT
EOF
"$HAPROXY" -q -f "$work/haproxy/haproxy.cfg" & pids+=($!)

gateway_conf "$TG_PORT" proxy "$WORKERS" "$TG_SERVER"
"$BIN" serve --config "$work/proxy.toml" 2>"$work/tokengate.log" & pids+=($!)
ports=("$UP_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$TG_PORT")
if [ -n "${BIN_BEFORE:-}" ]; then
    gateway_conf "$TG_BEFORE_PORT" before "$WORKERS_BEFORE" "$TG_BEFORE_SERVER"
    "$BIN_BEFORE" serve --config "$work/before.toml" 2>"$work/before.log" & pids+=($!)
    ports+=("$TG_BEFORE_PORT")
fi

wait_ports "${ports[@]}"
token=$(create_token "$TG_PORT" "load benchmark")
# expect CODE PORT TOKEN: a request with the token is answered CODE.
expect() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $3" "http://127.0.0.1:$2/rest/api/2/issue/BENCH-1")
    [ "$code" = "$1" ] || { echo "port $2: a token request answered $code, not $1" >&2; exit 1; }
}
expect 200 "$TG_PORT" "$token"
expect 401 "$TG_PORT" "${token%?????}aaaaa"
expect 200 "$HAPROXY_PORT" "$hp_token"
wrong=${hp_token%?}x
[ "$wrong" != "$hp_token" ] || wrong=${hp_token%?}y
expect 401 "$HAPROXY_PORT" "$wrong"

path=/rest/api/2/issue/BENCH-1
declare -A url=(
    [upstream]="http://127.0.0.1:$UP_PORT$path"
    [nginx]="http://127.0.0.1:$NGINX_PORT$path"
    [haproxy]="http://127.0.0.1:$HAPROXY_PORT$path"
    [tg-pass]="http://127.0.0.1:$TG_PORT$path"
    [tg-token]="http://127.0.0.1:$TG_PORT$path"
)
targets=(upstream nginx haproxy tg-pass tg-token)
if [ -n "${BIN_BEFORE:-}" ]; then
    before_token=$(create_token "$TG_BEFORE_PORT" "load benchmark, older build")
    url[tg-before]="http://127.0.0.1:$TG_BEFORE_PORT$path"
    targets+=(tg-before)
fi

if [ -n "${TARGETS:-}" ]; then
    read -ra targets <<<"$TARGETS"
    for t in "${targets[@]}"; do
        [ -n "${url[$t]:-}" ] || { echo "TARGETS: no target $t here (tg-before needs BIN_BEFORE)" >&2; exit 1; }
    done
fi

# run_sweep C: the alternating rounds at C connections, and the medians;
# appends "C target rps p99" lines to $summary.
summary="$work/summary"
: >"$summary"
run_sweep() {
    local c=$1 results="$work/results-$1" round t row rps p50 p99
    : >"$results"
    echo
    echo "wrk -t$THREADS -c$c -d$DURATION --latency, $ROUNDS alternating rounds, $(nproc) cores"
    printf '%-6s %-9s %12s %9s %9s\n' round target "requests/s" "p50 ms" "p99 ms"
    for round in $(seq 1 "$ROUNDS"); do
        for t in "${targets[@]}"; do
            args=()
            [ "$t" = haproxy ] && args=(-H "Authorization: Bearer $hp_token")
            [ "$t" = tg-token ] && args=(-H "Authorization: Bearer $token")
            [ "$t" = tg-before ] && args=(-H "Authorization: Bearer $before_token")
            row=$(wrk_row -t"$THREADS" -c"$c" -d"$DURATION" "${args[@]}" "${url[$t]}")
            read -r rps p50 p99 <<<"$row"
            printf '%-6s %-9s %12.0f %9s %9s\n' "$round" "$t" "$rps" "$p50" "$p99"
            echo "$t $rps $p50 $p99" >>"$results"
        done
    done
    echo
    echo "medians at $c connections"
    printf '%-9s %12s %9s %9s\n' target "requests/s" "p50 ms" "p99 ms"
    for t in "${targets[@]}"; do
        rps=$(awk -v t="$t" '$1 == t {print $2}' "$results" | median)
        p50=$(awk -v t="$t" '$1 == t {print $3}' "$results" | median)
        p99=$(awk -v t="$t" '$1 == t {print $4}' "$results" | median)
        printf '%-9s %12.0f %9s %9s\n' "$t" "$rps" "$p50" "$p99"
        echo "$c $t $rps $p99" >>"$summary"
    done
}

for c in $CONNECTIONS; do
    run_sweep "$c"
done

# of C TARGET FIELD: the median FIELD (rps or p99) of TARGET at C connections.
of() { awk -v c="$1" -v t="$2" -v f="$3" '$1 == c && $2 == t {print (f == "rps") ? $3 : $4}' "$summary"; }
# pair C A B: "A/B in requests/s, B/A in p99" (above 1: A is better), or "-".
pair() {
    local ra rb pa pb
    ra=$(of "$1" "$2" rps) rb=$(of "$1" "$3" rps) pa=$(of "$1" "$2" p99) pb=$(of "$1" "$3" p99)
    [ -n "$ra" ] && [ -n "$rb" ] || { echo "-"; return; }
    echo "$(ratio "$ra" "$rb") / $(ratio "$pb" "$pa")"
}
echo
echo "ratios: requests/s A/B and p99 B/A (above 1 means A is better, in both)"
printf '%-12s %-20s %-20s %-20s %-20s\n' connections "tg-token : nginx" "tg-token : haproxy" "haproxy : nginx" "tg-pass : nginx"
for c in $CONNECTIONS; do
    printf '%-12s %-20s %-20s %-20s %-20s\n' "$c" "$(pair "$c" tg-token nginx)" "$(pair "$c" tg-token haproxy)" \
        "$(pair "$c" haproxy nginx)" "$(pair "$c" tg-pass nginx)"
done
if [ -n "${BIN_BEFORE:-}" ]; then
    for c in $CONNECTIONS; do
        echo "this build : the older build, with tokens, at $c connections: $(pair "$c" tg-token tg-before)"
    done
fi
