#!/bin/sh
# AWS-Remove-Application: remove-packages.sh RUNASUSER PACKAGES...
# (see package-control.sh)
exec "$(dirname "$0")/package-control.sh" remove "$@"
