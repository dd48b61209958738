#!/usr/bin/env bash
# Side-by-side load benchmark on loopback, in one run:
#   upstream       nginx answering a ~200-byte JSON body (1 worker), the "fast upstream"
#   nginx          nginx as a plain reverse proxy to it (worker_processes auto, keep-alive upstream)
#   tg-pass        tokengate, requests without credentials (forwarded unchanged)
#   tg-token       tokengate, every request with a valid Bearer token (checked, swapped)
# Each target is driven by the same wrk settings, in alternating rounds; the
# script prints requests/s, p50 and p99 per run, the medians, and the ratios.
#
#   bash benches/load.sh                 # 5 rounds of 5 s, 32 connections, 1 wrk thread
#   ROUNDS=9 DURATION=10s CONNECTIONS=64 bash benches/load.sh
#   BIN_BEFORE=/path/to/older/tokengate bash benches/load.sh
#                                        # adds tg-before: the older build with
#                                        # tokens, in the same alternating rounds
#
# Installs nginx and wrk (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
UP_PORT=${UP_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
TG_PORT=${TG_PORT:-18082}
WORKERS=${WORKERS:-0}   # tokengate's server.workers (0 = one per core)
TG_BEFORE_PORT=${TG_BEFORE_PORT:-18083}

. benches/lib.sh
install_missing nginx:nginx-light wrk:wrk

# BIN=path/to/tokengate measures a binary built elsewhere.
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=./target/release/tokengate
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

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

# gateway_conf PORT NAME: a tokengate configuration in front of the upstream.
gateway_conf() {
    cat >"$work/$2.toml" <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = ""
workers = $WORKERS
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[tokens]
store_path = "$work/$2.sled"
[log]
level = "warn"
EOF
}
gateway_conf "$TG_PORT" proxy
"$BIN" serve --config "$work/proxy.toml" 2>"$work/tokengate.log" & pids+=($!)
ports=("$UP_PORT" "$NGINX_PORT" "$TG_PORT")
if [ -n "${BIN_BEFORE:-}" ]; then
    gateway_conf "$TG_BEFORE_PORT" before
    "$BIN_BEFORE" serve --config "$work/before.toml" 2>"$work/before.log" & pids+=($!)
    ports+=("$TG_BEFORE_PORT")
fi

for port in "${ports[@]}"; do
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && break
        sleep 0.1
    done
done
token=$(create_token "$TG_PORT" "load benchmark")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$TG_PORT/rest/api/2/issue/BENCH-1")
[ "$code" = 200 ] || { echo "token request answered $code" >&2; exit 1; }

path=/rest/api/2/issue/BENCH-1
declare -A url=(
    [upstream]="http://127.0.0.1:$UP_PORT$path"
    [nginx]="http://127.0.0.1:$NGINX_PORT$path"
    [tg-pass]="http://127.0.0.1:$TG_PORT$path"
    [tg-token]="http://127.0.0.1:$TG_PORT$path"
)
targets=(upstream nginx tg-pass tg-token)
if [ -n "${BIN_BEFORE:-}" ]; then
    before_token=$(create_token "$TG_BEFORE_PORT" "load benchmark, older build")
    url[tg-before]="http://127.0.0.1:$TG_BEFORE_PORT$path"
    targets+=(tg-before)
fi

results="$work/results"
: >"$results"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS alternating rounds, $(nproc) cores"
printf '%-6s %-9s %12s %9s %9s\n' round target "requests/s" "p50 ms" "p99 ms"
for round in $(seq 1 "$ROUNDS"); do
    for t in "${targets[@]}"; do
        args=()
        [ "$t" = tg-token ] && args=(-H "Authorization: Bearer $token")
        [ "$t" = tg-before ] && args=(-H "Authorization: Bearer $before_token")
        out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${args[@]}" "${url[$t]}")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
        p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
        errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
        [ -z "$errors" ] || echo "  $t: $errors" >&2
        printf '%-6s %-9s %12.0f %9s %9s\n' "$round" "$t" "$rps" "$p50" "$p99"
        echo "$t $rps $p50 $p99" >>"$results"
    done
done

echo
echo "medians"
printf '%-9s %12s %9s %9s\n' target "requests/s" "p50 ms" "p99 ms"
declare -A mr m50 m99
for t in "${targets[@]}"; do
    mr[$t]=$(awk -v t="$t" '$1 == t {print $2}' "$results" | median)
    m50[$t]=$(awk -v t="$t" '$1 == t {print $3}' "$results" | median)
    m99[$t]=$(awk -v t="$t" '$1 == t {print $4}' "$results" | median)
    printf '%-9s %12.0f %9s %9s\n' "$t" "${mr[$t]}" "${m50[$t]}" "${m99[$t]}"
done
echo
echo "tokengate with tokens / nginx, requests/s:  $(ratio "${mr[tg-token]}" "${mr[nginx]}")"
echo "tokengate with tokens / nginx, p99:         $(ratio "${m99[tg-token]}" "${m99[nginx]}")  (below 1 is better)"
echo "tokengate pass-through / nginx, requests/s: $(ratio "${mr[tg-pass]}" "${mr[nginx]}")"
echo "token auth / pass-through, requests/s:      $(ratio "${mr[tg-token]}" "${mr[tg-pass]}")"
if [ -n "${BIN_BEFORE:-}" ]; then
    echo "this build / the older build, with tokens, requests/s: $(ratio "${mr[tg-token]}" "${mr[tg-before]}")"
    echo "this build / the older build, with tokens, p99:        $(ratio "${m99[tg-token]}" "${m99[tg-before]}")  (below 1 is better)"
fi
