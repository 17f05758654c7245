#!/usr/bin/env bash
# A Docker engine for the testcontainers pass (DESIGN section 6), sourced by .ci/run:
#   docker_packages   installs docker.io, debootstrap and docker-compose when missing
#   engine_up         starts dockerd when none answers at DOCKER_HOST (default socket
#                     when unset), remembering that it did
#   engine_down       stops only what engine_up started: that engine's containers, then
#                     the dockerd itself (which takes its containerd with it)
# dockerd runs with --bridge=none --iptables=false: every lab container is on the host
# network and listens on 127.0.0.1, so no bridge, no NAT and no firewall rule is needed.
# A socket other than the default gets its own data and exec roots, so a private
# engine (DOCKER_HOST=unix:///run/NAME.sock) never meets the machine's own.

ENGINE_STARTED_PID=""
ENGINE_LOG="${TMPDIR:-/tmp}/migrator-ci-dockerd.log"

docker_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
        return 1
    fi
    echo "ci: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

engine_answers() {
    docker version >/dev/null 2>&1
}

engine_up() {
    local host="${DOCKER_HOST:-unix:///var/run/docker.sock}"
    if engine_answers; then
        echo "ci: a Docker engine answers at $host; using it as it is"
        return 0
    fi
    case "$host" in
        unix://*) ;;
        *) echo "ci: no Docker engine answers at $host, and only a unix socket can be started here" >&2
           return 1 ;;
    esac
    local socket="${host#unix://}" roots=()
    if [ "$socket" != /var/run/docker.sock ] && [ "$socket" != /run/docker.sock ]; then
        local name
        name="$(basename "$socket" .sock)"
        roots=(--data-root "/var/lib/$name" --exec-root "/run/$name" --pidfile "/run/$name.pid")
    fi
    echo "ci: starting dockerd on $host (log: $ENGINE_LOG)"
    dockerd --bridge=none --iptables=false -H "$host" "${roots[@]}" >"$ENGINE_LOG" 2>&1 &
    ENGINE_STARTED_PID=$!
    local waited=0
    until engine_answers; do
        if ! kill -0 "$ENGINE_STARTED_PID" 2>/dev/null || [ "$waited" -ge 60 ]; then
            echo "ci: dockerd did not come up; its log ends with:" >&2
            tail -n 20 "$ENGINE_LOG" >&2
            engine_down
            return 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    docker version --format 'ci: dockerd {{.Server.Version}} up (pid '"$ENGINE_STARTED_PID"')'
}

engine_down() {
    [ -n "$ENGINE_STARTED_PID" ] || return 0
    local pid="$ENGINE_STARTED_PID"
    ENGINE_STARTED_PID=""
    # Every container of an engine this run started is this run's.
    local leftovers
    leftovers="$(docker ps -aq 2>/dev/null)"
    if [ -n "$leftovers" ]; then
        echo "ci: removing containers left in the engine: $(echo "$leftovers" | wc -l)"
        # shellcheck disable=SC2086 # one id a word
        docker rm -f $leftovers >/dev/null 2>&1
    fi
    kill -TERM "$pid" 2>/dev/null
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 60 ]; do
        sleep 0.5
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "ci: dockerd (pid $pid) did not stop in 30 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    echo "ci: dockerd (pid $pid) stopped"
}
