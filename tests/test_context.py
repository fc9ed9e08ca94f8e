"""Request-context helpers: the query parser's fast path agrees with the standard library."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from sqreen_mw._body import flat_pairs
from sqreen_mw._context import parse_query


@given(st.text(alphabet="ab=&%+;2 é", max_size=30))
def test_parse_query_matches_parse_qsl(query: str) -> None:
    assert parse_query(query) == flat_pairs(parse_qsl(query, keep_blank_values=True))


def test_parse_query_examples() -> None:
    assert parse_query("page=2&sort=desc&tag=a&tag=b&flag") == {"page": "2", "sort": "desc", "tag": ["a", "b"],
                                                                 "flag": ""}
    assert parse_query("q=caf%C3%A9+au+lait") == {"q": "café au lait"}
    assert parse_query("q=select+name&a+b=c+") == {"q": "select name", "a b": "c "}  # "+" without "%"
