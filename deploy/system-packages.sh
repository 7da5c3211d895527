#!/usr/bin/env bash
# Install the Debian packages in deploy/system-packages.txt that are missing (as root, with
# apt-get); otherwise name them and carry on, so the suites that need them skip or say why.
# Called by `make test` and .ci/run: one list for both.
set -euo pipefail
list="$(dirname "$0")/system-packages.txt"
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$list")
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
((${#missing[@]})) || exit 0
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "note: missing system packages (${missing[*]}); install them as root with" \
         "deploy/system-packages.sh, or the tests that need them skip or fail." >&2
    exit 0
fi
echo "installing missing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
