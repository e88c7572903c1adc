"""Retry-After: delay-seconds and HTTP-dates against an injected wall clock, clamped."""

from __future__ import annotations

import pytest

from router.retry_after import parse_http_date, parse_retry_after

#: 2024-05-01T12:00:00Z
WALL = 1714564800.0


def retry_after(value: str, max_s: float = 600.0) -> float | None:
    return parse_retry_after(value, wall_now=WALL, max_s=max_s)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0", 0.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("Wed, 01 May 2024 12:00:45 GMT", 45.0),
        ("Wednesday, 01-May-24 12:00:45 GMT", 45.0),  # RFC 850, obsolete but allowed
        ("Wed May  1 12:00:45 2024", 45.0),  # asctime, zone-less: UTC
        ("Wed, 01 May 2024 11:00:00 GMT", 0.0),  # already past: now
    ],
)
def test_delay_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert retry_after(value) == seconds


def test_a_date_is_read_against_the_wall_clock_given() -> None:
    date = "Wed, 01 May 2024 12:01:00 GMT"
    assert parse_retry_after(date, wall_now=WALL, max_s=600) == 60.0
    assert parse_retry_after(date, wall_now=WALL + 50, max_s=600) == 10.0


def test_the_answer_is_clamped_to_the_callers_max() -> None:
    assert retry_after("86400", max_s=3600) == 3600
    assert retry_after("Thu, 02 May 2024 12:00:00 GMT", max_s=3600) == 3600
    assert retry_after("9" * 400, max_s=3600) == 3600  # a float overflow, still clamped


@pytest.mark.parametrize(
    "value",
    ["", "soon", "-3", "-0.5", "inf", "nan", "Infinity", "1e3", "1s", "6m0s", "0x10", "1..2"],
)
def test_anything_else_is_no_advice(value: str) -> None:
    assert retry_after(value) is None


def test_parse_http_date() -> None:
    assert parse_http_date("Wed, 01 May 2024 12:00:00 GMT") == WALL
    assert parse_http_date("whenever") is None
