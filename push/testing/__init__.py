"""Fake APNs, FCM v1 and Google OAuth servers for your own tests (HTTP/2 over TLS, on 127.0.0.1).

One ``FakePushServer`` plays all three on one port, behind a throwaway CA; device tokens choose
the answer (``apns_token("unregistered")`` gets APNs's 410, ``fcm_token("quota_exceeded")`` FCM's 429;
any other token is accepted). It checks the APNs JWT and the OAuth assertion like the real services.
Needs the ``testing`` extra: ``pip install 'push-feedback[testing]'``.

The README's "Testing your own code" shows a pytest fixture and test (run by this project's tests).
``server.requests`` records what arrived; attributes such as ``goaway_after`` inject faults.
"""

from __future__ import annotations

from push.testing.keys import ApnsKey, ServiceAccount, make_apns_key, make_service_account
from push.testing.scenarios import (APNS_SCENARIOS, FCM_SCENARIOS, apns_token, fcm_token, ok_apns_token, ok_fcm_token,
                                    scenario, scenario_for)
from push.testing.server import FakePushServer
from push.testing.tls import TestPKI, make_ca

__all__ = [
    "APNS_SCENARIOS", "ApnsKey", "FCM_SCENARIOS", "FakePushServer", "ServiceAccount", "TestPKI", "apns_token",
    "fcm_token", "make_apns_key", "make_ca", "make_service_account", "ok_apns_token", "ok_fcm_token", "scenario",
    "scenario_for",
]
