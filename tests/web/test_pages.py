"""The dashboard's files as plain HTTP: the page at / and what it loads, without auth."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.parametrize("empty_database_url", ["sqlite"], indirect=True)


def test_the_root_answers_the_dashboard_html_without_auth(live_server):
    response = httpx.get(live_server.base_url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>SILO dashboard</title>" in response.text
    # Everything comes from this origin: no CDN, no inline script.
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "http" not in response.text.replace('href="/docs"', "")


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/static/js/app.js", "javascript"),
        ("/static/dashboard.css", "text/css"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("/static/vendor/uplot/uPlot.min.css", "text/css"),
        ("/static/vendor/uplot/LICENSE", ""),
    ],
)
def test_the_page_s_own_and_vendored_files_are_served(live_server, path: str, kind: str):
    response = httpx.get(live_server.base_url + path)
    assert response.status_code == 200
    assert kind in response.headers["content-type"]
    assert response.content
