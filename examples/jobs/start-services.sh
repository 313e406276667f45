#!/bin/sh
# AWS-Start-Application: start-services.sh RUNASUSER SERVICES...
# (see service-control.sh)
exec "$(dirname "$0")/service-control.sh" start "$@"
