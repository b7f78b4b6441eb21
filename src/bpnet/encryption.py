"""Model files encrypted with TAO's ``-k KEY``: authenticated encryption of the whole file.

With a key, every model file a command writes (``.pth`` checkpoints, the exported ONNX model:
bpnet's ``.etlt``) is encrypted; without one, files stay plain. Readers tell the two apart by
the header, so a plain file reads with or without a key. An encrypted file is::

    b"BPNETENC" | version (1 byte) | salt (16) | nonce (12) | key check (16) | AES-256-GCM
    ciphertext of the plain file, with its 16-byte tag

The key (any text) is stretched with scrypt and the file's random salt into 48 bytes: 32 are
the AES key, 16 the key check, which tells a wrong key from a changed file (AES-GCM alone
cannot). The header is authenticated with the ciphertext: a single flipped byte anywhere is
found. ``cryptography`` is imported only when a key is used.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from bpnet.errors import BpnetError
from bpnet.io import write_with_atomic

MAGIC = b"BPNETENC"
VERSION = 1
_SALT, _NONCE, _CHECK, _TAG = 16, 12, 16, 16
HEADER_SIZE = len(MAGIC) + 1 + _SALT + _NONCE + _CHECK
# scrypt's cost: 2**15 x 8 x 128 bytes = 32 MiB and about 0.1 s per file, for every guess too
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
# AES-GCM in one call takes less than 2**31 bytes (cryptography's limit)
MAX_SIZE = 2**31 - 1 - _TAG


def is_encrypted(data: bytes) -> bool:
    """True when ``data`` (a whole file, or its first bytes) starts with the header's magic."""
    return data[: len(MAGIC)] == MAGIC


def is_encrypted_file(path: str | os.PathLike) -> bool:
    """True when the file exists and starts with the header's magic."""
    try:
        with open(path, "rb") as f:
            return is_encrypted(f.read(len(MAGIC)))
    except OSError:
        return False


def _check_key(key: str) -> bytes:
    if not isinstance(key, str) or not key:
        raise BpnetError("-k: the key is empty; pass the key text, or leave -k out")
    return key.encode("utf-8")


def _derive(key: str, salt: bytes) -> tuple[bytes, bytes]:
    """(AES key, key check) from the key text and the file's salt."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(salt=salt, length=32 + _CHECK, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    stretched = kdf.derive(_check_key(key))
    return stretched[:32], stretched[32:]


def encrypt(data: bytes, key: str, source: str = "the model") -> bytes:
    """The encrypted form of ``data`` (module docstring); a fresh salt and nonce every call.

    Raises:
        BpnetError: an empty key, or data too large to encrypt in one piece.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if len(data) > MAX_SIZE:
        raise BpnetError(
            f"{source}: {len(data)} bytes is more than -k encryption takes ({MAX_SIZE}); "
            "write it without -k"
        )
    salt, nonce = os.urandom(_SALT), os.urandom(_NONCE)
    aes_key, check = _derive(key, salt)
    header = MAGIC + bytes([VERSION]) + salt + nonce + check
    return header + AESGCM(aes_key).encrypt(nonce, data, header)


def decrypt(data: bytes, key: str | None, source: str) -> bytes:
    """The plain content of a model file: ``data`` itself when it is not encrypted.

    Args:
        data: the whole file.
        key: the ``-k`` key (None: none was given).
        source: the file, for the messages.

    Raises:
        BpnetError: encrypted but no key, a wrong key, a changed or cut-short file, or a
            header version newer than this bpnet reads (one line each, naming ``source``).
    """
    if not is_encrypted(data):
        return data
    if key is None:
        raise BpnetError(
            f"{source}: this model is encrypted; pass the key it was written with (-k KEY)"
        )
    if len(data) < HEADER_SIZE + _TAG:
        raise BpnetError(
            f"{source}: encrypted model cut short ({len(data)} bytes); use an intact copy"
        )
    version = data[len(MAGIC)]
    if version != VERSION:
        raise BpnetError(
            f"{source}: encryption format version {version} is not one this bpnet reads "
            f"({VERSION}); upgrade bpnet or use an intact copy"
        )
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    start = len(MAGIC) + 1
    salt = data[start : start + _SALT]
    nonce = data[start + _SALT : start + _SALT + _NONCE]
    stored_check = data[start + _SALT + _NONCE : HEADER_SIZE]
    aes_key, check = _derive(key, salt)
    if not hmac.compare_digest(check, stored_check):
        raise BpnetError(
            f"{source}: wrong key (-k): this model was encrypted with another one; pass the key "
            "it was written with"
        )
    try:
        return AESGCM(aes_key).decrypt(nonce, data[HEADER_SIZE:], data[:HEADER_SIZE])
    except InvalidTag:
        raise BpnetError(
            f"{source}: the encrypted model was changed or damaged after it was written (its "
            "authentication tag does not match); use an intact copy"
        ) from None


def read_model_bytes(path: str | os.PathLike, key: str | None) -> bytes:
    """A model file's plain content (decrypted with ``key`` when it is encrypted).

    Raises:
        BpnetError: the file is missing or unreadable, or :func:`decrypt` refuses it.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BpnetError(f"{path}: model file not found; check the path") from None
    except OSError as err:
        raise BpnetError(f"{path}: cannot read the model ({err.strerror or err})") from None
    return decrypt(data, key, str(path))


def write_model_bytes(path: str | os.PathLike, data: bytes, key: str | None) -> None:
    """Write a model file atomically: ``data`` encrypted with ``key``, or plain without one."""
    blob = data if key is None else encrypt(data, key, str(path))
    write_with_atomic(path, lambda tmp: tmp.write_bytes(blob))


__all__ = [
    "MAGIC",
    "decrypt",
    "encrypt",
    "is_encrypted",
    "is_encrypted_file",
    "read_model_bytes",
    "write_model_bytes",
]
