# Shared by the scripts in benches/ (sourced, not run).

# install_missing COMMAND:PACKAGE...: installs each Debian package whose
# command is missing (nginx may live in /usr/sbin, outside PATH). Sets NGINX.
install_missing() {
    local need=() pair cmd
    for pair in "$@"; do
        cmd=${pair%%:*}
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("${pair#*:}")
    done
    if [ ${#need[@]} -gt 0 ]; then
        echo "installing ${need[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# release_bin: sets BIN to the release build, building it, unless BIN names a
# binary built elsewhere (BIN=path/to/tokengate measures that one).
release_bin() {
    if [ -z "${BIN:-}" ]; then
        cargo build --release --quiet
        BIN=./target/release/tokengate
    fi
}

# bench_workdir: a temporary directory in $work, removed at exit together with
# every process whose pid the script appends to the array pids.
bench_workdir() {
    work=$(mktemp -d)
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}

# write_upstream_conf DIR PORT [LOCATIONS]: an nginx configuration in DIR for
# a fast upstream that answers like Jira (/myself, /mypermissions, and a
# ~200-byte issue for anything else) on 127.0.0.1:PORT. Request bodies of any
# size are read and discarded. LOCATIONS, nginx location blocks, are added
# before the catch-all one. UPSTREAM_WORKER_CONNECTIONS (default 4096) is the
# worker's connection limit.
write_upstream_conf() {
    local dir=$1 port=$2 locations=${3:-}
    local body='{"id":"10001","key":"BENCH-1","fields":{"summary":"A benchmark issue of tokengate","status":{"name":"Open"},"priority":{"name":"Major"},"assignee":{"name":"bench","displayName":"Bench User"},"labels":["load","test"]}}'
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections ${UPSTREAM_WORKER_CONNECTIONS:-4096}; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_max_body_size 0;
    server {
        listen 127.0.0.1:$port reuseport;
        default_type application/json;
        location = /rest/api/2/myself { return 200 '{"key":"JIRAUSER90000","name":"bench","displayName":"Bench"}'; }
        location = /rest/api/2/mypermissions { return 200 '{"permissions":{"SYSTEM_ADMIN":{"havePermission":false}}}'; }
        $locations
        location / { return 200 '$body'; }
    }
}
EOF
}

# create_token PORT DESCRIPTION: creates a token for "bench" through the
# gateway on PORT (the upstream above accepts any password) and prints it.
create_token() {
    local token
    token=$(curl -s -u bench:bench -H 'Content-Type: application/json' \
        -d "{\"tokenDescription\":\"$2\"}" \
        "http://127.0.0.1:$1/rest/de.resolution.apitokenauth/latest/user/token" |
        sed -n 's/.*"plainTextToken":"\([^"]*\)".*/\1/p')
    [ -n "$token" ] || { echo "could not create a token" >&2; return 1; }
    echo "$token"
}

# wait_ports PORT...: waits until something answers HTTP on each
# 127.0.0.1:PORT, up to 10 s each (then goes on; the requests that follow fail).
wait_ports() {
    local port
    for port in "$@"; do
        for _ in $(seq 1 100); do
            curl -s -o /dev/null "http://127.0.0.1:$port/" && break
            sleep 0.1
        done
    done
}

# gateway_conf PORT NAME WORKERS [SERVER_LINES] [ADMIN]: $work/NAME.toml, a
# tokengate on 127.0.0.1:PORT in front of the upstream on UP_PORT, its store
# in $work/NAME.sled; SERVER_LINES are added to [server], ADMIN is its
# admin_listen (default: none).
gateway_conf() {
    cat >"$work/$2.toml" <<EOF
[server]
listen = "127.0.0.1:$1"
admin_listen = "${5:-}"
workers = $3
${4:-}
[upstream]
url = "http://127.0.0.1:$UP_PORT"
[tokens]
store_path = "$work/$2.sled"
[log]
level = "warn"
EOF
}

# to_ms VALUE: a wrk latency (612.00us / 1.20ms / 2.00s) in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.3f", m}'; }

# ratio A B: A / B to two places.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# wrk_row WRK_ARGS...: runs wrk --latency with the arguments and prints
# "requests/s p50-ms p99-ms"; non-2xx answers and socket errors go to stderr.
wrk_row() {
    local out rps p50 p99 errors
    out=$(wrk --latency "$@")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    [ -z "$errors" ] || echo "  wrk $*: $errors" >&2
    echo "$rps $p50 $p99"
}

# pg_bench_db NAME: creates the database NAME_<pid> for this run on the
# PostgreSQL server libpq's variables name (PGHOST, PGPORT, PGUSER,
# PGPASSWORD; default 127.0.0.1:5432, user postgres, who must be allowed to
# create databases) and sets PG_DB and PG_URL (a password is put into the URL
# as it is). When no server answers it prints one loud line and exits 0. Set
# a trap that calls pg_drop_db first. Installs the PostgreSQL client when missing.
pg_bench_db() {
    install_missing psql:postgresql-client
    export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
    local why
    if ! why=$(psql -d postgres -Atqc 'SELECT 1' 2>&1 >/dev/null); then
        echo "SKIPPED: this benchmark needs PostgreSQL, and none answers at $PGUSER@$PGHOST:$PGPORT (${why%%$'\n'*}); start it or set PGHOST/PGPORT/PGUSER/PGPASSWORD"
        exit 0
    fi
    PG_DB="${1}_$$"
    createdb "$PG_DB"
    PG_URL="postgres://$PGUSER${PGPASSWORD:+:$PGPASSWORD}@$PGHOST:$PGPORT/$PG_DB"
}

# pg_drop_db: drops the database pg_bench_db made, if it did.
pg_drop_db() {
    [ -n "${PG_DB:-}" ] || return 0
    dropdb --if-exists --force "$PG_DB" || echo "could not drop the database $PG_DB" >&2
    PG_DB=""
}

# pg_settings: the server's settings that decide what a commit costs, in one line.
pg_settings() {
    psql -d postgres -Atc "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync ' || current_setting('fsync') || ', synchronous_commit ' || current_setting('synchronous_commit') || ', shared_buffers ' || current_setting('shared_buffers')"
}
