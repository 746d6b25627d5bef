# %post ($1: 1 install, 2 upgrade): precompile the plugins for this host's CPU; the
# old host's compiled plugins are dropped first. A failure is reported, not fatal: a
# hook compiles in memory when the cache cannot serve it.
rm -rf /var/cache/mmvip
if ! /usr/sbin/mmvip compile >/dev/null; then
    echo "mmvip: precompiling the plugins failed (above); fix /etc/mmvip/mmvip.toml, then run 'mmvip compile'" >&2
fi
# Compiled from the package manager's domain: give the cache mmvip's file context
# (a no-op until the SELinux module is loaded).
if command -v restorecon >/dev/null 2>&1; then
    restorecon -R /var/cache/mmvip >/dev/null 2>&1 || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
