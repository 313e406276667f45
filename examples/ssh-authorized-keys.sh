#!/bin/sh
# notifycmd of the example `ssh` service: installs the public keys listed
# under "authorized_keys" in the service's JSON outfile as the
# authorized_keys file sshd or dropbear reads, replacing it atomically.
# Entries that are not a single line of text are skipped (a newline would
# smuggle in a second key or options). The file is written even when the
# list is empty or absent, which revokes every key.
#
# usage: ssh-authorized-keys.sh CONFIG.json AUTHORIZED_KEYS
set -eu
usage="usage: ssh-authorized-keys.sh CONFIG.json AUTHORIZED_KEYS"
config=${1:?$usage}
dest=${2:?$usage}

dir=$(dirname "$dest")
mkdir -p "$dir"
chmod 700 "$dir"
tmp=$(mktemp "$dest.XXXXXX")
trap 'rm -f "$tmp"' EXIT

# chariotd itself needs python3, so the device has it to read JSON with.
python3 - "$config" >"$tmp" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    keys = json.load(f).get("authorized_keys") or []
for key in keys if isinstance(keys, list) else []:
    if isinstance(key, str) and key.strip() and not any(c in key for c in "\r\n\0"):
        print(key.strip())
    else:
        print("ssh-authorized-keys: skipped an entry that is not one line of text",
              file=sys.stderr)
PY

chmod 600 "$tmp"
mv "$tmp" "$dest"
trap - EXIT
