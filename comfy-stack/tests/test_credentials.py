"""Which URL and key the client uses when the user names neither."""

from pathlib import Path

import pytest

from comfy_stack.credentials import (
    API_KEY_ENV,
    DEFAULT_URL,
    KEY_ENV,
    URL_ENV,
    client_key,
    client_url,
)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder to run from, with none of the client's variables set."""
    monkeypatch.chdir(tmp_path)
    for name in (URL_ENV, API_KEY_ENV, KEY_ENV):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _local_stack(here: Path, url: str | None) -> None:
    (here / ".comfy-stack").mkdir()
    (here / ".comfy-stack" / "admin-key").write_text("the-admin-key\n")
    if url:
        (here / ".comfy-stack" / "url").write_text(url + "\n")


def test_with_nothing_set_the_stack_up_runs_here_is_used(here: Path) -> None:
    _local_stack(here, "http://127.0.0.1:8123")

    assert client_url(None) == "http://127.0.0.1:8123"
    assert client_key(None, "http://127.0.0.1:8123") == "the-admin-key"


def test_without_a_running_stack_the_default_address_gets_the_admin_key(here: Path) -> None:
    _local_stack(here, None)

    assert client_url(None) == DEFAULT_URL
    assert client_key(None, DEFAULT_URL) == "the-admin-key"


def test_the_admin_key_never_goes_to_another_server(here: Path) -> None:
    _local_stack(here, "http://127.0.0.1:8123")

    assert client_key(None, "https://comfy.example.com") is None
    assert client_key(None, DEFAULT_URL) is None  # not where this folder's stack runs


def test_flags_win_over_variables_which_win_over_the_local_stack(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _local_stack(here, "http://127.0.0.1:8123")
    monkeypatch.setenv(URL_ENV, "https://comfy.example.com/")
    monkeypatch.setenv(KEY_ENV, "older-name")

    assert client_url(None) == "https://comfy.example.com"
    assert client_url("http://other:9000") == "http://other:9000"
    assert client_key(None, "https://comfy.example.com") == "older-name"
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert client_key(None, "https://comfy.example.com") == "from-env"
    assert client_key("from-flag", "https://comfy.example.com") == "from-flag"
