"""Client keys: who may call, on which routes, how fast; and the admin key."""

from __future__ import annotations

import hashlib

import pytest

from router.config import AuthConfig, ClientKey
from router.errors import ClientRateLimited, Forbidden, Unauthorized
from router.gateway.auth import Authenticator
from tests.signals.conftest import FakeClock

VOICE_KEY = "sk-voice-1f2e3d4c"
BATCH_KEY = "sk-batch-9a8b7c6d"
ADMIN_KEY = "sk-admin-0011aabb"
ENV = {"VOICE_KEY": VOICE_KEY, "ADMIN_KEY": ADMIN_KEY}


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def auth_config(*, rpm: int | None = None, admin: bool = True) -> AuthConfig:
    return AuthConfig(
        keys=(
            ClientKey(name="voice-app", key_env="VOICE_KEY", routes=("voice",), rpm=rpm),
            ClientKey(name="batch", key_sha256=sha256(BATCH_KEY)),
        ),
        admin_key_env="ADMIN_KEY" if admin else None,
    )


def test_without_keys_everyone_is_let_in() -> None:
    auth = Authenticator(None, {}, FakeClock())
    assert not auth.enabled
    assert auth.client(None) is None
    auth.check_admin(None)
    Authenticator.admit(None, "voice", 10)


def test_a_key_names_its_client_whether_given_by_env_or_by_digest() -> None:
    auth = Authenticator(auth_config(), ENV, FakeClock())
    voice = auth.client(f"Bearer {VOICE_KEY}")
    batch = auth.client(f"bearer  {BATCH_KEY} ")
    assert voice is not None and voice.name == "voice-app"
    assert batch is not None and batch.name == "batch"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {VOICE_KEY}", "Bearer sk-wrong", VOICE_KEY],
)
def test_a_missing_or_wrong_key_is_a_401_that_never_repeats_it(authorization: str | None) -> None:
    auth = Authenticator(auth_config(), ENV, FakeClock())
    with pytest.raises(Unauthorized) as caught:
        auth.client(authorization)
    assert caught.value.status == 401
    assert "sk-" not in caught.value.message


def test_a_key_may_use_only_its_routes() -> None:
    auth = Authenticator(auth_config(), ENV, FakeClock())
    voice = auth.client(f"Bearer {VOICE_KEY}")
    Authenticator.admit(voice, "voice", 10)
    with pytest.raises(Forbidden, match="'voice-app' may not use the model 'chat'"):
        Authenticator.admit(voice, "chat", 10)
    Authenticator.admit(auth.client(f"Bearer {BATCH_KEY}"), "chat", 10)  # no route list: all


def test_a_key_over_its_rate_is_a_429_until_its_minute_has_passed() -> None:
    clock = FakeClock()
    auth = Authenticator(auth_config(rpm=2), ENV, clock)
    voice = auth.client(f"Bearer {VOICE_KEY}")
    Authenticator.admit(voice, "voice", 10)
    Authenticator.admit(voice, "voice", 10)
    with pytest.raises(ClientRateLimited) as caught:
        Authenticator.admit(voice, "voice", 10)
    assert (caught.value.status, caught.value.retry_after_s) == (429, 1.0)
    clock.advance(61.0)
    Authenticator.admit(voice, "voice", 10)


def test_a_reload_keeps_a_keys_count_unless_its_limits_changed() -> None:
    clock = FakeClock()
    first = Authenticator(auth_config(rpm=1), ENV, clock)
    Authenticator.admit(first.client(f"Bearer {VOICE_KEY}"), "voice", 10)
    same = Authenticator(auth_config(rpm=1), ENV, clock, previous=first)
    with pytest.raises(ClientRateLimited):
        Authenticator.admit(same.client(f"Bearer {VOICE_KEY}"), "voice", 10)
    changed = Authenticator(auth_config(rpm=5), ENV, clock, previous=same)
    Authenticator.admit(changed.client(f"Bearer {VOICE_KEY}"), "voice", 10)


def test_the_admin_endpoints_need_the_admin_key() -> None:
    auth = Authenticator(auth_config(), ENV, FakeClock())
    assert auth.admin_protected
    auth.check_admin(f"Bearer {ADMIN_KEY}")
    for wrong in (None, f"Bearer {VOICE_KEY}", "Bearer sk-admin"):
        with pytest.raises(Unauthorized):
            auth.check_admin(wrong)


def test_client_keys_without_an_admin_key_close_the_admin_endpoints() -> None:
    auth = Authenticator(auth_config(admin=False), ENV, FakeClock())
    with pytest.raises(Forbidden, match="no admin key"):
        auth.check_admin(f"Bearer {VOICE_KEY}")
