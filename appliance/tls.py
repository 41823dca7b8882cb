"""HTTPS for `cairn serve`: a certificate given to it, or a self-signed one made on the first start.

The made certificate and its key live in DATA/tls/ (the directory 0700, the key 0600), are made once
per data directory and never shipped in an image; its SHA-256 fingerprint is printed at each start,
so a browser's warning can be checked against it. A plain-HTTP listener, if asked for, only redirects.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .request import host_name

VALID_DAYS = 825  # the longest a browser accepts for a server certificate


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        der = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
        return "SHA256:" + hashlib.sha256(der).hexdigest()


def ensure_certificate(data_dir: Path, host: str) -> Tls:
    """DATA/tls/cert.pem and key.pem, made now if missing, for this machine's name, localhost and `host`."""
    folder = data_dir / "tls"
    tls = Tls(folder / "cert.pem", folder / "key.pem")
    if tls.cert.exists() and tls.key.exists():
        return tls
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = socket.gethostname() or "cairn"
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([name, "localhost"])]
    addresses = {"127.0.0.1", "::1"} | ({host} if _is_address(host) and host not in ("0.0.0.0", "::") else set())
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cairn appliance"),
        ]
    )
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    _write(tls.key, pem, 0o600)  # the key first: a certificate without its key is never left behind
    _write(tls.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return tls


def redirect_app(https_port: int) -> Any:
    """A WSGI app that sends every plain-HTTP request to the same path over HTTPS."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        name = host_name(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")) or "localhost"
        path = quote(environ.get("PATH_INFO", "/"), safe="/%:@!$&'()*+,;=-._~")
        query = environ.get("QUERY_STRING")
        target = f"https://{name}:{https_port}{path}" + (f"?{query}" if query else "")
        start_response("308 Permanent Redirect", [("Location", target), ("Content-Length", "0")])
        return []

    return app


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
