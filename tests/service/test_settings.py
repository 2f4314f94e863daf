"""Service settings: defaults from the spec, YAML files, strict keys."""
from __future__ import annotations

import pytest

from recunlearn.config import ConfigError
from recunlearn.service.settings import ServiceSettings, load_settings


def test_defaults_follow_the_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    policy = settings.policy
    assert (policy.batch_window_s, policy.finetune_every, policy.finetune_interval_h,
            policy.retrain_interval_h, policy.method) == (1, 100, 24, 168, "unlearnrec")
    assert settings.require_tokens and settings.max_body_bytes == 1 << 20
    assert settings.ledger_url() == f"sqlite:///{tmp_path / 'service-state' / 'ledger.sqlite3'}"


def test_settings_load_from_yaml_with_overrides(tmp_path):
    file = tmp_path / "service.yaml"
    file.write_text("state_dir: /srv/recunlearn\ndatabase_url: postgresql+psycopg://ledger@db/ledger\n"
                    "policy:\n  batch_window_s: 5\n  retrain_interval_h: 24\n")
    settings = load_settings(file, ["policy.finetune_every=10"])
    assert settings.ledger_url() == "postgresql+psycopg://ledger@db/ledger"
    assert (settings.policy.batch_window_s, settings.policy.retrain_interval_h,
            settings.policy.finetune_every) == (5, 24, 10)


@pytest.mark.parametrize("text, said", [("policy:\n  batch_windw_s: 5\n", "policy.batch_windw_s: unknown key"),
                                        ("policy:\n  finetune_every: 0\n", "policy.finetune_every"),
                                        ("subject_resolver: mymodule.resolve\n", "subject_resolver"),
                                        ("max_body_bytes: lots\n", "max_body_bytes")])
def test_a_bad_key_or_value_is_an_error_naming_it(tmp_path, text, said):
    file = tmp_path / "service.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=said):
        load_settings(file)


def test_the_resolver_is_never_part_of_the_dumped_settings():
    settings = ServiceSettings(subject_resolver=lambda subject: [])
    assert "subject_resolver" not in settings.model_dump()
