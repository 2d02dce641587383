#!/usr/bin/env bash
# Install what vswitch needs on a fresh Debian machine (run as root):
# the tools tests and the demo use, then vswitch itself with its test
# extras (this builds the Cython data plane in place).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(iproute2 iputils-ping iperf3 tcpdump ethtool procps gcc python3-dev
              containernetworking-plugins   # reference CNI plugins, chained in the tests
              systemd                       # systemd-analyze, to check the unit
              tshark                        # reads our capture files back in the tests
              vde2 openvswitch-switch       # other userspace switches the bench compares with
              clang libclang-rt-14-dev      # the fuzzers' sanitized, coverage-instrumented build
              etcd-server etcd-client openssl    # cluster mode's store, and test certificates
              nftables)                     # libnftables: egress masquerade
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test,bench]'
modprobe tun 2>/dev/null || true
test -c /dev/net/tun || { echo "install-deps: /dev/net/tun is missing" >&2; exit 1; }
echo "install-deps: ready ($(python3 -c 'import vswitch; print("vswitch", vswitch.__version__)'))"
