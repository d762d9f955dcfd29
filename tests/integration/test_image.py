"""The production image's files, checked as far as a machine without a Docker engine can:
they parse, refer to files that exist, and the image's commands work when run directly."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_slim_non_root_and_needs_a_database() -> None:
    steps = dockerfile()
    froms = [a for i, a in steps if i == "FROM"]
    assert froms and all(a.startswith("python:3.11-slim") for a in froms)
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    env = " ".join(a for i, a in steps if i == "ENV")
    assert "GATEWAY_EMBEDDED_DATABASE=false" in env
    assert any(i == "HEALTHCHECK" and "/readyz" in a for i, a in steps)
    for i, a in steps:
        if i == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: no such file"


def test_compose_file_parses_and_mounts_existing_files() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert {"db", "gateway", "prometheus", "grafana"} <= set(doc["services"])
    assert "GATEWAY_DATABASE_URL" in doc["services"]["gateway"]["environment"]
    for service in doc["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{volume}: no such file"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _image_command() -> list[str]:
    steps = dict(dockerfile())
    entry = json.loads(steps["ENTRYPOINT"])
    cmd = json.loads(steps["CMD"])
    assert "--port" not in cmd, "the port comes from GATEWAY_PORT, which the HEALTHCHECK reads"
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    cmd[cmd.index("--routes") + 1] = str(ROOT / "routes.yaml")
    # `gateway` is the console script of this package: run it with this interpreter.
    return [sys.executable, "-m", "gateway", *cmd] if entry == ["gateway"] else entry + cmd


def _healthcheck() -> list[str]:
    args = dict(dockerfile())["HEALTHCHECK"]
    cmd = json.loads(args[args.index("CMD") + 3 :].strip())
    return [sys.executable if c == "python" else c for c in cmd]


def _image_env(port: int, **extra: str) -> dict[str, str]:
    """The environment the image sets (ENV), with GATEWAY_PORT set to ``port``."""
    env = {**os.environ, "GATEWAY_PORT": str(port), **extra}
    return env


def test_without_a_database_url_the_image_command_refuses_to_start(tmp_path: Path) -> None:
    env = _image_env(
        _free_port(), GATEWAY_EMBEDDED_DATABASE="false", GATEWAY_DATA_DIR=str(tmp_path)
    )
    env.pop("GATEWAY_DATABASE_URL", None)
    proc = subprocess.run(_image_command(), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "GATEWAY_DATABASE_URL: required when GATEWAY_EMBEDDED_DATABASE=false" in proc.stderr
    assert not (tmp_path / "pg").exists(), "no embedded server may be started"


@pytest.mark.slow
def test_image_command_serves_and_its_healthcheck_passes(tmp_path: Path, database_url: str) -> None:
    """The port is GATEWAY_PORT's (not the image's default 8080): the image command serves
    there and the HEALTHCHECK, given the same environment, probes there."""
    port = _free_port()
    env = _image_env(
        port,
        GATEWAY_EMBEDDED_DATABASE="false",
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_DATA_DIR=str(tmp_path),
    )
    proc = subprocess.Popen(
        _image_command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        check = subprocess.run(_healthcheck(), env=env, capture_output=True, timeout=30)
        assert check.returncode == 0, shlex.join(_healthcheck())
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    elsewhere = _image_env(_free_port())
    bad = subprocess.run(_healthcheck(), env=elsewhere, capture_output=True, timeout=30)
    assert bad.returncode != 0, "the healthcheck must fail when nothing answers"
