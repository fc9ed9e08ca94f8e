"""Scrubbing of secrets from everything sqreen_mw records, before it leaves the process.

The rules are data: :file:`sqreen_mw/scrub_rules.toml`, loaded once at import and documented in
``docs/scrubbing.md``. :meth:`Scrubber.scrub` returns a copy of a value in which:

* **Sensitive keys.** Under a dict key that matches a key rule, the whole value (string, number, nested dict or
  list, anything) becomes the single marker :data:`~sqreen_mw._schema.REDACTED`. Keys are matched case-insensitively
  after normalising (``-`` to ``_``, ``[`` to ``_``, ``]`` dropped: ``X-Api-Key`` -> ``x_api_key``, ``user[pass]``
  -> ``user_pass``); camelCase keys are also tried split into words (``authToken`` -> ``auth_token``). The file's
  ``[keys]`` table has fragments matched *anywhere* in the key and fragments that must be the key's *last word*
  (a word starts after a character that is not a letter or digit), so ``x_auth``, ``user_pass``, ``connect.sid`` and
  ``card[cvv]`` are redacted while ``author``, ``passenger``, ``inside`` and ``session_count`` are not. This covers
  Sqreen's list, Sentry's ``DEFAULT_DENYLIST`` and Datadog's key regex without Datadog's bare substrings ``pass``,
  ``sid`` and ``signed``; known over-matches kept on purpose: ``token`` also hits ``max_tokens``, ``secret`` hits
  ``secretary``.

* **Secrets inside strings.** Every string is searched once with all value rules combined (bearer and ``Basic``
  credentials, JWTs, PEM private keys, cloud, payment-provider, chat and code-host tokens, webhook URLs, the password
  of ``scheme://user:pass@host``, a token in a URL path after ``/reset/``, ``/token/``, ..., payment cards confirmed
  by the Luhn check). Only the match (or its ``secret`` group) is replaced, so ``curl/8.4 token/ghp_…`` keeps
  ``curl/8.4``. In text that pairs a key with a value (``a=1&password=x`` form text, cut JSON ``"pin": "1234"``,
  ``Authorization: Token x``) the value of a sensitive key is replaced too. A string holding a whole JSON document
  (a ``text/plain`` body, a JSON field inside JSON) is parsed, scrubbed as data and re-serialised when something was
  redacted. A card is looked for in every run of 13 or more ASCII digits where single spaces or dashes may separate
  digit groups: some sequence of whole groups must hold 13 to 19 digits, start with 2-6 and pass Luhn; digits glued
  together form one group, so a card hidden in a longer number is not found, nor a run inside a word (a hex id or
  hash glued to ASCII letters). An ``int`` of 13-19 digits is checked
  the same way. ``bytes`` are checked as Latin-1 text and replaced whole when they hold a secret.

* **Structure.** Dicts and other mappings become dicts (keys kept), lists, tuples and sets become lists; other
  objects are returned as they are. Containers nested deeper than :data:`MAX_DEPTH` become ``REDACTED`` (this also
  stops self-referencing structures). The input is never mutated. Scrubbing twice gives the same result as once.

Options: ``sensitive_keys``/``sensitive_values`` given as a ``str`` replace the default key rules / value rules
(matched with ``re.search``, case-insensitive for keys, against the normalised key: write ``_`` for ``-``); ``""``
disables that rule. Given as an iterable they add to the defaults: exact key names (normalised the same way) or
extra value regexes. A string in which a user value regex matches is replaced whole, unless the regex has a named
group ``secret`` (then only that group is). A match with a named group ``card`` only counts when that group holds a
card as defined above. ``enabled=False`` makes :meth:`Scrubber.scrub` return its argument untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote_plus

from ._exceptions import ConfigurationError
from ._schema import REDACTED, TRUNCATION_MARKER

#: Containers nested deeper than this are replaced by the marker.
MAX_DEPTH = 20
#: The packaged rules file (see ``docs/scrubbing.md``).
RULES_FILE = "scrub_rules.toml"

_CACHE_SIZE = 4096
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^0-9]+")
_CARD_FIRST = frozenset("23456")
_SECRET_GROUP = "(?P<secret>"  # noqa: S105 - a regex group, not a password


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(candidate: str) -> bool:
    groups = [group for group in _SEPARATORS.split(candidate) if group]
    for i, first in enumerate(groups):
        if first[0] not in _CARD_FIRST:
            continue
        size = 0
        for j in range(i, len(groups)):
            size += len(groups[j])
            if size > 19:
                break
            if size >= 13 and _luhn("".join(groups[i : j + 1])):
                return True
    return False


def _is_basic_text(secret: str) -> bool:
    try:
        decoded = base64.b64decode(secret + "=" * (-len(secret) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def _token_like(secret: str) -> bool:
    return any(c.isdigit() for c in secret) and any(c.isalpha() for c in secret)


def _mixed(secret: str) -> bool:
    return any(c.isupper() for c in secret) and any(c.islower() for c in secret) and any(c.isdigit() for c in secret)


#: The tests a rule's ``check`` may name.
CHECKS: dict[str, Callable[[str], bool]] = {
    "luhn": _is_card,
    "basic": _is_basic_text,
    "token_like": _token_like,
    "mixed": _mixed,
}


@dataclass(frozen=True)
class ValueRule:
    """One detector of the rules file (the fields are documented at the top of the file)."""

    name: str
    pattern: str
    example: str
    check: str | None = None
    hints: tuple[str, ...] = ()
    ignore_case: bool = False
    min_length: int = 0
    min_digits: int = 0


def _load_rules(data: bytes) -> tuple[list[str], list[str], tuple[ValueRule, ...]]:
    """(anywhere key fragments, last-word key fragments, value rules) from the rules file's bytes."""
    doc = tomllib.loads(data.decode("utf-8"))
    keys = doc["keys"]
    anywhere, last_word = list(keys["anywhere"]), list(keys["last_word"])
    rules = []
    for table in doc["values"]:
        ignore_case = bool(table.get("ignore_case", False))
        hints = tuple(h.lower() if ignore_case else h for h in table.get("hints", ()))
        rule = ValueRule(
            table["name"],
            table["pattern"],
            table["example"],
            table.get("check"),
            hints,
            ignore_case,
            int(table.get("min_length", 0)),
            int(table.get("min_digits", 0)),
        )
        re.compile(rule.pattern)  # a broken shipped file fails at import, loudly
        if rule.check is not None and rule.check not in CHECKS:
            raise ValueError(f"{RULES_FILE}: rule {rule.name!r}: unknown check {rule.check!r}")
        if rule.pattern.count(_SECRET_GROUP) > 1:
            raise ValueError(f"{RULES_FILE}: rule {rule.name!r}: more than one 'secret' group")
        rules.append(rule)
    return anywhere, last_word, tuple(rules)


_ANYWHERE, _LAST_WORD, RULES = _load_rules(resources.files(__package__).joinpath(RULES_FILE).read_bytes())

#: The default key regex, searched in normalised keys (built from the rules file's ``[keys]``).
DEFAULT_SENSITIVE_KEYS = f"(?:{'|'.join(_ANYWHERE)})|(?<![a-z0-9])(?:{'|'.join(_LAST_WORD)})\\Z"
#: The value rules as one regex, for ``sensitive_values=DEFAULT_SENSITIVE_VALUES + "|..."``: given as a ``str`` it
#: redacts whole strings and applies no check but Luhn (on group ``card``); the built-in rules are more precise.
DEFAULT_SENSITIVE_VALUES = "|".join(
    f"(?P<card>{rule.pattern})" if rule.check == "luhn" else rule.pattern.replace(_SECRET_GROUP, "(?:")
    for rule in RULES
)


class _Compiled:
    """A value rule ready to run."""

    __slots__ = ("check", "hints", "ignore_case", "min_digits", "min_length", "regex", "secret")

    def __init__(self, rule: ValueRule) -> None:
        self.regex = re.compile(rule.pattern)
        self.secret: str | int = "secret" if _SECRET_GROUP in rule.pattern else 0
        self.check = None if rule.check is None else CHECKS[rule.check]
        self.hints = rule.hints
        self.ignore_case = rule.ignore_case
        self.min_length = rule.min_length
        self.min_digits = rule.min_digits

    def redact(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        for match in self.regex.finditer(text):
            if self.check is not None and not self.check(match.group(self.secret)):
                continue
            start, end = match.span(self.secret)
            out.append(text[pos:start])
            out.append(REDACTED)
            pos = end
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)


_COMPILED = tuple(_Compiled(rule) for rule in RULES)
_HINTED = tuple(rule for rule in _COMPILED if rule.hints)
_UNHINTED = tuple(rule for rule in _COMPILED if not rule.hints)
_HINT_RULE = {hint: rule for rule in reversed(_HINTED) for hint in rule.hints}
# Every hint in one regex (one for the case-sensitive hints, one run on the lower-cased text for the others): a string
# that holds none (most strings) skips every hinted rule after two scans.
_HINT_RE = re.compile("|".join(re.escape(h) for r in _HINTED if not r.ignore_case for h in r.hints))
_HINT_CI_RE = re.compile("|".join(re.escape(h) for r in _HINTED if r.ignore_case for h in r.hints))
_ORDER = {rule: i for i, rule in enumerate(_COMPILED)}
_DIGITS = b"0123456789"
_LONG_TEXT = 512
# A string shorter than this cannot hold a match of a rule without hints.
_UNHINTED_MIN = min((max(r.min_length, r.min_digits) for r in _UNHINTED), default=0)


def _redact_values(text: str) -> str:
    """``text`` with every match of the built-in value rules (or its secret group) replaced by the marker."""
    hits: set[_Compiled] = set()
    if len(text) > _LONG_TEXT:  # substring tests beat the alternation's per-character scan on long text
        lower = text.lower()
        hits = {rule for hint, rule in _HINT_RULE.items() if hint in (lower if rule.ignore_case else text)}
    elif _HINT_RE.search(text) is not None or _HINT_CI_RE.search(text.lower()) is not None:
        hits = {_HINT_RULE[m.group()] for m in _HINT_RE.finditer(text)}
        hits.update(_HINT_RULE[m.group()] for m in _HINT_CI_RE.finditer(text.lower()))
    if hits:
        for rule in sorted(hits, key=_ORDER.__getitem__):  # the file's order: e.g. a JWT before a bearer token
            text = rule.redact(text)
    if len(text) < _UNHINTED_MIN:
        return text
    digits = -1
    for rule in _UNHINTED:
        if len(text) < rule.min_length:
            continue
        if rule.min_digits:
            if digits < 0:  # counting digits in C is several times cheaper than a regex scan
                data = text.encode("utf-8", "surrogatepass")
                digits = len(data) - len(data.translate(None, _DIGITS))
            if digits < rule.min_digits:
                continue
        text = rule.redact(text)
    return text


# A key then "=" or ":" in text (form text, JSON text, header lines); the value is found after it, by hand.
_KEY_SEP = re.compile(
    r"""(?<![A-Za-z0-9_.\[\]%$@+-])(["']?)((?:[A-Za-z_$@]|2(?=fa))[A-Za-z0-9_.\[\]%$@+-]{0,63})\1"""
    r"""[ \t]{0,3}([=:])[ \t]{0,3}"""
)
_DQ_VALUE = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
_SQ_VALUE = re.compile(r"'([^']*)'?")
_EQ_VALUE = re.compile(r"""[^\s&;,"'{}\[\]()<>]+""")
_COLON_VALUE = re.compile(r"""[^\r\n&;,"'{}\[\]()<>]*[^\s&;,"'{}\[\]()<>]""")
_MIN_VALUE_TEXT = 8  # no built-in value rule matches fewer characters ("Bearer x")
_MIN_KV_TEXT = 5  # "pin=1"
_MAX_PASSES = 4
_CACHED_TEXT = 256  # strings up to this long have their scrubbed form cached
_CARD_INT_MIN = 10**12  # a smaller int has too few digits for a card


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_").replace("[", "_").replace("]", "")


def _split(key: str) -> str:
    return _normalise(_CAMEL.sub("_", key))  # authToken -> auth_token


def _compile(option: str, regex: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(regex, flags)
    except re.error as exc:
        raise ConfigurationError(f"{option}: invalid regex {regex!r}: {exc}") from None


def _user_hit(regex: re.Pattern[str], text: str) -> bool:
    for match in regex.finditer(text):
        card = match.groupdict().get("card") if regex.groupindex else None
        if card is None or _is_card(card):
            return True
    return False


class Scrubber:
    """Redacts sensitive keys and values (rules and defaults in the module docstring and ``docs/scrubbing.md``).

    :param enabled: ``False`` turns :meth:`scrub` into the identity.
    :param sensitive_keys: ``None`` for :data:`DEFAULT_SENSITIVE_KEYS`; a ``str`` regex replacing it (``""``: no key
        rule); an iterable of exact key names added to it.
    :param sensitive_values: ``None`` for the built-in value rules; a ``str`` regex replacing them (``""``: no value
        rule); an iterable of regexes added to them.
    :raises ConfigurationError: a regex does not compile, or an option has the wrong type.
    """

    __slots__ = ("_defaults", "_enabled", "_extra_keys", "_key_cache", "_key_re", "_keys_on", "_text_cache",
                 "_value_res")

    def __init__(
        self,
        *,
        enabled: bool = True,
        sensitive_keys: str | Iterable[str] | None = None,
        sensitive_values: str | Iterable[str] | None = None,
    ) -> None:
        self._enabled = bool(enabled)
        key_regex, extra_keys = _split_option("sensitive_keys", sensitive_keys, DEFAULT_SENSITIVE_KEYS)
        self._key_re = _compile("sensitive_keys", key_regex, re.IGNORECASE) if key_regex else None
        self._extra_keys = frozenset(form for k in extra_keys for form in (_normalise(k), _split(k)))
        self._keys_on = self._key_re is not None or bool(self._extra_keys)
        value_regex, extra_values = _split_option("sensitive_values", sensitive_values, DEFAULT_SENSITIVE_VALUES)
        replaced = isinstance(sensitive_values, str)
        self._defaults = not replaced  # the built-in value rules (and the int card check)
        patterns = [value_regex] if replaced and value_regex else []
        self._value_res = tuple(_compile("sensitive_values", r) for r in [*patterns, *extra_values])
        self._key_cache: dict[str, bool] = {}
        # (text, depth) -> scrubbed text, for short strings: user agents, paths, parameter values repeat across
        # requests, and the value rules are the costly part of serializing an event
        self._text_cache: dict[tuple[str, int], str] = {}

    @property
    def enabled(self) -> bool:
        """Whether :meth:`scrub` redacts anything."""
        return self._enabled

    def compiled_parts(self) -> tuple[Any, ...] | None:
        """What the compiled twin of :meth:`scrub` (``_speedups.scrub``) reads: the key and text caches, the marker,
        and the methods it asks what the caches cannot answer; None when scrubbing is off (``scrub`` then returns
        its argument itself)."""
        if not self._enabled:
            return None
        return (self._key_cache, self._text_cache, REDACTED, self._scrub_str, self.is_sensitive_key, self._scrub,
                self._card_int)

    def is_sensitive_key(self, key: str) -> bool:
        """Whether values under ``key`` are redacted (the answer is cached per key).

        :param key: a dict key, header name, form field, ...
        :return: ``True`` when the normalised key matches the key rules.
        """
        hit = self._key_cache.get(key)
        if hit is None:
            plain = _normalise(key)
            split = _split(key)
            hit = plain in self._extra_keys or split in self._extra_keys
            if not hit and self._key_re is not None:
                hit = self._key_re.search(plain) is not None or self._key_re.search(split) is not None
            if len(self._key_cache) >= _CACHE_SIZE:  # bounded: keys can come from clients
                self._key_cache.clear()
            self._key_cache[key] = hit
        return hit

    def is_sensitive_value(self, text: str) -> bool:
        """Whether scrubbing changes a string (some value rule, or a sensitive key in its text, matches).

        :param text: the string to check.
        :return: ``True`` when :meth:`scrub` would redact all or part of ``text``.
        """
        return self._scrub_str(text, 0) != text

    def scrub(self, value: Any) -> Any:
        """A copy of ``value`` with sensitive data replaced by ``REDACTED``; ``value`` itself is not changed.

        :param value: a JSON-like value: dicts, lists, tuples, strings, numbers, ...
        :return: the scrubbed copy (``value`` itself when scrubbing is disabled).
        """
        if not self._enabled:
            return value
        return self._scrub(value, 0)

    def _scrub(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self._scrub_str(value, depth) if len(value) >= _MIN_KV_TEXT else value
        if kind is dict:
            if depth >= MAX_DEPTH:
                return REDACTED
            out: dict[Any, Any] = {}
            cache = self._key_cache
            for key, item in value.items():
                if type(key) is str:
                    hidden = cache.get(key)
                    if hidden is None:
                        hidden = self.is_sensitive_key(key)
                else:
                    hidden = isinstance(key, str) and self.is_sensitive_key(str(key))
                if hidden:
                    out[key] = REDACTED
                elif type(item) is str:  # the common cases, inlined
                    out[key] = self._scrub_str(item, depth) if len(item) >= _MIN_KV_TEXT else item
                elif item is None or item is True or item is False:
                    out[key] = item
                elif type(item) is int:
                    out[key] = REDACTED if item >= _CARD_INT_MIN and self._card_int(item) else item
                else:
                    out[key] = self._scrub(item, depth + 1)
            return out
        if kind is list or kind is tuple:
            if depth >= MAX_DEPTH:
                return REDACTED
            return [self._scrub(item, depth + 1) for item in value]
        if kind is int:
            return REDACTED if self._card_int(value) else value
        if kind is float or kind is bool or value is None:
            return value
        return self._scrub_other(value, depth)

    def _scrub_str(self, text: str, depth: int) -> str:
        if len(text) > _CACHED_TEXT:
            return self._scrub_text(text, depth)
        key = (text, depth)
        cache = self._text_cache
        out = cache.get(key)
        if out is None:
            out = self._scrub_text(text, depth)
            if len(cache) >= _CACHE_SIZE:  # bounded: values come from clients
                cache.clear()
            cache[key] = out
        return out

    def _scrub_text(self, text: str, depth: int) -> str:
        for regex in self._value_res:  # the user's regexes: a hit redacts the whole string (or its secret group)
            if regex.groupindex.get("secret"):
                text = regex.sub(_secret_replacer, text)
            elif _user_hit(regex, text):
                return REDACTED
        first = text[:1]
        if (first == "{" or first == "[" or first.isspace()) and depth < MAX_DEPTH:
            parsed = self._scrub_json(text, depth)
            if parsed is not None:
                return parsed
        for _ in range(_MAX_PASSES):  # a redaction can open a word boundary for another rule: run to a fixed point
            before = text
            if self._defaults and len(text) >= _MIN_VALUE_TEXT:
                text = _redact_values(text)
            if self._keys_on and ("=" in text or ":" in text):
                text = self._redact_pairs(text)
            if text is before or text == before:
                break
        return text

    def _scrub_json(self, text: str, depth: int) -> str | None:
        """A JSON document in a string, scrubbed; ``None`` when ``text`` is not one."""
        stripped = text.strip()
        if not stripped or stripped[0] not in "{[" or stripped[-1] != ("}" if stripped[0] == "{" else "]"):
            return None
        try:
            data = json.loads(stripped)
        except (ValueError, RecursionError):  # not JSON (or cut): the text rules run instead
            return None
        scrubbed = self._scrub(data, depth + 1)
        if scrubbed == data:
            return text  # nothing redacted: keep the original text, layout and all
        return json.dumps(scrubbed, ensure_ascii=False)

    def _redact_pairs(self, text: str) -> str:
        """``text`` with the value after every sensitive ``key=`` / ``key:`` / ``"key":`` replaced by the marker."""
        out: list[str] = []
        pos = 0
        for match in _KEY_SEP.finditer(text):
            start = match.end()
            if start < pos:  # inside a value already redacted
                continue
            key = match.group(2)
            if "%" in key or "+" in key:
                key = unquote_plus(key)  # form text: user%5Bpassword%5D
            if not self.is_sensitive_key(key):
                continue
            span = _value_span(text, start, match.group(3))
            if span is None:
                continue
            begin, end = span
            if text.startswith(" " + REDACTED, end):  # "Authorization: Basic [REDACTED]": one marker for the lot
                end += 1 + len(REDACTED)
            if text[begin:end] == REDACTED:
                continue
            out.append(text[pos:begin])
            out.append(REDACTED)
            pos = end
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def _card_int(self, value: int) -> bool:
        return self._defaults and _CARD_INT_MIN <= value < 10**19 and _is_card(str(value))

    def _scrub_other(self, value: Any, depth: int) -> Any:
        # Subclasses and less common types: the slow path.
        if isinstance(value, bool | float):
            return value
        if isinstance(value, str):
            return self._scrub(str(value), depth)
        if isinstance(value, int):
            return self._scrub(int(value), depth)
        if isinstance(value, bytes | bytearray):
            text = value.decode("latin-1")
            return REDACTED if self._scrub_str(text, depth) != text else bytes(value)
        if isinstance(value, Mapping):
            return self._scrub(dict(value.items()), depth)
        if isinstance(value, list | tuple | set | frozenset):
            return self._scrub(list(value), depth)
        return value


def _value_span(text: str, start: int, sep: str) -> tuple[int, int] | None:
    """Where the value after a key and its separator lies in ``text`` (quotes excluded), or ``None``."""
    first = text[start : start + 1]
    if first == '"':
        match = _DQ_VALUE.match(text, start)
    elif first == "'":
        match = _SQ_VALUE.match(text, start)
    else:
        match = (_EQ_VALUE if sep == "=" else _COLON_VALUE).match(text, start)
        return None if match is None else match.span()
    if match is None or not match.group(1):
        return None
    begin, end = match.span(1)
    if text.endswith(TRUNCATION_MARKER, begin, end):  # a cut body: keep saying so
        end -= len(TRUNCATION_MARKER)
    return (begin, end) if end > begin else None


def _secret_replacer(match: re.Match[str]) -> str:
    whole = match.group()
    begin, end = match.span("secret")
    offset = match.start()
    return whole[: begin - offset] + REDACTED + whole[end - offset :]


def _split_option(option: str, given: str | Iterable[str] | None, default: str) -> tuple[str, list[str]]:
    """(regex, extra entries) for a ``sensitive_*`` option."""
    if given is None:
        return default, []
    if isinstance(given, str):
        return given, []
    if not isinstance(given, Iterable) or isinstance(given, bytes | bytearray):
        raise ConfigurationError(f"{option} must be a str regex or an iterable of str, got {type(given).__name__}")
    extra = list(given)
    for entry in extra:
        if not isinstance(entry, str) or not entry:
            raise ConfigurationError(f"{option} entries must be non-empty str, got {type(entry).__name__} {entry!r}")
    return default, extra
