"""Chunking, codecs, packs, trees and content lists, each on its own."""

from __future__ import annotations

import os
import random

import pytest

from engine import chunker
from engine.codec import Codec, CodecConfig, looks_compressed
from engine.content import ContentReader, hole, pack_extents, unpack_extents
from engine.errors import CorruptBlob, InvalidArgument, InvalidName, NameTooLong
from engine.ids import HOLE, IdKey
from engine.meta import Kind, check_name
from engine.packs import PackBuilder, read_index
from engine.tree import Entry, deserialize, serialize


def _data(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def test_chunk_sizes_within_bounds() -> None:
    data = _data(24 << 20)
    chunks = list(chunker.cut(data))
    assert b"".join(chunks) == data
    assert all(len(c) <= chunker.MAX_SIZE for c in chunks)
    assert all(len(c) >= chunker.MIN_SIZE for c in chunks[:-1])
    mean = len(data) / len(chunks)
    assert 700 << 10 < mean < 1500 << 10, mean


def test_stream_chunker_cuts_like_whole_buffer() -> None:
    data = _data(20 << 20, seed=2)
    whole = [bytes(c) for c in chunker.cut(data)]
    stream = chunker.StreamChunker()
    got: list[bytes] = []
    rnd = random.Random(3)
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 3 << 20)
        got += stream.feed(data[pos : pos + step])
        pos += step
    got += stream.finish()
    assert got == whole


def test_insert_shifts_only_nearby_chunks() -> None:
    data = _data(16 << 20, seed=4)
    changed = data[: 8 << 20] + b"inserted" + data[8 << 20 :]
    a = {bytes(c) for c in chunker.cut(data)}
    b = {bytes(c) for c in chunker.cut(changed)}
    assert len(a & b) >= len(a) - 2


def test_codec_roundtrip_and_raw_for_compressed() -> None:
    codec = Codec()
    text = b"the quick brown fox " * 5000
    blob = codec.encode(text)
    assert len(blob) < len(text) // 10
    assert codec.decode(blob) == text
    noise = os.urandom(1 << 20)
    assert looks_compressed(noise)
    assert len(codec.encode(noise)) == len(noise) + 12
    gz = b"\x1f\x8b" + text
    assert looks_compressed(gz)
    assert len(codec.encode(gz)) == len(gz) + 12  # gzip by its magic: stored raw


def test_configured_formats_are_compressed_or_not() -> None:
    text = b"the quick brown fox " * 5000
    gz = b"\x1f\x8b" + text
    only_jpeg = Codec(CodecConfig(never=("jpeg",)))
    assert len(only_jpeg.encode(gz)) < len(gz) // 10  # gzip is off the list: compressed
    assert len(only_jpeg.encode(b"\xff\xd8\xff" + text)) == len(text) + 15
    noise = os.urandom(1 << 20)
    no_probe = Codec(CodecConfig(never=(), probe=False))
    assert no_probe.decode(no_probe.encode(noise)) == noise  # tried, did not shrink, stored raw
    config = CodecConfig.from_json(CodecConfig(level=5, never=("png", "zip"), probe=False).to_json())
    assert config == CodecConfig(level=5, never=("png", "zip"), probe=False)
    assert CodecConfig.from_json(CodecConfig().to_json()) == CodecConfig()
    with pytest.raises(InvalidArgument):
        CodecConfig(never=("jpeg", "nonsense"))


@pytest.mark.parametrize("damage", [lambda b: b[:5], lambda b: b"\x00" + b[1:], lambda b: b[:12] + b"\xff" * 20])
def test_codec_rejects_damaged_blobs(damage) -> None:  # type: ignore[no-untyped-def]
    codec = Codec()
    blob = codec.encode(b"hello world " * 100)
    with pytest.raises(CorruptBlob):
        codec.decode(damage(blob))


def test_keyed_ids_differ_per_key() -> None:
    a, b = IdKey(b"a" * 32), IdKey(b"b" * 32)
    assert a.id_of(b"x") != b.id_of(b"x")
    assert a.id_of(b"x") == IdKey(b"a" * 32).id_of(b"x")


def test_pack_index_roundtrip() -> None:
    codec = Codec()
    builder = PackBuilder()
    blobs = [codec.encode_parts(os.urandom(100) * i) for i in range(1, 20)]
    for i, blob in enumerate(blobs):
        builder.add(bytes([i]) * 32, 0, blob, i)
    name, data = builder.seal(codec)
    entries = read_index(codec, data, len(data))
    assert [data[e.offset : e.offset + e.length] for e in entries] == [h + b for h, b in blobs]
    assert len(name) == 64
    with pytest.raises(CorruptBlob):
        read_index(codec, data[:-3], len(data) - 3)


def test_tree_serialization_is_deterministic_and_roundtrips() -> None:
    entries = [
        Entry(b"b\n\xff odd", Kind.FILE, 0o4755, 1000, 1000, 0, 5, 1, 2, 3, 10, 1, ((b"user.a", b"1"),), b"x" * 36),
        Entry(b"a", Kind.DIR, 0o1777, 0, 0, 0, 0, -5, 2**62, 3, 11, 2, (), b"t" * 32),
        Entry(b"dev", Kind.BLK, 0o600, 0, 6, (8 << 8) | 1, 0, 1, 2, 3, 12, 1),
    ]
    data = serialize(entries)
    assert serialize(list(reversed(entries))) == data
    assert deserialize(data) == sorted(entries, key=lambda e: e.name)
    with pytest.raises(CorruptBlob):
        deserialize(data[:-1])


def test_content_reader_with_holes() -> None:
    store = {b"a" * 32: b"A" * 10, b"b" * 32: b"B" * 5}
    extents = [(b"a" * 32, 10), *hole(7), (b"b" * 32, 5)]
    assert unpack_extents(pack_extents(extents)) == extents
    reader = ContentReader(type("S", (), {"get": lambda self, i: store[i]})(), extents)
    assert reader.size == 22
    assert reader.read(0, 100) == b"A" * 10 + b"\0" * 7 + b"B" * 5
    assert reader.read(8, 4) == b"AA\0\0"
    assert reader.read(20, 10) == b"BB"
    assert [s for s, _ in reader.data_ranges()] == [0, 17]
    assert hole(0) == [] and hole(5) == [(HOLE, 5)]


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b"])
def test_invalid_names(name: bytes) -> None:
    with pytest.raises(InvalidName):
        check_name(name)


def test_name_lengths() -> None:
    assert check_name(b"x" * 255)
    with pytest.raises(NameTooLong):
        check_name(b"x" * 256)
    assert check_name(b"\xff\xfe newline\n tab\t")
