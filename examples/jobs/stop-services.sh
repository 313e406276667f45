#!/bin/sh
# AWS-Stop-Application: stop-services.sh RUNASUSER SERVICES...
# (see service-control.sh)
exec "$(dirname "$0")/service-control.sh" stop "$@"
