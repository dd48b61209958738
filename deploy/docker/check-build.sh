#!/usr/bin/env bash
# The container image's build steps, checked without Docker (CI has no engine):
#   1. the build context: what Dockerfile.dockerignore lets through, copied to
#      a scratch directory;
#   2. every COPY of the Dockerfile (but --from) finds its sources there;
#   3. the build stage's /src laid out as its COPY lines lay it out, and its
#      `cargo build` run there with the same options as `cargo check`: the
#      manifest (every target it declares), the lock file and the sources
#      must all have been copied for this to pass.
# It fails on Dockerfile forms it does not understand rather than guess.
#
#   bash deploy/docker/check-build.sh
#
# Compiled dependencies are shared with the repository's target/ (or
# CARGO_TARGET_DIR), so after a build or clippy run only tokengate is checked.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
dockerfile="$repo/deploy/docker/Dockerfile"
ignore="$repo/deploy/docker/Dockerfile.dockerignore"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
context="$scratch/context"
workdir="$scratch/src"
mkdir -p "$context" "$workdir"

fail() {
    echo "check-build: $*" >&2
    exit 1
}

# 1. The context: `*` first, then only `!path` lines.
seen_all=0
while IFS= read -r line || [[ -n $line ]]; do
    line="${line%$'\r'}"
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    if [[ $line == "*" && $seen_all == 0 ]]; then
        seen_all=1
        continue
    fi
    [[ $seen_all == 1 && $line == '!'* ]] || fail "Dockerfile.dockerignore: only '*' then '!path' lines are understood, not: $line"
    path="${line#!}"
    [[ $path =~ [][*?] ]] && fail "Dockerfile.dockerignore: no wildcards after '!': $line"
    [[ -e $repo/$path ]] || fail "Dockerfile.dockerignore lets through $path, which does not exist"
    (cd "$repo" && cp -a --parents "$path" "$context/")
done <"$ignore"
[[ $seen_all == 1 ]] || fail "Dockerfile.dockerignore must start with '*'"

# The Dockerfile as logical instructions: continuation lines joined, comments dropped.
instructions="$(awk '
    /^[[:space:]]*#/ { next }
    { line = line $0 }
    /\\$/ { sub(/\\$/, "", line); next }
    { if (line ~ /[^[:space:]]/) print line; line = "" }
' "$dockerfile")"

# 2. and 3. Walk the instructions; the first stage is the build stage.
stage=0
workdir_in_image=""
cargo_args=""
while IFS= read -r instr; do
    read -r -a words <<<"$instr"
    keyword="${words[0]^^}"
    case "$keyword" in
    FROM)
        stage=$((stage + 1))
        ;;
    WORKDIR)
        [[ $stage == 1 ]] && workdir_in_image="${words[1]}"
        ;;
    COPY)
        args=("${words[@]:1}")
        from=0
        while [[ ${args[0]} == --* ]]; do
            [[ ${args[0]} == --from=* ]] && from=1
            args=("${args[@]:1}")
        done
        [[ $from == 1 ]] && continue
        [[ ${#args[@]} -ge 2 ]] || fail "COPY needs a source and a destination: $instr"
        dest="${args[-1]}"
        unset 'args[-1]'
        for src in "${args[@]}"; do
            [[ -e $context/$src ]] || fail "COPY $src: not in the build context (see Dockerfile.dockerignore)"
            [[ $stage == 1 ]] || continue
            case "$dest" in
            ./ | .) cp -a "$context/$src" "$workdir/" ;;
            ./*) mkdir -p "$(dirname "$workdir/${dest#./}")" && cp -a "$context/$src" "$workdir/${dest#./}" ;;
            *) fail "COPY in the build stage: only destinations relative to WORKDIR (./...) are understood: $instr" ;;
            esac
        done
        ;;
    RUN)
        [[ $stage == 1 && $instr == *"cargo build"* ]] || continue
        [[ -z $cargo_args ]] || fail "more than one 'cargo build' in the build stage"
        # The options up to the end of the command (&&, ;, |, or the line's end).
        cargo_args="$(sed -E 's/.*cargo build//; s/(&&|;|\|).*//' <<<"$instr")"
        cargo_args="${cargo_args## }"
        [[ -n $cargo_args ]] || cargo_args=" "
        ;;
    esac
done <<<"$instructions"

[[ $workdir_in_image == /src ]] || fail "the build stage's WORKDIR is ${workdir_in_image:-not set}; this check lays out /src"
[[ -n $cargo_args ]] || fail "no 'cargo build' in the build stage"
[[ -f $workdir/Cargo.toml ]] || fail "the build stage has no Cargo.toml in /src"

echo "check-build: cargo check $cargo_args in the build stage's /src ($(cd "$workdir" && echo *))"
# shellcheck disable=SC2086 # the Dockerfile's options, split as the shell in the image splits them
(cd "$workdir" && cargo check $cargo_args)
echo "check-build: the image's build stage would build"
