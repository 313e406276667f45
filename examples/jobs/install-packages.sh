#!/bin/sh
# AWS-Install-Application: install-packages.sh RUNASUSER PACKAGES...
# (see package-control.sh)
exec "$(dirname "$0")/package-control.sh" install "$@"
