#!/bin/sh
# service-control.sh ACTION RUNASUSER SERVICES...: start, stop or restart
# system services with runit's sv, else the sysvinit script in /etc/init.d,
# else systemctl. start-services.sh, stop-services.sh and
# restart-services.sh (the AWS-Start/Stop/Restart-Application handlers)
# call it. The managed templates pass the services as one space-separated
# argument; several arguments work too. RUNASUSER is the AWS IoT Device
# Client's convention; chariotd has already switched to that user.
set -euf

[ $# -ge 3 ] || { echo "usage: service-control.sh start|stop|restart RUNASUSER SERVICE..." >&2; exit 2; }
action=$1
shift 2
# shellcheck disable=SC2048,SC2086 # split the space-separated list on purpose
set -- $*
[ $# -ge 1 ] || { echo "no services given" >&2; exit 2; }

failed=0
for service in "$@"; do
	case $service in
	-* | */* | .*) echo "not a service name: $service" >&2; failed=1; continue ;;
	esac
	if command -v sv >/dev/null 2>&1; then
		sv "$action" "$service" || failed=1
	elif [ -x "/etc/init.d/$service" ]; then
		"/etc/init.d/$service" "$action" || failed=1
	elif command -v systemctl >/dev/null 2>&1; then
		systemctl "$action" "$service" || failed=1
	else
		echo "no sv, /etc/init.d/$service or systemctl to $action $service with" >&2
		failed=1
	fi
done
exit $failed
