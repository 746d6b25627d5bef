#!/bin/bash
# Baseline notify_backup, as the original keepalived_backup.sh does it: set the
# variable ON, then kill every connection except replication threads
# (`system user`), the event scheduler, the peer's `Binlog Dump` and its own.
# Usage: keepalived_backup.sh --socket=SOCK --kill=yes --variable=read_only --log=FILE
#        [--unless-holding=VIP[,VIP]]
# --unless-holding is the lab's one addition, used only in the two-VIP layout: the
# original is instance-blind and would demote a node still serving the other
# read/write VIP.
socket= kill=no variable=read_only log=/dev/null unless=
for arg in "$@"; do
    case $arg in
        --socket=*) socket=${arg#*=} ;;
        --kill=*) kill=${arg#*=} ;;
        --variable=*) variable=${arg#*=} ;;
        --log=*) log=${arg#*=} ;;
        --unless-holding=*) unless=${arg#*=} ;;
    esac
done
sql() { mariadb --no-defaults --socket="$socket" --user=root -N -B -e "$1"; }
say() { echo "$(date '+%F %T.%N') backup: $*" >>"$log"; }

for vip in ${unless//,/ }; do
    if ip -o -4 addr show | grep -qF "inet $vip/"; then
        say "still holding $vip: $variable left as is"
        exit 0
    fi
done
sql "SET GLOBAL $variable = ON"
killed=0
if [ "$kill" = yes ]; then
    for id in $(sql "SELECT id FROM information_schema.processlist
                     WHERE user NOT IN ('system user', 'event_scheduler')
                       AND command <> 'Binlog Dump' AND id <> CONNECTION_ID()"); do
        sql "KILL CONNECTION $id" 2>/dev/null && killed=$((killed + 1))
    done
fi
say "$variable=ON, killed $killed connections"
exit 0
