#!/usr/bin/env bash
# Where tokengate's time goes under load: the fast upstream of load.sh, the
# gateway (release build) in front of it, wrk sending token requests at
# CONNECTIONS, and `perf record` sampling the gateway for DURATION seconds.
# Prints: how the connections spread over the workers (SO_REUSEPORT), each
# worker's share of the CPU, the time by binary (kernel, tokengate, libc), and
# the top functions by their own time (flat; CALL_GRAPH=1 adds call chains,
# which needs a build with frame pointers: it makes one in target/profiling).
#
#   bash benches/profile.sh                          # 256 connections, 10 s
#   CONNECTIONS=32 TOP=40 bash benches/profile.sh
#   BIN=/path/to/tokengate bash benches/profile.sh   # profile another build
#
# Installs nginx, wrk and perf (Debian linux-perf) when missing. perf needs
# kernel.perf_event_paranoid ≤ 1 or root.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-256}
DURATION=${DURATION:-10}
TOP=${TOP:-30}
WORKERS=${WORKERS:-0}
UP_PORT=${UP_PORT:-18180}
TG_PORT=${TG_PORT:-18182}
ADMIN_PORT=${ADMIN_PORT:-18183}

. benches/lib.sh
install_missing nginx:nginx-light wrk:wrk perf:linux-perf

if [ -z "${BIN:-}" ] && [ "${CALL_GRAPH:-0}" = 1 ]; then
    RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        cargo build --release --quiet --target-dir target/profiling
    BIN=./target/profiling/release/tokengate
fi
release_bin
bench_workdir

write_upstream_conf "$work/up" "$UP_PORT"
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)
gateway_conf "$TG_PORT" tokengate "$WORKERS" "${TG_SERVER:-}" "127.0.0.1:$ADMIN_PORT"
"$BIN" serve --config "$work/tokengate.toml" 2>"$work/tokengate.log" & tg=$!
pids+=("$tg")
wait_ports "$UP_PORT" "$TG_PORT"
token=$(create_token "$TG_PORT" "profile")
url="http://127.0.0.1:$TG_PORT/rest/api/2/issue/BENCH-1"

# thread_ticks: "name/tid ticks" for each of the gateway's threads (user + system).
thread_ticks() {
    for t in /proc/"$tg"/task/*; do
        awk -v id="$(tr ' ' _ <"$t/comm")/${t##*/}" '{sub(/^.*\) /, ""); print id, $12 + $13}' "$t/stat"
    done | sort
}

# tidy: perf's report lines, without the empty columns.
tidy() { awk '/^ +[0-9]/ {sub(/( +-)+ *$/, ""); sub(/ +$/, ""); printf "  %s\n", $0}'; }

thread_ticks >"$work/ticks-before"
wrk -t1 -c"$CONNECTIONS" -d"$((DURATION + 2))s" --latency -H "Authorization: Bearer $token" "$url" >"$work/wrk.out" &
wrk_pid=$!
sleep 1
echo "connections per worker (tokengate_open_connections, during the run):"
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^tokengate_open_connections\{/ {print "  " $0}'
echo "upstream connections open (all workers): $(ss -Htn state established "( dport = :$UP_PORT )" | wc -l)"
perf record -F 999 ${CALL_GRAPH:+$([ "$CALL_GRAPH" = 1 ] && echo -g)} -o "$work/perf.data" -p "$tg" -- sleep "$DURATION" 2>"$work/perf.log" >/dev/null
wait "$wrk_pid"
thread_ticks >"$work/ticks-after"

echo
echo "wrk -t1 -c$CONNECTIONS, token requests: $(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out") requests/s, p99 $(awk '$1 == "99%" {print $2}' "$work/wrk.out")"
echo
echo "CPU by thread (share of the gateway's CPU during the run):"
join "$work/ticks-before" "$work/ticks-after" | awk '{d[$1] += $3 - $2; s += $3 - $2} END {for (n in d) if (d[n] > 0) printf "  %-26s %5.1f%%\n", n, 100 * d[n] / s}' | sort -k2 -rn
echo
echo "time by binary:"
perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null | tidy | sed -n 1,8p
echo
echo "top $TOP functions by their own time:"
perf report -i "$work/perf.data" --no-children --sort symbol --stdio 2>/dev/null | tidy | sed -n "1,${TOP}p"
if [ "${CALL_GRAPH:-0}" = 1 ]; then
    echo
    echo "call chains (callers included), top $TOP:"
    perf report -i "$work/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | tidy | sed -n "1,${TOP}p"
fi
