import asyncio

import pytest
import sqlalchemy as sa

from fixtures.scenarios import ok_apns_token
from push.errors import ValidationError
from push.pipeline import asend_batch
from push.config import PushConfig
from push.notification import Notification
from push.registry import denylist_profile, register_tokens, remove_from_denylist
from tables.models import AppSubscription
from tests.pipeline_helpers import ScriptedSender


def test_register_and_denylist(engine):
    tok = ok_apns_token(1)
    assert register_tokens(engine, [{"token": tok, "platform": "apns", "app": "a", "profile_id": "p1"}]) == 1
    t = AppSubscription.__table__
    with engine.connect() as c:
        assert c.execute(sa.select(t.c.profile_id).where(t.c.token == tok)).scalar_one() == "p1"
    assert denylist_profile(engine, "p1", "apns") is True
    assert denylist_profile(engine, "p1", "apns") is False
    n = Notification(token=tok, platform="apns", app="a", profile_id="p1", title="x")
    rep = asyncio.run(asend_batch([n], PushConfig(), engine=engine, clients={"apns": ScriptedSender("apns")}))
    assert rep.excluded_by_reason == {"denylisted": 1}
    assert remove_from_denylist(engine, "p1", "apns") is True
    rep = asyncio.run(asend_batch([n], PushConfig(), engine=engine, clients={"apns": ScriptedSender("apns")}))
    assert rep.sent == 1


def test_register_rejects_bad_input(engine):
    with pytest.raises(ValidationError, match="token"):
        register_tokens(engine, [{"token": "zz", "platform": "apns", "app": "a"}])
    with pytest.raises(ValidationError, match="platform"):
        register_tokens(engine, [{"token": "ab" * 32, "platform": "wns", "app": "a"}])
    with pytest.raises(ValidationError, match="channel"):
        denylist_profile(engine, "p", "sms")
