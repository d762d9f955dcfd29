"""A Python client generated from the served OpenAPI document (openapi-python-client, as
an integrator would) creates a key, a mapping and a webhook subscription and searches the
logs against the real gateway."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.live_gateway import live_admin_api

PACKAGE = "hub_admin_client"
GENERATE_TIMEOUT = 180  # seconds openapi-python-client may take (it runs ruff on its output)
LOG_WAIT = 10.0  # seconds the admin calls' api_logs rows may take to be written


@pytest.fixture
def client_package(
    database_url: str, data_dir: Path, tmp_path: Path
) -> Iterator[tuple[Any, Any, Any]]:
    """(the generated package, its api.default module, an authenticated client)."""
    with live_admin_api(database_url, data_dir) as (base, auth):
        with urllib.request.urlopen(f"{base}/admin/v1/openapi.json", timeout=10) as answer:
            (tmp_path / "openapi.json").write_bytes(answer.read())
        generated = subprocess.run(
            [
                sys.executable,
                "-m",
                "openapi_python_client",
                "generate",
                "--path",
                str(tmp_path / "openapi.json"),
                "--meta",
                "none",
                "--output-path",
                str(tmp_path / PACKAGE),
            ],
            capture_output=True,
            text=True,
            timeout=GENERATE_TIMEOUT,
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        # Every operation is generated but the CSV / JSON lines import, whose media types
        # the generator does not handle.
        said = generated.stdout + generated.stderr
        skipped = [line for line in said.splitlines() if line.startswith("WARNING")]
        assert skipped == [
            "WARNING parsing POST /admin/v1/mappings/import within default. "
            "Endpoint will not be generated."
        ], said
        sys.path.insert(0, str(tmp_path))
        try:
            package = importlib.import_module(PACKAGE)
            api = importlib.import_module(f"{PACKAGE}.api.default")
            token = auth["Authorization"].split()[1]
            client = package.AuthenticatedClient(
                base_url=base, token=token, raise_on_unexpected_status=True
            )
            with client:
                yield package, api, client
        finally:
            sys.path.remove(str(tmp_path))
            for name in [m for m in sys.modules if m.split(".")[0] == PACKAGE]:
                del sys.modules[name]


def _call(api: Any, operation: str, **kwargs: Any) -> Any:
    module = importlib.import_module(f"{api.__name__}.{operation}")
    return module.sync_detailed(**kwargs)


@pytest.mark.slow
def test_a_generated_client_works(client_package: tuple[Any, Any, Any]) -> None:
    package, api, client = client_package
    models = importlib.import_module(f"{package.__name__}.models")

    # A key for the tenant's CRM: the token is in the creation answer only.
    made = _call(api, "create_key", client=client, body=models.NewKey(role=models.Role.SERVICE))
    assert made.status_code == 201, made.content
    key = made.parsed
    assert isinstance(key, models.NewKeyAnswer) and key.token.startswith("gwk_")
    got = _call(api, "get_key", client=client, key_id=key.id).parsed
    assert got.id == key.id and got.role == models.Role.SERVICE

    # A mapping with credentials in its configuration: shown encrypted.
    internal = uuid.uuid4()
    config = models.NewMappingConfiguration.from_dict(
        {"hotel_code": "ALPHA", "credentials": {"password": "s3cret"}}
    )
    body = models.NewMapping(
        entity_type="reservation",
        internal_id=internal,
        external_system="booking_engine",
        external_id="BE-2026-1",
        configuration=config,
    )
    made = _call(api, "create_mapping", client=client, body=body)
    assert made.status_code == 201, made.content
    mapping = made.parsed
    assert mapping.internal_id == internal and mapping.external_id == "BE-2026-1"
    assert mapping.configuration.to_dict()["credentials"] == "[ENCRYPTED]"
    clash = _call(api, "create_mapping", client=client, body=body)
    assert clash.status_code == 409
    assert clash.parsed.code == "mapping_conflict" and clash.parsed.conflicting.id == mapping.id

    # A webhook subscription (a public literal address: no DNS, and no delivery loop).
    sub_body = models.NewSubscription(
        name="CRM",
        url="https://93.184.216.34/hooks/pms",
        event_types=["reservation.*"],
        auth=models.AuthBearer(type_=models.AuthBearerType.BEARER, token="crm-token-0123"),
    )
    made = _call(api, "create_subscription", client=client, body=sub_body)
    assert made.status_code == 201, made.content
    assert made.parsed.secret.startswith("whsec_")
    assert made.parsed.auth.type_ == "bearer"  # the token itself is never shown
    listed = _call(api, "list_subscriptions", client=client).parsed
    assert [s.id for s in listed.items] == [made.parsed.id]
    # An event published through the client (no delivery loop here: counted, not sent).
    event = models.NewEvent(
        type_="reservation.created",
        payload=models.NewEventPayload.from_dict({"id": "r-1", "rooms": [{"n": 101}]}),
    )
    published = _call(api, "publish_event", client=client, body=event)
    assert published.status_code == 201, published.content
    assert published.parsed.deliveries == 1

    # The log search finds those calls (the admin API logs itself), newest first.
    deadline = time.monotonic() + LOG_WAIT
    while True:
        page = _call(api, "search_logs", client=client, path_prefix="/admin/v1/mappings")
        assert page.status_code == 200, page.content
        if len(page.parsed.items) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [e.status for e in page.parsed.items[:2]] == [409, 201]
    entry = _call(api, "get_log", client=client, log_id=page.parsed.items[0].id).parsed
    assert entry.method == "POST" and entry.path == "/admin/v1/mappings"
    # A refusal arrives as the shared error shape.
    bad = _call(api, "get_mapping", client=client, mapping_id=uuid.uuid4())
    assert bad.status_code == 404 and bad.parsed.code == "not_found"
