#!/usr/bin/env bash
# Token-auth requests/s on the PostgreSQL backend against sled, side by side
# in one run, on loopback:
#   upstream   nginx answering a ~200-byte JSON body (1 worker), as in load.sh
#   tg-sled    tokengate on sled, every request with a valid Bearer token
#   tg-pg      tokengate with [tokens] backend = "postgres" on a database made
#              for the run (dropped at the end), every request with a valid
#              Bearer token: after the first request it is in the node's cache
# Both gateways run at once (only one is driven at a time) with the same wrk
# settings as load.sh's tg-token row, in alternating rounds: every round
# starts both afresh, the one driven first also started first and on the
# first port, and the order flips every round (on this VM the same gateway in
# both places did up to 1.06x better in the second, which would otherwise
# pass for a difference between the backends). The script prints requests/s,
# p50 and p99 per run, the gateway's CPU time per request (user + system,
# from /proc: steadier than requests/s when others share the machine), the
# medians, and the ratios.
#
#   bash benches/cluster_load.sh              # 5 rounds of 5 s, 32 connections, 1 wrk thread
#   ROUNDS=9 DURATION=10s CONNECTIONS=64 bash benches/cluster_load.sh
#   PGHOST=db.example PGUSER=bench bash benches/cluster_load.sh
#
# Needs PostgreSQL (PGHOST/PGPORT/PGUSER/PGPASSWORD, default postgres at
# 127.0.0.1:5432); without it, prints one line and exits 0. Installs nginx,
# wrk and the PostgreSQL client (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
UP_PORT=${UP_PORT:-18180}
PORT_A=${PORT_A:-18181}
PORT_B=${PORT_B:-18182}
WORKERS=${WORKERS:-0}   # tokengate's server.workers (0 = one per core)

. benches/lib.sh
install_missing nginx:nginx-light wrk:wrk

work=$(mktemp -d)
up=""
declare -A backend=([tg-sled]=sled [tg-pg]=postgres) gw url token
cleanup() {
    for p in $up "${gw[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_drop_db
    rm -rf "$work"
}
trap cleanup EXIT
pg_bench_db tg_bench_load
echo "$(pg_settings); database $PG_DB"
release_bin

write_upstream_conf "$work/up" "$UP_PORT"
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" &
up=$!
wait_ports "$UP_PORT"

path=/rest/api/2/issue/BENCH-1
# start_gateway TARGET PORT: tokengate for TARGET (its backend; its own sled
# directory, kept across restarts) on PORT in front of the upstream; returns
# once it answers.
start_gateway() {
    cat >"$work/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
admin_listen = ""
workers = $WORKERS
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[tokens]
backend = "${backend[$1]}"
store_path = "$work/$1.sled"
postgres_url_env = "TOKENGATE_BENCH_PG_URL"
[log]
level = "warn"
EOF
    TOKENGATE_BENCH_PG_URL=$PG_URL "$BIN" serve --config "$work/$1.toml" 2>>"$work/$1.log" &
    gw[$1]=$!
    url[$1]="http://127.0.0.1:$2$path"
    for _ in $(seq 1 200); do
        curl -s -o /dev/null "http://127.0.0.1:$2/" && return 0
        kill -0 "${gw[$1]}" 2>/dev/null || break
        sleep 0.05
    done
    echo "$1 did not start; its log:" >&2
    cat "$work/$1.log" >&2
    exit 1
}
stop_gateways() {
    local t
    for t in "${!gw[@]}"; do
        kill "${gw[$t]}" 2>/dev/null || true
        wait "${gw[$t]}" 2>/dev/null || true
    done
    gw=()
}
# start_pair FIRST SECOND: FIRST started first, on PORT_A; SECOND on PORT_B.
start_pair() {
    start_gateway "$1" "$PORT_A"
    start_gateway "$2" "$PORT_B"
}

start_pair tg-sled tg-pg
token[tg-sled]=$(create_token "$PORT_A" "load benchmark, sled")
token[tg-pg]=$(create_token "$PORT_B" "load benchmark, postgres")
[ "$(psql -d "$PG_DB" -Atc 'SELECT count(*) FROM tokengate_tokens')" = 1 ] ||
    { echo "the PostgreSQL node's token is not in the database" >&2; exit 1; }

# cpu_ticks PID: user + system CPU time of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# DURATION in seconds (wrk takes 10s, 2m, 1h).
seconds=$(awk -v d="$DURATION" 'BEGIN {n = d + 0; u = d; sub(/^[0-9.]+/, "", u); print (u == "m") ? n * 60 : (u == "h") ? n * 3600 : n}')

results="$work/results"
: >"$results"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, $ROUNDS alternating rounds, $(nproc) cores"
printf '%-6s %-9s %12s %9s %9s %12s\n' round target "requests/s" "p50 ms" "p99 ms" "CPU µs/req"
for round in $(seq 1 "$ROUNDS"); do
    order=(tg-sled tg-pg)
    [ $((round % 2)) = 0 ] && order=(tg-pg tg-sled)
    stop_gateways
    start_pair "${order[@]}"
    for t in "${order[@]}"; do
        # After a start the first request reads the token from the store.
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${token[$t]}" "${url[$t]}")
        [ "$code" = 200 ] || { echo "$t: token request answered $code" >&2; exit 1; }
    done
    for t in "${order[@]}"; do
        before=$(cpu_ticks "${gw[$t]}")
        read -r rps p50 p99 < <(wrk_row -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
            -H "Authorization: Bearer ${token[$t]}" "${url[$t]}")
        ticks=$(( $(cpu_ticks "${gw[$t]}") - before ))
        cpu=$(awk -v t="$ticks" -v hz="$hz" -v r="$rps" -v d="$seconds" 'BEGIN {printf "%.2f", t / hz * 1e6 / (r * d)}')
        printf '%-6s %-9s %12.0f %9s %9s %12s\n' "$round" "$t" "$rps" "$p50" "$p99" "$cpu"
        echo "$t $rps $p50 $p99 $cpu" >>"$results"
    done
done

echo
echo "medians"
printf '%-9s %12s %9s %9s %12s\n' target "requests/s" "p50 ms" "p99 ms" "CPU µs/req"
declare -A mr m50 m99 mcpu
for t in tg-sled tg-pg; do
    mr[$t]=$(awk -v t="$t" '$1 == t {print $2}' "$results" | median)
    m50[$t]=$(awk -v t="$t" '$1 == t {print $3}' "$results" | median)
    m99[$t]=$(awk -v t="$t" '$1 == t {print $4}' "$results" | median)
    mcpu[$t]=$(awk -v t="$t" '$1 == t {print $5}' "$results" | median)
    printf '%-9s %12.0f %9s %9s %12s\n' "$t" "${mr[$t]}" "${m50[$t]}" "${m99[$t]}" "${mcpu[$t]}"
done
echo
echo "postgres / sled, requests/s:  $(ratio "${mr[tg-pg]}" "${mr[tg-sled]}")  (goal >= 0.95)"
echo "postgres / sled, p99:         $(ratio "${m99[tg-pg]}" "${m99[tg-sled]}")  (below 1 is better)"
echo "postgres / sled, CPU/request: $(ratio "${mcpu[tg-pg]}" "${mcpu[tg-sled]}")  (below 1 is better)"
