"""Client keys and the admin key, end to end; keys never leak."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import httpx
import openai
import pytest

from router.sim.behaviour import Behaviour
from tests.e2e.harness import Fleet, LoopThread, start_fleet, stop_fleet

TEAM_KEY = "sk-team-a-5f2c9e0d1b7a4c3e"
OTHER_KEY = "sk-team-b-8a1d6f3c0e9b2d4a"
ADMIN_KEY = "sk-admin-3e7b1c9d5a0f2e8c"
CHAT: dict[str, object] = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}

AUTH = f"""
auth:
  admin_key_env: FT_ADMIN
  keys:
    - name: team-a
      key_env: TEAM_A
      routes: [chat]
      rpm: 3
    - name: team-b
      key_sha256: {hashlib.sha256(OTHER_KEY.encode()).hexdigest()}
      routes: [other]
"""
ROUTES = """
routes:
  - name: chat
    targets: [a]
  - name: other
    targets: [a]
"""


@pytest.fixture
def fleet(loop_thread: LoopThread) -> Iterator[Fleet]:
    f = start_fleet(
        loop_thread,
        {"a": Behaviour(ttft_s=0.01, itl_s=0.001, tokens=3)},
        ROUTES,
        header=AUTH,
        environ={"TEAM_A": TEAM_KEY, "FT_ADMIN": ADMIN_KEY},
    )
    yield f
    stop_fleet(f)


def _post(fleet: Fleet, key: str | None, body: dict[str, object] = CHAT) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{fleet.router.base_url}/chat/completions", json=body, headers=headers)


def test_a_key_from_env_works_with_the_openai_sdk(fleet: Fleet) -> None:
    c = openai.OpenAI(base_url=fleet.router.base_url, api_key=TEAM_KEY, max_retries=0)
    out = c.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "t0 t1 t2 "


def test_missing_or_wrong_keys_get_401(fleet: Fleet) -> None:
    for key in (None, "sk-wrong", TEAM_KEY + "x"):
        response = _post(fleet, key)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_a_key_may_only_use_its_routes(fleet: Fleet) -> None:
    response = _post(fleet, OTHER_KEY)  # a hashed key, allowed only on `other`
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "route_not_allowed"
    assert _post(fleet, OTHER_KEY, {**CHAT, "model": "other"}).status_code == 200


def test_the_model_list_needs_a_key_and_shows_only_the_keys_routes(fleet: Fleet) -> None:
    url = f"{fleet.router.base_url}/models"
    assert httpx.get(url).status_code == 401
    for key, routes in ((TEAM_KEY, ["chat"]), (OTHER_KEY, ["other"])):
        listed = httpx.get(url, headers={"authorization": f"Bearer {key}"})
        assert [m["id"] for m in listed.json()["data"]] == routes
    with openai.OpenAI(base_url=fleet.router.base_url, api_key=TEAM_KEY, max_retries=0) as c:
        assert [m.id for m in c.models.list()] == ["chat"]
        assert c.models.retrieve("chat").id == "chat"
        with pytest.raises(openai.NotFoundError):  # another key's route: as if none
            c.models.retrieve("other")
    assert httpx.get(f"{url}/chat").status_code == 401


def test_an_unknown_model_names_only_the_routes_the_key_may_use(fleet: Fleet) -> None:
    response = _post(fleet, TEAM_KEY, {**CHAT, "model": "gpt-5"})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "chat" in message and "other" not in message


def test_a_key_over_its_rpm_gets_429_with_retry_after(fleet: Fleet) -> None:
    statuses = [_post(fleet, TEAM_KEY).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    response = _post(fleet, TEAM_KEY)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert "retry-after" in response.headers
    assert len(fleet.sim("a").records) == 3  # the refused turn never reached upstream


def test_admin_endpoints_need_the_admin_key(fleet: Fleet) -> None:
    url = f"{fleet.router.url}/admin/targets"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {TEAM_KEY}"}).status_code == 401
    response = httpx.get(url, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["targets"]] == ["a"]


def test_metrics_on_the_main_port_need_the_admin_key_with_auth(fleet: Fleet) -> None:
    # /metrics shows spend per client key name: not for anyone who can reach the port
    assert _post(fleet, TEAM_KEY).status_code == 200
    url = f"{fleet.router.url}/metrics"
    for headers in ({}, {"authorization": f"Bearer {TEAM_KEY}"}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        assert "team-a" not in response.text
    response = httpx.get(url, headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200 and "firsttoken_client_cost_usd" in response.text


def test_keys_never_appear_in_logs_bodies_or_metrics(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen = [
        _post(fleet, TEAM_KEY),
        _post(fleet, TEAM_KEY + "x"),
        _post(fleet, OTHER_KEY),
        httpx.get(
            f"{fleet.router.url}/admin/targets", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ),
        httpx.get(f"{fleet.router.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}),
    ]
    text = caplog.text + "".join(r.text + str(r.headers) for r in seen)
    for key in (TEAM_KEY, OTHER_KEY, ADMIN_KEY):
        assert key not in text
    assert "team-a" in seen[-1].text  # usage is counted by key name
    # The client's own key is never forwarded upstream either.
    assert all("authorization" not in r.headers for r in fleet.sim("a").records)
