#!/bin/bash
# Baseline notify_master, as the original keepalived_master.sh does it: optionally
# wait until Seconds_Behind_Master is 0 (NULL: proceed anyway), polling every 0.5 s
# with no time limit, then set the variable OFF without checking. Always exits 0.
# Usage: keepalived_master.sh --socket=SOCK --wait=yes --variable=read_only --log=FILE
socket= wait=no variable=read_only log=/dev/null
for arg in "$@"; do
    case $arg in
        --socket=*) socket=${arg#*=} ;;
        --wait=*) wait=${arg#*=} ;;
        --variable=*) variable=${arg#*=} ;;
        --log=*) log=${arg#*=} ;;
    esac
done
sql() { mariadb --no-defaults --socket="$socket" --user=root -N -B -e "$1"; }
say() { echo "$(date '+%F %T.%N') master: $*" >>"$log"; }

if [ "$wait" = yes ]; then
    while :; do
        behind=$(mariadb --no-defaults --socket="$socket" --user=root -e 'SHOW SLAVE STATUS\G' 2>/dev/null |
            awk '/Seconds_Behind_Master:/ { print $2 }')
        # The original's known holes, kept on purpose: NULL (replication stopped)
        # proceeds at once, and an unreachable server makes this loop spin forever.
        if [ "$behind" = 0 ] || [ "$behind" = NULL ]; then
            break
        fi
        sleep 0.5
    done
fi
sql "SET GLOBAL $variable = OFF"
say "$variable=OFF (Seconds_Behind_Master=${behind:-unchecked})"
exit 0
