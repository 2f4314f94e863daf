"""`recunlearn service token ...` (the typer sub-app, run on its own here)."""
from __future__ import annotations

from typer.testing import CliRunner

from recunlearn.service.auth import TokenVerifier
from recunlearn.service.cli import service_app
from recunlearn.service.ledger import Ledger

runner = CliRunner()


def test_token_create_prints_the_token_once_and_stores_its_hash(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    result = runner.invoke(service_app, ["token", "create", "--name", "intake", "--scope", "erasure:write",
                                         "--scope", "erasure:read", "--database", url])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("rcu_") and "\n" not in token
    assert "shown only this once" in result.stderr
    ledger = Ledger(url)
    with ledger.reading() as session:
        assert TokenVerifier().verify(session, token).scopes == {"erasure:write", "erasure:read"}
    listed = runner.invoke(service_app, ["token", "list", "--database", url])
    assert listed.exit_code == 0 and "intake  erasure:read,erasure:write" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    token_id = token.split("_")[1]
    assert runner.invoke(service_app, ["token", "revoke", token_id, "--database", url]).exit_code == 0
    with ledger.reading() as session:
        assert TokenVerifier().verify(session, token) is None
    again = runner.invoke(service_app, ["token", "revoke", token_id, "--database", url])
    assert again.exit_code == 2 and f"no live token {token_id!r}" in again.stderr
    ledger.dispose()


def test_token_create_takes_the_database_from_a_settings_file(tmp_path):
    config = tmp_path / "service.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n")
    result = runner.invoke(service_app, ["token", "create", "--name", "ops", "--scope", "admin",
                                         "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "state" / "ledger.sqlite3").is_file()


def test_input_errors_are_one_line_and_exit_code_2(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    bad_scope = runner.invoke(service_app, ["token", "create", "--name", "x", "--scope", "erasure:delete",
                                            "--database", url])
    assert bad_scope.exit_code == 2 and "unknown scope 'erasure:delete'" in bad_scope.stderr
    config = tmp_path / "service.yaml"
    config.write_text("polcy: {}\n")
    bad_config = runner.invoke(service_app, ["token", "create", "--name", "x", "--scope", "admin",
                                             "--config", str(config)])
    assert bad_config.exit_code == 2 and "polcy: unknown key" in bad_config.stderr
    bad_url = runner.invoke(service_app, ["token", "list", "--database", "nonsense://"])
    assert bad_url.exit_code == 2 and "error:" in bad_url.stderr


def test_every_help_page_renders_once_mounted():
    import typer

    root = typer.Typer()
    root.add_typer(service_app, name="service")   # as cli.py mounts it
    for args in (["service"], ["service", "token"], ["service", "token", "create"], ["service", "token", "list"],
                 ["service", "token", "revoke"]):
        result = runner.invoke(root, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (args, result.output)


def test_service_worker_passes_maintenance_through(tmp_path):
    """`service worker --maintenance KIND` reaches the worker: an unknown kind is refused before any work."""
    config = tmp_path / "service.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\ncheckpoint: {tmp_path / 'model'}\n")
    result = runner.invoke(service_app, ["worker", "--config", str(config), "--maintenance", "defragment"])
    assert result.exit_code == 2 and "unknown maintenance 'defragment'" in result.stderr
    assert not (tmp_path / "state").exists()
