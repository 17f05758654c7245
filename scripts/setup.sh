#!/usr/bin/env bash
# Installs what migrator and its tests need on a fresh Debian machine, then the
# project itself into .venv. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql-15)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client-15)
# The report's screenshot test (tests/test_report.py, scripts/report_screenshot.py) renders
# the page in headless Chromium: about 115 MB to download, 480 MB on disk, a minute of
# apt on a fresh Debian 12. MIGRATOR_NO_CHROMIUM=1 skips it (that test then skips).
if [ -z "${MIGRATOR_NO_CHROMIUM:-}" ]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing ${missing[*]}; install them (apt-get install ${missing[*]}) and run again" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Postgres and PgBouncer refuse to run as root: the local topology runs them as `postgres`.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]"
echo "setup: ready (.venv/bin/migrator)"
