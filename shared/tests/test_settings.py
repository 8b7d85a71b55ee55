import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from comfy_shared.errors import SettingsError
from comfy_shared.redis_client import RedisTarget
from comfy_shared.settings import (
    INTERNAL_TOKEN_ENV,
    CommonSettings,
    InternalToken,
    build_arg_parser,
    env_var_names,
    internal_token_field,
    load_settings,
    settings_from_argv,
)


class DemoSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", env_file=None)

    port: int = Field(default=8000, ge=1, le=65535, description="Port to listen on.")
    tags: list[str] = Field(default_factory=list, description="Tags.")


def test_environment_variables_use_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "9001")
    monkeypatch.setenv("DEMO_REDIS_URL", "redis://example:6380/1")
    settings = load_settings(DemoSettings)
    assert (settings.port, settings.redis_url) == (9001, "redis://example:6380/1")


def test_invalid_value_names_the_variable_and_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "eighty")
    with pytest.raises(SettingsError) as caught:
        load_settings(DemoSettings)
    assert "DEMO_PORT / --port" in str(caught.value)
    assert "'eighty'" in str(caught.value)


def test_redis_url_scheme_is_checked() -> None:
    with pytest.raises(SettingsError, match="DEMO_REDIS_URL"):
        load_settings(DemoSettings, redis_url="http://localhost:6379")
    cluster = "redis+cluster://10.0.0.5:7000/0"
    assert load_settings(DemoSettings, redis_url=cluster).redis_url == cluster


def test_sentinels_name_where_redis_is(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(DemoSettings).redis_target() == RedisTarget("redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DEMO_REDIS_SENTINELS", "s1:26379,s2:26379")
    monkeypatch.setenv("DEMO_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    settings = settings_from_argv(
        DemoSettings,
        ["--redis-url", "redis://:pw@ignored/2", "--redis-sentinel-master", "comfy"],
        prog="demo",
        description="",
    )
    assert settings.redis_target() == RedisTarget(
        "redis://:pw@ignored/2",
        sentinels=(("s1", 26379), ("s2", 26379)),
        sentinel_master="comfy",
        sentinel_password="sentinel-secret",
    )


def test_sentinels_and_a_cluster_url_are_refused_together() -> None:
    with pytest.raises(SettingsError, match="exclude each other"):
        load_settings(
            DemoSettings, redis_sentinels="s1:26379", redis_url="redis+cluster://seed:7000"
        )


def test_a_sentinel_without_a_port_is_refused() -> None:
    with pytest.raises(SettingsError, match="DEMO_REDIS_SENTINELS / --redis-sentinels"):
        load_settings(DemoSettings, redis_sentinels="s1:26379,s2")


def test_logdy_address_must_be_host_and_port() -> None:
    with pytest.raises(SettingsError, match="DEMO_LOGDY"):
        load_settings(DemoSettings, logdy="just-a-host")
    assert load_settings(DemoSettings, logdy="logdy:8233").logdy == "logdy:8233"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_PORT", "9001")
    settings = settings_from_argv(
        DemoSettings,
        ["--port", "9002", "--log-json", "--tags", "a", "--tags", "b"],
        prog="demo",
        description="",
    )
    assert (settings.port, settings.log_json, settings.tags) == (9002, True, ["a", "b"])


def test_help_documents_every_setting_with_its_variable() -> None:
    help_text = build_arg_parser(DemoSettings, prog="demo", description="").format_help()
    for variable in env_var_names(DemoSettings):
        assert variable in help_text
    assert "--redis-url" in help_text
    assert "--node-id" in help_text


class TokenSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", env_file=None, populate_by_name=True)

    internal_token: InternalToken | None = internal_token_field("DEMO_", "A token.")


GOOD_TOKEN = "s3cret-" + "t" * 20


def test_internal_token_is_read_from_the_shared_and_the_prefixed_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings(TokenSettings).internal_token is None
    monkeypatch.setenv(INTERNAL_TOKEN_ENV, GOOD_TOKEN)
    token = load_settings(TokenSettings).internal_token
    assert token is not None
    assert token.get_secret_value() == GOOD_TOKEN
    monkeypatch.setenv("DEMO_INTERNAL_TOKEN", GOOD_TOKEN + "-own")  # the prefixed one wins
    token = load_settings(TokenSettings).internal_token
    assert token is not None
    assert token.get_secret_value() == GOOD_TOKEN + "-own"
    flagged = settings_from_argv(
        TokenSettings, ["--internal-token", GOOD_TOKEN + "-flag"], prog="demo", description=""
    ).internal_token
    assert flagged is not None
    assert flagged.get_secret_value() == GOOD_TOKEN + "-flag"


def test_internal_token_never_shows_in_a_dump_or_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(TokenSettings, internal_token=GOOD_TOKEN)
    for shown in (repr(settings), str(settings), settings.model_dump_json(), str(vars(settings))):
        assert GOOD_TOKEN not in shown
    short = "short-" + "s" * 5
    monkeypatch.setenv(INTERNAL_TOKEN_ENV, short)
    with pytest.raises(SettingsError) as caught:
        load_settings(TokenSettings)
    message = str(caught.value)
    assert "DEMO_INTERNAL_TOKEN or COMFY_INTERNAL_TOKEN / --internal-token" in message
    assert "at least 16 characters" in message
    assert short not in message


def test_help_names_both_token_variables_and_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTERNAL_TOKEN_ENV, GOOD_TOKEN)
    help_text = build_arg_parser(TokenSettings, prog="demo", description="").format_help()
    assert "DEMO_INTERNAL_TOKEN or COMFY_INTERNAL_TOKEN" in " ".join(help_text.split())
    assert GOOD_TOKEN not in help_text
    assert {"DEMO_INTERNAL_TOKEN", INTERNAL_TOKEN_ENV} <= env_var_names(TokenSettings)
