"""The API docs page works offline: every asset it loads is served by loope itself."""

from __future__ import annotations

import re

import httpx

from tests.conftest import ThreadServer


def test_the_docs_page_loads_nothing_from_other_hosts(server: ThreadServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        sources += re.findall(r"""url: ["']([^"']+)["']""", page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            assert client.get(source).status_code == 200, source
        assert "swagger-ui-bundle.js" in page.text and "https://" not in page.text
        assert client.get("/openapi.json").json()["info"]["title"] == "loope"
