"""Every credential form a camera URL can carry is masked by the one redaction function."""

from __future__ import annotations

import logging

import pytest

from stream_pipeline.core.redaction import RedactingFormatter, redact

S = "s3cr3T"


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"rtsp://admin:{S}@10.0.0.5:554/stream1", "rtsp://admin:***@10.0.0.5:554/stream1"),
        (f"rtsp://:{S}@127.0.0.1:8554/cam", "rtsp://:***@127.0.0.1:8554/cam"),
        (f"rtsp://admin:p%40{S}@cam/x", "rtsp://admin:***@cam/x"),  # percent-encoded '@'
        (f"rtsp://admin:a/{S}@cam/x", "rtsp://admin:***@cam/x"),  # unescaped '/' in the password
        (f"rtsp://admin:p#{S}@127.0.0.1:8554/s", "rtsp://admin:***@127.0.0.1:8554/s"),  # unescaped '#'
        (f"rtsp://admin:p?{S}@cam/s", "rtsp://admin:***@cam/s"),  # unescaped '?'
        (f"rtsp://admin:p@{S}@[fe80::1]:554/s?x=1", "rtsp://admin:***@[fe80::1]:554/s?x=1"),  # '@' and IPv6
        (f"rtsp://admin:{S}@cam", "rtsp://admin:***@cam"),
        ("rtsp://cam/x?mail=ops@example.com", "rtsp://cam/x?mail=ops@example.com"),  # no user info
        (f"rtsp://admin:{S}@[fe80::1%25eth0]:554/live", "rtsp://admin:***@[fe80::1%25eth0]:554/live"),  # zone id
        (f"rtsp://admin:{S}@cam.local!", "rtsp://admin:***@cam.local!"),
        (f"rtsp://admin:s3?{S}@[fe80::1%25eth0]:554/s", "rtsp://admin:***@[fe80::1%25eth0]:554/s"),  # both at once
        (f"rtsp://admin:p#{S}@cam.local!", "rtsp://admin:***@cam.local!"),
        (f"rtsp://admin:{S}@c\\u00e4m.local/live", "rtsp://admin:***@c\\u00e4m.local/live"),  # JSON-escaped host
        (f"rtsp://127.0.0.1:8554/cam?user=admin&password={S}", "rtsp://127.0.0.1:8554/cam?user=admin&password=***"),
        (f"rtsp://cam/x?pass={S}", "rtsp://cam/x?pass=***"),
        (f"rtsp://cam/x?pwd={S}&channel=1", "rtsp://cam/x?pwd=***&channel=1"),
        (f"rtsp://cam/x?a=1&passwd={S}#frag", "rtsp://cam/x?a=1&passwd=***#frag"),
        (f"rtsp://cam/x?token={S}", "rtsp://cam/x?token=***"),
        (f"rtsp://cam/x?auth={S}", "rtsp://cam/x?auth=***"),
        (f"rtsp://cam/x?PASSWORD={S}&Pwd={S}&TOKEN={S}", "rtsp://cam/x?PASSWORD=***&Pwd=***&TOKEN=***"),
        (f"rtsps://cam/x?access_token={S};auth_key={S}", "rtsps://cam/x?access_token=***;auth_key=***"),
        (f"http://u:{S}@cam/mjpg?pass={S}", "http://u:***@cam/mjpg?pass=***"),
        ("rtsp://cam:554/x?play_count=0&keyframe=1", "rtsp://cam:554/x?play_count=0&keyframe=1"),
        ("rtsp://admin@cam/x", "rtsp://admin@cam/x"),  # a user name alone is not a secret
        ("/dev/video0", "/dev/video0"),
        ("clips/day1.mp4", "clips/day1.mp4"),
    ],
)
def test_every_credential_form_is_masked(url: str, shown: str):
    assert redact(url) == shown


def test_urls_inside_messages_and_json_are_masked():
    message = f"cannot open stream 'rtsp://u:{S}@h/x?token={S}' (refused); retry rtsp://:{S}@h2/y"
    assert S not in redact(message)
    assert redact(message).startswith("cannot open stream 'rtsp://u:***@h/x?token=***' (refused)")
    line = '{"source": "rtsp://u:%s@h/x?pwd=%s", "n": 1}' % (S, S)
    assert redact(line) == '{"source": "rtsp://u:***@h/x?pwd=***", "n": 1}'


def test_log_records_are_masked_whole():
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "no frame from %s", (f"rtsp://:{S}@h/c",), None)
    assert formatter.format(record) == "WARNING no frame from rtsp://:***@h/c"


def test_punctuation_after_a_url_is_kept_and_the_secret_still_masked():
    text = "first: rtsp://admin:S3cret@10.0.0.5/live?token=TOK999: cannot open stream"
    assert redact(text) == "first: rtsp://admin:***@10.0.0.5/live?token=***: cannot open stream"
    assert redact("see rtsp://u:pw@h/x?pwd=abc.") == "see rtsp://u:***@h/x?pwd=***."


def test_a_list_file_run_never_prints_a_cameras_secret(tmp_path):
    from tests.conftest import run_cli
    from tests.live_helpers import free_port

    listing = tmp_path / "cameras.txt"
    listing.write_text(f"rtsp://admin:S3cretPW@127.0.0.1:{free_port()}/stream1?token=TOK999\n"
                       f"rtsp://viewer:Other5ecret@127.0.0.1:{free_port()}/stream2\n")
    config = tmp_path / "fast.yaml"
    config.write_text("source: {open_timeout_s: 2, max_reconnects: 0}\nbrands: {enabled: false}\n")
    result = run_cli("run", str(listing), "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 3, result.stderr
    for secret in ("S3cretPW", "TOK999", "Other5ecret"):
        assert secret not in result.stderr + result.stdout
    assert "skipped rtsp://admin:***@" in result.stdout + result.stderr
