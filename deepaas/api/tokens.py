"""Bearer tokens: read once at start-up, checked in constant time per request.

Tokens come from ``--auth-token-file`` (one per line) and from the
``auth_tokens`` setting (``DEEPAAS_AUTH_TOKENS``; entries separated by
newlines or ``;``), both in the same form::

    # a comment
    s3cr3t-for-the-ui   predict
    s3cr3t-for-ci       predict,train
    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 admin
    s3cr3t-for-me

A token is any run of visible ASCII (what a header can carry), followed by
the scopes it holds (:data:`deepaas.api.scopes.SCOPES`, comma-separated);
none listed means all of them. ``sha256:<64 hex digits>`` stands for the
token whose SHA-256 that is, so the file need not hold secrets in clear
(``printf %s TOKEN | sha256sum``). Every mistake stops start-up with one
line naming the file and line, never the token: a word after a token is
quoted only when it looks like a misspelt scope (:func:`_quotable`), other
mistakes are named by position (``word 2``), and neither a hash, its
length, nor a line that is not UTF-8 is shown.

Only SHA-256 digests are kept, and a presented token is looked up by its
digest: the dictionary lookup touches digests, never the secret, so how
long it takes says nothing an attacker can use (to make a digest share its
first bytes with a token's they would need a preimage), and the match is
confirmed with :func:`hmac.compare_digest`, constant time. One hash and one
lookup: the cost does not grow with the number of tokens.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Iterator

from deepaas.api.scopes import SCOPES
from deepaas.config import ConfigError

HASH_PREFIX = "sha256:"
_sha256 = hashlib.sha256
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_HEX = re.compile(r"[0-9a-fA-F]*")
#: Where DEEPAAS_AUTH_TOKENS entries come from, in messages.
ENV_SOURCE = "auth_tokens (DEEPAAS_AUTH_TOKENS)"
#: How a token file is written, in messages.
LAYOUT = "one token per line, then its scopes"


@dataclasses.dataclass(frozen=True)
class Token:
    """One accepted token: its digest, its scopes, where it was defined
    (``FILE:LINE``; what messages and logs name, never the token)."""

    digest: bytes
    scopes: frozenset[str]
    where: str


def digest_of(token: str) -> bytes:
    """The SHA-256 of ``token`` (visible ASCII, see :func:`is_token`)."""
    return hashlib.sha256(token.encode("ascii")).digest()


def is_token(text: str) -> bool:
    """Whether ``text`` can be a token: visible ASCII, no space (what an
    ``Authorization`` header carries after ``Bearer``)."""
    return bool(text) and text.isascii() and text.isprintable() and " " not in text


class TokenTable:
    """The accepted tokens, by digest."""

    __slots__ = ("_by_digest",)

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._by_digest: dict[bytes, Token] = {}
        for token in tokens:
            seen = self._by_digest.get(token.digest)
            if seen is not None:
                raise ConfigError(
                    f"{token.where}: the same token as {seen.where}: list each "
                    "token once, with all its scopes"
                )
            self._by_digest[token.digest] = token

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, presented: str) -> Token | None:
        """The token ``presented`` is, or None; ``presented`` must pass
        :func:`is_token`."""
        digest = _sha256(presented.encode("ascii")).digest()
        token = self._by_digest.get(digest)
        if token is not None and hmac.compare_digest(token.digest, digest):
            return token
        return None


def parse_entry(text: str, where: str, layout: str = LAYOUT) -> Token | None:
    """The token an entry (a line) defines; None for a blank line or a
    comment. Raises :class:`~deepaas.config.ConfigError` naming ``where``
    and never quoting the token (see :func:`_quotable`); ``layout`` ends the
    message when a word is not a scope (how entries are written)."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    secret, *rest = text.split(None, 1)
    if secret.lower().startswith(HASH_PREFIX):
        hexdigits = secret[len(HASH_PREFIX) :]
        if not hexdigits:
            raise ConfigError(
                f"{where}: no hex digits right after the colon of "
                f"{HASH_PREFIX} write the 64 hex digits of the token's SHA-256 "
                "there, without a space (printf %s TOKEN | sha256sum)"
            )
        if not _HEX64.fullmatch(hexdigits):
            # Neither the digits nor how many: a hash is as good as a token
            # to someone who can read the start-up log.
            problem = (
                "holds characters that are not hexadecimal (0-9, a-f)"
                if not _HEX.fullmatch(hexdigits)
                else "is not 64 hex digits long"
            )
            raise ConfigError(
                f"{where}: what follows {HASH_PREFIX} {problem}: it must be "
                "the 64 hex digits of the token's SHA-256 (printf %s TOKEN | "
                "sha256sum)"
            )
        digest = bytes.fromhex(hexdigits)
    elif is_token(secret):
        digest = digest_of(secret)
    else:
        raise ConfigError(
            f"{where}: a token must be visible ASCII characters (what an "
            "HTTP header carries), without spaces"
        )
    words = [name for name in re.split(r"[\s,]+", "".join(rest)) if name]
    if rest and not words:  # "TOKEN ," would otherwise hold every scope
        raise ConfigError(
            f"{where}: no scope after the token, only commas: list its scopes "
            f"({', '.join(SCOPES)}), or write the token alone for all of them"
        )
    for position, word in enumerate(words, 2):  # word 1 is the token
        if word in SCOPES:
            continue
        if word.startswith("#"):
            raise ConfigError(
                f"{where}: word {position} starts a comment after the token: "
                "a comment must be on a line of its own, starting with #"
            )
        if _quotable(word):
            close = difflib.get_close_matches(word.lower(), SCOPES, 1, 0.6)
            raise ConfigError(
                f"{where}: unknown scope {word!r} (did you mean {close[0]!r}?): "
                f"the scopes are {', '.join(SCOPES)} (comma-separated, after "
                "the token)"
            )
        raise ConfigError(
            f"{where}: word {position} is not a scope (scopes: "
            f"{', '.join(SCOPES)}; {layout})"
        )
    return Token(digest, frozenset(words) if words else frozenset(SCOPES), where)


def _quotable(word: str) -> bool:
    """Whether a message may quote ``word``, a word after a token that is
    not a scope: only when it looks like a misspelt scope (ASCII letters,
    at most 12, close to a scope's name by :func:`difflib.get_close_matches`,
    e.g. ``predcit``, ``Train``, ``admins``). Anything else may be a second
    token on the line (``TOKEN1 TOKEN2``, a token pasted where a ``;`` was
    meant, a hash after ``sha256: ``), and start-up messages end up in logs
    that more people read than the token file: those are named by position.
    """
    return (
        len(word) <= 12
        and word.isascii()
        and word.isalpha()
        and bool(difflib.get_close_matches(word.lower(), SCOPES, 1, 0.6))
    )


def read_token_file(path: str) -> list[Token]:
    """Every token of the file at ``path``; ConfigError when it cannot be
    read, is not UTF-8 text, holds a bad line or holds no token."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read auth token file {path}: {exc.strerror or exc}"
        ) from None
    # A file saved by an editor that writes a BOM: not part of the first token
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1  # not the bytes: a token's
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text: save the auth token file as UTF-8"
        ) from None
    # Lines end at \n (and \r\n) only, as editors count them: str.splitlines
    # would also end one at \v, \f or \x1c-\x1e and shift the numbers.
    lines = text.split("\n")
    tokens = list(_entries(lines, lambda n: f"{path}:{n}"))
    if not tokens:
        raise ConfigError(
            f"auth token file {path} holds no token: write one token per line, "
            "optionally followed by its scopes (e.g. 's3cret predict,train')"
        )
    return tokens


def parse_tokens_setting(text: str) -> list[Token]:
    """The tokens of the ``auth_tokens`` setting (entries separated by
    newlines or ``;``); ConfigError when it holds a bad entry or none."""
    entries = re.split(r"[;\n]", text)
    tokens = list(
        _entries(
            entries,
            lambda n: f"{ENV_SOURCE}, entry {n}",
            "one token per entry, then its scopes; entries of "
            "DEEPAAS_AUTH_TOKENS are separated by ';'",
        )
    )
    if not tokens:
        raise ConfigError(
            f"{ENV_SOURCE} is set but holds no token: give 'TOKEN [SCOPES]' "
            "entries separated by ';', or leave it unset"
        )
    return tokens


def _entries(
    lines: Iterable[str], where: Callable[[int], str], layout: str = LAYOUT
) -> Iterator[Token]:
    for number, line in enumerate(lines, 1):
        token = parse_entry(line, where(number), layout)
        if token is not None:
            yield token


def load_tokens(token_file: str | None, tokens: str | None) -> TokenTable | None:
    """The tokens of ``--auth-token-file`` and of ``auth_tokens`` together;
    None when neither is set (access control off, as in DEEPaaS 2.x).

    Raises :class:`~deepaas.config.ConfigError` for an empty setting (a
    secret that was meant to be there: refusing is safer than serving
    without tokens), an unreadable or empty file, or a bad entry.
    """
    if token_file is None and tokens is None:
        return None
    found: list[Token] = []
    if token_file is not None:
        if not token_file.strip():
            raise ConfigError(
                "auth_token_file is set but empty: name a file, or leave it unset"
            )
        found += read_token_file(token_file)
    if tokens is not None:
        found += parse_tokens_setting(tokens)
    return TokenTable(found)
