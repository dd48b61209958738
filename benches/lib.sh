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
