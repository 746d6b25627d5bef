#!/bin/sh
# Baseline notify_fault and notify_stop: the original only logs (and leaves the node
# writable, a weakness its author noted).
# Usage: keepalived_log.sh LOG_FILE WHAT
echo "$(date '+%F %T.%N') $2: logged only" >>"$1"
