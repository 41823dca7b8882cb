"""One limit on failed sign-ins for every way in (API, web form, /dav), keyed so that nobody locks a user out
from elsewhere; the same scrypt work whether a name exists or not; the limiter's memory is bounded."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from appliance import server
from appliance.app import create_app
from appliance.auth import LoginLimiter
from appliance.services import Services
from engine.deployment import Deployment

from .davshare import USER, basic, share

PASSWORD = "correct horse"
HERE, ELSEWHERE = {"REMOTE_ADDR": "10.0.0.1"}, {"REMOTE_ADDR": "10.0.0.2"}


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Client]:
    """The web UI, the API and /dav on one WSGI app, as `cairn serve` wires them."""
    with Deployment.open(tmp_path / "data") as dep:
        services = Services.build(dep)
        for name in ("root", "ops"):
            services.accounts.add_user(name, PASSWORD, admin=name == "root")
        yield Client(server._dispatch(create_app(services), server._dav(services)))


def dav(client: Client, name: str, password: str, at: dict[str, str]) -> int:
    headers = {"Authorization": basic(name, password), "Depth": "0"}
    return client.open("/dav/", method="PROPFIND", headers=headers, environ_base=at).status_code


def api(client: Client, name: str, password: str, at: dict[str, str]) -> int:
    return client.post("/api/v1/login", json={"name": name, "password": password}, environ_base=at).status_code


def test_the_share_is_limited_too(appliance: Client) -> None:
    assert dav(appliance, "ops", PASSWORD, HERE) == 207
    for _ in range(30):
        assert dav(appliance, "ops", "wrong!!!", HERE) == 401
    assert dav(appliance, "ops", PASSWORD, HERE) == 401  # the right password, too late
    assert api(appliance, "ops", PASSWORD, HERE) == 429  # one limit for every way in
    form = appliance.post("/login", data={"name": "ops", "password": PASSWORD}, environ_base=HERE)
    assert "too many failed sign-ins" in form.get_data(as_text=True)
    assert dav(appliance, "ops", PASSWORD, ELSEWHERE) == 207  # nobody locks ops out from elsewhere
    assert api(appliance, "ops", PASSWORD, ELSEWHERE) == 200


def test_one_address_cannot_try_name_after_name(appliance: Client) -> None:
    for i in range(20):
        assert api(appliance, f"guess{i}", "wrong!!!", HERE) == 401
    assert api(appliance, "ops", PASSWORD, HERE) == 429
    assert dav(appliance, "ops", PASSWORD, HERE) == 401
    assert api(appliance, "ops", PASSWORD, ELSEWHERE) == 200


def test_a_stand_alone_share_has_a_limit_of_its_own(tmp_path: Path) -> None:
    with share(tmp_path / "data") as s:
        wrong = {"Depth": "0", "Authorization": basic(USER, "wrong")}
        for _ in range(5):
            assert s.request("PROPFIND", "/", headers=wrong).status == 401
        assert s.request("PROPFIND", "/", headers={"Depth": "0"}).status == 401  # the right password


def _scrypts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real: Callable[..., bytes] = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


@pytest.mark.parametrize("way", [api, dav])
def test_an_unknown_name_costs_what_a_known_one_does(
    appliance: Client, monkeypatch: pytest.MonkeyPatch, way: Callable[..., int]
) -> None:
    calls = _scrypts(monkeypatch)
    way(appliance, "ops", "wrong!!!", HERE)
    known = len(calls)
    way(appliance, "nobody", "wrong!!!", ELSEWHERE)
    way(appliance, "x" * 100_000, "wrong!!!", {"REMOTE_ADDR": "10.0.0.3"})
    assert known == 1 and len(calls) == 3 * known


def test_the_limiters_memory_is_bounded() -> None:
    """Names of any length from many addresses: what the limiter keeps stays small."""
    limiter = LoginLimiter()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(30_000):
            key = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", f"{i}-" + "x" * 1000)
            limiter.check(key)
            limiter.failed(key)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert kept < 8_000_000  # unbounded: 30,000 names of a kilobyte and their times, ~45 MB


def test_the_limiter_forgets_old_failures() -> None:
    from dav.auth import Limiter, TooManyAttempts

    now = [0.0]
    limiter = Limiter(clock=lambda: now[0])
    for i in range(500):
        limiter.failed((f"10.0.{i >> 8}.{i & 255}", "ops"))
    assert limiter.size() == 1000
    now[0] += 61
    limiter.failed(("10.9.9.9", "ops"))
    assert limiter.size() == 2
    for _ in range(5):
        limiter.failed(("10.9.9.9", "o" * 64 + "first"))
    with pytest.raises(TooManyAttempts):
        limiter.check(("10.9.9.9", "o" * 64 + "second"))  # a name longer than any account's counts as its start
