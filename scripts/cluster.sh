#!/usr/bin/env bash
# A throw-away PostgreSQL cluster run by the unprivileged `postgres` OS user (Postgres refuses
# root). Usage:
#   scripts/cluster.sh start DIR PORT [extra postgresql.conf lines...]   # initdb if needed, start
#   scripts/cluster.sh stop DIR
# Listens on 127.0.0.1:PORT and a Unix socket in DIR, trust authentication (local only).
set -euo pipefail
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?usage: cluster.sh start|stop DIR [PORT]}
dir=${2:?usage: cluster.sh start|stop DIR [PORT]}
as_pg() { runuser -u postgres -- "$@"; }
case "$cmd" in
  start)
    port=${3:?usage: cluster.sh start DIR PORT}
    shift 3
    install -d -o postgres -g postgres -m 0755 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-instructions >/dev/null
      {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "max_worker_processes = 24"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        for line in "$@"; do echo "$line"; done
      } >> "$dir/data/postgresql.conf"
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    ;;
  *) echo "cluster.sh: unknown command $cmd (start|stop)" >&2; exit 2 ;;
esac
