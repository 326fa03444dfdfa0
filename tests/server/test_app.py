"""The app through real HTTP: health, readiness, metrics, auth, error shape, size limit."""

import httpx


def test_health_ready_and_metrics(live_server):
    with live_server.client(None) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        text = client.get("/metrics").text
        assert 'silo_jobs{status="queued"} 0.0' in text
        assert "silo_http_request_seconds_bucket" in text


def test_unknown_route_uses_the_error_shape(live_server):
    with live_server.client() as client:
        response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"code", "message", "details"}


def test_oversized_body_gets_413_in_the_error_shape(live_server):
    big = b"x" * (65 * 1024)
    with live_server.client() as client:
        declared = client.post(
            "/v1/jobs", content=big, headers={"content-type": "application/json"}
        )

        def chunks():
            for _ in range(65):
                yield b"x" * 1024

        chunked = client.post(
            "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"


def test_docs_are_served(live_server):
    response = httpx.get(live_server.base_url + "/openapi.json")
    assert response.status_code == 200
    assert response.json()["info"]["title"] == "SILO pruning service"
