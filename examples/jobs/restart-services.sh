#!/bin/sh
# AWS-Restart-Application: restart-services.sh RUNASUSER SERVICES...
# (see service-control.sh)
exec "$(dirname "$0")/service-control.sh" restart "$@"
