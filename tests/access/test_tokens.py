"""Token files and the ``auth_tokens`` setting (``deepaas.api.tokens``): what
they accept, the one-line errors naming the file and line, the lookup."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from deepaas.api import tokens as tk
from deepaas.api.scopes import SCOPES
from deepaas.config import ConfigError, Settings, load_settings
from deepaas.server import Server
from tests.deepaas_run import DEEPAAS_RUN, REPO_ROOT, free_port


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tokens"
    path.write_text(text)
    return str(path)


def test_lines_with_and_without_scopes_comments_and_hashes(tmp_path: Path) -> None:
    hashed = hashlib.sha256(b"hashed-secret").hexdigest()
    path = write(
        tmp_path,
        "# people and machines\n"
        "\n"
        "ui-secret   predict\n"
        "ci-secret\tpredict, train\n"
        f"SHA256:{hashed.upper()} admin\n"
        "  root-secret  \n",
    )
    table = tk.load_tokens(path, None)
    assert table is not None and len(table) == 4
    assert table.find("ui-secret").scopes == {"predict"}  # type: ignore[union-attr]
    ci = table.find("ci-secret")
    assert ci is not None and ci.scopes == {"predict", "train"}
    assert ci.where == f"{path}:4"
    admin = table.find("hashed-secret")
    assert admin is not None and admin.scopes == {"admin"}
    assert table.find("root-secret").scopes == set(SCOPES)  # type: ignore[union-attr]
    # The hash itself is not a token, nor is anything else
    assert table.find(f"sha256:{hashed}") is None
    assert table.find("ui-secre") is None


def test_the_setting_and_the_file_add_up(tmp_path: Path) -> None:
    path = write(tmp_path, "from-file train\n")
    table = tk.load_tokens(path, "from-env predict; other admin,train ;")
    assert table is not None and len(table) == 3
    other = table.find("other")
    assert other is not None and other.scopes == {"admin", "train"}
    assert other.where == f"{tk.ENV_SOURCE}, entry 2"


def test_no_setting_means_no_access_control() -> None:
    assert tk.load_tokens(None, None) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ok predict\nbad predict,deploy\n", ":2: word 3 is not a scope"),
        ("ok predict\nbad predict,trian\n", ":2: unknown scope 'trian' (did you"),
        ("sha256:abc123 admin\n", ":1: what follows sha256: is not 64 hex digits"),
        (f"sha256:{'g' * 64}\n", ":1: what follows sha256: holds characters th"),
        ("tök predict\n", ":1: a token must be visible ASCII"),
        ("same predict\nother\nsame train\n", ":3: the same token as "),
        ("# only a comment\n\n", "holds no token"),
        ("ok predict\nlone ,\n", ":2: no scope after the token, only commas"),
        ("", "holds no token"),
    ],
)
def test_a_bad_file_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        tk.load_tokens(path, None)
    message = str(caught.value)
    assert path in message and expected in message
    assert "\n" not in message
    for secret in ("same", "bad", "ok"):  # the message never shows a token
        assert f"'{secret}'" not in message


def test_an_unreadable_file_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=f"cannot read auth token file {missing}"):
        tk.load_tokens(missing, None)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe token\n")
    with pytest.raises(ConfigError, match=":1: not UTF-8 text"):
        tk.load_tokens(str(binary), None)
    if os.geteuid() != 0:  # root reads anything
        locked = Path(write(tmp_path, "secret\n"))
        locked.chmod(0)
        with pytest.raises(ConfigError, match="Permission denied"):
            tk.load_tokens(str(locked), None)


def test_a_set_but_empty_setting_is_refused_not_ignored() -> None:
    # An unset secret in a deployment template must not turn tokens off.
    with pytest.raises(ConfigError, match="auth_token_file is set but empty"):
        tk.load_tokens("", None)
    with pytest.raises(ConfigError, match="holds no token"):
        tk.load_tokens(None, " ; ")


def test_the_lookup_is_by_digest_and_confirmed_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = tk.TokenTable([tk.parse_entry("secret predict", "t:1")])  # type: ignore[list-item]
    compared: list[tuple[bytes, bytes]] = []

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(tk.hmac, "compare_digest", compare_digest)
    assert table.find("secret") is not None
    digest = hashlib.sha256(b"secret").digest()
    assert compared == [(digest, digest)]
    # No secret kept in clear, only its digest
    assert all(t.digest == digest for t in table._by_digest.values())
    assert list(table._by_digest) == [digest]


def test_settings_come_from_the_environment_and_never_from_a_flag(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "x\n")
    settings = load_settings(
        ["--auth-token-file", path, "--metrics-public"],
        {"DEEPAAS_AUTH_TOKENS": "a predict"},
    )
    assert settings.auth_token_file == path
    assert settings.auth_tokens == "a predict"
    assert settings.metrics_public
    assert "a predict" not in repr(settings)  # never logged with the settings
    with pytest.raises(SystemExit):
        load_settings(["--auth-tokens", "a"], {})


def test_a_bad_token_file_stops_the_server_before_plugins_load(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "t nonsense\n")
    with pytest.raises(ConfigError, match=":1: word 2 is not a scope"):
        Server(Settings(auth_token_file=path), [])


def test_a_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Some editors save UTF-8 with a BOM: it is not part of the token."""
    path = tmp_path / "tokens"
    path.write_bytes(b"\xef\xbb\xbfbom-secret predict\n")
    table = tk.load_tokens(str(path), None)
    assert table is not None
    token = table.find("bom-secret")
    assert token is not None and token.scopes == {"predict"}


HASH = hashlib.sha256(b"Xk9secretTOKENone").hexdigest()
FILE_LAYOUT = "(scopes: predict, train, admin; one token per line, then its scopes)"


# (what the file or the setting holds, what must not show, what must)
MISTAKES = [
    # Two tokens on a line, or in one entry of the setting where a ";" was meant
    (
        "Xk9secretTOKENone Yq7secretTOKENtwo\n",
        ["Xk9secretTOKENone", "Yq7secretTOKENtwo"],
        ":1: word 2 is not a scope " + FILE_LAYOUT,
    ),
    (
        "env:Xk9secretTOKENone Yq7secretTOKENtwo",
        ["Xk9secretTOKENone", "Yq7secretTOKENtwo"],
        "auth_tokens (DEEPAAS_AUTH_TOKENS), entry 1: word 2 is not a scope "
        "(scopes: predict, train, admin; one token per entry, then its scopes; "
        "entries of DEEPAAS_AUTH_TOKENS are separated by ';')",
    ),
    (
        "env:ok predict; Xk9secretTOKENone predict,Yq7secretTOKENtwo",
        ["Xk9secretTOKENone", "Yq7secretTOKENtwo"],
        "auth_tokens (DEEPAAS_AUTH_TOKENS), entry 2: word 3 is not a scope",
    ),
    # "token scope token2": a short word is not quoted unless it looks like
    # a misspelt scope
    (
        "ok\nXk9secret scope Yq7secret2\n",
        ["Xk9secret", "Yq7secret2", "'scope'"],
        ":2: word 2 is not a scope",
    ),
    # A space after "sha256:": the hash is not a scope, and not shown
    (f"sha256: {HASH}\n", [HASH, HASH[:16]], ":1: no hex digits right after"),
    (f"sha256: {HASH} admin\n", [HASH[:16]], ":1: no hex digits right after"),
    # A hash that is not one: neither the characters nor how many
    (
        f"sha256:{'Xk9s' * 16}\n",
        ["Xk9s", "64 characters"],
        ":1: what follows sha256: holds characters that are not hexadecimal",
    ),
    (
        f"sha256:{HASH[:63]} admin\n",
        [HASH[:16], "63"],
        ":1: what follows sha256: is not 64 hex digits long",
    ),
    # A comment after the token
    (
        "Xk9secretTOKENone # the CI\n",
        ["Xk9secretTOKENone", "'#'", "the CI"],
        ":1: word 2 starts a comment after the token: a comment must be on a "
        "line of its own",
    ),
    # Not UTF-8: the line, not the byte, and nothing of the line
    (
        b"ok\nXk9secret\xff predict\n",
        ["Xk9secret", "byte", "\\xff"],
        ":2: not UTF-8 text",
    ),
    ("ok\nXk9secr\u00e9t predict\n", ["Xk9secr"], ":2: a token must be visible"),
    ("ok\nXk9secret ,\n", ["Xk9secret"], ":2: no scope after the token"),
    ("Xk9secret\nok\nXk9secret\n", ["Xk9secret"], ":3: the same token as "),
    # One that may be quoted: a misspelt scope
    (
        "Xk9secret predict,Trian\n",
        ["Xk9secret"],
        ":1: unknown scope 'Trian' (did you mean 'train'?)",
    ),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("given", "hidden", "shown"), MISTAKES)
def test_a_mistake_stops_deepaas_run_without_showing_a_token(
    tmp_path: Path, given: str | bytes, hidden: list[str], shown: str
) -> None:
    """The real command, as an operator sees it: one line naming the file
    and line (or the setting and entry), nothing of a token or a hash."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEEPAAS_", "OS_DEFAULT__"))
    }
    env.update(PYTHONPATH=str(REPO_ROOT), DEEPAAS_STATE_DIR=str(tmp_path / "state"))
    args = [DEEPAAS_RUN, "--listen-ip", "127.0.0.1", "--listen-port"]
    args += [str(free_port()), "--model-name", "demo"]
    path = tmp_path / "tokens"
    if isinstance(given, str) and given.startswith("env:"):
        env["DEEPAAS_AUTH_TOKENS"] = given.removeprefix("env:")
    else:
        if isinstance(given, bytes):
            path.write_bytes(given)
        else:
            path.write_text(given)
        args += ["--auth-token-file", str(path)]
        shown = f"{path}{shown}"
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode != 0
    assert shown in done.stderr
    output = done.stdout + done.stderr
    for secret in hidden:
        assert secret not in output
    assert done.stderr.count("\n") == 1, done.stderr


def test_line_numbers_are_an_editors(tmp_path: Path) -> None:
    """Lines end at newlines only: a stray form feed or vertical tab (which
    str.splitlines would end a line at) does not shift the numbers."""
    path = write(tmp_path, "# notes\fmore\x0bnotes\nXk9secret predict,bad\n")
    with pytest.raises(ConfigError, match=":2: word 3 is not a scope"):
        tk.load_tokens(path, None)
