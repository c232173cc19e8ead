"""TLS for the HTTP and voice ports, from a configured certificate and key (PEM).

Browsers grant the microphone only to pages on https (or localhost), and an https page may
only open wss:// sockets: an installer's laptop on the LAN needs both ports on TLS to try the
voice test in the console.
"""

from __future__ import annotations

import ssl


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer) for this certificate chain and key; raises OSError or
    ssl.SSLError when they cannot be used."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def tls_problem(cert_file: str, key_file: str) -> str | None:
    """Why this pair cannot serve TLS, or None."""
    if bool(cert_file) != bool(key_file):
        return "TLS needs both tls_cert_file and tls_key_file"
    if not cert_file:
        return None
    try:
        server_context(cert_file, key_file)
    except FileNotFoundError as exc:
        return f"file {exc.filename} does not exist"
    except PermissionError as exc:
        return f"file {exc.filename} cannot be read ({exc.strerror})"
    except (OSError, ssl.SSLError) as exc:
        return f"{cert_file} and {key_file} are not a usable PEM certificate chain and key: {exc}"
    return None
