"""The batch's arrays, built in PostgreSQL's binary format by the store itself: what the server reads back from
them is what psycopg's own list dumper would have sent, NULLs, empty arrays and odd values included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .. import postgres_server as pg

pg.require_psycopg()
import psycopg  # noqa: E402

from sqreen_mw.collector.postgres import storage as st  # noqa: E402 - needs psycopg


@pytest.fixture
def conn(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url) as connection:
        st._configure(connection)
        yield connection


TEXTS = [["a", None, "é€😀", "", "x" * 70_000], [None, None], [], ["only"]]


@pytest.mark.parametrize("values", TEXTS)
def test_text_arrays_read_back_as_sent(conn: psycopg.Connection[Any], values: list[str | None]) -> None:
    packed = st._varlena_array(st._TextArray, values)
    assert isinstance(packed, st._TextArray)
    assert conn.execute("SELECT %b::text[]", [packed]).fetchone() == (values,)
    assert conn.execute("SELECT %b::text[]", [values]).fetchone() == (values,)  # psycopg's, the same answer


def test_bytea_float8_and_bigint_arrays_read_back_as_sent(conn: psycopg.Connection[Any]) -> None:
    keys = [b"\x00" * 16, None, b"\xff\x01"]
    floats = [1_700_000_000.123456, -0.0, 1e300, 5e-324]
    ints = [0, -1, 2**63 - 1, -(2**63), 28_333_333]
    row = conn.execute(
        "SELECT %b::bytea[], %b::float8[], %b::bigint[], %b::bigint[]",
        [st._varlena_array(st._ByteaArray, keys), st._fixed_array(st._Float8Array, "id", floats),
         st._fixed_array(st._Int8Array, "iq", ints), st._fixed_array(st._Int8Array, "iq", [])],
    ).fetchone()  # fmt: skip
    assert row is not None
    assert [None if k is None else bytes(k) for k in row[0]] == keys
    assert row[1] == floats and str(row[1][1]) == "-0.0"
    assert row[2] == ints and row[3] == []


def test_what_the_format_cannot_hold_goes_to_psycopg(conn: psycopg.Connection[Any]) -> None:
    assert st._fixed_array(st._Int8Array, "iq", [1, 2**64]) == [1, 2**64]  # beyond 64 bits: the server refuses it
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute("SELECT %b::bigint[]", [st._fixed_array(st._Int8Array, "iq", [1, 2**64])])
    conn.rollback()
    assert st._fixed_array(st._Float8Array, "id", [1.0, None]) == [1.0, None]
    assert st._varlena_array(st._TextArray, ["a", 3]) == ["a", 3]  # no text: psycopg says it cannot send it
    with pytest.raises(psycopg.ProgrammingError):
        conn.execute("SELECT %b::text[]", [st._varlena_array(st._TextArray, ["a", object()])])
    conn.rollback()
    with pytest.raises(UnicodeEncodeError):  # a lone surrogate, as psycopg's own dumper refuses it
        st._varlena_array(st._TextArray, ["\ud800"])
    with pytest.raises(psycopg.DataError):  # NUL: the server refuses it in text, as before
        conn.execute("SELECT %b::text[]", [st._varlena_array(st._TextArray, ["a\x00b"])])
