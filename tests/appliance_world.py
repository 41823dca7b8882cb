"""A small appliance for access tests: two groups, a person for every role, a source in each group.

Group g1 is "own" and g2 "foreign" from the point of view of the g1 people. Jobs are queued, never run
(the runner is not started), so a request that submits one costs nothing and changes no data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from appliance.app import create_app
from appliance.services import Services
from engine.backup import backup_and_snapshot
from engine.deployment import Deployment

PASSWORD = "correct horse"
# persona -> (user name, global admin?, {group: role})
PERSONAS: dict[str, tuple[str, bool, dict[str, str]]] = {
    "owner": ("mia", False, {"g1": "member"}),  # a member of g1 who owns its source b
    "member_other": ("gus", False, {"g2": "member"}),  # a member of g2 who owns its source c
    "operator": ("ops", False, {"g1": "operator"}),
    "group_admin": ("boss", False, {"g1": "admin"}),
    "other_admin": ("gabe", False, {"g2": "admin"}),
    "admin": ("root", True, {}),
}
BYSTANDER = "nobody"  # in no group: holds the jobs and tokens that are nobody else's
# "own" and "foreign" from a g1 person's side: source, its group, its owner
OWN = {"source": "b", "group": "g1", "owner": "mia"}
FOREIGN = {"source": "c", "group": "g2", "owner": "gus"}


@dataclass
class World:
    app: Flask
    services: Services
    tokens: dict[str, str]  # persona (and BYSTANDER) -> API token

    @property
    def dep(self) -> Deployment:
        return self.services.deployment

    def headers(self, persona: str) -> dict[str, str]:
        """The persona's credentials (none for "anonymous")."""
        return {"Authorization": f"Bearer {self.tokens[persona]}"} if persona in self.tokens else {}


@contextmanager
def world(tmp_path: Path) -> Iterator[World]:
    dep = Deployment.open(tmp_path / "data")
    services = Services.build(dep, workers=1)
    try:
        accounts = services.accounts
        for group in ("g1", "g2"):
            accounts.add_group(group)
        tokens = {}
        for persona, (name, admin, roles) in [*PERSONAS.items(), (BYSTANDER, (BYSTANDER, False, {}))]:
            user = accounts.add_user(name, PASSWORD, admin=admin)
            for group, role in roles.items():
                accounts.set_role(group, name, role)
            tokens[persona] = accounts.add_token(user, "access tests")
        src = tmp_path / "src"
        src.mkdir()
        (src / "hello.txt").write_text("hello from a snapshot\n")
        for resource in (OWN, FOREIGN):
            dep.add_source(resource["source"])
            accounts.assign_source(resource["source"], resource["group"], resource["owner"])
            backup_and_snapshot(dep, resource["source"], str(src), "s1")
        app = create_app(services)
        app.config["TESTING"] = True
        yield World(app, services, tokens)
    finally:
        dep.close()
