"""Blob codecs: a self-describing header, then zstd or raw, then AES-256-GCM or plain.

Header (12 bytes, little-endian): magic 0xCB, version 1, compression id,
cipher id, key id (u32), raw length (u32). Reading needs no configuration
beyond the keys (and, for a blob compressed against a dictionary, that
dictionary, which the pool holds): the header names everything applied.

An encrypted body is a random 12-byte nonce, then the ciphertext and its
16-byte tag; the header is authenticated with it, so a changed header fails
like changed data. Random nonces are safe for about 2^32 blobs per key
(NIST SP 800-38D): 4 PiB of 1 MiB chunks.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CorruptBlob, InvalidArgument, Locked
from .keyring import DeploymentKeys

MAGIC = 0xCB
VERSION = 1
HEADER = struct.Struct("<BBBBII")
HEADER_SIZE = HEADER.size

RAW = 0
ZSTD = 1
ZSTD_DICT = 2  # zstd against a pool's dictionary, whose id the zstd frame names (zdict.py)
NO_CIPHER = 0
AES_GCM = 1
NONCE = 12

# Magic numbers of formats that are already compressed; storing them raw
# saves the CPU that zstd would spend for a gain of well under 1%. A pool's
# configuration may take names off this list (to compress them anyway).
FORMATS: dict[str, tuple[bytes, ...]] = {
    "gzip": (b"\x1f\x8b",),
    "bzip2": (b"BZh",),
    "xz": (b"\xfd7zXZ\x00",),
    "zstd": (b"\x28\xb5\x2f\xfd",),
    "lz4": (b"\x04\x22\x4d\x18",),
    "zip": (b"PK\x03\x04",),  # also jar, docx, odt, apk
    "7z": (b"7z\xbc\xaf\x27\x1c",),
    "rar": (b"Rar!\x1a\x07",),
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "gif": (b"GIF8",),
    "riff": (b"RIFF",),  # webp, avi, wav (often compressed; the probe decides the rest)
    "ogg": (b"OggS",),
    "flac": (b"fLaC",),
    "mp3": (b"ID3",),
    "matroska": (b"\x1aE\xdf\xa3",),  # mkv, webm
    "woff": (b"wOFF", b"wOF2"),
    "mp4": (),  # by its box type at offset 4, below
}
_MP4_BRANDS = (b"ftyp",)
# The probe: three 4 KiB samples through zstd's fastest level, about 15 µs
# (a byte-entropy count in Python took 110 µs). Below 64 KiB compressing the
# chunk itself costs about as much as probing it.
_PROBE_SAMPLE = 4096
_PROBE_MIN = 64 << 10
_PROBE_RATIO = 0.97  # a sample that shrinks less than 3% is taken as already compressed
_probes = threading.local()  # one level-1 compressor per thread


def magics(names: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(m for name in names for m in FORMATS[name])


_ALL_MAGIC = magics(tuple(FORMATS))


def looks_compressed(data: bytes | memoryview, magic: tuple[bytes, ...] = _ALL_MAGIC, mp4: bool = True,
                     probe: bool = True) -> bool:  # fmt: skip
    """Decide by magic number and a cheap probe whether compressing is futile."""
    head = bytes(data[:16])
    if head.startswith(magic) or (mp4 and head[4:8] in _MP4_BRANDS):
        return True
    n = len(data)
    if not probe or n < _PROBE_MIN:
        return False
    view = memoryview(data)
    sample = b"".join(bytes(view[s : s + _PROBE_SAMPLE]) for s in (0, n // 2, n - _PROBE_SAMPLE))
    probe_c = getattr(_probes, "c", None)
    if probe_c is None:
        probe_c = _probes.c = zstandard.ZstdCompressor(level=1)
    return len(probe_c.compress(sample)) > _PROBE_RATIO * len(sample)


@dataclass(frozen=True)
class CodecConfig:
    """How new blobs are encoded; old blobs describe themselves."""

    level: int = 3
    never: tuple[str, ...] = tuple(FORMATS)  # formats stored without trying zstd
    probe: bool = True  # also skip chunks whose samples do not shrink
    _magic: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _mp4: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 22:
            raise InvalidArgument(f"zstd level must be 1 to 22, not {self.level}")
        unknown = sorted(set(self.never) - set(FORMATS))
        if unknown:
            raise InvalidArgument(f"unknown formats {', '.join(unknown)}; known: {', '.join(FORMATS)}")
        # Derived once: `incompressible` runs for every chunk stored.
        object.__setattr__(self, "_magic", magics(self.never))
        object.__setattr__(self, "_mp4", "mp4" in self.never)

    @classmethod
    def from_json(cls, text: str | None) -> CodecConfig:
        doc = json.loads(text or "{}")
        never = tuple(doc.get("never", FORMATS))
        return cls(level=int(doc.get("level", 3)), never=never, probe=bool(doc.get("probe", True)))

    def to_json(self) -> str:
        doc: dict[str, object] = {"level": self.level, "probe": self.probe}
        if self.never != tuple(FORMATS):  # the default list may grow with new versions
            doc["never"] = list(self.never)
        return json.dumps(doc)

    def incompressible(self, data: bytes | memoryview) -> bool:
        return looks_compressed(data, self._magic, self._mp4, self.probe)


class Codec:
    """Encodes and decodes blobs. Thread-safe: zstd contexts are per thread; AESGCM keeps no state."""

    def __init__(self, config: CodecConfig | None = None, keys: DeploymentKeys | None = None):
        self.config = config or CodecConfig()
        self._local = threading.local()
        self._ciphers = {kid: AESGCM(key) for kid, key in (keys.data_keys.items() if keys else ())}
        self._current = keys.current if keys else None

    def _compressor(self) -> zstandard.ZstdCompressor:
        level = self.config.level
        cached = getattr(self._local, "c", None)
        if cached is None or cached[0] != level:
            cached = self._local.c = (level, zstandard.ZstdCompressor(level=level))
        return cached[1]

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, plain: bytes | memoryview, *, compress: bool = True) -> bytes:
        return b"".join(self.encode_parts(plain, compress=compress))

    def encode_parts(self, plain: bytes | memoryview, *, compress: bool = True,
                     dictionary: bytes | None = None) -> tuple[bytes, bytes | memoryview]:  # fmt: skip
        """Header and body apart: a pack joins them once, instead of copying each blob twice.

        `dictionary`: a trained zstd dictionary to compress against (small blobs).
        """
        raw_length = len(plain)
        body: bytes | memoryview = plain
        method = RAW
        # Below 4 KiB trying zstd costs less than asking whether to (a magic number check, ~7 µs).
        if compress and raw_length >= 64 and (raw_length < 4096 or not self.config.incompressible(plain)):
            compressor = self._compressor() if dictionary is None else self._dict_compressor(dictionary)
            packed = compressor.compress(plain)
            if len(packed) < raw_length:
                body, method = packed, ZSTD if dictionary is None else ZSTD_DICT
        if self._current is None:
            return HEADER.pack(MAGIC, VERSION, method, NO_CIPHER, 0, raw_length), body
        header = HEADER.pack(MAGIC, VERSION, method, AES_GCM, self._current, raw_length)
        nonce = os.urandom(NONCE)
        return header, nonce + self._ciphers[self._current].encrypt(nonce, bytes(body), header)

    def decode(self, blob: bytes | memoryview, dictionaries: Callable[[int], bytes] | None = None) -> bytes:
        """The plaintext; `dictionaries` gives a dictionary's bytes by its id, for blobs compressed against one."""
        if len(blob) < HEADER_SIZE:
            raise CorruptBlob("blob shorter than its header")
        magic, version, method, cipher, key_id, raw_length = HEADER.unpack_from(blob)
        if magic != MAGIC or version != VERSION:
            raise CorruptBlob("blob header has a wrong magic or version")
        body: bytes | memoryview = memoryview(blob)[HEADER_SIZE:]
        if cipher == AES_GCM:
            body = self._decrypt(blob, key_id)
        elif cipher != NO_CIPHER:
            raise CorruptBlob(f"blob uses cipher {cipher}, which this version cannot read")
        if method == RAW:
            plain = bytes(body)
        elif method == ZSTD:
            try:
                plain = self._decompressor().decompress(body, max_output_size=raw_length)
            except zstandard.ZstdError as e:
                raise CorruptBlob(f"blob does not decompress: {e}") from e
        elif method == ZSTD_DICT:
            plain = self._decode_with_dictionary(body, raw_length, dictionaries)
        else:
            raise CorruptBlob(f"blob uses compression {method}, which this version cannot read")
        if len(plain) != raw_length:
            raise CorruptBlob("blob decodes to the wrong length")
        return plain

    def _decode_with_dictionary(self, body: bytes | memoryview, raw_length: int,
                                dictionaries: Callable[[int], bytes] | None) -> bytes:  # fmt: skip
        try:
            dict_id = zstandard.get_frame_parameters(body).dict_id
        except zstandard.ZstdError as e:
            raise CorruptBlob(f"blob does not decompress: {e}") from e
        if dictionaries is None:
            raise CorruptBlob(f"blob is compressed against dictionary {dict_id}, and no pool is at hand to give it")
        try:
            return self._dict_decompressor(dictionaries(dict_id)).decompress(body, max_output_size=raw_length)
        except zstandard.ZstdError as e:
            raise CorruptBlob(f"blob does not decompress with dictionary {dict_id}: {e}") from e

    def _dict_compressor(self, dictionary: bytes) -> zstandard.ZstdCompressor:
        # Per thread and dictionary, keyed by the bytes themselves (their hash is computed once).
        cache = self._local.__dict__.setdefault("dc", {})
        level = self.config.level
        c: zstandard.ZstdCompressor | None = cache.get((dictionary, level))
        if c is None:
            c = cache[(dictionary, level)] = zstandard.ZstdCompressor(
                level=level, dict_data=zstandard.ZstdCompressionDict(dictionary)
            )
        return c

    def _dict_decompressor(self, dictionary: bytes) -> zstandard.ZstdDecompressor:
        cache = self._local.__dict__.setdefault("dd", {})
        d: zstandard.ZstdDecompressor | None = cache.get(dictionary)
        if d is None:
            d = cache[dictionary] = zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(dictionary))
        return d

    def _decrypt(self, blob: bytes | memoryview, key_id: int) -> bytes:
        aes = self._ciphers.get(key_id)
        if aes is None:
            raise Locked(f"blob is encrypted with key {key_id}, which this deployment has not unlocked")
        view = memoryview(blob)
        try:
            return aes.decrypt(bytes(view[HEADER_SIZE : HEADER_SIZE + NONCE]), bytes(view[HEADER_SIZE + NONCE :]),
                               bytes(view[:HEADER_SIZE]))  # fmt: skip
        except InvalidTag as e:
            raise CorruptBlob("blob fails its authentication tag") from e


def raw_length_of(blob: bytes | memoryview) -> int:
    return int(HEADER.unpack_from(blob)[5])
