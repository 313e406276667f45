#!/bin/sh
# AWS-Reboot: reboot the device; the job succeeds once it is back up.
#
# $1 is runAsUser (the AWS IoT Device Client's convention; chariotd has
# already switched to that user). Before rebooting it reports the boot id
# with "resumeAfterRestart": "true", so that chariotd runs the job again
# after the restart instead of reporting it interrupted; run again, it
# finds that boot id in the job's previous status and succeeds when the
# boot id has changed.
#
# Dry run (tests, demos): a file reboot.dry-run beside this script. Empty,
# the script only says what it would do and succeeds; holding "wait", it
# reports as for a real reboot and then waits, as if the reboot were on
# its way, for chariotd to be stopped.
set -eu

here=$(dirname "$0")
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
previous=${CHARIOTD_JOB_PREVIOUS_STATUS:-/dev/null}

progress() {
	tmp="$CHARIOTD_JOB_STATUS_DIR/.reboot.$$"
	printf '%s\n' "$1" >"$tmp"
	mv "$tmp" "$CHARIOTD_JOB_STATUS_DIR/reboot.json"
}

before=$(sed -n 's/.*"rebootBootId": *"\([^"]*\)".*/\1/p' "$previous" 2>/dev/null || true)
if [ -n "$before" ]; then
	if [ "$before" != "$boot" ]; then
		echo "the device rebooted"
		exit 0
	fi
	echo "the device did not reboot (boot id unchanged)" >&2
	exit 1
fi

if [ -e "$here/reboot.dry-run" ]; then
	if [ "$(cat "$here/reboot.dry-run")" != "wait" ]; then
		echo "dry run: would reboot now"
		exit 0
	fi
	boot="dry-run-$boot"
fi

progress "{\"resumeAfterRestart\": \"true\", \"rebootBootId\": \"$boot\"}"
# Let chariotd send that before the reboot takes the network down.
sleep 3
if [ -e "$here/reboot.dry-run" ]; then
	echo "dry run: would reboot now; waiting to be stopped"
else
	sync
	reboot || { echo "reboot failed" >&2; exit 1; }
fi
sleep 600
echo "still running 10 minutes after the reboot was asked for" >&2
exit 1
