#!/bin/sh
# package-control.sh install|remove RUNASUSER PACKAGES...: install or remove
# packages with the package manager there is (opkg, apk, apt-get, dnf,
# yum). install-packages.sh and remove-packages.sh (the
# AWS-Install/Remove-Application handlers) call it. A read-only root
# filesystem (a Buildroot image has no package manager to speak of) is a
# clear failure: update the image instead. The managed templates pass the
# packages as one space-separated argument. A file packages.root beside this
# script names another mount point to check instead of / (for tests).
set -euf

[ $# -ge 3 ] || { echo "usage: package-control.sh install|remove RUNASUSER PACKAGE..." >&2; exit 2; }
action=$1
shift 2
# shellcheck disable=SC2048,SC2086 # split the space-separated list on purpose
set -- $*
[ $# -ge 1 ] || { echo "no packages given" >&2; exit 2; }
for package in "$@"; do
	case $package in
	-*) echo "not a package name: $package" >&2; exit 2 ;;
	esac
done

root=/
here=$(dirname "$0")
[ -f "$here/packages.root" ] && root=$(cat "$here/packages.root")
options=$(awk -v m="$root" '$2 == m { o = $4 } END { print o }' /proc/mounts)
case ",$options," in
*,ro,*)
	echo "cannot $action packages: the root filesystem ($root) is read-only; update the firmware image instead" >&2
	exit 1
	;;
esac

if command -v opkg >/dev/null 2>&1; then
	if [ "$action" = install ]; then opkg install "$@"; else opkg remove "$@"; fi
elif command -v apk >/dev/null 2>&1; then
	if [ "$action" = install ]; then apk add "$@"; else apk del "$@"; fi
elif command -v apt-get >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive apt-get -y -q "$action" "$@"
elif command -v dnf >/dev/null 2>&1; then
	dnf -y "$action" "$@"
elif command -v yum >/dev/null 2>&1; then
	yum -y "$action" "$@"
else
	echo "cannot $action packages: no package manager (opkg, apk, apt-get, dnf, yum) on this device" >&2
	exit 1
fi
