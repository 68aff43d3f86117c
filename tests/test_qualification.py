from push.classify import classify
from push.outcomes import FailureReason, FailureType
from push.qualification import MAX_OCCURRENCES, QualificationRule, RuleStatus, apply_rules, normalize_error_text
from push.docs import main as docs_main


def test_normalize_replaces_variable_parts():
    a = normalize_error_text("FCM 403 SENDER_ID_MISMATCH: token eXy123abcDEF456ghiJKL789mno:APA91bHun4MxP5egoKMwt2KZFBaFUH for projects/app-1")
    b = normalize_error_text("FCM 403 SENDER_ID_MISMATCH: token fQ9zz8abcDEF456ghiJKL789xyz:APA91bZZZZMxP5egoKMwt2KZFBaFUH for projects/app-2")
    assert a == b
    assert "#xxx#" in a and "SENDER_ID_MISMATCH" in a and "403" in a


def test_normalize_addresses_dates_uuids():
    t = normalize_error_text("user bob@example.com at 2026-11-23T10:00:00Z id 123e4567-e89b-12d3-a456-426614174000 n=1700000000000")
    assert t == "user * at #xxx# id #xxx# n=#xxx#"


def test_occurrences_are_capped():
    r = QualificationRule("apns", "x", "x", occurrences=MAX_OCCURRENCES - 1)
    assert r.seen(5).occurrences == MAX_OCCURRENCES


def test_user_rule_overrides_table():
    out = classify("apns", status=400, body=b'{"reason":"DeviceTokenNotForTopic"}')
    rules = {("apns", out.error_text): QualificationRule("apns", out.error_text, out.raw_error_text, status=RuleStatus.KEEP,
                                                         failure_type=FailureType.HARD,
                                                         failure_reason=FailureReason.USER_UNKNOWN)}
    q = apply_rules(out, "apns", rules)
    assert (q.failure_type, q.failure_reason) == (FailureType.HARD, FailureReason.USER_UNKNOWN)
    assert q.rule.endswith("+rule")


def test_ignore_rule_makes_it_ignored_and_unqualified_rule_changes_nothing():
    out = classify("apns", status=400, body=b'{"reason":"BadDeviceToken"}')
    ignore = {("apns", out.error_text): QualificationRule("apns", out.error_text, "t", status=RuleStatus.IGNORE)}
    assert apply_rules(out, "apns", ignore).failure_type is FailureType.IGNORED
    pending = {("apns", out.error_text): QualificationRule("apns", out.error_text, "t")}
    assert apply_rules(out, "apns", pending) == out


def test_docs_are_current():
    assert docs_main(["--check"]) == 0, "docs/outcomes.md is stale: run python -m push.docs"
