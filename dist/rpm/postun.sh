# %postun ($1: 0 erase, 1 upgrade): on erase, the compiled plugins are of no use.
if [ "$1" -eq 0 ]; then
    rm -rf /var/cache/mmvip
    # cargo-generate-rpm 0.21.1 cannot list directories in the package, so rpm does
    # not remove them itself; only empty ones go (an edited config stays as .rpmsave).
    rmdir /usr/lib/mmvip/plugins /usr/lib/mmvip /usr/share/doc/mmvip/examples \
        /usr/share/doc/mmvip/selinux /usr/share/doc/mmvip /etc/mmvip 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
fi
exit 0
