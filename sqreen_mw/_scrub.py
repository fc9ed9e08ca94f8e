"""Scrubbing of secrets from everything sqreen_mw records, before it leaves the process.

:meth:`Scrubber.scrub` returns a copy of a value in which:

* **Sensitive keys.** Under a dict key that matches the key pattern, the whole value (string, number, nested dict or
  list, anything) becomes the single marker :data:`~sqreen_mw._schema.REDACTED`. Keys are matched case-insensitively
  after normalising ``-`` to ``_`` (``X-Api-Key`` -> ``x_api_key``); camelCase keys are also tried split into words
  (``authToken`` -> ``auth_token``). :data:`DEFAULT_SENSITIVE_KEYS` has two parts:

  - *anywhere in the key*: ``passw``, ``pass_phrase``/``passphrase``, ``pass_code``/``passcode``, ``pwd``/``pword``,
    ``secret``, ``token``, ``api_key``/``apikey``, ``access_key``, ``private_key``, ``public_key``,
    ``consumer_id``/``consumer_key``, ``credential``, ``authorization``/``authorisation``, ``bearer``, ``signature``,
    ``jwt``, ``csrf``, ``xsrf``, ``sessionid``/``session_id``/``sessid`` (so ``jsessionid``, ``phpsessid``,
    ``asp.net_sessionid``), ``session_key``, ``forwarded_for``;
  - *as the whole key or its last word* (a word starts after a non-alphanumeric character such as ``_`` or ``.``):
    ``auth``, ``pass``, ``sid``, ``session(s)``, ``cookie(s)``, ``sig``, ``signed``, ``otp``, ``cvv``/``cvv2``,
    ``cvc``/``cvc2``, ``creds``, ``symfony``. So ``x_auth``, ``user_pass``, ``connect.sid``, ``user_session`` and
    ``set_cookie`` are redacted, while ``author``, ``passenger``, ``bypass``, ``inside``, ``side_effect``,
    ``session_count``, ``auth_method``, ``cookie_consent`` and ``signed_in`` are not.

  This covers Sqreen's list (``password, passwd, secret, authorization, api_key, apikey, access_token, token``),
  Sentry's ``DEFAULT_DENYLIST`` and Datadog's key regex without Datadog's bare substrings ``pass``, ``sid`` and
  ``signed`` (which redact ``passenger``, ``inside`` and ``designed``). Known over-matches, kept on purpose:
  ``token`` also hits ``max_tokens``/``token_type``; ``secret`` hits ``secretary``.

* **Sensitive values.** A string matching a value pattern becomes ``REDACTED`` as a whole.
  :data:`DEFAULT_SENSITIVE_VALUES` finds ``Bearer <token>`` (any case), JWTs (``eyJ…``.``…``.``…``), PEM private
  keys (``-----BEGIN … PRIVATE KEY``), GitHub tokens (``ghp_…``, ``github_pat_…``) and payment cards. A card is
  looked for in every run of 13 or more ASCII digits where single spaces or dashes may separate digit groups
  (``4111 1111 1111 1111``, ``4111-1111-1111-1111``): some sequence of whole groups of that run must hold 13 to 19
  digits, start with 2-6 (Mastercard 2/5, Amex/JCB/Diners 3, Visa 4, Discover/UnionPay/Maestro 6) and pass the Luhn
  check (done in Python). Digits glued together form one group, so a card hidden in a longer number is not found,
  while a card written next to another number (``5 4111 1111 1111 1111``) is. Luhn and the first digit keep most
  long numbers intact, including millisecond timestamps and snowflake ids (which start with 1); a random 13-19 digit
  number starting with 2-6 still passes Luhn one time in ten. An ``int`` of 13-19 digits is checked the same way.
  ``bytes`` are checked as Latin-1 text.

* **Structure.** Dicts and other mappings become dicts (keys kept), lists, tuples and sets become lists; other
  objects are returned as they are. Containers nested deeper than :data:`MAX_DEPTH` become ``REDACTED`` (this also
  stops self-referencing structures). The input is never mutated.

Options: ``sensitive_keys``/``sensitive_values`` given as a ``str`` replace the default regex (matched with
``re.search``, case-insensitive for keys, against the normalised key: write ``_`` for ``-``); ``""`` disables that
rule (as Sqreen's agents did). Given as an iterable they add to the default: exact key names (normalised the same way)
or extra value regexes. A match of a value regex with a named group ``card`` is only a hit when that group holds a
card as defined above (any non-digit separates groups there).
``enabled=False`` makes :meth:`Scrubber.scrub` return its argument untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._exceptions import ConfigurationError
from ._schema import REDACTED

#: The default key regex, searched in normalised keys (see the module docstring).
DEFAULT_SENSITIVE_KEYS = (
    r"(?:passw|pass_?(?:phrase|code)|pw(?:or)?d|secret|token|(?:api|access|private|public)_?key|consumer_?(?:id|key)"
    r"|credential|authori[sz]ation|bearer|signature|jwt|csrf|xsrf|sess(?:ion)?_?id|session_?key|forwarded_for)"
    r"|(?<![a-z0-9])(?:auth|pass|sid|sessions?|cookies?|sig|signed|otp|cvv2?|cvc2?|creds|symfony)\Z"
)
_BEARER = r"(?i:\bbearer\s+[a-z0-9._~+/=-]+)"
_JWT = r"ey[I-L][A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
_PEM = r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY"
_GITHUB = r"\b(?:gh[oprsu]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"
_CARD = r"(?P<card>[0-9](?:[ -]?[0-9]){12,})"  # a whole run of 13+ digits; _is_card looks for the card inside
#: The default value regex: bearer tokens, JWTs, PEM private keys, GitHub tokens, card-number candidates (group
#: ``card``, confirmed by the Luhn check). Internally each part runs behind a cheap substring test.
DEFAULT_SENSITIVE_VALUES = "|".join((_BEARER, _JWT, _PEM, _GITHUB, _CARD))
#: Containers nested deeper than this are replaced by the marker.
MAX_DEPTH = 20

_CACHE_SIZE = 4096
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^0-9]+")
_CARD_FIRST = frozenset("23456")
_BEARER_RE = re.compile(_BEARER)
_JWT_RE = re.compile(_JWT)
_PEM_RE = re.compile(_PEM)
_GITHUB_RE = re.compile(_GITHUB)
_CARD_RE = re.compile(_CARD)


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


def _default_hit(text: str) -> bool:
    # DEFAULT_SENSITIVE_VALUES, part by part: one regex over the whole string costs microseconds, the literal
    # pre-checks cost nanoseconds. Only "Bearer x" can be shorter than 13 characters.
    if ("earer" in text or "EARER" in text) and _BEARER_RE.search(text):
        return True
    if len(text) < 13:
        return False
    if ("ey" in text and _JWT_RE.search(text)) or ("PRIVATE KEY" in text and _PEM_RE.search(text)):
        return True
    if ("gh" in text or "github_pat_" in text) and _GITHUB_RE.search(text):
        return True
    data = text.encode("utf-8", "surrogatepass")  # counting digits in C is 3-5x cheaper than a regex scan
    if len(data) - len(data.translate(None, b"0123456789")) < 13 or _CARD_RE.search(text) is None:
        return False
    return any(_is_card(match.group()) for match in _CARD_RE.finditer(text))


def _search(regex: re.Pattern[str], text: str) -> bool:
    for match in regex.finditer(text):
        card = match.groupdict().get("card") if regex.groupindex else None
        if card is None or _is_card(card):
            return True
    return False


def _compile(option: str, regex: str, flags: int = 0) -> re.Pattern[str]:
    try:
        return re.compile(regex, flags)
    except re.error as exc:
        raise ConfigurationError(f"{option}: invalid regex {regex!r}: {exc}") from None


def _normalise(key: str) -> str:
    return key.lower().replace("-", "_")


def _split(key: str) -> str:
    return _normalise(_CAMEL.sub("_", key))  # authToken -> auth_token


class Scrubber:
    """Redacts sensitive keys and values (rules and defaults in the module docstring).

    :param enabled: ``False`` turns :meth:`scrub` into the identity.
    :param sensitive_keys: ``None`` for :data:`DEFAULT_SENSITIVE_KEYS`; a ``str`` regex replacing it (``""``: no key
        rule); an iterable of exact key names added to it.
    :param sensitive_values: ``None`` for :data:`DEFAULT_SENSITIVE_VALUES`; a ``str`` regex replacing it (``""``: no
        value rule); an iterable of regexes added to it.
    :raises ConfigurationError: a regex does not compile, or an option has the wrong type.
    """

    __slots__ = ("_defaults", "_enabled", "_extra_keys", "_key_cache", "_key_re", "_value_res")

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
        value_regex, extra_values = _split_option("sensitive_values", sensitive_values, DEFAULT_SENSITIVE_VALUES)
        replaced = isinstance(sensitive_values, str)
        self._defaults = not replaced  # the default value rules (and the int card check) run on a fast path
        patterns = [value_regex] if replaced and value_regex else []
        self._value_res = tuple(_compile("sensitive_values", r) for r in [*patterns, *extra_values])
        self._key_cache: dict[str, bool] = {}

    @property
    def enabled(self) -> bool:
        """Whether :meth:`scrub` redacts anything."""
        return self._enabled

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
        """Whether a string matches a value rule (and is therefore redacted as a whole).

        :param text: the string to check.
        :return: ``True`` when a value regex finds a match (a ``card`` group must also pass Luhn).
        """
        if self._defaults and _default_hit(text):
            return True
        for regex in self._value_res:  # not any(genexpr): that costs more than the whole default check
            if _search(regex, text):
                return True
        return False

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
            return REDACTED if self.is_sensitive_value(value) else value
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
                elif type(item) is str:  # the common case, inlined
                    out[key] = REDACTED if self.is_sensitive_value(item) else item
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

    def _card_int(self, value: int) -> bool:
        return self._defaults and 10**12 <= value < 10**19 and _is_card(str(value))

    def _scrub_other(self, value: Any, depth: int) -> Any:
        # Subclasses and less common types: the slow path.
        if isinstance(value, bool | float):
            return value
        if isinstance(value, str):
            return self._scrub(str(value), depth)
        if isinstance(value, int):
            return self._scrub(int(value), depth)
        if isinstance(value, bytes | bytearray):
            return REDACTED if self.is_sensitive_value(value.decode("latin-1")) else bytes(value)
        if isinstance(value, Mapping):
            return self._scrub(dict(value.items()), depth)
        if isinstance(value, list | tuple | set | frozenset):
            return self._scrub(list(value), depth)
        return value


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
