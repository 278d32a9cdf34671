#!/usr/bin/env bash
# Runs every check and every test, on a fresh machine as on a developer's:
#   bash scripts/test.sh
# Installs what the tests need (Debian's softhsm2, faketime and postgresql; the standardwebhooks
# Python library) when it is missing, starts
# Postgres and exports GATEWAY_TEST_POSTGRES_URL for the gateway's tests, then runs
# cargo fmt --check, clippy with warnings denied, the stack demo, and the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
  echo "==> installing softhsm2"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq softhsm2 >/dev/null
fi

# libfaketime: one payment test runs a gateway replica with its clock days ahead.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
  echo "==> installing faketime"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq faketime >/dev/null
fi

# The Standard Webhooks reference library for Python: the webhook tests check every captured
# delivery's signature with it (an implementation independent of the gateway's).
if ! python3 -c 'import standardwebhooks' >/dev/null 2>&1; then
  echo "==> installing the standardwebhooks Python library"
  python3 -m pip install -q standardwebhooks==1.1.0 \
    || python3 -m pip install -q --break-system-packages standardwebhooks==1.1.0
fi

# Postgres for the gateway's storage tests: install it when missing, start the cluster when it is
# down, and make a password role usable over TCP on 127.0.0.1. Each test creates its own database
# (random name) through this URL, so tests run in parallel. A caller that already has a server
# sets GATEWAY_TEST_POSTGRES_URL itself and this block does nothing.
if [ -z "${GATEWAY_TEST_POSTGRES_URL:-}" ]; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "==> installing postgresql"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
  fi
  pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$pg_version main"; then
    echo "==> creating postgresql $pg_version cluster"
    as_root pg_createcluster "$pg_version" main >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $4}' | grep -qx online; then
    echo "==> starting postgresql $pg_version"
    as_root pg_ctlcluster "$pg_version" main start
  fi
  pg_port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $3}')
  for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
    sleep 0.2
  done
  pg_isready -h 127.0.0.1 -p "$pg_port"
  # A role that may create the per-test databases; password auth over TCP (Debian's default
  # pg_hba.conf allows scram-sha-256 from 127.0.0.1).
  as_root runuser -u postgres -- psql -q -p "$pg_port" -v ON_ERROR_STOP=1 <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'gateway_test') THEN
    CREATE ROLE gateway_test LOGIN CREATEDB PASSWORD 'gateway_test';
  END IF;
END
$$;
SQL
  export GATEWAY_TEST_POSTGRES_URL="postgres://gateway_test:gateway_test@127.0.0.1:${pg_port}/postgres"
fi
echo "==> postgres for tests: ${GATEWAY_TEST_POSTGRES_URL%%:*}://…@${GATEWAY_TEST_POSTGRES_URL##*@}"

# A one-off full build gains nothing from incremental compilation, whose caches would double the
# size of target/.
export CARGO_INCREMENTAL=0

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The README's run command, end to end: the whole stack, a payment to SUCCESS, a verified audit
# log (debug builds, which the tests need anyway); once on Horizon, once on Stellar RPC.
echo "==> scripts/stack.sh --demo"
bash scripts/stack.sh --debug --demo --exit
echo "==> scripts/stack.sh --rpc --demo"
bash scripts/stack.sh --debug --rpc --demo --exit

echo "==> cargo test"
cargo test --workspace --locked
