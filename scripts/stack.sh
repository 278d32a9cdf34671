#!/usr/bin/env bash
# Runs the whole stack locally on embedded defaults, from a fresh clone:
#
#   bash scripts/stack.sh            # SoftHSM token, dev PKI, Horizon simulator, signerd, gateway
#   bash scripts/stack.sh --demo     # ... then two users pay each other and the audit log is verified
#   bash scripts/stack.sh --rpc      # the gateway on the simulator's Stellar RPC endpoint, not Horizon
#
# Everything lives in .stack/ (recreated each run): the token, the PKI, the configs, the SQLite
# database, the audit log and every log file. Ports: gateway 127.0.0.1:8080, signerd
# 127.0.0.1:7700 (metrics 9700), Horizon simulator 127.0.0.1:8000. Ctrl-C stops everything:
# gateway first, then signerd (which writes its final audit checkpoint), then the simulator.
#
# Options: --demo (run the demo), --exit (stop after the demo instead of serving), --debug (debug
# builds: faster to compile, slower to run), --rpc (`[network] kind = "rpc"` at the simulator's
# POST /rpc, over the same ledger). Binaries are taken from cargo's target directory, so
# CARGO_TARGET_DIR (or a target-dir in cargo's config) is honoured. The only thing it installs is
# Debian's softhsm2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

demo=false
stay=true
profile=release
backend=horizon
for arg in "$@"; do
  case "$arg" in
    --demo) demo=true ;;
    --rpc) backend=rpc ;;
    --exit) stay=false ;;
    --debug) profile=debug ;;
    -h | --help)
      sed -n '2,19p' "$0"
      exit 0
      ;;
    *)
      echo "unknown option $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
if ! command -v softhsm2-util >/dev/null 2>&1 || [ ! -e /usr/lib/softhsm/libsofthsm2.so ]; then
  echo "==> installing softhsm2"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq softhsm2 >/dev/null
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed for the demo" >&2; exit 1; }
done

GATEWAY_ADDR=127.0.0.1:8080
SIGNERD_ADDR=127.0.0.1:7700
METRICS_ADDR=127.0.0.1:9700
HORIZON_ADDR=127.0.0.1:8000
for addr in $GATEWAY_ADDR $SIGNERD_ADDR $METRICS_ADDR $HORIZON_ADDR; do
  if ss -ltn "sport = :${addr##*:}" | grep -q LISTEN; then
    echo "port ${addr##*:} is already in use: stop whatever listens there first" >&2
    exit 1
  fi
done

echo "==> building ($profile)"
build_flags=(--locked -p signerd -p gateway -p horizon-sim)
[ "$profile" = release ] && build_flags+=(--release)
cargo build -q "${build_flags[@]}"
# Where cargo put them: CARGO_TARGET_DIR, a target-dir in cargo's config, or ./target.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target_dir/$profile

stack=$PWD/.stack
rm -rf "$stack"
mkdir -p "$stack"
pids=()

stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    echo "==> stopping"
    # Reverse start order: gateway, signerd (final audit checkpoint), simulator.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      kill -TERM "${pids[i]}" 2>/dev/null || true
      wait "${pids[i]}" 2>/dev/null || true
    done
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line starting with PREFIX (a readiness line), or the process died.
wait_ready() {
  local file=$1 prefix=$2 pid=$3 log=$4
  for _ in $(seq 1 600); do
    if grep -q "^$prefix" "$file" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "failed to start; its log ($log):" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "not ready after 60 s; see $log" >&2
  exit 1
}

echo "==> SoftHSM token and dev PKI in .stack/"
eval "$(softhsm/init-token.sh "$stack/softhsm" signerd 1234)"
export SOFTHSM2_CONF
"$bin/signerd" dev-pki --out "$stack/pki" --client gateway >/dev/null

echo "==> Horizon simulator on $HORIZON_ADDR (a ledger every second)"
"$bin/horizon-sim" --listen "$HORIZON_ADDR" --ledger-interval-ms 1000 \
  >"$stack/horizon-sim.out" 2>"$stack/horizon-sim.log" &
pids+=($!)
wait_ready "$stack/horizon-sim.out" "horizon-sim listening on" "${pids[-1]}" "$stack/horizon-sim.log"

echo "==> signerd on $SIGNERD_ADDR"
cp hsm-config/signerd.toml "$stack/signerd.toml"
SIGNERD_PIN=1234 "$bin/signerd" serve --config "$stack/signerd.toml" \
  >"$stack/signerd.out" 2>"$stack/signerd.log" &
pids+=($!)
wait_ready "$stack/signerd.out" "signerd listening on" "${pids[-1]}" "$stack/signerd.log"
audit_key=$(sed -n 's/^signerd audit key //p' "$stack/signerd.out")

echo "==> gateway on $GATEWAY_ADDR (SQLite in .stack/gateway.db)"
# The example config with the network pointed at the simulator: its Horizon root, or with --rpc
# its Stellar RPC endpoint.
if [ "$backend" = rpc ]; then
  network_url=http://$HORIZON_ADDR/rpc
else
  network_url=http://$HORIZON_ADDR
fi
sed -e "/^\[network\]/,/^\[/ s#^url = .*#url = \"$network_url\"#" \
  -e "/^\[network\]/,/^\[/ s#^kind = .*#kind = \"$backend\"#" \
  gateway/gateway.example.toml >"$stack/gateway.toml"
grep -q "^url = \"$network_url\"" "$stack/gateway.toml" && grep -q "^kind = \"$backend\"" "$stack/gateway.toml" || {
  echo "could not point the gateway at the simulator" >&2
  exit 1
}
"$bin/gateway" serve --config "$stack/gateway.toml" >"$stack/gateway.out" 2>"$stack/gateway.log" &
pids+=($!)
wait_ready "$stack/gateway.out" "gateway listening on" "${pids[-1]}" "$stack/gateway.log"
admin_key=$("$bin/gateway" api-key create --config "$stack/gateway.toml" --role admin --name stack-admin)

cat <<INFO

  gateway     http://$GATEWAY_ADDR      (OpenAPI: http://$GATEWAY_ADDR/openapi.json)
  admin key   $admin_key
  signerd     $SIGNERD_ADDR (mTLS; client certificates in .stack/pki), metrics http://$METRICS_ADDR/metrics
  network     $network_url ($backend, simulator)
  audit key   $audit_key
  verify      $bin/signerd audit verify .stack/audit --audit-key $audit_key --live
  logs        .stack/*.log

INFO

if $demo; then
  python3 scripts/demo.py --gateway "http://$GATEWAY_ADDR" --api-key "$admin_key"
  echo "==> verifying signerd's audit log"
  "$bin/signerd" audit verify "$stack/audit" --audit-key "$audit_key" --live --max-checkpoint-age 120
fi

if $stay; then
  echo "Ctrl-C stops the stack."
  wait "${pids[@]}"
fi
