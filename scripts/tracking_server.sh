#!/usr/bin/env bash
# An MLflow tracking server on PostgreSQL that serves its own artifacts, on loopback only:
#
#   scripts/tracking_server.sh start [DIR]   initdb into DIR/pgdata (once), start PostgreSQL and
#                                            `mlflow server` on free ports, print the URI
#   scripts/tracking_server.sh uri [DIR]     print the URI of the server running from DIR
#   scripts/tracking_server.sh stop [DIR]    stop both (the data stay in DIR)
#
# DIR defaults to .tracking-server in the repository. With BACKEND_STORE_URI set (an existing
# PostgreSQL, e.g. postgresql://user:pass@db-host:5432/mlflow) no local cluster is made and only
# `mlflow server` runs on it. PYTHON names the interpreter that has mlflow and psycopg2
# (default: the repository's .venv). PostgreSQL refuses to run as root: as root the cluster runs
# as PG_USER (default: postgres), so DIR and the folders above it must be reachable by that user.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
action="${1:-}"
dir="$(realpath -m "${2:-$repo/.tracking-server}")"
python="${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}"

pg_bin() {
    local found
    found="$(command -v initdb || true)"
    [ -n "$found" ] || found="$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -1)"
    [ -n "$found" ] || { echo "no PostgreSQL found (initdb); set BACKEND_STORE_URI" >&2; exit 1; }
    dirname "$(realpath "$found")"
}

# PostgreSQL's own programs, as PG_USER when we are root
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u "${PG_USER:-postgres}" -- "$@"; else "$@"; fi
}

free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
    local bin port
    bin="$(pg_bin)"
    mkdir -p "$dir"
    if [ ! -f "$dir/pgdata/PG_VERSION" ]; then
        "$python" -c 'import secrets; print(secrets.token_hex(16))' > "$dir/pgpass"
        if [ "$(id -u)" = 0 ]; then
            chmod 755 "$dir"
            install -d -o "${PG_USER:-postgres}" -m 700 "$dir/pgdata"
            chown "${PG_USER:-postgres}" "$dir/pgpass"
        fi
        chmod 600 "$dir/pgpass"
        as_pg "$bin/initdb" -D "$dir/pgdata" -U mlflow --pwfile="$dir/pgpass" \
            --auth-host=scram-sha-256 --auth-local=peer -E UTF8 >"$dir/initdb.log"
    fi
    port="$(free_port)"
    # loopback only; the socket lives in DIR, not in the system's /var/run/postgresql
    as_pg "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/pgdata/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir/pgdata" >/dev/null
    echo "$port" > "$dir/pgport"
    export PGPASSWORD
    PGPASSWORD="$(cat "$dir/pgpass")"
    if ! "$bin/psql" -h 127.0.0.1 -p "$port" -U mlflow -d postgres -tAc \
            "select 1 from pg_database where datname = 'mlflow'" | grep -q 1; then
        "$bin/createdb" -h 127.0.0.1 -p "$port" -U mlflow mlflow
    fi
    echo "postgresql+psycopg2://mlflow:$PGPASSWORD@127.0.0.1:$port/mlflow"
}

start() {
    if [ -f "$dir/mlflow.pid" ] && kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
        cat "$dir/uri"; return
    fi
    mkdir -p "$dir/artifacts"
    local backend="${BACKEND_STORE_URI:-}" port
    [ -n "$backend" ] || backend="$(start_postgres)"
    port="$(free_port)"
    # its own session, so stop ends the server and its workers together; without MLflow's
    # server-side job runner (GenAI evaluation jobs: the harness has none, it is 7 processes)
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    setsid "$python" -m mlflow server --backend-store-uri "$backend" --serve-artifacts \
        --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$port" \
        --workers "${MLFLOW_WORKERS:-2}" >"$dir/mlflow.log" 2>&1 < /dev/null &
    echo $! > "$dir/mlflow.pid"
    echo "http://127.0.0.1:$port" > "$dir/uri"
    for _ in $(seq 240); do
        if "$python" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null; then
            cat "$dir/uri"; return
        fi
        if ! kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null; then
            echo "mlflow server stopped; its log:" >&2; tail -20 "$dir/mlflow.log" >&2; stop; exit 1
        fi
        sleep 0.5
    done
    echo "mlflow server did not answer within 120 s; see $dir/mlflow.log" >&2
    stop
    exit 1
}

stop() {
    if [ -f "$dir/mlflow.pid" ]; then
        local pid
        pid="$(cat "$dir/mlflow.pid")"
        kill -TERM -- "-$pid" 2>/dev/null || true
        for _ in $(seq 40); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        rm -f "$dir/mlflow.pid"
    fi
    if [ -f "$dir/pgdata/postmaster.pid" ]; then
        as_pg "$(pg_bin)/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null
    fi
}

case "$action" in
    start) start ;;
    stop) stop ;;
    uri) cat "$dir/uri" ;;
    *) echo "usage: $0 start|uri|stop [DIR]" >&2; exit 2 ;;
esac
