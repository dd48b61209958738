#!/usr/bin/env bash
# Slow-client attacks against the release gateway, in front of a fast upstream
# (benches/lib.sh's nginx): slowhttptest in its three modes, one after the other,
#   slowloris  -H  request heads sent a few bytes at a time
#   slowbody   -B  a large Content-Length, the body sent a few bytes at a time
#   slowread   -X  responses read a few bytes at a time through a tiny TCP window
# While each runs, a normal client (curl) asks every second for a page and the
# script counts its successes and failures and notes its latency, and samples
# the gateway's open connections and memory. Prints a summary table.
#
#   bash benches/slowhttp.sh                           # 1000 connections, 60 s per mode
#   CONNECTIONS=4000 LENGTH=120 bash benches/slowhttp.sh
#   MAX_CONNECTIONS=500 bash benches/slowhttp.sh       # with a lower server.max_connections
#
# Installs slowhttptest and nginx (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-1000}
RATE=${RATE:-200}
LENGTH=${LENGTH:-60}
UP_PORT=${UP_PORT:-18280}
TG_PORT=${TG_PORT:-18282}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-10000}

. benches/lib.sh
install_missing nginx:nginx-light slowhttptest:slowhttptest curl:curl
# Room for the attack's sockets on both ends (and the upstream's).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --quiet
bench_workdir

mkdir -p "$work/up/html"
# A 1 MiB page for the slow readers.
head -c 1048576 /dev/zero | tr '\0' 'x' >"$work/up/html/big"
# /upload reads the whole request body before answering, as Jira does
# (proxy_request_buffering), then answers from the catch-all location.
UPSTREAM_WORKER_CONNECTIONS=16384 write_upstream_conf "$work/up" "$UP_PORT" "
        location = /big { root $work/up/html; }
        location = /upload { proxy_pass http://127.0.0.1:$UP_PORT/uploaded; }"
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)

cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$TG_PORT"
admin_listen = ""
max_connections = $MAX_CONNECTIONS
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[tokens]
store_path = "$work/tokens.sled"
[log]
level = "warn"
EOF
./target/release/tokengate serve --config "$work/proxy.toml" 2>"$work/tokengate.log" & TG_PID=$!
pids+=($TG_PID)
wait_ports "$UP_PORT" "$TG_PORT"
base="http://127.0.0.1:$TG_PORT"
defaults=$(./target/release/tokengate --version 2>/dev/null || true)
echo "gateway ${defaults:-tokengate} (pid $TG_PID): header_read_timeout_ms and idle_timeout_ms at their defaults (10000, 75000), max_connections $MAX_CONNECTIONS"
echo "slowhttptest: $CONNECTIONS connections at $RATE/s, $LENGTH s per mode; a curl probe every second"

declare -A args=(
    [slowloris]="-H -i 5 -x 24"
    [slowbody]="-B -i 5 -s 1000000 -x 24"
    [slowread]="-X -k 10 -n 5 -w 8 -y 32 -z 16"
)
declare -A path=([slowloris]=/rest/api/2/issue/SLOW-1 [slowbody]=/upload [slowread]=/big)
modes=(slowloris slowbody slowread)
summary="$work/summary"
: >"$summary"
for mode in "${modes[@]}"; do
    echo
    echo "== $mode: slowhttptest ${args[$mode]}"
    # shellcheck disable=SC2086
    slowhttptest ${args[$mode]} -c "$CONNECTIONS" -r "$RATE" -l "$LENGTH" -p 5 \
        -u "$base${path[$mode]}" >"$work/$mode.out" 2>&1 &
    attack=$!
    probes="$work/$mode.probes"
    : >"$probes"
    max_conns=0
    max_rss=0
    sleep 2 # let the attack ramp up
    while kill -0 "$attack" 2>/dev/null; do
        # code time_total_s
        curl -s -o /dev/null -m 5 -w '%{http_code} %{time_total}\n' "$base/rest/api/2/issue/SLOW-1" >>"$probes" || echo "000 5" >>"$probes"
        conns=$(ss -Htn state established "( sport = :$TG_PORT )" | wc -l)
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$TG_PID/status")
        [ "$conns" -gt "$max_conns" ] && max_conns=$conns
        [ "$rss" -gt "$max_rss" ] && max_rss=$rss
        sleep 1
    done
    wait "$attack" || true
    kill -0 "$TG_PID" 2>/dev/null || { echo "the gateway died" >&2; exit 1; }
    ok=$(awk '$1 == 200' "$probes" | wc -l)
    failed=$(awk '$1 != 200' "$probes" | wc -l)
    lat=$(awk '$1 == 200 {print $2 * 1000}' "$probes" | sort -g | awk '{a[NR] = $1} END {
        if (NR == 0) { print "- -"; exit }
        printf "%.1f %.1f", a[int((NR + 1) / 2)], a[NR] }')
    # slowhttptest's last status block: its own probe's verdict and the socket counts.
    sed -i 's/\x1b\[[0-9;]*m//g' "$work/$mode.out" "$work/tokengate.log"
    available=$(grep -o 'service available:[^|]*' "$work/$mode.out" | tail -1 | awk '{print $NF}')
    attack_conns=$(grep -o 'connected:[^|]*' "$work/$mode.out" | awk '{print $NF}' | sort -n | tail -1)
    closed=$(grep -o 'closed:[^|]*' "$work/$mode.out" | tail -1 | awk '{print $NF}')
    echo "probes: $ok ok, $failed failed; latency p50/max ms: $lat; gateway: max $max_conns client connections, max RSS $max_rss kB"
    echo "$mode $ok $failed $lat $max_conns $max_rss ${attack_conns:--} ${closed:--} ${available:--}" >>"$summary"
    sleep 3 # let the gateway shed the attack's leftovers
done

echo
echo "summary ($CONNECTIONS attack connections per mode, $LENGTH s each, one probe per second)"
printf '%-10s %8s %8s %9s %9s %11s %10s %11s %10s %10s\n' mode probe-ok probe-err p50-ms max-ms gw-conns rss-kB atk-conns atk-closed available
while read -r mode ok failed p50 max conns rss aconns closed avail; do
    printf '%-10s %8s %8s %9s %9s %11s %10s %11s %10s %10s\n' "$mode" "$ok" "$failed" "$p50" "$max" "$conns" "$rss" "$aconns" "$closed" "$avail"
done <"$summary"
echo
echo "gateway warnings: $(grep -c . "$work/tokengate.log" || true) lines"
grep -o '"message":"[^"]*"\|WARN.*\|ERROR.*' "$work/tokengate.log" | cut -c1-120 | sort | uniq -c | sort -rn | head -5 || true
failures=$(awk '{s += $3} END {print s + 0}' "$summary")
[ "$failures" -eq 0 ] || { echo "the normal client failed $failures times" >&2; exit 1; }
