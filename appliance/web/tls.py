"""The web child's TLS certificate: self-signed, made once (first start with ``web.tls = true``), kept.

A device on a LAN has no public name a CA would sign, so it signs its own: an ECDSA P-256 key and a
certificate for its names (device name, host name, ``NAME.local``, ``localhost``) and loopback
addresses, valid for 10 years. Browsers warn once; the operator can compare the fingerprint logged at
start (``web.tls_certificate sha256=...``) with what the browser shows. Both files live in
``STATE_DIR/tls/`` (the key readable by the service user only) and are reused while they load and the
certificate has more than a month left; replace them with real ones to use a proper CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CERT_NAME", "KEY_NAME", "ensure_certificate", "fingerprint"]

log = logging.getLogger("appliance.web")

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
_VALID = datetime.timedelta(days=3650)
_RENEW_BEFORE = datetime.timedelta(days=30)


def ensure_certificate(
    directory: Path, names: Iterable[str], *, now: datetime.datetime | None = None
) -> tuple[Path, Path]:
    """The certificate and key files in ``directory``, made first when missing, unreadable or expiring.

    Args:
        directory: where they live (created, mode 0700).
        names: DNS names for the subjectAltName (the first is the subject's common name).
        now: the time to sign at (tests).

    Returns:
        (certificate path, key path), PEM.

    Raises:
        OSError: the directory or files can't be written.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    if _usable(cert_path, key_path, now):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    dns = list(dict.fromkeys(n.strip().lower() for n in [*names, "localhost"] if n.strip()))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("web.tls_generated cert=%s names=%s", cert_path, ",".join(dns))
    return cert_path, key_path


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint of a PEM certificate, as browsers show it (``AB:CD:...``)."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _usable(cert_path: Path, key_path: Path, now: datetime.datetime) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    matches = cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
    return matches and cert.not_valid_after_utc - now > _RENEW_BEFORE


def _write(path: Path, data: bytes, mode: int) -> None:
    # Written aside and renamed, so a crash never leaves half a key behind.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
