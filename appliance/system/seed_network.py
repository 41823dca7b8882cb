#!/opt/cairn/bin/python3
"""The NoCloud seed's network-config (cloud-init's version 1 or 2) as ifupdown's interfaces file.

    cairn-seed-network NETWORK_CONFIG [INTERFACES [RESOLV_CONF]]

Physical interfaces only: each gets DHCP (IPv4, IPv6) or static addresses, a default gateway, more
routes and an MTU; nameservers and search domains go to resolv.conf. An interface is named as the
kernel names it (eth0: the image boots with net.ifnames=0) or matched by its MAC address. Bonds,
bridges, VLANs and Wi-Fi are not supported: they are named, and left out. A config that cannot be
read changes nothing and exits 1, so the image's DHCP on eth0 stays.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

UNSUPPORTED_V2 = ("bonds", "bridges", "vlans", "wifis", "tunnels", "vrfs", "modems")
IFACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")  # the kernel's 15 characters, nothing a shell reads
DEFAULT_ROUTES = ("default", "0.0.0.0/0", "::/0")


class SeedError(ValueError):
    """The network-config cannot be used as it is."""


@dataclass
class Interface:
    name: str
    dhcp4: bool = False
    dhcp6: bool = False
    addresses: list[str] = field(default_factory=list)  # CIDR
    gateway4: str | None = None
    gateway6: str | None = None
    routes: list[tuple[str, str]] = field(default_factory=list)  # (to, via), besides the default ones
    mtu: int | None = None


@dataclass
class Network:
    interfaces: list[Interface] = field(default_factory=list)
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # what the config asked for that is not supported


def parse(text: str, macs: dict[str, str]) -> Network | None:
    """The config in `text` (None: it says nothing, or `config: disabled`); `macs`: MAC address -> interface."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SeedError(f"not YAML: {e}") from None
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise SeedError("not a mapping")
    doc = doc.get("network", doc)
    if not isinstance(doc, dict) or doc.get("config") == "disabled":
        return None
    version = doc.get("version")
    if version == 1:
        return _v1(doc, macs)
    if version == 2:
        return _v2(doc, macs)
    raise SeedError(f"version {version!r}: only versions 1 and 2 are read")


def _v2(doc: dict[str, Any], macs: dict[str, str]) -> Network:
    net = Network(left_out=[kind for kind in UNSUPPORTED_V2 if doc.get(kind)])
    for key, conf in _mapping(doc.get("ethernets") or {}, "ethernets").items():
        conf = _mapping(conf or {}, f"ethernets.{key}")
        match = _mapping(conf.get("match") or {}, f"ethernets.{key}.match")
        name = _name(str(conf.get("set-name") or match.get("name") or key), match.get("macaddress"), macs)
        iface = Interface(name, dhcp4=_yes(conf.get("dhcp4")), dhcp6=_yes(conf.get("dhcp6")), mtu=_mtu(conf.get("mtu")))
        for address in _list(conf.get("addresses")):
            iface.addresses.append(_cidr(next(iter(address)) if isinstance(address, dict) else address))
        iface.gateway4 = _address(conf.get("gateway4"), 4)
        iface.gateway6 = _address(conf.get("gateway6"), 6)
        for route in _list(conf.get("routes")):
            route = _mapping(route, f"ethernets.{key}.routes")
            _route(iface, str(route.get("to", "")), route.get("via"))
        servers = _mapping(conf.get("nameservers") or {}, f"ethernets.{key}.nameservers")
        net.nameservers += [_address(a) for a in _list(servers.get("addresses"))]
        net.search += [str(s) for s in _list(servers.get("search"))]
        net.interfaces.append(iface)
    return net


def _v1(doc: dict[str, Any], macs: dict[str, str]) -> Network:
    net = Network()
    for item in _list(doc.get("config")):
        item = _mapping(item, "config")
        kind = item.get("type")
        if kind == "nameserver":
            net.nameservers += [_address(a) for a in _list(item.get("address"))]
            net.search += [str(s) for s in _list(item.get("search"))]
            continue
        if kind != "physical":
            net.left_out.append(str(kind))
            continue
        iface = Interface(_name(str(item.get("name", "")), item.get("mac_address"), macs), mtu=_mtu(item.get("mtu")))
        for subnet in _list(item.get("subnets")):
            subnet = _mapping(subnet, f"{iface.name}.subnets")
            sort = subnet.get("type")
            if sort in ("dhcp", "dhcp4"):
                iface.dhcp4 = True
            elif sort == "dhcp6":
                iface.dhcp6 = True
            elif sort in ("static", "static6"):
                address = str(subnet.get("address", ""))
                if "/" not in address and subnet.get("netmask"):
                    address = f"{address}/{subnet['netmask']}"
                iface.addresses.append(_cidr(address))
                gateway = subnet.get("gateway")
                if gateway is not None:
                    _route(iface, "default", gateway)
                net.nameservers += [_address(a) for a in _list(subnet.get("dns_nameservers"))]
                net.search += [str(s) for s in _list(subnet.get("dns_search"))]
            else:
                net.left_out.append(f"subnet type {sort}")
            for route in _list(subnet.get("routes")):
                route = _mapping(route, f"{iface.name}.routes")
                to = f"{route.get('network', '')}/{route.get('prefix') or route.get('netmask', '')}"
                _route(iface, to, route.get("gateway"))
        net.interfaces.append(iface)
    return net


def _route(iface: Interface, to: str, via: Any) -> None:
    gateway = _address(via)
    if to in DEFAULT_ROUTES:
        if ipaddress.ip_address(gateway).version == 4:
            iface.gateway4 = gateway
        else:
            iface.gateway6 = gateway
    else:
        iface.routes.append((str(ipaddress.ip_network(_cidr(to), strict=False)), gateway))


def _name(name: str, mac: Any, macs: dict[str, str]) -> str:
    if mac:
        found = macs.get(str(mac).lower())
        if found is None:
            raise SeedError(f"no interface has the MAC address {mac}")
        return found
    if not IFACE_NAME.fullmatch(name):  # it lands in `up` commands a shell runs
        raise SeedError(f"{name!r} is no interface name")
    return name


def _cidr(text: Any) -> str:
    try:
        return str(ipaddress.ip_interface(str(text)))
    except ValueError:
        raise SeedError(f"{text!r} is no address with a prefix (such as 192.0.2.10/24)") from None


def _address(text: Any, version: int | None = None) -> Any:
    if text is None and version is not None:
        return None
    try:
        address = ipaddress.ip_address(str(text))
    except ValueError:
        raise SeedError(f"{text!r} is no IP address") from None
    if version is not None and address.version != version:
        raise SeedError(f"{text} is no IPv{version} address")
    return str(address)


def _mtu(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or not 576 <= value <= 65535:
        raise SeedError(f"MTU {value!r}: a number from 576 to 65535")
    return value


def _yes(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "yes", "on")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SeedError(f"{where}: a mapping was expected")
    return value


def interfaces_file(net: Network) -> str:
    """ifupdown's /etc/network/interfaces for `net`."""
    lines = ["# Written at boot from the NoCloud seed's network-config (cairn-seed-network).",
             "source /etc/network/interfaces.d/*", "", "auto lo", "iface lo inet loopback"]  # fmt: skip
    for iface in net.interfaces:
        lines += ["", f"auto {iface.name}"]
        v4 = [a for a in iface.addresses if ipaddress.ip_interface(a).version == 4]
        v6 = [a for a in iface.addresses if ipaddress.ip_interface(a).version == 6]
        for family, dhcp, addresses, gateway in (("inet", iface.dhcp4, v4, iface.gateway4),
                                                 ("inet6", iface.dhcp6, v6, iface.gateway6)):  # fmt: skip
            if dhcp:
                lines.append(f"iface {iface.name} {family} dhcp")
                lines += _options(iface, family, None)
            for n, address in enumerate(addresses):  # each further address is a stanza of its own
                lines += [f"iface {iface.name} {family} static", f"    address {address}"]
                lines += _options(iface, family, gateway) if n == 0 and not dhcp else []
    return "\n".join(lines) + "\n"


def _options(iface: Interface, family: str, gateway: str | None) -> list[str]:
    lines = [f"    gateway {gateway}"] if gateway else []
    lines += [f"    mtu {iface.mtu}"] if iface.mtu and family == "inet" else []
    version = 4 if family == "inet" else 6
    lines += [f"    up ip -{version} route replace {to} via {via} dev {iface.name}"
              for to, via in iface.routes if ipaddress.ip_address(via).version == version]  # fmt: skip
    return lines


def resolv_conf(net: Network) -> str | None:
    if not net.nameservers and not net.search:
        return None
    lines = [f"nameserver {a}" for a in dict.fromkeys(net.nameservers)][:3]  # the resolver reads three
    if net.search:
        lines.append("search " + " ".join(dict.fromkeys(net.search)))
    return "\n".join(lines) + "\n"


def summary(net: Network) -> list[str]:
    said = []
    for iface in net.interfaces:
        ways = (["DHCP"] if iface.dhcp4 else []) + (["DHCPv6"] if iface.dhcp6 else []) + iface.addresses
        gateways = [g for g in (iface.gateway4, iface.gateway6) if g]
        said.append(f"{iface.name}: {', '.join(ways) or 'up, no address'}"
                    + (f" via {', '.join(gateways)}" if gateways else ""))  # fmt: skip
    said += [f"not supported, left out: {kind}" for kind in net.left_out]
    return said


def _macs() -> dict[str, str]:
    found = {}
    for dev in Path("/sys/class/net").iterdir():
        try:
            found[(dev / "address").read_text().strip().lower()] = dev.name
        except OSError:
            continue
    return found


def _replace(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 4:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    interfaces = Path(argv[2] if len(argv) > 2 else "/etc/network/interfaces")
    resolv = Path(argv[3] if len(argv) > 3 else "/etc/resolv.conf")
    try:
        net = parse(Path(argv[1]).read_text(), _macs())
        if net is not None and not net.interfaces:
            raise SeedError("it configures no interface")
    except (OSError, SeedError) as e:
        print(f"the seed's network-config is not used: {e}", file=sys.stderr)
        return 1
    if net is None:
        return 0
    _replace(interfaces, interfaces_file(net), 0o644)
    resolvers = resolv_conf(net)
    if resolvers is not None:
        _replace(resolv, resolvers, 0o644)  # over the file, or the link to a resolver's file
    for line in summary(net):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
