#!/bin/sh
# Baseline notify: append TIMESTAMP $0 TYPE NAME STATE PRIORITY to a log file.
# keepalived appends TYPE NAME STATE PRIORITY after the configured LOG_FILE.
# Usage: keepalived_notify.sh LOG_FILE (then keepalived's four words)
log=$1
shift
echo "$(date '+%F %T.%N') $0 $*" >>"$log"
