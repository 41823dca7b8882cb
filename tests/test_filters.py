"""Each filter does its one job: retry, ratelimit, verify, read cache; and open_backend stacks them in order.

Time is a fake clock that sleeping advances, so no test waits or measures.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from engine.errors import BackendError, InvalidArgument, ObjectNotFound, Throttled
from engine.storage import Backend, open_backend
from engine.storage.backend import Properties
from engine.storage.faults import FaultyBackend
from engine.storage.filter import Filter, find_layer
from engine.storage.local import LocalBackend
from engine.storage.memory import MemoryBackend
from engine.storage.ratelimit import RateLimit
from engine.storage.readcache import ReadCache
from engine.storage.retry import Retry
from engine.storage.s3 import S3Backend
from engine.storage.spool import Spool
from engine.storage.verify import Verify


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder(Filter):
    """Notes the clock at every put that reaches the backend."""

    def __init__(self, inner: Backend, clock: Clock, properties: Properties | None = None):
        super().__init__(inner)
        self.clock = clock
        self.starts: list[float] = []
        self._properties = properties

    @property
    def properties(self) -> Properties:
        return self._properties or self.inner.properties

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.starts.append(self.clock())
        self.inner.put(key, data)


# -- retry -------------------------------------------------------------------


def test_retry_rides_out_temporary_errors_with_growing_waits() -> None:
    clock, faulty = Clock(), FaultyBackend(MemoryBackend())
    faulty.fail("put", [1, 2, 3])
    retry = Retry(faulty, first_delay=1, max_delay=3, sleep=clock.sleep)
    retry.put("k", b"v")
    assert faulty.calls["put"] == 4 and retry.retries == 3 and retry.get("k") == b"v"
    # 1, 2, 3 s (doubling, capped), each jittered to 50-100 %.
    low = [0.5, 1, 1.5]
    assert all(lo <= s <= 2 * lo for lo, s in zip(low, clock.sleeps, strict=True))


def test_retry_asks_the_error_and_gives_up() -> None:
    clock, faulty = Clock(), FaultyBackend(MemoryBackend())
    faulty.fail("put", [1], BackendError("access denied"))
    retry = Retry(faulty, attempts=4, sleep=clock.sleep)
    with pytest.raises(BackendError, match="access denied"):
        retry.put("k", b"v")
    assert faulty.calls["put"] == 1 and clock.sleeps == []
    with pytest.raises(ObjectNotFound):
        retry.get("absent")
    assert faulty.calls["get"] == 1
    faulty.fail("stat", range(1, 10))
    with pytest.raises(BackendError, match="injected failure of stat #4"):
        retry.stat("k")
    assert faulty.calls["stat"] == 4 and len(clock.sleeps) == 3


def test_retry_resumes_a_listing_after_the_last_key() -> None:
    class Flaky(Filter):
        """Fails once, after the second key of the first listing."""

        failed = False

        def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
            for n, item in enumerate(self.inner.list(prefix)):
                if n == 2 and not self.failed:
                    self.failed = True
                    raise BackendError("connection reset", temporary=True)
                yield item

    memory = MemoryBackend()
    for i in range(5):
        memory.put(f"k{i}", b"x" * i)
    retry = Retry(Flaky(memory), sleep=Clock().sleep)
    assert list(retry.list()) == [(f"k{i}", i) for i in range(5)]
    assert retry.retries == 1


# -- ratelimit ---------------------------------------------------------------


def test_ratelimit_keeps_100_puts_in_any_5_seconds() -> None:
    clock = Clock()
    recorder = Recorder(MemoryBackend(), clock)
    limited = RateLimit(recorder, requests={"put": (100, 5.0)}, clock=clock, sleep=clock.sleep)
    for i in range(250):
        limited.put(f"k{i}", b"x")
        clock.now += 0.001  # the put itself takes a millisecond
    starts = recorder.starts
    assert max(sum(1 for t in starts if s <= t < s + 5) for s in starts) == 100
    assert starts[-1] - starts[0] >= 10  # 250 puts need at least three windows
    for i in range(10):  # other operations are not limited
        limited.get(f"k{i}")
    assert clock.now == pytest.approx(starts[-1] + 0.001)


def test_ratelimit_counts_each_request_of_a_multipart_put() -> None:
    clock = Clock()
    parts = Properties(multipart_threshold=10, part_size=10)
    recorder = Recorder(MemoryBackend(), clock, parts)
    limited = RateLimit(recorder, requests={"put": (10, 1.0)}, clock=clock, sleep=clock.sleep)
    limited.put("a", b"x" * 35)  # 4 parts + create + complete = 6 requests
    limited.put("b", b"x" * 35)  # 6 more: 12 > 10, so it waits for the window
    assert recorder.starts[1] - recorder.starts[0] == pytest.approx(1.0)


def test_ratelimit_bytes_per_second() -> None:
    clock = Clock()
    recorder = Recorder(MemoryBackend(), clock)
    limited = RateLimit(recorder, bytes_per_second=1 << 20, clock=clock, sleep=clock.sleep)
    for i in range(5):
        limited.put(f"k{i}", b"x" * (512 << 10))
    gaps = [b - a for a, b in itertools.pairwise(recorder.starts)]
    assert gaps == [pytest.approx(0.5)] * 4
    limited.get("k0")  # reads count too: the next call waits for them
    before = clock.now
    limited.put("small", b"x")
    assert clock.now - before == pytest.approx(1.0)


def test_ratelimit_backs_off_on_slowdown_and_honours_retry_after() -> None:
    clock, faulty = Clock(), FaultyBackend(MemoryBackend())
    faulty.slow_down("put", [1], retry_after=7)
    faulty.slow_down("put", [2, 3, 4])
    limited = RateLimit(faulty, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        with pytest.raises(Throttled):
            limited.put("k", b"v")
    limited.put("k", b"v")
    # Retry-After, then 2, 4, 8 s: the backoff doubles with each throttle in a row.
    assert clock.sleeps == [7, 2, 4, 8] and limited.throttled == 4
    faulty.slow_down("put", [6])
    with pytest.raises(Throttled):
        limited.put("k", b"v")
    assert limited.stat("k") == 1  # every operation waits out the pause
    assert clock.sleeps[4:] == [1]  # a success reset the backoff


def test_a_storm_of_slowdowns_is_ridden_out_by_retry_over_ratelimit() -> None:
    clock, faulty = Clock(), FaultyBackend(MemoryBackend())
    faulty.slow_down("put", [n for n in range(1, 41) if n % 4], retry_after=0.5)  # 3 of every 4 calls
    recorder = Recorder(faulty, clock)
    stack = Retry(RateLimit(recorder, clock=clock, sleep=clock.sleep), attempts=8, sleep=clock.sleep)
    for i in range(10):
        stack.put(f"k{i}", str(i).encode())
    assert [stack.get(f"k{i}") for i in range(10)] == [str(i).encode() for i in range(10)]
    limiter = find_layer(stack, RateLimit)
    assert faulty.calls["put"] == 40 and limiter is not None and limiter.throttled == 30
    after_throttle = [b - a for n, (a, b) in enumerate(itertools.pairwise(recorder.starts)) if (n + 1) % 4]
    assert len(after_throttle) == 30 and min(after_throttle) >= 0.5  # nobody came back before Retry-After


# -- verify ------------------------------------------------------------------


def test_verify_writes_again_when_a_put_was_dropped() -> None:
    clock, faulty = Clock(), FaultyBackend(MemoryBackend())
    faulty.drop_puts([1])
    verify = Verify(faulty, sleep=clock.sleep, read_delay=0.5)
    verify.put("k", b"v")
    assert faulty.dropped == ["k"] and faulty.calls["put"] == 2
    assert verify.rewrites == 1 and verify.mismatches == 3
    assert faulty.get("k") == b"v"


def test_verify_waits_out_stale_reads_without_writing_again() -> None:
    clock, faulty = Clock(), FaultyBackend(MemoryBackend())
    faulty.put("k", b"old")
    faulty.stale_reads(2)
    verify = Verify(faulty, delay=2, read_delay=0.5, sleep=clock.sleep)
    verify.put("k", b"new")
    assert verify.rewrites == 0 and verify.mismatches == 2
    assert clock.sleeps == [2, 0.5, 1.0]
    assert verify.get("k") == b"new"


@pytest.mark.logs_errors("did not read back as written")
def test_verify_fails_loudly_when_writes_keep_vanishing(caplog: pytest.LogCaptureFixture) -> None:
    faulty = FaultyBackend(MemoryBackend())
    faulty.drop_puts(range(1, 10))
    verify = Verify(faulty, reads=2, writes=3, sleep=Clock().sleep)
    with pytest.raises(BackendError, match="did not read back as written after 3 PUTs") as err:
        verify.put("k", b"v")
    assert not err.value.temporary and faulty.calls["put"] == 3 and faulty.calls["get"] == 6
    assert "loses or delays writes" in caplog.text


# -- read cache --------------------------------------------------------------


def _pack(size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    return "packs/" + blake3.blake3(data).hexdigest(), data


def test_read_cache_serves_packs_from_disk(tmp_path: Path) -> None:
    faulty = FaultyBackend(MemoryBackend())
    cache = ReadCache(faulty, tmp_path, max_bytes=10_000)
    key, data = _pack(3000)
    cache.put(key, data)
    assert cache.get(key, 10, 20) == data[10:30]
    assert [cache.get(key, o, 100) for o in (0, 1000, 2950)] == [data[0:100], data[1000:1100], data[2950:]]
    assert faulty.calls["get"] == 1 and cache.hits == 3 and cache.misses == 1
    faulty.put("snapshots/x", b"not a pack")
    assert cache.get("snapshots/x") == b"not a pack" and cache.get("snapshots/x") == b"not a pack"
    assert faulty.calls["get"] == 3  # only packs are cached
    reopened = ReadCache(faulty, tmp_path, max_bytes=10_000)
    assert reopened.get(key) == data and faulty.calls["get"] == 3
    reopened.delete(key)
    with pytest.raises(ObjectNotFound):
        reopened.get(key)


def test_read_cache_stays_below_its_size_dropping_the_least_recently_used(tmp_path: Path) -> None:
    memory = MemoryBackend()
    cache = ReadCache(memory, tmp_path, max_bytes=10_000)
    packs = [_pack(3000) for _ in range(4)]
    for key, data in packs:
        memory.put(key, data)
    for key, _ in packs[:3]:
        cache.get(key, 0, 1)
    cache.get(packs[0][0], 0, 1)  # the first is now the most recently used
    cache.get(packs[3][0], 0, 1)  # 12,000 bytes: the second goes
    on_disk = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert on_disk == {k.rsplit("/", 1)[1] for k in (packs[0][0], packs[2][0], packs[3][0])}
    assert cache.cached_bytes == 9000


def test_read_cache_never_keeps_a_damaged_pack(tmp_path: Path) -> None:
    memory = MemoryBackend()
    key, data = _pack(1000)
    memory.put(key, b"X" + data[1:])  # bit rot: the bytes no longer hash to the name
    cache = ReadCache(memory, tmp_path, max_bytes=10_000)
    assert cache.get(key, 0, 5) == b"X" + data[1:5]
    assert cache.cached_bytes == 0 and not any(p.is_file() for p in tmp_path.rglob("*"))


# -- spool -------------------------------------------------------------------


class BreaksOnce(Filter):
    """Once armed, a listing fails once after its first key, as a dropped connection does."""

    broken = True

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for n, item in enumerate(self.inner.list(prefix)):
            if n == 1 and not self.broken:
                self.broken = True
                raise BackendError("connection reset", temporary=True)
            yield item


def test_spool_lists_queued_and_stored_keys_in_one_key_order(tmp_path: Path) -> None:
    """Keys still queued (the pool refuses uploads) and keys in the pool interleave by name."""
    memory = MemoryBackend()
    for key in ("k1", "k3"):
        memory.put(key, b"in the pool")
    offline = FaultyBackend(memory)
    offline.fail("put", range(1, 1_000_000))
    flaky = BreaksOnce(offline)
    spool = Spool(flaky, tmp_path)
    try:
        for key in ("k2", "k0"):
            spool.put(key, b"queued")
        expected = [(f"k{i}", len(b"in the pool" if i % 2 else b"queued")) for i in range(4)]
        assert list(spool.list()) == expected
        # Retry resumes a broken listing after the last key it gave: that needs the order.
        flaky.broken = False
        assert list(Retry(spool, sleep=Clock().sleep).list()) == expected
    finally:
        spool.close()


# -- the stack ---------------------------------------------------------------


def _layers(backend: Backend) -> list[str]:
    names = [type(backend).__name__]
    while isinstance(backend, Filter):
        backend = backend.inner
        names.append(type(backend).__name__)
    return names


def test_open_backend_stacks_filters_in_one_order(tmp_path: Path) -> None:
    filters = {"cache": {}, "verify": {"delay": 1}, "ratelimit": {"requests": {"put": [100, 5]}}}
    config = {"kind": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:9", "filters": filters}
    stack = open_backend(config, cache_dir=tmp_path)
    assert _layers(stack) == ["ReadCache", "Verify", "Retry", "RateLimit", "S3Backend"]
    assert _layers(open_backend({**config, "filters": {"retry": False}})) == ["S3Backend"]
    assert _layers(open_backend({"kind": "s3", "bucket": "b"})) == ["Retry", "S3Backend"]
    assert _layers(open_backend({"kind": "local", "path": str(tmp_path)})) == ["LocalBackend"]
    s3 = find_layer(stack, S3Backend)
    assert s3 is not None and s3.client.meta.config.max_pool_connections == 2 * s3.properties.connections + 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "ftp"}, "unknown backend kind"),
        ({"kind": "s3"}, "needs a bucket"),
        ({"kind": "s3", "bucket": "b", "secret": "x"}, "unknown S3 settings: secret"),
        ({"kind": "s3", "bucket": "b", "part_size": 1024}, "at least"),
        ({"kind": "s3", "bucket": "b", "connections": 0}, "positive integer"),
        ({"kind": "s3", "bucket": "b", "checksums": "never"}, "when_required"),
        ({"kind": "memory", "filters": {"spoool": {}}}, "filters must be"),
        ({"kind": "memory", "filters": {"ratelimit": {"requests": {"upload": [1, 1]}}}}, "no operation 'upload'"),
        ({"kind": "memory", "filters": {"ratelimit": {"requests": {"put": [0, 1]}}}}, "at least 1 request"),
        ({"kind": "memory", "filters": {"ratelimit": {"requests": {"put": "fast"}}}}, "must be \\[requests"),
        ({"kind": "memory", "filters": {"verify": {"reads": 0}}}, "at least 1 read"),
        ({"kind": "memory", "filters": {"retry": {"tries": 3}}}, "retry settings"),
        ({"kind": "memory", "filters": {"cache": {}}}, "needs a directory"),
    ],
)
def test_bad_configuration_is_refused_by_name(config: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        open_backend(config)


def test_local_pool_keeps_its_root_unwrapped(tmp_path: Path) -> None:
    """A local pool gets no retry by default: disk errors do not heal by waiting."""
    assert isinstance(open_backend({"kind": "local", "path": str(tmp_path)}), LocalBackend)
