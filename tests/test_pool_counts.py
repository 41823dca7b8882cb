"""The pool's figures (blobs, unique bytes) stay right while they are kept between asks: every change of
the packs (stored, collected) counts the blobs again."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from engine.backup import backup
from engine.catalog.schema import blobs
from engine.deployment import Deployment
from engine.gc import collect


def _counted(dep: Deployment) -> tuple[int, int]:
    with dep.catalog.engine.connect() as conn:
        n, raw = conn.execute(select(func.count(), func.coalesce(func.sum(blobs.c.raw_length), 0))
                              .where(blobs.c.pool_id == dep.pool.id)).one()  # fmt: skip
    return int(n), int(raw)


def test_pool_figures_follow_new_and_collected_packs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with Deployment.open(tmp_path / "data") as dep:
        dep.add_source("a")
        for round_ in range(3):
            (src / f"f{round_}").write_bytes(bytes([round_]) * 100_000 + str(round_).encode() * 999)
            backup(dep.working_tree("a"), dep.blobs, str(src))
            dep.create_snapshot("a", f"s{round_}")
            dep.flush()
            usage = dep.pool_usage()
            assert (usage["blobs"], usage["unique_bytes"]) == _counted(dep) != (0, 0)
            assert dep.pool_usage() == usage  # asked again with nothing changed: the same
        (src / "f0").unlink()
        (src / "f1").unlink()
        backup(dep.working_tree("a"), dep.blobs, str(src))
        for name in ("s0", "s1"):
            dep.delete_snapshot("a", name)
        dep.create_snapshot("a", "s3")
        dep.flush()
        before = dep.pool_usage()["blobs"]
        collect(dep, repack_below=1.0)
        after = dep.pool_usage()
        assert (after["blobs"], after["unique_bytes"]) == _counted(dep) and after["blobs"] < before
