"""WHIP endpoint URLs as config, the cloud protocol and the push read them: https (and whip://, the same),
http only to loopback, never credentials in the URL, and the path (a secret) never in the shown form."""

from __future__ import annotations

import pytest

from appliance.media.whip_url import is_whip_url, parse_whip_url


def test_forms_that_are_taken() -> None:
    u = parse_whip_url("https://cloud.example.com/whip/sk-secret?x=1")
    assert (u.url, u.host, u.port, u.tls) == (
        "https://cloud.example.com/whip/sk-secret?x=1",
        "cloud.example.com",
        443,
        True,
    )
    assert str(u) == "https://cloud.example.com:443/<path>" and "sk-secret" not in str(u)
    assert parse_whip_url("whip://cloud.example.com:8443/w").url == "https://cloud.example.com:8443/w"
    loop = parse_whip_url("http://127.0.0.1:8080/whip/live/x")
    assert (loop.tls, loop.port, str(loop)) == (False, 8080, "http://127.0.0.1:8080/<path>")
    assert parse_whip_url("http://[::1]/w").host == "::1"
    assert parse_whip_url("http://localhost/w").port == 80
    assert all(is_whip_url(u) for u in ("https://a/b", "HTTPS://a/b", "whip://a/b", "http://a/b"))
    assert not any(is_whip_url(u) for u in ("rtmp://a/b/c", "rtmps://a/b/c", "srt://a"))


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://cloud.example.com/whip/sk-secret", "the token would go in clear"),
        ("https://user:pw@cloud.example.com/whip/sk-secret", "credentials in the URL"),
        ("https:///whip/sk-secret", "no host"),
        ("https://cloud.example.com:0/whip/sk-secret", "port 0"),
        ("https://cloud.example.com:99999/whip/sk-secret", "not a URL"),
        ("https://cloud.example.com/whip/sk-secret x", "spaces or control characters"),
        ("ftp://cloud.example.com/whip/sk-secret", "want https://"),
    ],
)
def test_refusals_name_the_problem_not_the_path(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as info:
        parse_whip_url(url)
    assert "sk-secret" not in str(info.value)
