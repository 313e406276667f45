#!/bin/sh
# AWS-Download-File: download-file.sh RUNASUSER URL FILE [SHA256]
#
# Downloads URL (with curl, else wget, BusyBox's included) into a temporary
# file beside FILE, checks its SHA-256 when one is given (an extra argument
# beyond the managed template's two), and renames it into place, so FILE is
# either the old file or the whole new one. RUNASUSER is the AWS IoT Device
# Client's first argument; chariotd has already switched to that user.
set -eu

[ $# -ge 3 ] || { echo "usage: download-file.sh RUNASUSER URL FILE [SHA256]" >&2; exit 2; }
url=$2
file=$3
sha=${4:-}
case $file in
/*) ;;
*) echo "the file path must be absolute: $file" >&2; exit 2 ;;
esac
case $url in
-*) echo "not a URL: $url" >&2; exit 2 ;;
esac

dir=$(dirname "$file")
mkdir -p "$dir"
part="$dir/.$(basename "$file").part.$$"
trap 'rm -f "$part"' EXIT INT TERM

if command -v curl >/dev/null 2>&1; then
	curl --fail --silent --show-error --location --output "$part" -- "$url"
elif command -v wget >/dev/null 2>&1; then
	wget -q -O "$part" "$url"
else
	echo "neither curl nor wget is installed" >&2
	exit 1
fi

if [ -n "$sha" ]; then
	got=$(sha256sum "$part" | cut -d' ' -f1)
	if [ "$got" != "$sha" ]; then
		echo "SHA-256 mismatch: expected $sha, got $got" >&2
		exit 1
	fi
fi
mv -f "$part" "$file"
trap - EXIT INT TERM
echo "downloaded $url to $file"
