"""The disk image's reader of the NoCloud seed's network-config (appliance/system/seed_network.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "appliance/system/seed_network.py"
_spec = importlib.util.spec_from_file_location("seed_network", SCRIPT)
assert _spec is not None and _spec.loader is not None
seed = importlib.util.module_from_spec(_spec)
sys.modules["seed_network"] = seed  # dataclasses look their module up
_spec.loader.exec_module(seed)

MACS = {"52:54:00:12:34:56": "eth0", "52:54:00:12:34:57": "eth1"}  # this machine's interfaces


def _stanzas(text: str) -> list[str]:
    """The interfaces file's lines after the loopback's."""
    return text.split("iface lo inet loopback\n", 1)[1].split("\n")


def test_version_2_static_addresses_gateways_routes_mtu_and_nameservers() -> None:
    net = seed.parse(
        """
network:
  version: 2
  ethernets:
    lan:
      match: {macaddress: "52:54:00:12:34:56"}
      addresses: [192.0.2.10/24, "2001:db8::10/64", 192.0.2.11/24]
      routes:
        - {to: default, via: 192.0.2.1}
        - {to: "::/0", via: "2001:db8::1"}
        - {to: 198.51.100.0/24, via: 192.0.2.254}
      mtu: 9000
      nameservers: {addresses: [192.0.2.53], search: [example.net]}
""",
        MACS,
    )
    assert _stanzas(seed.interfaces_file(net)) == [
        "", "auto eth0",
        "iface eth0 inet static", "    pre-up ip link set dev eth0 mtu 9000", "    address 192.0.2.10/24",
        "    gateway 192.0.2.1",
        "iface eth0 inet static", "    address 192.0.2.11/24",
        "    up ip -4 route replace 198.51.100.0/24 via 192.0.2.254 dev eth0",  # once every address is up
        "iface eth0 inet6 static", "    address 2001:db8::10/64", "    gateway 2001:db8::1", "",
    ]  # fmt: skip
    assert seed.resolv_conf(net) == "nameserver 192.0.2.53\nsearch example.net\n"
    assert seed.summary(net) == ["eth0: 192.0.2.10/24, 2001:db8::10/64, 192.0.2.11/24 via 192.0.2.1, 2001:db8::1"]


def test_version_2_without_the_network_key_dhcp_slaac_and_an_interface_with_no_address() -> None:
    net = seed.parse("version: 2\nethernets:\n  eth1: {dhcp4: true, accept-ra: yes, mtu: 1450}\n  eth0: {}\n", MACS)
    assert _stanzas(seed.interfaces_file(net)) == [
        "", "auto eth1", "iface eth1 inet dhcp", "    pre-up ip link set dev eth1 mtu 1450", "iface eth1 inet6 auto",
        "", "auto eth0", "iface eth0 inet manual", "",
    ]  # fmt: skip
    assert seed.resolv_conf(net) is None
    assert seed.summary(net) == ["eth1: DHCP, SLAAC", "eth0: up, no address"]


def test_version_1_static_with_a_netmask_ipv6_without_a_prefix_and_a_nameserver_item() -> None:
    net = seed.parse(
        """
version: 1
config:
  - type: physical
    name: eth0
    subnets:
      - {type: static, address: 10.0.2.50, netmask: 255.255.255.0, gateway: 10.0.2.2,
         routes: [{network: 10.9.0.0, netmask: 255.255.0.0, gateway: 10.0.2.1}, {network: 10.8.0.0, prefix: 16}]}
      - {type: static6, address: "2001:db8::50"}
      - {type: ipv6_slaac}
  - {type: nameserver, address: [10.0.2.3, 10.0.2.3], search: [lan]}
""",
        MACS,
    )
    assert _stanzas(seed.interfaces_file(net)) == [
        "", "auto eth0", "iface eth0 inet static", "    address 10.0.2.50/24", "    gateway 10.0.2.2",
        "    up ip -4 route replace 10.9.0.0/16 via 10.0.2.1 dev eth0",
        "    up ip -4 route replace 10.8.0.0/16 dev eth0",  # no gateway: on the link
        "iface eth0 inet6 auto", "iface eth0 inet6 static", "    address 2001:db8::50/64", "",
    ]  # fmt: skip
    assert seed.resolv_conf(net) == "nameserver 10.0.2.3\nsearch lan\n"


@pytest.mark.parametrize("text, error", [
    ("version: 3\n", "only versions 1 and 2"),
    ("version: 2\nethernets:\n  x: {match: {macaddress: '00:11:22:33:44:55'}}\n", "no interface has the MAC"),
    ("version: 2\nethernets:\n  ens3: {dhcp4: true}\n", "this machine has no interface ens3 .it has eth0, eth1"),
    ("version: 2\nethernets:\n  nic: {match: {driver: virtio_net}, dhcp4: true}\n", "matching by driver"),
    ("version: 2\nethernets:\n  eth0: {dhcp4: true}\nbonds:\n  bond0: {interfaces: [eth0]}\n", "not supported: bonds"),
    ("version: 1\nconfig:\n  - {type: physical, name: eth0}\n  - {type: vlan, name: eth0.5}\n", "type vlan"),
    ("version: 1\nconfig:\n  - {type: physical, name: eth0, subnets: [{type: manual}]}\n", "'manual' is not"),
    ("version: 1\nconfig:\n  - {type: physical, name: eth0, subnets: [{type: static, address: 10.0.0.5}]}\n",
     "give its prefix"),
    ("version: 2\nethernets:\n  eth0: {addresses: [10.0.0.300/24]}\n", "no address with a prefix"),
    ("version: 2\nethernets:\n  eth0: {gateway4: '2001:db8::1'}\n", "no IPv4 address"),
    ("version: 2\nethernets:\n  'eth0 up; reboot': {dhcp4: true}\n", "no interface name"),
    ("version: 2\nethernets:\n  eth0;reboot: {routes: [{to: 10.1.0.0/16, via: 10.0.2.1}]}\n", "no interface name"),
    ("version: 2\nethernets:\n  eth0: {nameservers: {search: ['lan\\nnameserver 6.6.6.6']}}\n", "no domain name"),
    ("version: 2\nethernets:\n  eth0: {mtu: 10}\n", "MTU 10"),
    ("version: 2\nethernets: [eth0]\n", "a mapping was expected"),
    ("version: 2\nethernets: {}\n", "configures no interface"),
    ("network: {version: 2, ethernets: {eth0: {dhcp4: true}}\n", "not YAML"),
])  # fmt: skip
def test_configs_it_cannot_carry_out_whole_are_refused_with_the_reason(text: str, error: str) -> None:
    with pytest.raises(seed.SeedError, match=error):
        seed.parse(text, MACS)


def test_nothing_said_leaves_the_network_as_it_is() -> None:
    assert seed.parse("", MACS) is None
    assert seed.parse("network: {config: disabled}\n", MACS) is None


def test_main_writes_both_files_or_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, interfaces, resolv = tmp_path / "network-config", tmp_path / "interfaces", tmp_path / "resolv.conf"
    interfaces.write_text("the image's own\n")
    resolv.symlink_to(tmp_path / "elsewhere")
    config.write_text("version: 2\nethernets:\n  eth0: {addresses: [10.0.2.50/24], gateway4: 10.0.2.2,"
                      " nameservers: {addresses: [10.0.2.3]}}\n")  # fmt: skip
    args = ["cairn-seed-network", str(config), str(interfaces), str(resolv)]
    assert seed.main(args, MACS) == 0
    assert "address 10.0.2.50/24" in interfaces.read_text() and interfaces.stat().st_mode & 0o777 == 0o644
    assert not resolv.is_symlink() and resolv.read_text() == "nameserver 10.0.2.3\n"
    assert capsys.readouterr().out == "eth0: 10.0.2.50/24 via 10.0.2.2\n"
    written = interfaces.read_text()
    config.write_text("version: 2\nethernets:\n  eth0: {addresses: [nonsense]}\n")
    assert seed.main(args, MACS) == 1
    assert interfaces.read_text() == written and "is not used: 'nonsense' is no address" in capsys.readouterr().err
    assert seed.main(["cairn-seed-network"]) == 2
