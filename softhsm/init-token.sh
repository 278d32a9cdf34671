#!/usr/bin/env bash
# Initialises a SoftHSM token in a directory of its own.
#
#   softhsm/init-token.sh DIR [LABEL] [USER_PIN] [SO_PIN]
#
# Writes DIR/softhsm2.conf (from hsm-config/softhsm2.conf.template) and DIR/tokens/, then
# initialises a token labelled LABEL (default "signerd") in the first free slot. Use it with
#   export SOFTHSM2_CONF=DIR/softhsm2.conf
# Each test run and each local stack gets its own DIR, so nothing touches /var/lib/softhsm.
set -euo pipefail

dir=${1:?usage: init-token.sh DIR [LABEL] [USER_PIN] [SO_PIN]}
label=${2:-signerd}
pin=${3:-1234}
so_pin=${4:-5678}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

command -v softhsm2-util >/dev/null || {
  echo "softhsm2-util not found: apt-get install -y softhsm2" >&2
  exit 1
}

mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
sed "s#@TOKEN_DIR@#$dir/tokens#" "$here/hsm-config/softhsm2.conf.template" >"$dir/softhsm2.conf"
SOFTHSM2_CONF="$dir/softhsm2.conf" softhsm2-util --init-token --free \
  --label "$label" --pin "$pin" --so-pin "$so_pin" >/dev/null
echo "export SOFTHSM2_CONF=$dir/softhsm2.conf"
