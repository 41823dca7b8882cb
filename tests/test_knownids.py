"""The compact known-id set answers as a dict of every id would, through adds, drops and merges."""

from __future__ import annotations

import os
import random

import pytest

from engine import knownids
from engine.knownids import KnownIds


def _id(rnd: random.Random) -> bytes:
    return rnd.randbytes(32)


@pytest.mark.parametrize("ordered", [True, False])
def test_it_answers_as_a_dict_would(monkeypatch: pytest.MonkeyPatch, ordered: bool) -> None:
    monkeypatch.setattr(knownids, "MERGE_AT", 50)  # merge often
    rnd = random.Random(3)
    model = {_id(rnd): rnd.randrange(1, 1 << 20) for _ in range(2000)}
    rows = sorted(model.items()) if ordered else list(model.items())
    known = KnownIds(rows)
    assert len(known) == len(model)
    ids = list(model)
    for step in range(6000):
        op = rnd.random()
        if op < 0.4:
            new = _id(rnd)
            model[new] = rnd.randrange(1, 1 << 20)
            known.add(new, model[new])
            ids.append(new)
        elif op < 0.6 and model:
            gone = rnd.choice(ids)
            model.pop(gone, None)
            known.discard(gone)
        elif op < 0.7 and ids:
            back = rnd.choice(ids)  # dropped, then stored again
            model[back] = rnd.randrange(1, 1 << 20)
            known.discard(back)
            known.add(back, model[back])
        probe = rnd.choice(ids) if rnd.random() < 0.8 else _id(rnd)
        assert known.get(probe) == model.get(probe), step
        assert (probe in known) == (probe in model)
    assert len(known) == len(model)
    assert all(known.get(i) == n for i, n in model.items())


def test_it_takes_twenty_bytes_an_id() -> None:
    ids = sorted(os.urandom(32) for _ in range(100_000))
    known = KnownIds((i, 4096) for i in ids)
    assert known.bytes_used() == 20 * len(ids)
    assert ids[5] in known and os.urandom(32) not in known
