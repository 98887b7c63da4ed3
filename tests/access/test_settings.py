"""The settings of issue 13 (CORS, access log), checked at start-up."""

from __future__ import annotations

import pytest

from deepaas.config import ConfigError, Settings, load_settings


def test_origins_are_checked_at_start_up() -> None:
    settings = load_settings(
        [
            "--cors-origin",
            "HTTPS://App.Example.org/",
            "--cors-origin",
            "http://[::1]:3000",
        ]
    )
    assert settings.cors_origin == ("https://app.example.org", "http://[::1]:3000")
    settings = load_settings([], {"DEEPAAS_CORS_ORIGIN": "http://a:1, http://b"})
    assert settings.cors_origin == ("http://a:1", "http://b")
    for bad in (
        "app.example.org",
        "https://app.example.org/path",
        "ftp://x",
        "http://x:65536",
        "https://app_example.org",
        "https://app.example.org%2F",
        "https://user@app.example.org",
    ):
        with pytest.raises(ConfigError, match="is not an origin"):
            Settings(cors_origin=(bad,))
    # accepted and never matched before: browsers send one exact origin
    for pattern in ("https://*.example.org", "*.example.org", "https://app.*"):
        with pytest.raises(ConfigError, match="patterns are not supported"):
            Settings(cors_origin=(pattern,))
    with pytest.raises(ConfigError, match="with tokens, name the origins"):
        Settings(cors_origin=("*",), auth_tokens="t")


def test_origins_are_kept_as_browsers_send_them() -> None:
    """A browser leaves the default port out of Origin (and writes a port
    without leading zeros): an origin given with it is kept without."""
    settings = load_settings(
        [
            "--cors-origin",
            "https://B.example.org:443,http://c.example.org:80/",
            "--cors-origin",
            "http://d.example.org:443,https://e.example.org:80,http://[::1]:0080",
        ]
    )
    assert settings.cors_origin == (
        "https://b.example.org",
        "http://c.example.org",
        "http://d.example.org:443",  # not the default port of its scheme
        "https://e.example.org:80",
        "http://[::1]",
    )
