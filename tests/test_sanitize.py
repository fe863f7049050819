"""Sanitising untrusted feed text: HTML through nh3, plain-text titles, checked and unwrapped URLs."""

import re
import sys

import pytest

from digest.sanitize import host_name, html_from_text, plain_text, safe_link, sanitize_html, unwrap_redirect

BASE = "https://www.example.org/publications/"


def hrefs(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"]*)"', html)


@pytest.mark.parametrize("vector", [
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="JaVaScRiPt&#58;alert(1)">x</a>',
    '<a href="javascript&colon;alert(1)">x</a>',
    '<a href="&#x6A;avascript:alert(1)">x</a>',
    '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    '<a href="java\tscript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<a href="java\nscript:alert(1)">x</a>',
    '<a href="java&#10;script:alert(1)">x</a>',
    '<a href="  javascript:alert(1)">x</a>',
    '<a href="\x01javascript:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="VBScript&#58;msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="DATA:text/html,<script>alert(1)</script>">x</a>',
    '<img src="data:image/png;base64,iVBORw0KGgo=">',
    '<img src="javascript:alert(1)">',
])
def test_unsafe_url_schemes_are_removed(vector):
    cleaned = sanitize_html(vector, BASE)
    assert hrefs(cleaned) == []
    assert "script:" not in cleaned.lower() and "data:" not in cleaned.lower()


@pytest.mark.parametrize("vector, gone", [
    ("<script>alert(1)</script><p>ok</p>", "alert"),
    ('<img src="https://x.org/a.png" onerror="alert(1)">', "onerror"),
    ('<p onclick="alert(1)" onmouseover="alert(2)">ok</p>', "alert"),
    ('<form action="https://attacker.example/"><input name="pw"><button>Go</button></form><p>ok</p>', "form"),
    ('<svg onload="alert(1)"><a href="https://x.org/">svg</a></svg><p>ok</p>', "svg"),
    ('<math><mtext><img src=x onerror=alert(1)></mtext></math><p>ok</p>', "onerror"),
    ('<iframe src="https://attacker.example/"></iframe><p>ok</p>', "iframe"),
    ('<object data="https://attacker.example/x.swf"></object><embed src="x.swf"><p>ok</p>', "swf"),
    ("<style>p { display: none }</style><p>ok</p>", "display"),
    ('<p style="background:url(javascript:alert(1))">ok</p>', "style"),
    ('<link rel="stylesheet" href="https://attacker.example/x.css"><p>ok</p>', "x.css"),
    ('<meta http-equiv="refresh" content="0;url=https://attacker.example/"><p>ok</p>', "refresh"),
    ('<base href="https://attacker.example/"><p>ok</p>', "attacker"),
    ("<!-- <script>alert(1)</script> --><p>ok</p>", "<!--"),
    ("<noscript><p>hidden</p></noscript><p>ok</p>", "hidden"),
    ("<textarea>secret</textarea><p>ok</p>", "secret"),
])
def test_dangerous_markup_is_removed(vector, gone):
    cleaned = sanitize_html(vector, BASE)
    assert gone not in cleaned
    if "<p>ok</p>" in vector or ">ok<" in vector:
        assert "ok" in cleaned


def test_safe_markup_survives_with_rel_added():
    html = ('<p>Read <a href="https://www.example.org/x" title="X">this</a> and <em>that</em>.</p>'
            '<ul><li>one</li></ul><img src="https://www.example.org/a.png" alt="chart" width="10">'
            '<a href="mailto:press@example.org">mail</a>')
    cleaned = sanitize_html(html, BASE)
    assert '<a href="https://www.example.org/x" title="X" rel="noopener noreferrer">this</a>' in cleaned
    assert "<em>that</em>" in cleaned and "<li>one</li>" in cleaned
    assert '<img src="https://www.example.org/a.png" alt="chart" width="10">' in cleaned
    assert 'href="mailto:press@example.org"' in cleaned


def test_relative_urls_resolve_against_the_base():
    cleaned = sanitize_html('<a href="brief/">b</a><a href="/about/">a</a><img src="../img/x.png">', BASE)
    assert hrefs(cleaned) == [
        "https://www.example.org/publications/brief/",
        "https://www.example.org/about/",
        "https://www.example.org/img/x.png",
    ]


def test_relative_urls_without_a_base_are_dropped():
    cleaned = sanitize_html('<a href="brief/">b</a><a href="https://abs.example/">abs</a>', None)
    assert hrefs(cleaned) == ["https://abs.example/"]
    assert hrefs(sanitize_html('<a href="brief/">b</a>', "/relative/base/")) == []
    assert hrefs(sanitize_html('<a href="brief/">b</a>', "javascript:alert(1)//")) == []


def test_empty_html_stays_empty():
    assert sanitize_html("", BASE) == ""
    assert sanitize_html("   \n", BASE) == ""


@pytest.mark.parametrize("raw, is_html, expected", [
    ("AT&amp;T <b>bold</b> &#8211; news", True, "AT&T bold – news"),
    ("Fish &amp;amp; chips", True, "Fish &amp; chips"),  # decoded once, not twice
    ("&lt;script&gt;alert(1)&lt;/script&gt;Title", True, "Title"),
    ("<script>alert(1)</script>Title", True, "Title"),
    ("Line one\r\nLine two", False, "Line one Line two"),
    ("Null\x00byte and \x1b escape \x7f del", False, "Null byte and escape del"),
    ("  doubled   spaces\tand\ttabs  ", False, "doubled spaces and tabs"),
    ("Plain &amp; text stays", False, "Plain &amp; text stays"),  # text/plain: nothing to decode
    ("Typed as text but <b>marked up</b> &amp; more", False, "Typed as text but <b>marked up</b> &amp; more"),
    ("Why x<y and y>z matters", False, "Why x<y and y>z matters"),  # text keeps every character
    ("History of the <blink> tag", False, "History of the <blink> tag"),
    ("&lt;b&gt;Escaped twice&lt;/b&gt; title", True, "Escaped twice title"),  # HTML escaped twice: no tags left
    ("Why x&lt;y and y&gt;z matters", True, "Why x<y and y>z matters"),  # no element: text, even in HTML
    ("x < y and y > z", False, "x < y and y > z"),
    ("Line\u2028separator", False, "Line separator"),
    ("", True, ""),
])
def test_plain_text(raw, is_html, expected):
    assert plain_text(raw, is_html) == expected


def test_plain_text_is_one_short_line():
    text = plain_text("a" * 5000)
    assert len(text) == 1000 and text.endswith("…")
    assert plain_text("x" * 30, limit=10) == "x" * 9 + "…"


def test_html_from_text_escapes():
    assert html_from_text("a < b & <script>\r\n") == "a &lt; b &amp; &lt;script&gt;"


@pytest.mark.parametrize("url, base, expected", [
    ("https://www.example.org/a", None, "https://www.example.org/a"),
    ("/a/b", "https://www.example.org/x/", "https://www.example.org/a/b"),
    ("b", "https://www.example.org/x/", "https://www.example.org/x/b"),
    ("/a/b", None, ""),
    ("javascript:alert(1)", "https://www.example.org/", ""),
    ("java\tscript:alert(1)", "https://www.example.org/", ""),
    ("data:text/html,x", None, ""),
    ("ftp://example.org/file", None, ""),
    ("mailto:a@example.org", None, ""),
    ("https://", None, ""),
    ("https://www.example.org/a\x00b", None, ""),
    ("  https://www.example.org/a b  ", None, "https://www.example.org/a%20b"),
    ("https://www.example.org/a\r\nSet-Cookie: x", None, "https://www.example.org/aSet-Cookie:%20x"),
    ("", None, ""),
    (None, None, ""),
    # Not URLs at all (issue 15): markup in a <link>, which joining to the channel link used to keep.
    ("<b>Register</b>", "https://www.example.org/", ""),
    ('x" onclick="y', "https://www.example.org/", ""),
    ("https://www.example.org/a<script>", None, ""),
])
def test_safe_link(url, base, expected):
    assert safe_link(url, base) == expected


GA = "https://www.google.com/url?rct=j&sa=t&url={}&ct=ga&cd=CAIyGjE2&usg=AOvVaw0"


@pytest.mark.parametrize("link, expected", [
    (GA.format("https://www.lesoir.be/612345/article"), "https://www.lesoir.be/612345/article"),
    (GA.format("https%3A%2F%2Fapa.at%2Fnews%2Fx%3Fa%3D1%26b%3D2"), "https://apa.at/news/x?a=1&b=2"),
    # decoded exactly once: %2520 becomes %20, not a space
    (GA.format("https://example.com/a%2520b"), "https://example.com/a%20b"),
    (GA.format("https://example.com/q?x=a+b"), "https://example.com/q?x=a+b"),
    ("https://www.google.de/url?q=https://www.derstandard.at/story/1&sa=U", "https://www.derstandard.at/story/1"),
    ("https://google.co.uk/url?url=https://www.bbc.co.uk/news/1", "https://www.bbc.co.uk/news/1"),
])
def test_google_redirects_are_unwrapped(link, expected):
    assert unwrap_redirect(link) == expected


@pytest.mark.parametrize("link", [
    GA.format("javascript:alert(1)"),
    GA.format("ftp://files.example.org/x"),
    GA.format(""),
    "https://www.google.com/url?rct=j&sa=t&ct=ga",
    "https://www.google.com/search?q=https://example.com/",
    "https://google.evil.example/url?url=https://example.com/",
    "https://news.example.net/redirect?to=https%3A%2F%2Fwww.derstandard.at%2Fstory%2F1",
    "https://www.example.org/url?url=https://example.com/",
])
def test_other_links_are_left_alone(link):
    assert unwrap_redirect(link) == link


def test_host_name_drops_www():
    assert host_name("https://www.lesoir.be/a") == "lesoir.be"
    assert host_name("https://APA.at/x") == "apa.at"
    assert host_name("") == ""


# --- URLs urllib cannot read ("Invalid IPv6 URL") cost the link, never the item -------------------
@pytest.mark.parametrize("url, base", [
    ("http://[::1", None),
    ("https://[zz]/a", None),
    ("//[::1/x", "https://www.example.org/"),
    ("/a", "http://[::1"),
])
def test_a_url_urllib_cannot_read_is_dropped(url, base):
    assert safe_link(url, base) == ""


def test_unreadable_urls_in_html_are_dropped_without_a_traceback(monkeypatch):
    unraisable = []  # nh3 hands what its URL callback raises to sys.unraisablehook, which prints a traceback
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    cleaned = sanitize_html('<a href="//[::1/x">x</a><a href="/ok">ok</a>', BASE)
    assert hrefs(cleaned) == ["https://www.example.org/ok"] and ">x</a>" in cleaned
    assert hrefs(sanitize_html('<a href="/a">a</a>', "http://[::1")) == []
    assert unraisable == []


def test_host_name_and_unwrap_redirect_of_an_unreadable_url():
    assert host_name("http://[::1") == ""
    assert unwrap_redirect("http://[::1") == "http://[::1"
    assert unwrap_redirect(GA.format("http://[::1")) == GA.format("http://[::1")


# --- characters XML (and so MJML) refuses, and invisible ones in titles ---------------------------
@pytest.mark.parametrize("raw", [
    "Odd \uffff title", "Odd \ufffe title", "Odd \ufdd0 title", "Odd \U0001ffff title", "Odd \U0010fffe title",
    "Odd \ud800 title", "Odd \u202e title", "Odd \u202a\u202b\u202c\u202d title", "Odd \u2066\u2067\u2068\u2069 title",
])
def test_titles_lose_non_characters_surrogates_and_bidi_controls(raw):
    assert plain_text(raw) == "Odd title"
    assert plain_text(raw.replace("\uffff", "&#xFFFF;"), is_html=True) == "Odd title"


def test_html_and_text_fields_lose_xml_invalid_characters():
    assert sanitize_html("<p>a\uffff b\ufffe c\x01 d\x0b</p>", BASE) == "<p>a b c d</p>"
    assert sanitize_html('<a href="https://www.example.org/x\uffffy">l</a>', BASE) == (
        '<a href="https://www.example.org/xy" rel="noopener noreferrer">l</a>')
    assert html_from_text("a\uffff b\ud800 c") == "a b c"
    assert safe_link("https://www.example.org/a\uffffb") == "https://www.example.org/ab"
