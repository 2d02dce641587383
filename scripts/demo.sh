#!/usr/bin/env bash
# Set up vswitch and show it working on its built-in defaults (run as root):
# start vswitchd, attach two pods (network namespaces), one the way
# Kubernetes does (the vswitch-cni plugin, address from IPAM), one by hand,
# ping and a short iperf3 between them through the switch, then print the
# counters.
# Everything it creates is removed on exit. --no-install skips set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${1:-} == --no-install ]] || bash scripts/install-deps.sh

tag="vsdemo$$"
logfile=$(mktemp /tmp/vswitchd-demo.XXXXXX.log)
daemon_pid=""
cni() {     # run the CNI plugin as a container runtime does
    echo '{"cniVersion": "1.1.0", "name": "demo", "type": "vswitch", "network": "default"}' |
        CNI_COMMAND=$1 CNI_CONTAINERID="$tag" CNI_NETNS="/run/netns/$tag-a" CNI_IFNAME=eth0 \
        CNI_PATH=/opt/cni/bin vswitch-cni
}
cleanup() {
    [[ -n $daemon_pid ]] && cni DEL >/dev/null 2>&1 || true
    ip netns pids "$tag-a" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids "$tag-b" 2>/dev/null | xargs -r kill 2>/dev/null || true
    # A plain stop would leave the pods' interfaces for the next start.
    if [[ -n $daemon_pid ]]; then
        vswitchctl stop --remove-ports >/dev/null 2>&1 || kill "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    ip netns del "$tag-a" 2>/dev/null || true
    ip netns del "$tag-b" 2>/dev/null || true
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

vswitchd >"$logfile" 2>&1 &         # built-in defaults: bridge mode, network "default"
daemon_pid=$!
for _ in $(seq 100); do vswitchctl status >/dev/null 2>&1 && break; sleep 0.1; done
step vswitchctl status

ip netns add "$tag-a"
ip netns add "$tag-b"
printf '\n\033[1m$ CNI_COMMAND=ADD ... vswitch-cni   (pod a joins as Kubernetes would)\033[0m\n'
cni ADD
# Outside this node's IPAM block (198.18.1.0/24): never an address IPAM hands out.
step vswitchctl port add pod-b --netns "$tag-b" --ip 198.18.2.11/16
step vswitchctl ipam show
step ip netns exec "$tag-a" ping -c 3 -i 0.2 198.18.2.11

ip netns exec "$tag-b" iperf3 -s -1 >/dev/null 2>&1 &
sleep 0.5
step ip netns exec "$tag-a" iperf3 -c 198.18.2.11 -t 3 -f g
step vswitchctl fdb show
step vswitchctl stats
echo; echo "demo done; daemon log: $logfile"
