"""The control plane's objects (the Switch, its reload, the policy engine,
Attachments, the cluster's gateways) built without root, TAPs or etcd, over
the Python model of the data plane (dataplane_model.ModelDatapath): what
they program there is read back from the model."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

from dataplane_model import ModelDatapath

from vswitch.attachments import Attachments
from vswitch.cluster.gateways import Gateways, host_port_name
from vswitch.cluster.schema import Keys
from vswitch.cluster.view import View
from vswitch.config import parse
from vswitch.datapath import DataPlane
from vswitch.switch import Switch


def config(tmp_path, networks):
    return parse({"node": {"name": "n1", "state_dir": str(tmp_path / "state"),
                           "socket": str(tmp_path / "sock")},
                  "network": [{"name": name, "vni": vni, "mtu": mtu, "subnet": subnet}
                              for name, vni, mtu, subnet in networks]})


BLUE = ("blue", 10, 1400, "198.18.0.0/24")
RED = ("red", 20, 1400, "198.18.1.0/24")
GREEN = ("green", 30, 1300, "198.18.2.0/24")


def run(tmp_path, body, networks=(BLUE, RED)):
    """body(switch, model) on a Switch over a model data plane, in a loop."""
    async def main():
        model = ModelDatapath()
        cfg = config(tmp_path, networks)
        switch = Switch(cfg, asyncio.get_running_loop(),
                        DataPlane(cfg.datapath_settings(), model))
        try:
            return await body(switch, model)
        finally:
            switch.close()
    return asyncio.run(main())


def test_the_switch_declares_its_networks_and_a_reload_changes_only_what_changed(tmp_path):
    async def body(switch, model):
        assert sorted(model.networks.values()) == [(10, 1400), (20, 1400)]
        new = config(tmp_path, [(*BLUE[:2], 1350, BLUE[3]), GREEN])
        changes = await switch.reload(new)
        assert sorted(model.networks.values()) == [(10, 1350), (30, 1300)]
        return changes
    changes = run(tmp_path, body)
    assert changes == ["network red removed", "network blue mtu 1400 -> 1350",
                       "network green added"]


def test_policies_are_kept_and_come_back_at_the_next_start(tmp_path):
    manifest = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "deny", "namespace": "shop"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}

    async def apply(switch, model):
        await switch.policy.restore()
        result = await switch.policy.apply([manifest])
        await switch.policy.label_namespace("shop", ["team=a"])
        return result

    async def restart(switch, model):
        await switch.policy.restore()
        return switch.policy.summaries(), switch.policy.namespace_labels("shop")

    assert run(tmp_path, apply)[0]["result"] == "created"
    summaries, labels = run(tmp_path, restart)
    assert [(p["namespace"], p["name"]) for p in summaries] == [("shop", "deny")]
    assert labels.get("team") == "a"


def test_attachments_show_every_network_with_its_free_addresses(tmp_path):
    async def body(switch, model):
        return await Attachments(switch).show()
    shown = run(tmp_path, body)
    assert [n["name"] for n in shown["networks"]] == ["blue", "red"]
    assert all(n["free"] > 250 for n in shown["networks"]) and shown["allocations"] == []


def test_a_gateway_makes_the_host_port_unless_the_node_is_fenced(tmp_path):
    async def body(switch, model):
        fencing = SimpleNamespace(fenced=False)
        blocks = SimpleNamespace(fencing=fencing, holds=lambda net, ip: ip.packed[-1] < 64)
        view = View(Keys("/vswitch"))
        gateways = Gateways(view, blocks, switch)
        view.networks["blue"] = {"vni": 10, "gateway": True}
        blue = switch.config.network("blue")
        unconfigured = gateways.configure(blue, view.networks["blue"])
        gateways.addresses["blue"] = {4: ipaddress.ip_address("198.18.0.1")}
        configured = gateways.configure(blue, view.networks["blue"])
        fencing.fenced = True
        fenced = gateways.configure(blue, view.networks["blue"])
        gateways.addresses["red"] = {4: ipaddress.ip_address("198.18.1.200")}   # not held
        await gateways.forget_invalid(list(switch.config.networks))
        return unconfigured, configured, fenced, gateways.addresses
    unconfigured, configured, fenced, kept = run(tmp_path, body)
    assert unconfigured.host_port is None and fenced.host_port is None
    assert configured.host_port == host_port_name("blue")
    assert str(configured.gateway) == "198.18.0.1"
    assert list(kept) == ["blue"]


def test_the_loop_lag_keeps_the_longest_delay_and_that_of_its_window():
    from vswitch.looplag import WINDOW, LoopLag
    lag = LoopLag()
    for when, delay, cpu in ((0.0, 0.01, 0.06), (1.0, 0.30, 0.35), (2.0, 0.02, 0.0),
                             (3.0, 0.05, 0.01)):
        lag.note(when, delay, cpu)
    assert lag.report() == {"max_ms": 300.0, "recent_ms": 300.0, "held_max_ms": 300.0,
                            "held_recent_ms": 300.0}
    lag.note(1.0 + WINDOW + 0.5, 0.001, 0.0)     # the 300 ms left the window
    assert lag.report() == {"max_ms": 300.0, "recent_ms": 50.0, "held_max_ms": 300.0,
                            "held_recent_ms": 10.0}
    lag.note(3.0 + WINDOW + 0.5, 0.0)
    assert lag.report()["recent_ms"] == 1.0 and lag.report()["held_recent_ms"] == 0.0
