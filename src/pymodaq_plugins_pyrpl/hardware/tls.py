"""TLS for servers on a lab network: the server's and the client's SSL contexts, certificate
fingerprints (docs/protocol.md, *Security*).

A fingerprint is the SHA-256 of the certificate's DER bytes, written as 64 lowercase hex digits;
:func:`normalize_fingerprint` also accepts upper case and the ``AB:CD:...`` form.
"""
from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path

_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER-encoded certificate."""
    return hashlib.sha256(der).hexdigest()


def file_fingerprint(cert_file: Path) -> str:
    """The fingerprint of the first certificate of a PEM file (the server's own, in a chain).

    Raises ValueError if the file holds no PEM certificate.
    """
    match = _PEM_CERTIFICATE.search(cert_file.read_text())
    if match is None:
        raise ValueError(f"{cert_file} holds no PEM certificate")
    return fingerprint(ssl.PEM_cert_to_DER_cert(match.group(0)))


def normalize_fingerprint(text: str) -> str:
    """``text`` as 64 lowercase hex digits (colons and spaces dropped); ValueError if it is not a
    SHA-256 fingerprint."""
    digits = re.sub(r"[\s:]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ValueError(f"a TLS fingerprint is the SHA-256 of the server certificate, 64 hex "
                         f"digits (colons allowed), not {text!r}")
    return digits


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The server's context (TLS 1.2 or later). Raises OSError or ssl.SSLError if the certificate
    or the key cannot be loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def client_context(ca_file: str | None, pinned: str | None) -> ssl.SSLContext:
    """The client's context (TLS 1.2 or later).

    Without a pinned fingerprint the server's certificate chain is verified against ``ca_file``
    (default: the system's CAs) and its name against the host the client connects to. With one,
    the fingerprint check (done by the caller after the handshake) replaces the host name check,
    and the chain is verified only if ``ca_file`` is given. Raises OSError or ssl.SSLError if
    ``ca_file`` cannot be loaded.
    """
    if pinned is None:
        context = ssl.create_default_context(cafile=ca_file)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        if ca_file:
            context.load_verify_locations(ca_file)
        else:
            context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
