"""schemathesis against the OpenAPI document: generated requests to every operation; none may get a 5xx."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from appliance.app import create_app
from appliance.services import Services
from engine.backup import backup_and_snapshot
from engine.deployment import Deployment

_data = Path(tempfile.mkdtemp(prefix="cairn-fuzz-"))
_dep = Deployment.open(_data / "data")
_services = Services.build(_dep)
_admin = _services.accounts.add_user("admin", "password one", admin=True)
TOKEN = _services.accounts.add_token(_admin, "fuzz")
_services.accounts.add_group("g1")
(_data / "src").mkdir()
(_data / "src" / "f").write_text("x")
_dep.add_source("h1")
backup_and_snapshot(_dep, "h1", str(_data / "src"), "s1")
app = create_app(_services)
# Maintenance mode is left out: turned on, it makes every later change a 503 by design (tested apart).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app).exclude(method="PUT", path="/api/v1/maintenance")


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=[not_a_server_error])
