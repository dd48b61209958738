#!/usr/bin/env bash
# Soak test: a mixed load against the release gateway for DURATION seconds,
# in front of a fast upstream (benches/lib.sh's nginx answering like Jira:
# /myself, /mypermissions, anything else a small JSON body; request bodies
# read and discarded).
#
# Load kinds, all at once:
#   valid     wrk, every request with a valid Bearer token            (expects 200)
#   invalid   curl loop, a well-formed but unknown token               (401, 429)
#   upload    curl loop, a 4 MiB POST with a valid token               (200)
#   mgmt      curl loop: create a token, list, delete it (Basic auth)  (200, 200, 200/204)
#   slow      slowhttptest slowloris, SLOW_CONNECTIONS connections    (no status: cut off)
# Every 10 s the gateway's VmRSS, open fds and established client connections
# are sampled. At the end: first/last/max RSS and fds, the statuses per load
# kind, and every status a load did not ask for (flagged UNEXPECTED).
#
#   bash benches/soak.sh                      # 600 s
#   DURATION=120 bash benches/soak.sh
#
# Installs nginx, wrk and slowhttptest (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
UP_PORT=${UP_PORT:-18180}
TG_PORT=${TG_PORT:-18182}
ADMIN_PORT=${ADMIN_PORT:-18183}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-16}
SLOW_CONNECTIONS=${SLOW_CONNECTIONS:-50}
UPLOAD_MB=${UPLOAD_MB:-4}

. benches/lib.sh
install_missing nginx:nginx-light wrk:wrk slowhttptest:slowhttptest

cargo build --release --quiet
bench_workdir

write_upstream_conf "$work/up" "$UP_PORT"
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)

cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$TG_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[tokens]
store_path = "$work/tokens.sled"
max_tokens_per_user = 1000
[auth]
failures_per_ip_per_minute = 30
[log]
level = "warn"
EOF
./target/release/tokengate serve --config "$work/proxy.toml" 2>"$work/tokengate.log" & TG_PID=$!
pids+=($TG_PID)

wait_ports "$UP_PORT" "$TG_PORT"
base="http://127.0.0.1:$TG_PORT"
api="$base/rest/de.resolution.apitokenauth/latest/user/token"
token=$(create_token "$TG_PORT" "soak valid")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$base/rest/api/2/issue/SOAK-1")
[ "$code" = 200 ] || { echo "token request answered $code" >&2; exit 1; }
# A token of the right shape that the store does not know.
prefix=${token%%_*}
bogus="${prefix}_$(head -c 200 /dev/urandom | tr -dc 'A-Za-z0-9' | head -c 36)"
head -c $((UPLOAD_MB * 1024 * 1024)) /dev/urandom >"$work/upload.bin"

end=$(($(date +%s) + DURATION))
echo "soak: ${DURATION}s against tokengate (pid $TG_PID), $(nproc) cores"

# valid: wrk with a status histogram.
cat >"$work/status.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body)
    counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        for status, n in pairs(t:get("counts")) do total[status] = (total[status] or 0) + n end
    end
    for status, n in pairs(total) do io.write(string.format("STATUS %d %d\n", status, n)) end
    io.write(string.format("LATENCY p50=%.2fms p99=%.2fms max=%.2fms\n",
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
    io.write(string.format("ERRORS connect=%d read=%d write=%d timeout=%d\n",
        summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
EOF
wrk -t1 -c"$WRK_CONNECTIONS" -d"${DURATION}s" -s "$work/status.lua" \
    -H "Authorization: Bearer $token" "$base/rest/api/2/issue/SOAK-1" >"$work/wrk.out" 2>&1 &
wrk_pid=$!

# invalid: one unknown token after another (expects 401, then 429 once throttled).
# From 127.0.0.2: the failure throttle is per client address, and it would
# otherwise throttle the other loads too.
(while [ "$(date +%s)" -lt "$end" ]; do
    curl -s -o /dev/null -w '%{http_code}\n' -m 10 --interface 127.0.0.2 -H "Authorization: Bearer $bogus" "$base/rest/api/2/issue/SOAK-1" || echo 000
    sleep 0.05
done >"$work/status.invalid") &
loops=($!)

# upload: a few MiB POST with a valid token.
(while [ "$(date +%s)" -lt "$end" ]; do
    curl -s -o /dev/null -w '%{http_code}\n' -m 60 -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/octet-stream' -H 'X-Atlassian-Token: no-check' \
        --data-binary @"$work/upload.bin" "$base/rest/api/2/issue/SOAK-1/attachments" || echo 000
done >"$work/status.upload") &
loops+=($!)

# mgmt: create, list, delete.
(i=0
while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    out=$(curl -s -m 10 -w '\n%{http_code}' -u bench:bench -H 'Content-Type: application/json' \
        -d "{\"tokenDescription\":\"soak $i\"}" "$api" || echo 000)
    echo "create $(tail -n1 <<<"$out")"
    id=$(head -n1 <<<"$out" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
    echo "list $(curl -s -o /dev/null -m 10 -w '%{http_code}' -u bench:bench "$api" || echo 000)"
    if [ -n "$id" ]; then
        echo "delete $(curl -s -o /dev/null -m 10 -w '%{http_code}' -X DELETE -u bench:bench "$api/$id" || echo 000)"
    fi
    sleep 0.2
done >"$work/status.mgmt") &
loops+=($!)

# slow: slowloris connections; the gateway cuts them off after
# header_read_timeout_ms, and a new round opens SLOW_CONNECTIONS more.
(rounds=0
while [ "$(date +%s)" -lt "$end" ]; do
    rounds=$((rounds + 1))
    slowhttptest -H -c "$SLOW_CONNECTIONS" -r 50 -i 5 -t GET -l $((end - $(date +%s) + 1)) \
        -u "$base/rest/api/2/issue/SOAK-1" -p 3 >"$work/slow.out" 2>&1 || true
    echo "$rounds" >"$work/slow.rounds"
done) &
slow_pid=$!

# Samples every 10 s.
echo "     t  rss_kB  fds  client_conns"
samples="$work/samples"
: >"$samples"
start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$TG_PID/status")
    fds=$(ls "/proc/$TG_PID/fd" | wc -l)
    conns=$(ss -Htn state established "( sport = :$TG_PORT )" | wc -l)
    t=$(($(date +%s) - start))
    printf '%6d %7d %4d %13d\n' "$t" "$rss" "$fds" "$conns" | tee -a "$samples"
    sleep 10
done
wait "$wrk_pid" || true
for p in "${loops[@]}"; do wait "$p" || true; done
wait "$slow_pid" || true
kill -0 "$TG_PID" 2>/dev/null || { echo "the gateway died" >&2; exit 1; }
rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$TG_PID/status")
fds=$(ls "/proc/$TG_PID/fd" | wc -l)
printf '%6s %7d %4d %13s\n' end "$rss" "$fds" - | tee -a "$samples"

echo
echo "memory and descriptors"
awk 'NR == 1 {fr = $2; ff = $3} {lr = $2; lf = $3; if ($2 > mr) mr = $2; if ($3 > mf) mf = $3}
     END {printf "  RSS kB  first %d  last %d  max %d\n  fds     first %d  last %d  max %d\n", fr, lr, mr, ff, lf, mf}' "$samples"

unexpected=0
report() { # kind, expected statuses (space-separated), then "status count" lines on stdin
    local kind=$1 expected=" $2 "
    while read -r status count; do
        [ -n "$status" ] || continue
        local flag=""
        if [[ "$expected" != *" $status "* ]]; then flag="  UNEXPECTED"; unexpected=$((unexpected + 1)); fi
        printf '  %-14s %6s %9d%s\n' "$kind" "$status" "$count" "$flag"
    done
}
echo
echo "statuses per load kind"
printf '  %-14s %6s %9s\n' kind status count
report valid "200" < <(awk '/^STATUS/ {print $2, $3}' "$work/wrk.out" | sort -n)
report invalid "401 429" < <(sort "$work/status.invalid" | uniq -c | awk '{print $2, $1}')
report upload "200" < <(sort "$work/status.upload" | uniq -c | awk '{print $2, $1}')
for call in create list delete; do
    want=200
    [ "$call" = delete ] && want="200 204"
    report "mgmt-$call" "$want" < <(awk -v c="$call" '$1 == c {print $2}' "$work/status.mgmt" | sort | uniq -c | awk '{print $2, $1}')
done
echo
echo "valid (wrk): $(grep -E '^LATENCY|^ERRORS' "$work/wrk.out" | tr '\n' ' ')"
echo "valid (wrk): $(awk '/Requests\/sec/ {print $2 " requests/s"}' "$work/wrk.out")"
plain() { sed 's/\x1b\[[0-9;]*m//g'; }
echo "slow (slowhttptest): $(cat "$work/slow.rounds" 2>/dev/null || echo 0) rounds of $SLOW_CONNECTIONS slowloris connections"
echo "slow (slowhttptest, last status): $(plain <"$work/slow.out" | grep -E 'pending:|connected:|closed:|service available:' | tail -4 | tr -s ' \n' ' ')"
echo "gateway log lines: $(wc -l <"$work/tokengate.log") (warn and above); by message:"
plain <"$work/tokengate.log" | sed -E 's/^[^ ]+ +(WARN|ERROR) +//; s/ +[a-z_]+=.*$//' | cut -c1-100 | sort | uniq -c | sort -rn | head -8
echo
if [ "$unexpected" -gt 0 ]; then
    echo "UNEXPECTED statuses: $unexpected kind(s)"
    exit 1
fi
echo "no unexpected statuses"
