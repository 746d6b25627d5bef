#!/bin/sh
# Baseline chk_mysql: the original is `pidof mysqld`, a process-liveness check that
# says nothing about SQL health. Both lab nodes share one PID namespace, where pidof
# would also see the peer's server, so this checks the node's own pid file instead:
# same question ("is the server process alive?"), asked per node.
# Usage: chk_mysql.sh PID_FILE
pid=$(cat "$1" 2>/dev/null) || exit 1
[ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mariadbd ]
