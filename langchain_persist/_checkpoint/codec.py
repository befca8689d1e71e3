"""How channel values become bytes: LangGraph's serializer, zstd when it pays, and list tails.

A value is stored as ``(type, blob)`` where ``type`` is the serializer's type tag, suffixed with
``+zstd`` when the blob is compressed.  A list that only grew since a stored *base* version is
stored as a *tail*: msgpack encodes a list as an array header followed by its items, so when the
base's items are a byte prefix of the new items, the row keeps the new header and the appended
bytes only, and names its base.  The check is on bytes, so it holds however the list was built.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import zstandard

from .._errors import ConfigurationError, SerializationError, StorageError
from .._imports import load_object

ZSTD = "+zstd"
EMPTY = "empty"
COMPRESS_MIN_BYTES = 256
ZSTD_LEVEL = 3


class _Contexts(threading.local):
    """One zstd compressor and decompressor per thread (they are not thread-safe)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Contexts()


def pack(type_: str, raw: bytes) -> tuple[str, bytes]:
    """Compress ``raw`` with zstd when it is large enough and shrinks by at least 10%."""
    if len(raw) >= COMPRESS_MIN_BYTES:
        packed = _zstd.compressor.compress(raw)
        if len(packed) <= len(raw) * 0.9:
            return type_ + ZSTD, packed
    return type_, raw


def unpack(type_: str, blob: bytes, memo: Inflated | None = None) -> tuple[str, bytes]:
    """Undo `pack` (with ``memo``, a blob decompressed before is not decompressed again)."""
    if type_.endswith(ZSTD):
        if memo is not None and len(blob) >= MEMO_MIN_BYTES:
            return type_[: -len(ZSTD)], memo.inflate(blob)
        return type_[: -len(ZSTD)], _zstd.decompressor.decompress(blob)
    return type_, bytes(blob)


MEMO_MIN_BYTES = 512  # smaller blobs decompress faster than they are looked up
MEMO_MAX_BYTES = 32 * 1024 * 1024


class Inflated:
    """Blobs decompressed lately, by their compressed bytes: a checkpoint read again (the
    latest of a thread, at every run and every state read) and the base that the tails of a
    list share are decompressed once.  Keyed by content, not by row, so it can never answer
    for a row that changed; bounded in bytes, oldest out first."""

    def __init__(self, max_bytes: int = MEMO_MAX_BYTES) -> None:
        self._entries: dict[bytes, bytes] = {}
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def inflate(self, blob: bytes) -> bytes:
        """The decompressed bytes of a zstd blob."""
        key = bytes(blob)
        raw = self._entries.get(key)
        if raw is not None:
            return raw
        raw = _zstd.decompressor.decompress(key)
        with self._lock:
            if key not in self._entries:
                self._entries[key] = raw
                self._bytes += len(raw) + len(key)
                while self._bytes > self._max_bytes and self._entries:
                    old = next(iter(self._entries))
                    self._bytes -= len(self._entries.pop(old)) + len(old)
        return raw


def dump(serde: Any, value: Any, what: str) -> tuple[str, bytes]:
    """Serialize with LangGraph's serializer; a failure names ``what`` and the type."""
    try:
        return serde.dumps_typed(value)
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize {what}: a {type(value).__module__}.{type(value).__qualname__} "
            f"({exc}); store plain data, LangChain messages, pydantic models or dataclasses, "
            "or add the type to the serializer's allowlist"
        ) from exc


def _array_header(raw: bytes) -> int:
    """Length of the msgpack array header at the start of ``raw``, or 0 if it is no array."""
    if not raw:
        return 0
    first = raw[0]
    if 0x90 <= first <= 0x9F:
        return 1
    return {0xDC: 3, 0xDD: 5}.get(first, 0)


def is_list(raw: bytes) -> bool:
    """Whether ``raw`` is a msgpack array (a list that later versions may extend)."""
    return _array_header(raw) > 0


def tail_of(raw: bytes, base: bytes) -> bytes | None:
    """The tail that rebuilds ``raw`` from ``base`` (both msgpack arrays), or None."""
    head, base_head = _array_header(raw), _array_header(base)
    if not head or not base_head:
        return None
    body = memoryview(base)[base_head:]
    if len(raw) - head < len(body) or memoryview(raw)[head : head + len(body)] != body:
        return None
    return raw[:head] + raw[head + len(body) :]


def join_tail(base: bytes, tail: bytes) -> bytes:
    """Rebuild the full msgpack array from its base and a tail made by `tail_of`."""
    head = _array_header(tail)
    if not head:
        raise ValueError("corrupt list tail: no msgpack array header")
    return tail[:head] + base[_array_header(base) :] + tail[head:]


def load(serde: Any, type_: str, blob: bytes, what: object, memo: Inflated | None = None) -> Any:
    """Deserialize a stored value (`pack`'s form); a failure raises `SerializationError` naming
    ``what`` (formatted only then) and the fix."""
    return decode(serde, unpack(type_, blob, memo), what)


def decode(serde: Any, typed: tuple[str, bytes], what: object) -> Any:
    """``serde.loads_typed``; a failure raises `SerializationError` naming ``what`` and the fix
    (most often: the reader's serializer is not the one that wrote the value)."""
    try:
        return serde.loads_typed(typed)
    except Exception as exc:
        raise SerializationError(
            f"cannot decode {what}: {type(exc).__name__}: {exc} (it is stored as "
            f"{typed[0]!r}; read it with the serializer that wrote it, e.g. the saver's "
            "EncryptedSerializer: ResultsPersistenceService(url, serde=...), PersistSaver(url, "
            "serde=...), or --serde module:attr on the command line)"
        ) from exc


def load_value(
    serde: Any, row: tuple[Any, ...], where: object = "a checkpoint",
    memo: Inflated | None = None,
) -> Any:
    """Deserialize a stored channel value, ``(channel, version, type, blob, base_version,
    base_type, base_blob)``: a tail is joined to its base, read with it."""
    channel, version, type_, blob, base_version, base_type, base_blob = row
    stype, raw = unpack(type_, blob, memo)
    if base_version is not None:
        if base_blob is None:
            raise StorageError(
                f"channel {channel!r} version {version} is stored as what was appended to "
                f"version {base_version}, which is gone (deleted by another process while "
                "this thread ran?); resume from an earlier checkpoint"
            )
        raw = join_tail(unpack(base_type, base_blob, memo)[1], raw)
    try:
        return serde.loads_typed((stype, raw))
    except Exception:  # said once, when it fails: no message is built per value read
        return decode(serde, (stype, raw), f"channel {channel!r} of {where}")


def load_values(
    serde: Any,
    rows: Iterable[tuple[Any, ...]],
    where: object = "a checkpoint",
    memo: Inflated | None = None,
) -> dict[str, Any]:
    """The channel values of a checkpoint from its value rows (see `load_value`); channels
    stored empty are left out."""
    return {row[0]: load_value(serde, row, where, memo) for row in rows if row[2] != EMPTY}


def load_serde(spec: str) -> Any:
    """The serializer named by ``"module:attr"`` (``--serde``): a serializer object (with
    ``dumps_typed`` and ``loads_typed``), or a callable taking no arguments that returns one."""
    found = load_object(spec, "--serde")
    if not hasattr(found, "loads_typed") and callable(found):
        found = found()
    if not hasattr(found, "loads_typed") or not hasattr(found, "dumps_typed"):
        raise ConfigurationError(
            f"--serde {spec!r} is a {type(found).__name__}, not a serializer: name an object "
            "with dumps_typed and loads_typed (a LangGraph SerializerProtocol, such as "
            "EncryptedSerializer.from_pycryptodome_aes()), or a function returning one"
        )
    return found
