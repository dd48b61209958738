#!/usr/bin/env bash
# A million tokens in PostgreSQL (10,000 users with 100 each), one gateway
# node on them (the release binary, [tokens] backend = "postgres"). Prints the
# fill time, the node's start-up time (spawn to /readyz answering 200) and
# resident memory, tokensByFilter page times, one user's token-list time, and
# requests/s and memory under load with many tokens (filling the node's token
# cache), with how often the node had to ask PostgreSQL.
#
#   bash benches/cluster_scale.sh                 # 1,000,000 tokens, 100,000 of them usable
#   TOKENS=100000 HOT=10000 bash benches/cluster_scale.sh
#
# The table is filled by SQL (INSERT ... SELECT generate_series) as the
# gateway itself would store the tokens: hashes, the per-user and total
# counts, the id sequence. The first HOT tokens are real ones (generated
# here, their SHA-256 stored), so requests can use them; token 1 is the
# admin's (user key JIRAUSER10000). The others' hashes are SHA-256 of a
# counter (nobody needs their tokens). Like scale.sh's, 1 token in 10 never
# expires, the others within a year.
#
# Needs PostgreSQL (PGHOST/PGPORT/PGUSER/PGPASSWORD, default postgres at
# 127.0.0.1:5432): the database is made for the run and dropped at the end;
# without a server, prints one line and exits 0. Installs nginx (the
# upstream /readyz checks), wrk and the PostgreSQL client when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TOKENS=${TOKENS:-1000000}
HOT=${HOT:-100000}
PORT=${PORT:-18190}
ADMIN_PORT=${ADMIN_PORT:-18191}
UP_PORT=${UP_PORT:-18192}
RUNS=${RUNS:-20}
STARTS=${STARTS:-3}
LOAD_DURATION=${LOAD_DURATION:-20s}

. benches/lib.sh
install_missing nginx:nginx-light wrk:wrk

work=$(mktemp -d)
gw=""
up=""
cleanup() {
    [ -n "$gw" ] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null || true
    [ -n "$up" ] && kill "$up" 2>/dev/null && wait "$up" 2>/dev/null || true
    pg_drop_db
    rm -rf "$work"
}
trap cleanup EXIT
pg_bench_db tg_bench_scale
export TOKENGATE_BENCH_PG_URL=$PG_URL
echo "$(pg_settings); database $PG_DB; $(nproc) cores"
release_bin

write_upstream_conf "$work/up" "$UP_PORT"
"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" &
up=$!

cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[tokens]
backend = "postgres"
postgres_url_env = "TOKENGATE_BENCH_PG_URL"
store_path = "$work/unused.sled"
max_tokens_per_user = 0
[auth]
admin_user_keys = ["JIRAUSER10000"]
[log]
level = "warn"
EOF
$BIN store migrate --config "$work/proxy.toml" 2>/dev/null

# The usable tokens, and "id,sha256-hex" for each.
python3 - "$HOT" "$work/hot.tokens" "$work/hot.csv" <<'EOF'
import hashlib, os, sys, zlib
n, tokens_path, csv_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
with open(tokens_path, "w") as tokens, open(csv_path, "w") as csv:
    for i in range(1, n + 1):
        # Rejection sampling: every letter equally likely.
        random_part = "".join(alphabet[b % 62] for b in os.urandom(48) if b < 248)[:30]
        crc = zlib.crc32(random_part.encode()) & 0xFFFFFFFF
        digits = []
        for _ in range(6):
            digits.append(alphabet[crc % 62]); crc //= 62
        token = "tg_" + random_part + "".join(reversed(digits))
        tokens.write(token + "\n")
        csv.write(f"{i},{hashlib.sha256(token.encode()).hexdigest()}\n")
EOF
admin_token=$(head -n 1 "$work/hot.tokens")

ms() { date +%s%3N; }
t0=$(ms)
day=86400000
t=$(ms)
psql -d "$PG_DB" -v ON_ERROR_STOP=1 -q -o /dev/null <<EOF
CREATE TEMP TABLE hot (id bigint PRIMARY KEY, hex text NOT NULL);
\copy hot FROM '$work/hot.csv' (FORMAT csv)
BEGIN;
INSERT INTO tokengate_tokens
    (id, hash, description, user_key, user_name, created_by, created, valid_until, last_accessed, scope)
SELECT i,
       coalesce(decode(hot.hex, 'hex'), sha256(('bench-' || i)::bytea)),
       'token ' || (i - 1) || ' of user' || (i - 1) % 10000,
       'JIRAUSER' || (10000 + (i - 1) % 10000),
       CASE WHEN (i - 1) % 10000 = 0 THEN 'admin' ELSE 'user' || (i - 1) % 10000 END,
       'JIRAUSER10000',
       $t0 - (i - 1),
       CASE WHEN (i - 1) % 10 = 0 THEN 0 ELSE $t0 + ((i - 1) % 365 + 1) * $day END,
       0,
       CASE WHEN (i - 1) % 2 = 1 THEN 1 ELSE 2 END
FROM generate_series(1::bigint, $TOKENS) AS i LEFT JOIN hot ON hot.id = i;
INSERT INTO tokengate_users (user_key, tokens)
SELECT user_key, count(*) FROM tokengate_tokens GROUP BY user_key
ON CONFLICT (user_key) DO UPDATE SET tokens = excluded.tokens;
UPDATE tokengate_counts AS c SET n = s.n
FROM (SELECT id % 16 AS shard, count(*) AS n FROM tokengate_tokens GROUP BY 1) AS s
WHERE c.shard = s.shard;
SELECT setval('tokengate_token_ids', $TOKENS + 1, false);
COMMIT;
VACUUM ANALYZE tokengate_tokens;
VACUUM ANALYZE tokengate_users;
EOF
fill_ms=$(( $(ms) - t ))
db_bytes=$(psql -d "$PG_DB" -Atc "SELECT pg_total_relation_size('tokengate_tokens')")

# Start-up: spawn to /readyz answering 200 (database, notifications and
# upstream checked), STARTS times; the last node stays up.
start_node() {
    local t
    t=$(ms)
    $BIN serve --config "$work/proxy.toml" >/dev/null 2>>"$work/gateway.log" &
    gw=$!
    until curl -sf -o /dev/null "http://127.0.0.1:$ADMIN_PORT/readyz"; do
        kill -0 "$gw" 2>/dev/null || { echo "the gateway stopped; its log:" >&2; cat "$work/gateway.log" >&2; exit 1; }
        sleep 0.005
    done
    starts+=($(( $(ms) - t )))
}
starts=()
for s in $(seq 1 "$STARTS"); do
    start_node
    if [ "$s" -lt "$STARTS" ]; then
        kill "$gw"; wait "$gw" 2>/dev/null || true
    fi
done
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$gw/status"; }
rss_started=$(rss)
readyz=$(curl -s "http://127.0.0.1:$ADMIN_PORT/readyz")

api="http://127.0.0.1:$PORT/rest/de.resolution.apitokenauth/latest"
# median_ms URL: "median max" of RUNS requests, in ms.
median_ms() {
    for _ in $(seq 1 "$RUNS"); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $admin_token" "$1"
    done | sort -g | awk '{a[NR] = $1} END {printf "%.2f %.2f", 1000 * a[int((NR + 1) / 2)], 1000 * a[NR]}'
}
check() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $admin_token" "$1")
    [ "$code" = 200 ] || { echo "$1 answered $code" >&2; exit 1; }
}
soon=$((t0 + 7 * day))
for u in "$api/user/token" "$api/user/tokensByFilter?notValidAfter=-1"; do check "$u"; done
list_ms=$(median_ms "$api/user/token")
page0_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&page=0&limit=50")
page_deep_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&page=1000&limit=50")
user_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&userFilter=JIRAUSER10100&limit=50")
soon_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=$soon&limit=50")
desc_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&descriptionFilter=user77&limit=50")
filter() { curl -s -H "Authorization: Bearer $admin_token" "$api/user/tokensByFilter?$1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p'; }
total=$(filter "notValidAfter=-1&limit=1")
user_total=$(filter "notValidAfter=-1&userFilter=JIRAUSER10100&limit=1")
soon_total=$(filter "notValidAfter=$soon&limit=1")
rss_queried=$(rss)

# Load: the HOT tokens in turn, 32 connections, two runs of LOAD_DURATION.
# In the first the node meets each token for the first time (a cache miss:
# PostgreSQL is asked); in the second all are known. How many times the node
# asked PostgreSQL by hash is read from the hash index's statistics (which
# backends report within 10 s, hence the pause).
cat >"$work/tokens.lua" <<EOF
local tokens = {}
for line in io.lines("$work/hot.tokens") do tokens[#tokens + 1] = line end
local i = 0
request = function()
    i = i % #tokens + 1
    return wrk.format("GET", "/rest/api/2/issue/BENCH-1", {["Authorization"] = "Bearer " .. tokens[i]})
end
EOF
hash_lookups() {
    psql -d "$PG_DB" -Atc "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'tokengate_tokens_hash'"
}
loads=()
for run in 1 2; do
    before=$(hash_lookups)
    read -r rps p50 p99 < <(wrk_row -t1 -c32 -d"$LOAD_DURATION" -s "$work/tokens.lua" "http://127.0.0.1:$PORT/")
    sleep 11
    loads+=("$(printf '%.0f' "$rps") requests/s, p50 $p50 ms, p99 $p99 ms, PostgreSQL asked $(( $(hash_lookups) - before )) times")
done
rss_loaded=$(rss)
# And the queries once more, with the cache full.
page0_loaded_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&page=0&limit=50")
rss_end=$(rss)

kb_to_mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
median_of() { printf '%s\n' "$@" | median | awk '{printf "%.0f", $1}'; }
max_of() { printf '%s\n' "$@" | sort -g | tail -n 1; }
line() { printf '%-48s %s\n' "$1" "$2"; }
line "tokens in PostgreSQL (API total):" "$total ($HOT usable)"
line "fill (SQL, counts, sequence, VACUUM ANALYZE):" "$(awk -v m="$fill_ms" 'BEGIN {printf "%.1f s", m / 1000}')"
line "tokengate_tokens with its indexes:" "$(awk -v b="$db_bytes" 'BEGIN {printf "%.0f MB", b / 1048576}')"
line "start-up (spawn to /readyz 200), $STARTS starts:" "median $(median_of "${starts[@]}") ms, max $(max_of "${starts[@]}") ms (${starts[*]})"
line "readiness answer:" "$readyz"
line "node RSS after start-up:" "$(kb_to_mb "$rss_started") MB"
line "node RSS after the queries:" "$(kb_to_mb "$rss_queried") MB"
line "" "median / max of $RUNS, ms"
line "one user's tokens (the admin's):" "$list_ms"
line "tokensByFilter page 0, all tokens:" "$page0_ms"
line "tokensByFilter page 1000, all tokens:" "$page_deep_ms"
line "tokensByFilter one user ($user_total match):" "$user_ms"
line "tokensByFilter expiring in 7 d ($soon_total match):" "$soon_ms"
line "tokensByFilter description (a scan):" "$desc_ms"
line "load, $HOT tokens in turn, wrk -t1 -c32 -d$LOAD_DURATION:" ""
line "  first run (each token new to the node)" "${loads[0]}"
line "  second run" "${loads[1]}"
line "node RSS after the load:" "$(kb_to_mb "$rss_loaded") MB"
line "tokensByFilter page 0 after the load:" "$page0_loaded_ms"
line "node RSS at the end:" "$(kb_to_mb "$rss_end") MB"
