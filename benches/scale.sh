#!/usr/bin/env bash
# Scale run: a store of 1,000,000 tokens (10,000 users with 100 each). Prints
# the import time, the store's size on disk, the gateway's start-up time and
# resident memory, tokensByFilter page times, one user's token-list time, and
# the memory that 1,000 idle keep-alive client connections add.
#
#   bash benches/scale.sh               # 1,000,000 tokens
#   TOKENS=100000 bash benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TOKENS=${TOKENS:-1000000}
PORT=${PORT:-18090}
ADMIN_PORT=${ADMIN_PORT:-18091}
RUNS=${RUNS:-20}

. benches/lib.sh
release_bin
work=$(mktemp -d -p "${TMPDIR_SCALE:-$PWD/target}")
gw=""
cleanup() {
    [ -n "$gw" ] && kill "$gw" 2>/dev/null && wait "$gw" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# An export file: the id counter, then one line per token. Token 1 is a real
# token of the admin (user key JIRAUSER10000), so the API can be called with
# it; the other hashes are random (nobody needs their tokens).
python3 - "$TOKENS" "$work/export.jsonl" "$work/admin.token" <<'EOF'
import hashlib, json, os, secrets, sys, zlib
n, out_path, token_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
random_part = "".join(secrets.choice(alphabet) for _ in range(30))
crc = zlib.crc32(random_part.encode()) & 0xFFFFFFFF
digits = []
for _ in range(6):
    digits.append(alphabet[crc % 62]); crc //= 62
token = "tg_" + random_part + "".join(reversed(digits))
open(token_path, "w").write(token)
t0 = 1_796_000_000_000
day = 86_400_000
with open(out_path, "w") as out:
    out.write(json.dumps({"tokengateExport": 1, "nextId": n + 1}) + "\n")
    for i in range(n):
        user = i % 10_000
        sha = hashlib.sha256(token.encode()).hexdigest() if i == 0 else os.urandom(32).hex()
        out.write(json.dumps({
            "id": i + 1, "sha256": sha, "description": f"token {i} of user{user}",
            "tokenForUserKey": f"JIRAUSER{10000 + user}", "tokenForUserName": "admin" if user == 0 else f"user{user}",
            "tokenCreatedByUserKey": "JIRAUSER10000", "created": t0 - i,
            "validUntil": 0 if i % 10 == 0 else t0 + (i % 365) * day,
            "lastAccessed": 0, "tokenScope": 1 if i % 2 else 2,
        }) + "\n")
EOF

cat >"$work/proxy.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
[upstream]
# Nothing listens here: the API calls below need no upstream.
url = "http://127.0.0.1:9"
[tokens]
store_path = "$work/tokens.sled"
max_tokens_per_user = 0
[auth]
admin_user_keys = ["JIRAUSER10000"]
[log]
level = "warn"
EOF

ms() { date +%s%3N; }
t=$(ms)
$BIN store import --config "$work/proxy.toml" --input "$work/export.jsonl" 2>/dev/null
import_ms=$(( $(ms) - t ))
store_bytes=$(du -sb "$work/tokens.sled" | cut -f1)

t=$(ms)
$BIN serve --config "$work/proxy.toml" 2>"$work/gateway.log" &
gw=$!
until curl -s -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz"; do
    sleep 0.005
done
startup_ms=$(( $(ms) - t ))
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$gw/status"; }
rss_started=$(rss)

token=$(cat "$work/admin.token")
api="http://127.0.0.1:$PORT/rest/de.resolution.apitokenauth/latest"
median_ms() {
    local url=$1
    for _ in $(seq 1 "$RUNS"); do
        curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $token" "$url"
    done | sort -g | awk '{a[NR] = $1} END {printf "%.2f", 1000 * a[int((NR + 1) / 2)]}'
}
check() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "$1")
    [ "$code" = 200 ] || { echo "$1 answered $code" >&2; exit 1; }
}
soon=$((1796000000000 + 7 * 86400000))
for u in "$api/user/token" "$api/user/tokensByFilter?notValidAfter=-1"; do check "$u"; done
list_ms=$(median_ms "$api/user/token")
page0_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&page=0&limit=50")
page_deep_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&page=1000&limit=50")
soon_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=$soon&limit=50")
user_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&userFilter=JIRAUSER10100&limit=50")
desc_ms=$(median_ms "$api/user/tokensByFilter?notValidAfter=-1&descriptionFilter=user77&limit=50")
total=$(curl -s -H "Authorization: Bearer $token" "$api/user/tokensByFilter?notValidAfter=-1&limit=1" | sed -n 's/.*"total":\([0-9]*\).*/\1/p')
rss_queried=$(rss)

# 1,000 idle keep-alive connections, each after one request.
ulimit -n 8192 2>/dev/null || true
conns_out=$(python3 - "$PORT" "$gw" <<'EOF'
import socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss()
socks = []
for _ in range(1000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /rest/de.resolution.apitokenauth/latest/user/authTest HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
for s in socks:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
time.sleep(1)
after = rss()
print(before, after)
for s in socks:
    s.close()
EOF
)
read -r rss_before_conns rss_with_conns <<<"$conns_out"

kb_to_mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
echo "tokens in store:                         $total"
echo "import (tokengate store import):         $(awk -v m="$import_ms" 'BEGIN {printf "%.1f s", m / 1000}')"
echo "store size on disk:                      $(awk -v b="$store_bytes" 'BEGIN {printf "%.0f MB", b / 1048576}')"
echo "start-up (spawn to /healthz answering):  $startup_ms ms"
echo "gateway RSS after start-up:              $(kb_to_mb "$rss_started") MB"
echo "gateway RSS after the queries:           $(kb_to_mb "$rss_queried") MB"
echo "one user's tokens (100), median:         $list_ms ms"
echo "tokensByFilter page 0 (all), median:     $page0_ms ms"
echo "tokensByFilter page 1000 (all), median:  $page_deep_ms ms"
echo "tokensByFilter expiring in 7 d, median:  $soon_ms ms"
echo "tokensByFilter one user, median:         $user_ms ms"
echo "tokensByFilter description, median:      $desc_ms ms"
echo "1,000 idle keep-alive connections add:   $(kb_to_mb $((rss_with_conns - rss_before_conns))) MB"
