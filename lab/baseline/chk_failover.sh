#!/bin/sh
# Baseline chk_failover: fails while the failover file exists (planned switch-over).
# Usage: chk_failover.sh FAILOVER_FILE
[ ! -e "$1" ]
