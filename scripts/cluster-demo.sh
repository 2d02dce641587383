#!/usr/bin/env bash
# Cluster mode on one machine (run as root): etcd and three vswitchd nodes,
# each in a network namespace on a shared underlay (192.0.2.0/24), each
# configured with nothing but its name, its VTEP address and etcd. One
# network is created cluster-wide; a pod joins each node through the CNI
# plugin; the pods ping each other across nodes; then the cluster's view:
# nodes, blocks, cluster status.
# Everything it creates is removed on exit. --no-install skips set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ ${1:-} == --no-install ]] || bash scripts/install-deps.sh

tag="vscl$$"
work=$(mktemp -d /tmp/vswitch-cluster-demo.XXXXXX)
etcd_url="http://192.0.2.250:2379"
pids=()
ctl() { local i=$1; shift; vswitchctl --socket "$work/node$i.sock" "$@"; }
cni() {     # cni NODE COMMAND POD: the CNI plugin, run as a container runtime runs it
    echo "{\"cniVersion\": \"1.1.0\", \"name\": \"demo\", \"type\": \"vswitch\",
           \"network\": \"pods\", \"socket\": \"$work/node$1.sock\"}" |
        CNI_COMMAND=$2 CNI_CONTAINERID="$tag-$3" CNI_NETNS="/run/netns/$tag-$3" CNI_IFNAME=eth0 \
        CNI_PATH=/opt/cni/bin vswitch-cni
}
cleanup() {
    for i in 1 2 3; do
        ctl "$i" stop --remove-ports >/dev/null 2>&1 || true
    done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    for ns in hub n1 n2 n3 a b c; do
        ip netns pids "$tag-$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
        ip netns del "$tag-$ns" 2>/dev/null || true
    done
    [[ -n ${KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# The underlay: a bridge in a hub namespace, which also runs etcd.
ip netns add "$tag-hub"
ip -n "$tag-hub" link set lo up             # etcd talks to itself on its address
ip -n "$tag-hub" link add ul type bridge
ip -n "$tag-hub" addr add 192.0.2.250/24 dev ul
ip -n "$tag-hub" link set ul up
ip netns exec "$tag-hub" etcd --name demo --data-dir "$work/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://192.0.2.250:2380 --initial-advertise-peer-urls http://192.0.2.250:2380 \
    --initial-cluster demo=http://192.0.2.250:2380 >"$work/etcd.log" 2>&1 &
pids+=($!)

for i in 1 2 3; do
    ns="$tag-n$i"
    ip netns add "$ns"
    ip -n "$tag-hub" link add "ul$i" type veth peer name u0 netns "$ns"
    ip -n "$tag-hub" link set "ul$i" master ul up
    ip -n "$ns" addr add "192.0.2.$i/24" dev u0
    ip -n "$ns" link set u0 up
    ip -n "$ns" link set lo up
    cat >"$work/node$i.toml" <<EOF
[node]
name = "node$i"
socket = "$work/node$i.sock"
state_dir = "$work/state$i"

[overlay]
vtep_ip = "192.0.2.$i"

[cluster]
etcd = ["$etcd_url"]
EOF
done
printf '\n\033[1m$ cat node1.toml   (each node: its name, its VTEP, etcd)\033[0m\n'
cat "$work/node1.toml"

for _ in $(seq 100); do
    ip netns exec "$tag-hub" etcdctl --endpoints "$etcd_url" --dial-timeout 1s endpoint health \
        >/dev/null 2>&1 && break
    sleep 0.1
done
for i in 1 2 3; do
    ip netns exec "$tag-n$i" vswitchd --config "$work/node$i.toml" >"$work/node$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do ctl "$i" status >/dev/null 2>&1 && break; sleep 0.1; done
done

step ctl 1 network create pods --vni 42 --subnet 198.18.0.0/16 --block-size 26
for i in 2 3; do
    for _ in $(seq 100); do ctl "$i" network list | grep -q "yes" && break; sleep 0.05; done
done
for pod in a b c; do ip netns add "$tag-$pod"; done
printf '\n\033[1m$ CNI_COMMAND=ADD ... vswitch-cni   (one pod on each node, as Kubernetes would)\033[0m\n'
declare -A ip
node=1
for pod in a b c; do
    ip[$pod]=$(cni "$node" ADD "$pod" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ips"][0]["address"].split("/")[0])')
    echo "pod $pod on node$node: ${ip[$pod]}"
    node=$((node + 1))
done
step ip netns exec "$tag-a" ping -c 3 -i 0.2 "${ip[b]}"
step ip netns exec "$tag-c" ping -c 3 -i 0.2 "${ip[a]}"
step ctl 2 node list
step ctl 2 ipam blocks
step ctl 3 peer list
step ctl 1 cluster status
step ctl 1 stats
for pod in a b c; do cni "$(( $(printf '%d' "'$pod") - 96 ))" DEL "$pod" >/dev/null; done
echo; echo "cluster demo done"
