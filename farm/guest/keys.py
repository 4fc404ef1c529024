"""The farm's own SSH client key, made once per cache and authorised in every guest image."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..errors import InputError
from ..fsutil import private_dir


@dataclass(frozen=True)
class ClientKey:
    path: Path
    public: str  # "ssh-ed25519 AAAA... farm"

    def load(self) -> paramiko.PKey:
        """The private key, parsed once per process (every guest boot needs it)."""
        if self.path not in _LOADED:
            try:
                _LOADED[self.path] = paramiko.Ed25519Key.from_private_key_file(str(self.path))
            except (OSError, paramiko.SSHException, ValueError) as e:
                raise InputError(f"{self.path}: cannot read the farm's SSH key: {e}") from None
        return _LOADED[self.path]


_LOADED: dict[Path, paramiko.PKey] = {}


def client_key(folder: Path) -> ClientKey:
    """Load the key pair in `folder`, making it on first use (private file 0600)."""
    private = folder / "id_ed25519"
    public = folder / "id_ed25519.pub"
    private_dir(folder)
    if not private.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        tmp = private.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        public.write_text(pub.decode() + " farm\n")
        os.replace(tmp, private)  # last, so a half-made pair is never taken for a whole one
    try:
        text = public.read_text().strip()
    except OSError as e:
        raise InputError(f"{public}: cannot read the farm's public key: {e}") from None
    return ClientKey(private, text)
