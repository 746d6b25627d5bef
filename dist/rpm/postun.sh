# %postun ($1: 0 erase, 1 upgrade): on erase, the compiled plugins are of no use.
if [ "$1" -eq 0 ]; then
    rm -rf /var/cache/mmvip
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
