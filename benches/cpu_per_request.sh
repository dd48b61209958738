#!/usr/bin/env bash
# CPU per proxied request, nginx beside tokengate: each proxy runs as one
# worker under valgrind's callgrind in front of the same fast upstream (nginx
# answering a ~200-byte JSON body), gets a warm-up, then DURATION of
# keep-alive requests from wrk (tokengate's with a valid Bearer token), and
# the instructions counted in between are divided by the requests wrk
# completed. Instruction counts do not depend on what else the machine is
# doing. With STRACE=1 it also counts each proxy's system calls per request
# (strace -c).
#
#   bash benches/cpu_per_request.sh
#   DURATION=30s STRACE=1 bash benches/cpu_per_request.sh
#   TOP=25 bash benches/cpu_per_request.sh   # and tokengate's 25 costliest
#                                            # functions, callees included
#   SHARES=1 bash benches/cpu_per_request.sh # and tokengate's instructions per
#                                            # request by where they are spent
#                                            # (HTTP codec, tokio, SHA-256, ...)
#   KEEP=/tmp/cg bash benches/cpu_per_request.sh
#                                            # keeps the callgrind files there
#
# Installs nginx, wrk and valgrind (Debian packages) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
UP_PORT=${UP_PORT:-18380}
NGINX_PORT=${NGINX_PORT:-18381}
TG_PORT=${TG_PORT:-18382}

. benches/lib.sh
tools=(nginx:nginx-light wrk:wrk valgrind:valgrind)
[ "${STRACE:-0}" = 1 ] && tools+=(strace:strace)
install_missing "${tools[@]}"

release_bin
bench_workdir

mkdir -p "$work/proxy"
write_upstream_conf "$work/up" "$UP_PORT"
# One process that serves (no master), so callgrind sees the worker.
cat >"$work/proxy/nginx.conf" <<EOF
worker_processes 1;
master_process off;
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
gateway_conf "$TG_PORT" proxy 1

"$NGINX" -p "$work/up" -c "$work/up/nginx.conf" & pids+=($!)

wait_for() {
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.2
    done
    echo "nothing answers on port $1" >&2
    exit 1
}
drive() { # port duration [header]: prints the requests completed
    local port=$1 d=$2 out
    shift 2
    out=$(wrk -t1 -c"$CONNECTIONS" -d"$d" "$@" "http://127.0.0.1:$port/rest/api/2/issue/BENCH-1")
    if grep -q 'Non-2xx' <<<"$out"; then
        echo "answers other than 2xx from port $port" >&2
        exit 1
    fi
    awk '/requests in/ {print $1}' <<<"$out"
}
# Runs one proxy under callgrind: warm-up, counters zeroed, DURATION of
# requests, counters dumped. Prints "<instructions> <requests>".
measure() { # name port header-or-empty command...
    local name=$1 port=$2 header=$3
    shift 3
    local hdr=()
    [ -n "$header" ] && hdr=(-H "$header")
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name.%p" "$@" 2>"$work/vg.$name.log" &
    local vg=$!
    pids+=("$vg")
    wait_for "$port"
    drive "$port" 2s "${hdr[@]}" >/dev/null
    callgrind_control -z "$vg" >/dev/null
    local done
    done=$(drive "$port" "$DURATION" "${hdr[@]}")
    callgrind_control -d "$vg" >/dev/null
    sleep 1
    kill "$vg"
    wait "$vg" 2>/dev/null || true
    local ir
    ir=$(awk '/^(summary|totals):/ && !seen {print $2; seen = 1}' "$work"/cg."$name".*.1)
    echo "$ir $done"
}

wait_for "$UP_PORT"
kill -0 "${pids[0]}" 2>/dev/null || { echo "the upstream nginx did not start (port $UP_PORT taken?)" >&2; exit 1; }
# The token is created before the measured run, by a gateway of its own.
"$BIN" serve --config "$work/proxy.toml" 2>"$work/tokengate.log" & tg=$!
wait_for "$TG_PORT"
token=$(create_token "$TG_PORT" "cpu benchmark")
if [ "${STRACE:-0}" = 1 ]; then
    strace_count() { # pid port header-or-empty
        local hdr=()
        [ -n "$3" ] && hdr=(-H "$3")
        drive "$2" 2s "${hdr[@]}" >/dev/null
        strace -c -f -p "$1" -o "$work/strace.$1" 2>/dev/null & local st=$!
        sleep 1
        local n
        n=$(drive "$2" "$DURATION" "${hdr[@]}")
        kill -INT "$st"
        wait "$st" 2>/dev/null || true
        # Calls made per request, the event loop's sleeps (futex) left out.
        awk -v n="$n" '$NF ~ /^(read|recvfrom|readv|write|writev|sendto|sendmsg|getsockopt|epoll_wait)$/ {
            calls = $4
            printf "    %-12s %.2f\n", $NF, calls / n; total += calls }
            END { printf "    %-12s %.2f\n", "(these)", total / n }' "$work/strace.$1"
    }
    echo "system calls per request, tokengate (one worker):"
    strace_count "$tg" "$TG_PORT" "Authorization: Bearer $token"
    "$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf" & ng=$!
    wait_for "$NGINX_PORT"
    echo "system calls per request, nginx (one worker):"
    strace_count "$ng" "$NGINX_PORT" ""
    kill "$ng"
    wait "$ng" 2>/dev/null || true
fi
kill "$tg"
wait "$tg" 2>/dev/null || true

read -r ng_ir ng_n < <(measure nginx "$NGINX_PORT" "" "$NGINX" -p "$work/proxy" -c "$work/proxy/nginx.conf")
read -r tg_ir tg_n < <(measure tokengate "$TG_PORT" "Authorization: Bearer $token" "$BIN" serve --config "$work/proxy.toml")
echo "instructions per proxied request (callgrind, $DURATION of keep-alive requests on $CONNECTIONS connections):"
awk -v a="$ng_ir" -v n="$ng_n" 'BEGIN {printf "  nginx                    %8.0f\n", a / n}'
awk -v a="$tg_ir" -v n="$tg_n" 'BEGIN {printf "  tokengate, token checked %8.0f\n", a / n}'
awk -v a="$tg_ir" -v n="$tg_n" -v b="$ng_ir" -v m="$ng_n" 'BEGIN {printf "  tokengate / nginx        %8.2f\n", (a / n) / (b / m)}'
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP" && cp "$work"/cg.* "$KEEP"/
fi
if [ "${SHARES:-0}" = 1 ]; then
    echo
    echo "tokengate's instructions per request by where they are spent (own cost of each function):"
    callgrind_annotate --inclusive=no --threshold=100 "$work"/cg.tokengate.*.1 2>/dev/null |
        awk -v n="$tg_n" -v total="$tg_ir" '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
            c = $1; gsub(",", "", c); c += 0
            # The thread entry frames are listed with everything under them.
            if (c > total / 2) next
            $1 = ""; $2 = ""; s = $0; g = "other (libc, std, ...)"
            if (s ~ /hyper::|httparse|http::|hyper_util|hyper_rustls/) g = "HTTP codec (hyper, http, httparse)"
            else if (s ~ /bytes::/) g = "bytes"
            else if (s ~ /tokio::|tokio_util|mio::/) g = "tokio"
            else if (s ~ /sha2|digest/) g = "SHA-256 (without the SHA extensions, which valgrind hides)"
            else if (s ~ /mi_|mimalloc/) g = "allocator (mimalloc)"
            else if (s ~ /memcpy|memmove|memset/) g = "memcpy, memmove, memset"
            else if (s ~ /tokengate::/) g = "tokengate itself"
            t[g] += c }
            END { for (g in t) printf "  %8.0f  %5.1f%%  %s\n", t[g] / n, 100 * t[g] / total, g }' | sort -rn
fi
if [ -n "${TOP:-}" ]; then
    echo
    echo "tokengate's costliest functions, callees included (share of all its instructions):"
    callgrind_annotate --inclusive=yes "$work"/cg.tokengate.*.1 2>/dev/null |
        awk -v total="$tg_ir" '/^ *[0-9,]+ \(/ {n = $1; gsub(",", "", n); $1 = ""; $2 = ""; sub(/^ +/, "");
            sub(/ \[.*$/, ""); printf "  %5.1f%%  %s\n", 100 * n / total, substr($0, 1, 150)}' | sed -n "1,${TOP}p"
fi
