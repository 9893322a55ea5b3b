"""Fixtures every tier shares: a real S3-compatible server (moto's standalone server on 127.0.0.1,
started once per session, only by the tests that ask for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3server import S3Server, s3_server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server
