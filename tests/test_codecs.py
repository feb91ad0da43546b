"""Request and response codecs: pure functions, no server."""

from __future__ import annotations

import pytest

from imgclf.serving.codecs import accepts_json


@pytest.mark.parametrize("accept", [
    None, "", "  ", "*/*", "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
    "text/html, application/*;q=0.2", "text/csv, */*;q=0.1", "application/json;q=0.5",
])
def test_accept_headers_that_allow_json(accept):
    assert accepts_json(accept)


@pytest.mark.parametrize("accept", ["text/csv", "image/png", "application/json;q=0", "*/*;q=0", "text/*"])
def test_accept_headers_that_refuse_json(accept):
    assert not accepts_json(accept)
