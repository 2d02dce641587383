#!/usr/bin/env bash
# Install vswitchd as a systemd service on a node (run as root, after
# scripts/install-deps.sh or `pip install .`): the unit (its ExecStart
# pointing at this Python's vswitchd), a default config if there is none,
# and the CNI plugin as /opt/cni/bin/vswitch with an example network config
# if there is none. Then enables and starts the service where systemd runs.
# DESTDIR=/some/root installs under that root and starts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${DESTDIR:-}
bin=$(python3 -c 'import sys; print(sys.prefix)')/bin
[[ -x $bin/vswitchd ]] || { echo "install-service: $bin/vswitchd not found; pip install first" >&2; exit 1; }

install -d "$root/etc/systemd/system" "$root/etc/vswitch" "$root/opt/cni/bin" \
    "$root/etc/cni/net.d" "$root/usr/share/doc/vswitch"
sed "s|/usr/local/bin/vswitchd|$bin/vswitchd|" packaging/vswitchd.service \
    > "$root/etc/systemd/system/vswitchd.service"
[[ -e $root/etc/vswitch/vswitchd.toml ]] ||
    install -m 0644 packaging/vswitchd.toml "$root/etc/vswitch/vswitchd.toml"
ln -sf "$bin/vswitch-cni" "$root/opt/cni/bin/vswitch"
[[ -n $(ls "$root/etc/cni/net.d" 2>/dev/null) ]] ||
    install -m 0644 examples/10-vswitch.conflist "$root/etc/cni/net.d/10-vswitch.conflist"
install -m 0644 README.md "$root/usr/share/doc/vswitch/README.md"
systemd-analyze verify "$root/etc/systemd/system/vswitchd.service"
echo "install-service: unit, config and CNI plugin installed${root:+ under $root}"

if [[ -z $root && -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl enable --now vswitchd
    systemctl --no-pager status vswitchd | head -5
fi
