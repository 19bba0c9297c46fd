"""``titrate keys list`` and ``titrate keys revoke`` on a revoked key (issue 17 item 6): the list shows every key
without its secret; revoking twice says the second time that the key was already revoked and changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from api.settings import get_settings


@pytest.fixture
def titrate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``titrate ARGS`` in this process against a fresh migrated SQLite file: (exit code, stdout, stderr)."""
    for variable in [k for k in os.environ if k.startswith("TITRATE_")]:
        monkeypatch.delenv(variable)
    url = f"sqlite:///{tmp_path}/keys.db"

    def run(*args: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        result = CliRunner().invoke(app, list(args), env={"TITRATE_DATABASE_URL": url})
        get_settings.cache_clear()
        return result.exit_code, result.stdout, result.stderr

    assert run("migrate")[0] == 0
    return run


def test_keys_list_shows_every_key_without_secrets(titrate) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = titrate("keys", "list")
    assert code == 0
    assert "no keys yet" in out
    secrets = [titrate("keys", "create", "--role", role, "--name", name)[1].strip()
               for role, name in (("admin", "ops"), ("analyst", "ana"))]
    code, out, err = titrate("keys", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["id", "role", "name", "prefix", "created", "revoked"]
    assert [line.split()[:4] for line in lines[1:]] == [["1", "admin", "ops", secrets[0][:10]],
                                                        ["2", "analyst", "ana", secrets[1][:10]]]
    assert all(line.split()[5] == "-" for line in lines[1:])
    for secret in secrets:
        assert secret not in out

    assert titrate("keys", "revoke", "--id", "2")[0] == 0
    code, out, _ = titrate("keys", "list")
    assert out.splitlines()[2].split()[5].startswith("20")  # the revocation time
    code, out, _ = titrate("keys", "list", "--active")
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["ops"]


def test_revoking_a_revoked_key_says_so(titrate) -> None:  # type: ignore[no-untyped-def]
    titrate("keys", "create", "--role", "admin", "--name", "ops")
    titrate("keys", "create", "--role", "sdk", "--name", "app")
    code, first, _ = titrate("keys", "revoke", "--id", "2")
    assert code == 0
    assert first.startswith("key 2 (app, sdk) revoked at ")
    code, again, _ = titrate("keys", "revoke", "--id", "2")
    assert code == 0
    assert again.startswith("key 2 (app, sdk) was already revoked at ")
    assert again.rstrip().endswith("nothing changed")
    assert first.split(" at ")[1].strip() in again  # the first revocation's time, unchanged
