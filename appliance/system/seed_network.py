#!/opt/cairn/bin/python3
"""The NoCloud seed's network-config (cloud-init's version 1 or 2) as ifupdown's interfaces file.

    cairn-seed-network NETWORK_CONFIG [INTERFACES [RESOLV_CONF]]

The machine's own Ethernet interfaces only, by the name the kernel gives them (eth0: the image boots
with net.ifnames=0) or by MAC address: DHCP, SLAAC or static addresses, default gateways, more routes
and an MTU; nameservers and search domains go to resolv.conf. A config this cannot carry out whole (a
bond, bridge, VLAN or Wi-Fi; an interface this machine lacks; a bad address) changes nothing and exits
1, so the image's DHCP on eth0 stays: a half-applied network could leave the appliance unreachable.
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
DOMAIN = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
DEFAULT_ROUTES = ("default", "0.0.0.0/0", "::/0")


class SeedError(ValueError):
    """The network-config cannot be carried out as it is."""


@dataclass
class Interface:
    name: str
    dhcp4: bool = False
    dhcp6: bool = False
    slaac: bool = False  # IPv6 addresses from router advertisements
    addresses: list[str] = field(default_factory=list)  # CIDR
    gateway4: str | None = None
    gateway6: str | None = None
    routes: list[tuple[str, str | None]] = field(default_factory=list)  # (to, via or on the link)
    mtu: int | None = None


@dataclass
class Network:
    interfaces: list[Interface] = field(default_factory=list)
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)


def parse(text: str, macs: dict[str, str]) -> Network | None:
    """The config in `text` (None: it says nothing, or `config: disabled`); `macs`: MAC address -> the
    machine's interface of that address."""
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
        net = _v1(doc, macs)
    elif version == 2:
        net = _v2(doc, macs)
    else:
        raise SeedError(f"version {version!r}: only versions 1 and 2 are read")
    if not net.interfaces:
        raise SeedError("it configures no interface")
    return net


def _v2(doc: dict[str, Any], macs: dict[str, str]) -> Network:
    unsupported = [kind for kind in UNSUPPORTED_V2 if doc.get(kind)]
    if unsupported:
        raise SeedError(f"not supported: {', '.join(unsupported)}")
    net = Network()
    for key, conf in _mapping(doc.get("ethernets") or {}, "ethernets").items():
        conf = _mapping(conf or {}, f"ethernets.{key}")
        match = _mapping(conf.get("match") or {}, f"ethernets.{key}.match")
        if set(match) - {"macaddress", "name"}:
            raise SeedError(f"ethernets.{key}: matching by {', '.join(set(match) - {'macaddress', 'name'})} "
                            "is not supported (by name or macaddress)")  # fmt: skip
        iface = Interface(_name(str(match.get("name") or key), match.get("macaddress"), macs),
                          dhcp4=_yes(conf.get("dhcp4")), dhcp6=_yes(conf.get("dhcp6")),
                          slaac=_yes(conf.get("accept-ra")), mtu=_mtu(conf.get("mtu")))  # fmt: skip
        for address in _list(conf.get("addresses")):
            iface.addresses.append(_cidr(next(iter(address)) if isinstance(address, dict) else address))
        iface.gateway4 = _address(conf.get("gateway4"), 4)
        iface.gateway6 = _address(conf.get("gateway6"), 6)
        for route in _list(conf.get("routes")):
            route = _mapping(route, f"ethernets.{key}.routes")
            _route(iface, str(route.get("to", "")), route.get("via"))
        servers = _mapping(conf.get("nameservers") or {}, f"ethernets.{key}.nameservers")
        _resolvers(net, servers.get("addresses"), servers.get("search"))
        net.interfaces.append(iface)
    return net


def _v1(doc: dict[str, Any], macs: dict[str, str]) -> Network:
    net = Network()
    for item in _list(doc.get("config")):
        item = _mapping(item, "config")
        kind = item.get("type")
        if kind == "nameserver":
            _resolvers(net, item.get("address"), item.get("search"))
            continue
        if kind != "physical":
            raise SeedError(f"not supported: type {kind}")
        iface = Interface(_name(str(item.get("name", "")), item.get("mac_address"), macs), mtu=_mtu(item.get("mtu")))
        for subnet in _list(item.get("subnets")):
            _subnet(net, iface, _mapping(subnet, f"{iface.name}.subnets"))
        net.interfaces.append(iface)
    return net


def _subnet(net: Network, iface: Interface, subnet: dict[str, Any]) -> None:
    sort = subnet.get("type")
    if sort in ("dhcp", "dhcp4"):
        iface.dhcp4 = True
    elif sort in ("dhcp6", "ipv6_dhcpv6-stateful"):
        iface.dhcp6 = True
    elif sort in ("ipv6_slaac", "ipv6_dhcpv6-stateless"):
        iface.slaac = True
    elif sort in ("static", "static6"):
        address, mask = str(subnet.get("address", "")), subnet.get("netmask", subnet.get("prefix"))
        if "/" not in address:
            if mask is None and ":" not in address:
                raise SeedError(f"{address}: give its prefix (such as {address}/24) or a netmask")
            address = f"{address}/{64 if mask is None else mask}"  # IPv6 without a prefix: /64, as cloud-init
        iface.addresses.append(_cidr(address))
        if subnet.get("gateway") is not None:
            _route(iface, "default", subnet["gateway"])
        _resolvers(net, subnet.get("dns_nameservers"), subnet.get("dns_search"))
    else:
        raise SeedError(f"{iface.name}: subnet type {sort!r} is not supported")
    for route in _list(subnet.get("routes")):
        route = _mapping(route, f"{iface.name}.routes")
        prefix = route.get("prefix", route.get("netmask"))
        _route(iface, f"{route.get('network', '')}/{'' if prefix is None else prefix}", route.get("gateway"))


def _route(iface: Interface, to: str, via: Any) -> None:
    if to in DEFAULT_ROUTES:
        gateway = _address(via)
        if ipaddress.ip_address(gateway).version == 4:
            iface.gateway4 = gateway
        else:
            iface.gateway6 = gateway
    else:
        iface.routes.append(
            (str(ipaddress.ip_network(_cidr(to), strict=False)), None if via is None else _address(via))
        )


def _resolvers(net: Network, addresses: Any, search: Any) -> None:
    net.nameservers += [_address(a) for a in _list(addresses)]
    for domain in _list(search):
        if not DOMAIN.fullmatch(str(domain)):
            raise SeedError(f"{domain!r} is no domain name")
        net.search.append(str(domain))


def _name(name: str, mac: Any, macs: dict[str, str]) -> str:
    """The machine's interface the config means: by MAC address, else by name; one it lacks is refused."""
    if mac:
        found = macs.get(str(mac).lower())
        if found is None:
            raise SeedError(f"no interface has the MAC address {mac}")
        return found
    if not IFACE_NAME.fullmatch(name):  # it lands in `up` commands a shell runs
        raise SeedError(f"{name!r} is no interface name")
    if name not in macs.values():
        raise SeedError(f"this machine has no interface {name} (it has {', '.join(sorted(macs.values()))})")
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
        for stanza in _stanzas(iface):
            lines += stanza
    return "\n".join(lines) + "\n"


def _stanzas(iface: Interface) -> list[list[str]]:
    """An interface's stanzas: one per method and further address (ifupdown applies them all in order)."""
    name, stanzas = iface.name, []
    for family, version, dhcp, gateway in (("inet", 4, iface.dhcp4, iface.gateway4),
                                           ("inet6", 6, iface.dhcp6, iface.gateway6)):  # fmt: skip
        addresses = [a for a in iface.addresses if ipaddress.ip_interface(a).version == version]
        family_stanzas = [[f"iface {name} {family} dhcp"]] if dhcp else []
        if version == 6 and iface.slaac and not dhcp:
            family_stanzas.append([f"iface {name} inet6 auto"])
        for n, address in enumerate(addresses):
            stanza = [f"iface {name} {family} static", f"    address {address}"]
            if n == 0 and gateway and not dhcp:  # with DHCP, its router is the gateway
                stanza.append(f"    gateway {gateway}")
            family_stanzas.append(stanza)
        routes = [f"    up ip -{version} route replace {to}{f' via {via}' if via else ''} dev {name}"
                  for to, via in iface.routes if ipaddress.ip_network(to).version == version]  # fmt: skip
        if family_stanzas:
            family_stanzas[-1] += routes  # after the last address is up: a gateway may be reachable only by it
        stanzas += family_stanzas
    if not stanzas:
        stanzas.append([f"iface {name} inet manual"])  # up, with no address
    if iface.mtu:
        stanzas[0].insert(1, f"    pre-up ip link set dev {name} mtu {iface.mtu}")  # any method, either family
    return stanzas


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
        ways = ["DHCP"] * iface.dhcp4 + ["DHCPv6"] * iface.dhcp6 + ["SLAAC"] * iface.slaac + iface.addresses
        gateways = [g for g in (iface.gateway4, iface.gateway6) if g]
        said.append(f"{iface.name}: {', '.join(ways) or 'up, no address'}"
                    + (f" via {', '.join(gateways)}" if gateways else ""))  # fmt: skip
    return said


def _macs() -> dict[str, str]:
    found = {}
    for dev in Path("/sys/class/net").iterdir():
        if dev.name == "lo":
            continue
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


def main(argv: list[str], macs: dict[str, str] | None = None) -> int:
    if not 2 <= len(argv) <= 4:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    interfaces = Path(argv[2] if len(argv) > 2 else "/etc/network/interfaces")
    resolv = Path(argv[3] if len(argv) > 3 else "/etc/resolv.conf")
    try:
        net = parse(Path(argv[1]).read_text(), _macs() if macs is None else macs)
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
