#!/usr/bin/env bash
# Builds the server and the CLI, starts the server on SQLite with a sample home,
# then connects the CLI, syncs, and shows what arrived. Everything lives in a
# temporary directory that is removed on exit.
set -euo pipefail

cd "$(dirname "$0")/.."

LISTEN=127.0.0.1:8000
URL="http://$LISTEN"
PASSWORD=demo-password

echo "==> building funkygibbon-mock and blowing-off (release)"
cargo build --release -p funkygibbon-mock -p blowing-off

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "==> starting the server on $URL (database $WORK/server.db)"
target/release/funkygibbon-mock \
    --listen "$LISTEN" \
    --database-url "sqlite://$WORK/server.db" \
    --admin-password "$PASSWORD" \
    --demo-data &
SERVER_PID=$!

echo "==> waiting for $URL/health"
ready=""
for _ in $(seq 1 60); do
    if curl -fsS "$URL/health" >/dev/null 2>&1; then
        ready=yes
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited before it was ready" >&2
        exit 1
    fi
    sleep 0.5
done
if [[ -z "$ready" ]]; then
    echo "the server did not answer $URL/health within 30 s" >&2
    exit 1
fi

cli() {
    echo "==> blowing-off $*"
    target/release/blowing-off --db "$WORK/client.db" "$@"
}

cli connect --server-url "$URL" --password "$PASSWORD"
cli sync
cli home show
cli room list
cli device list

echo "==> done; stopping the server"
