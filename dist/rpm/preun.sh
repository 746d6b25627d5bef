# %preun ($1: 0 erase, 1 upgrade): on erase, stop and disable the guard, whose binary
# goes away (keepalived tracks it: its instances go to FAULT and demote).
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now mmvip-guard.service >/dev/null 2>&1 || :
    elif command -v systemctl >/dev/null 2>&1; then
        systemctl --no-reload disable mmvip-guard.service >/dev/null 2>&1 || :
    fi
fi
exit 0
