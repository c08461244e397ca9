"""Settings: the README's configuration table is true, and secrets stay out of repr()."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from mcustt.config import ENV_NAMES, Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def env_var(field_name: str) -> str:
    return ENV_NAMES.get(field_name, "MCUSTT_" + field_name.upper())


def readme_table() -> list[tuple[str, str]]:
    """(variable, default cell) of each row of the README's configuration table."""
    section = README.read_text().split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", section, re.MULTILINE)


def test_readme_lists_every_setting_in_order() -> None:
    assert [name for name, _ in readme_table()] == [env_var(f.name) for f in fields(Settings)]


def test_readme_defaults_are_the_defaults() -> None:
    defaults = Settings()
    by_name = {f.name: f for f in fields(Settings)}
    for name, cell in readme_table():
        field_name = next(f for f in by_name if env_var(f) == name)
        default = getattr(defaults, field_name)
        if field_name == "public_url":
            continue  # derived from host and port (tested in test_sessions_api)
        if default is None:
            assert cell.startswith("unset"), (name, cell)
        elif default == [] and field_name != "ice_servers":
            assert cell.startswith("empty"), (name, cell)
        else:
            literal = re.match(r"`([^`]*)`", cell)
            assert literal, (name, cell)
            # The documented value, read the way the variable is, gives the default.
            parsed = Settings.from_env({name: literal.group(1)})
            assert getattr(parsed, field_name) == default, (name, cell)


def test_repr_never_shows_secrets() -> None:
    env = {
        "MCUSTT_ADMIN_TOKEN": "admin-s3cret",
        "MCUSTT_JWT_SECRET": "jwt-s3cret",
        "OPENAI_API_KEY": "sk-s3cret",
        "OPENAI_BASE_URL": "https://proxy-user:proxy-s3cret@llm.example/v1",
        "MCUSTT_DATABASE_URL": "postgresql://captions:db-s3cret@db.example:5432/mcustt",
        "MCUSTT_REDIS_URL": "redis://:redis-s3cret@redis.example:6379/0",
        "MCUSTT_ICE_SERVERS": (
            '[{"urls": "turn:turn.example:3478", "username": "u", "credential": "turn-s3cret"}]'
        ),
    }
    settings = Settings.from_env(env)
    for shown in (repr(settings), str(settings), f"{settings}"):
        assert "s3cret" not in shown, shown
        # What is not secret still helps whoever reads a log or a traceback.
        assert "captions:***@db.example:5432/mcustt" in shown
        assert "redis://:***@redis.example:6379/0" in shown
        assert "proxy-user:***@llm.example/v1" in shown
        assert "admin_token='***'" in shown and "jwt_secret='***'" in shown
        assert "turn:turn.example:3478" in shown
    # Only the repr is masked: the values themselves are intact.
    assert settings.admin_token == "admin-s3cret"
    assert settings.database_url.endswith("db-s3cret@db.example:5432/mcustt")
    assert settings.ice_servers[0]["credential"] == "turn-s3cret"


def test_repr_masks_a_password_in_the_query_and_keeps_plain_urls() -> None:
    settings = Settings(database_url="postgresql://db.example/mcustt?password=q-s3cret&sslmode=x")
    assert "q-s3cret" not in repr(settings)
    assert "sslmode=x" in repr(settings)
    plain = Settings()
    assert "database_url='sqlite:///./var/mcustt.db'" in repr(plain)
    assert "admin_token=None" in repr(plain)  # unset shows as unset
