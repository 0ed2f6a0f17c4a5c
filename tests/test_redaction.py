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
