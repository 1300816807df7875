#!/bin/sh
# Checks the deployment files without a Docker engine: docker-compose.yml parses (Debian's
# docker-compose validates it offline), has one service per stage with a scalable worker, and
# the Dockerfile only uses scripts that exist. Usage: check_deploy.sh SOURCE_DIR
set -eu
src=$1
fail() { echo "check_deploy: $*" >&2; exit 1; }

# --- Dockerfile --------------------------------------------------------------------------
dockerfile="$src/Dockerfile"
[ -f "$dockerfile" ] || fail "no Dockerfile"
scripts=$(grep -o 'scripts/[A-Za-z0-9_.-]*' "$dockerfile" | sort -u)
[ -n "$scripts" ] || fail "the Dockerfile does not use scripts/"
for script in $scripts; do
  [ -x "$src/$script" ] || fail "the Dockerfile uses $script, which is missing or not executable"
done
grep -q 'scripts/install-deps' "$dockerfile" || fail "the Dockerfile does not use scripts/install-deps"
grep -q 'scripts/build' "$dockerfile" || fail "the Dockerfile does not use scripts/build"
grep -q 'install-deps --runtime' "$dockerfile" || fail "the runtime stage does not use install-deps --runtime"
grep -q '^FROM debian:bookworm' "$dockerfile" || fail "the Dockerfile is not based on Debian 12"
last_user=$(grep '^USER ' "$dockerfile" | tail -n 1 | awk '{print $2}')
[ -n "$last_user" ] && [ "$last_user" != root ] && [ "$last_user" != 0 ] || fail "the image runs as root"
# Both modes of install-deps parse their arguments (the runtime list must not drift into a typo).
sh -n "$src/scripts/install-deps" || fail "install-deps has a syntax error"
if "$src/scripts/install-deps" --no-such-flag >/dev/null 2>&1; then fail "install-deps accepts any flag"; fi

# --- docker-compose.yml ------------------------------------------------------------------
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "check_deploy: SKIPPED the compose checks: docker-compose is not installed (scripts/install-deps installs it)"
  exit 77
fi
compose="$src/docker-compose.yml"
# `docker compose up -d` must work with nothing set: no PW_* variable in the environment.
for name in $(env | sed -n 's/^\(PW_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$name"; done
docker-compose -f "$compose" config -q || fail "docker-compose config rejects docker-compose.yml"
services=$(docker-compose -f "$compose" config --services | sort | tr '\n' ' ')
[ "$services" = "dht_svc orchestrator peer_worker tracker_svc verifier writer " ] ||
  fail "services are '$services', want the six stages"
config=$(docker-compose -f "$compose" config)
# The worker section runs from "  peer_worker:" to the next service.
worker=$(printf '%s\n' "$config" | awk '/^  [a-z_]+:$/ {inside = ($1 == "peer_worker:")} inside')
printf '%s\n' "$worker" | grep -q 'container_name' && fail "peer_worker has a container_name: it cannot scale"
printf '%s\n' "$worker" | grep -q '^    ports:' && fail "peer_worker publishes ports: it cannot scale"
printf '%s\n' "$worker" | grep -q 'PW_NAME' && fail "peer_worker has a fixed PW_NAME: scaled workers would share it"
for want in "PW_CONTROL: tcp://\*:5555" "PW_PIECES: tcp://\*:5556" "PW_VERIFIED: tcp://\*:5557" \
            "PW_CONTROL: tcp://orchestrator:5555" "PW_PIECES: tcp://verifier:5556" \
            "PW_VERIFIED: tcp://writer:5557" "PW_READS: tcp://\*:5558" "PW_READS: tcp://writer:5558" "healthcheck:" "restart: unless-stopped" \
            "downloads:/downloads" "state:/state" "- 127.0.0.1:9091:9091/tcp" "--rpc-auth" \
            "/state/session" "/state/resume"; do
  printf '%s\n' "$config" | grep -q -- "$want" || fail "docker-compose.yml lacks '$want'"
done
# The RPC is published on loopback only: no other ports line anywhere.
ports=$(printf '%s\n' "$config" | grep -c -- '- .*:[0-9]*/tcp$' || true)
[ "$ports" = 1 ] || fail "docker-compose.yml publishes $ports ports; only the RPC, on 127.0.0.1, belongs there"
echo "check_deploy: Dockerfile and docker-compose.yml are consistent"
