"""Rendering editions: placeholders and personalisation, safety against hostile feed content, languages,
the size budget, UTM links, template overrides and errors, catalogues, and `digest render`."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace
from datetime import UTC, datetime
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from click.testing import CliRunner
from conftest import make_settings
from render_fixtures import (
    SERIES_IDS,
    WINDOW,
    all_sections,
    big_issue,
    brief,
    demo_issue,
    event,
    media,
    section,
)

from digest import i18n
from digest.config import ConfigError
from digest.edition_view import CONTROL, calendar_url, replace_controls, safe_url, summary_text, truncate
from digest.models import (
    EventInfo,
    Issue,
    IssueEntry,
    IssueStatus,
    ItemKind,
    MediaInfo,
    RelatedLink,
    SectionType,
    Segment,
    Subscriber,
    SubscriberStatus,
)
from digest.render import (
    PLACEHOLDERS,
    RenderError,
    greeting_name,
    personalise,
    placeholder,
    render_edition,
)

ROOT = Path(__file__).resolve().parent.parent

VALUES = {
    "name": "Zoë \"Z\" O'Brien <b>&amp; co</b>\xa0Jr",
    "email": "zoe+digest@example.com",
    "unsubscribe_url": "https://www.example.org/unsubscribe/abc.DEF-123?x=1&y=2",
    "preferences_url": "https://www.example.org/preferences/abc.DEF-123",
    "view_url": "https://www.example.org/archive/12?lang=fr&ref=mail",
}


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def full_name_settings(tmp_path):
    """Greeting readers by their full name, so the whole (hostile) name value reaches the output."""
    return make_settings(tmp_path, render={"greeting": "full_name"})


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each link."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", []

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, " ".join("".join(self._text).split())))
            self._href = None

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


# --- placeholders and personalisation -------------------------------------------------------------------

@pytest.mark.parametrize("make_issue,language", [(demo_issue, "en"), (demo_issue, "fr"), (big_issue, "de")])
def test_personalise_is_byte_identical_to_rendering_the_subscriber_directly(settings, make_issue, language):
    issue = make_issue()
    segment = all_sections(issue, language)
    edition = render_edition(issue, segment, settings)
    direct = render_edition(issue, segment, settings, values=VALUES, fit=edition.fit)
    html, text = personalise(edition, VALUES)
    assert html == direct.html
    assert text == direct.text
    assert "[[DIGEST:" not in html and "[[DIGEST:" not in text


@pytest.mark.parametrize("greeting,unused", [("first_name", "name"), ("full_name", "first_name")])
def test_compiled_edition_keeps_every_placeholder_and_splits_once(tmp_path, greeting, unused):
    settings = make_settings(tmp_path, render={"greeting": greeting})
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue), settings)
    used = [name for name in PLACEHOLDERS if name != unused]  # the greeting uses one form of the name
    for name in used:
        assert placeholder(name) in edition.html, name
        assert placeholder(name) in edition.text, name
    assert placeholder(unused) not in edition.html
    # The split is stored on the edition: parts alternate literal text and placeholder slots.
    assert len(edition.html_parts) == 2 * len(edition.html_slots) + 1
    slot_names = {name for _, name, _ in edition.html_slots}
    assert slot_names == set(used)
    attribute_slots = {name for _, name, attribute in edition.html_slots if attribute}
    assert attribute_slots == {"unsubscribe_url", "preferences_url", "view_url"}


def test_personalised_values_are_escaped_for_html_and_raw_in_text(full_name_settings):
    issue = demo_issue()
    html, text = personalise(render_edition(issue, all_sections(issue), full_name_settings), VALUES)
    assert "Zoë \"Z\" O'Brien &lt;b&gt;&amp;amp; co&lt;/b&gt;&nbsp;Jr" in html
    assert 'href="https://www.example.org/unsubscribe/abc.DEF-123?x=1&amp;y=2"' in html
    assert "Hello Zoë \"Z\" O'Brien <b>&amp; co</b>\xa0Jr," in text
    assert "Unsubscribe: https://www.example.org/unsubscribe/abc.DEF-123?x=1&y=2" in text
    names = [a.get("href") for tag, a in parse(html).tags if tag == "a"]
    assert "https://www.example.org/unsubscribe/abc.DEF-123?x=1&y=2" in names


def test_personalise_refuses_missing_values_and_unsafe_urls(settings):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue), settings)
    with pytest.raises(KeyError, match="view_url"):
        personalise(edition, {k: v for k, v in VALUES.items() if k != "view_url"})
    for bad in ("javascript:alert(1)", "JaVaScRiPt&#58;alert(1)", "data:text/html,x", "/relative", "https://a b/",
                'https://www.example.org/"onmouseover="x'):
        with pytest.raises(ValueError, match="unsubscribe_url"):
            personalise(edition, {**VALUES, "unsubscribe_url": bad})
    with pytest.raises(KeyError, match="unknown placeholder"):
        placeholder("password")


def test_line_breaks_in_values_cannot_forge_lines_in_the_text(full_name_settings):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue), full_name_settings)
    _, text = personalise(edition, {**VALUES, "name": "Eve\r\nUnsubscribe: https://evil.example/\x00"})
    assert "Hello Eve Unsubscribe: https://evil.example/," in text
    assert not any(line.startswith("Unsubscribe: https://evil") for line in text.splitlines())


def test_greeting_name_falls_back_to_a_localised_word():
    assert greeting_name("  Anna\nMaria ", "en") == "Anna Maria"
    assert greeting_name("", "en") == "there"
    assert greeting_name("", "fr") == "à vous"
    assert greeting_name("", "de") == "zusammen"


# --- hostile feed content -------------------------------------------------------------------------

def hostile_issue() -> Issue:
    items = [
        brief(1, SERIES_IDS[0], title="<script>alert(1)</script> Brief\r\nBcc: victim@example.com",
              url="JaVaScRiPt&#58;alert(1)",
              summary='<p onclick="x()">Hi <img src=x onerror=alert(1)><a href="javascript:alert(2)">there</a>'
                      "<script>alert(3)</script><style>p{}</style>[[DIGEST:email]]</p>"),
        brief(2, SERIES_IDS[0], title='"><img src=x onerror=alert(4)>', url="javascript:alert(5)"),
        brief(3, SERIES_IDS[0], title="Data URL", url="data:text/html;base64,PHNjcmlwdD4="),
        brief(4, SERIES_IDS[0], title="Tab in scheme", url="java\tscript:alert(6)"),
        brief(5, SERIES_IDS[0], title="Token [[DIGEST:email]] in title",
              url="https://www.example.org/a?[[DIGEST:unsubscribe_url]]"),
        brief(6, SERIES_IDS[0], title="vbscript", url="vbscript:msgbox(1)"),
        # Non-characters and XML-invalid controls: MRML refuses the whole document over one of them.
        brief(7, SERIES_IDS[0], title="Non\ufffecharacters\uffff in\x0b a title\U0010fffe",
              url="https://www.example.org/non\ufffe/",
              summary="<p>Summary\ufffe with \uffff, &#xFFFE;, \ufdd0 and \x85</p>"),
    ]
    evil_event = replace(event(1), title="Event\nwith <b>tags</b>",
                         event=EventInfo(start=WINDOW.end, location='<a href="javascript:x">HQ</a>\r\nBcc: x'))
    evil_media = replace(media(1), url="https://press.example.net/x\" onmouseover=\"alert(7)",
                         media=MediaInfo(outlet="<script>Outlet</script>\uffff"))
    entries = tuple(IssueEntry(item=i, related=(RelatedLink("r", ItemKind.BRIEF, "<i>rel</i>\ufffe", "javascript:alert(8)"),
                                                RelatedLink("s", ItemKind.BRIEF, "ok", "https://www.example.org/\uffff")))
                    for i in items)
    sections = (
        replace(section(SERIES_IDS[0], SectionType.SERIES, "Series <script>", items, series=SERIES_IDS[0],
                        more_url="javascript:alert(9)"), entries=entries),
        section("events", SectionType.EVENTS, "Upcoming events", [evil_event]),
        section("media", SectionType.MEDIA, "In the media", [evil_media]),
    )
    return Issue(number=1, status=IssueStatus.DRAFT, window=WINDOW, sections=sections)


@pytest.mark.parametrize("language", ["en", "fr"])
def test_no_script_handler_or_dangerous_url_survives(settings, language):
    issue = hostile_issue()
    edition = render_edition(issue, all_sections(issue, language), settings)
    html, text = personalise(edition, VALUES)
    tags = parse(html)
    assert "script" not in {tag for tag, _ in tags.tags}
    for tag, attrs in tags.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for name in ("href", "src", "action", "formaction", "background"):
            if attrs.get(name):
                assert attrs[name].startswith(("https://", "http://")), (tag, name, attrs[name])
                assert '"' not in attrs[name] and " " not in attrs[name]
    # Markup in feed text shows as text: escaped, never a tag.
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt; Brief" in html
    # Feed text never fills in as a placeholder: the subscriber's address appears only where the templates put it.
    assert html.count(VALUES["email"]) == 1 and text.count(VALUES["email"]) == 1
    # No forged lines: the CR/LF inside the title stays on the title's line.
    assert not any(line.startswith("Bcc:") for line in text.splitlines())
    assert "\r" not in text and "\r" not in html
    for character in ("\ufffe", "\uffff", "\U0010fffe", "\ufdd0", "\x0b", "\x85"):
        assert character not in html and character not in text, repr(character)
    assert "Non characters in a title" in html and "Summary with , , and" in text
    assert not [href for href, _ in tags.links if "example.org/non" in href or href == "https://www.example.org/"]


def test_the_ascii_shortcut_for_controls_replaces_what_the_full_class_does():
    # ASCII text skips the long CONTROL class (unsafe_chars.CONTROLS_ASCII): the result must be the same.
    for code in range(128):
        text = f"a{chr(code)}{chr(code)}b"
        assert replace_controls(text) == CONTROL.sub(" ", text), code
    assert replace_controls("a\x85\u2028b\x7f\x00c") == "a b c"


def test_summaries_are_plain_text_excerpts():
    assert summary_text('<p>One &amp; <b>two</b></p><script>x()</script><p>three\r\n four</p>') == "One & twothree four"
    assert truncate("word " * 50, 40).endswith("…") and len(truncate("word " * 50, 40)) <= 40
    assert truncate("short", 40) == "short" and truncate("anything", 0) == ""


@pytest.mark.parametrize("url,expected", [
    ("https://www.example.org/a b", "https://www.example.org/a%20b"),
    ('https://www.example.org/x"><script>', "https://www.example.org/x%22%3E%3Cscript%3E"),
    ("HTTPS://www.example.org/", "https://www.example.org/"),
    ("https://www.example.org/?q=[x]", "https://www.example.org/?q=%5Bx%5D"),
    ("javascript:alert(1)", None), ("JaVaScRiPt&#58;alert(1)", None), ("//www.example.org/", None),
    ("mailto:a@example.org", None), ("https://www.example.org/\r\nX", None), ("", None), ("http://[::1", None),
    ("https://www.example.org/\ufffe", None), ("https://www.example.org/?q=\uffff", None),
    ("https://www.example.org/\U0001ffff", None), ("https://www.example.org/\ufdd0", None),
    ("https://www.example.org/\x85", None), ("https://www.exa\ufffemple.org/", None),
])
def test_safe_url(url, expected):
    assert safe_url(url) == expected


# --- languages ------------------------------------------------------------------------------------

def test_foreign_items_get_a_language_marker(settings):
    issue = demo_issue()
    html = render_edition(issue, all_sections(issue, "fr"), settings).html
    badges = [(a.get("lang"), a.get("title")) for tag, a in parse(html).tags if tag == "abbr"]
    assert ("de", "Deutsch") in badges and ("en", "English") in badges
    assert ("fr", "français") not in badges  # the French media mention is in the edition's language
    assert '<a href="https://press.example.net/article/1" lang="de"' in html


@pytest.mark.parametrize("language,words", [
    ("en", ["Upcoming events", "Friday, 27 November 2026", "14:00–16:00 CET", "Hybrid: on site and online", "Issue 12"]),
    ("fr", ["Événements à venir", "vendredi 27 novembre 2026", "14:00–16:00 CET", "Hybride\xa0: sur place et en ligne",
            "Numéro 12", "Se désabonner"]),
    ("de", ["Kommende Veranstaltungen", "Freitag, 27. November 2026", "14:00–16:00 CET", "Abmelden", "Ausgabe 12"]),
])
def test_dates_and_labels_are_localised(settings, language, words):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue, language), settings)
    for word in words:
        assert word in html_lib.unescape(edition.html), word
        assert word in edition.text, word
    assert re.search(rf'<html[^>]* lang="{language}"', edition.html)


def test_times_show_in_the_site_timezone(tmp_path):
    settings = make_settings(tmp_path, site={"timezone": "America/New_York"})
    issue = demo_issue()
    text = render_edition(issue, all_sections(issue), settings).text
    assert "08:00–10:00 EST" in text


def test_calendar_link_is_a_google_template_in_utc():
    url = calendar_url(event(1))
    assert url.startswith("https://calendar.google.com/calendar/render?action=TEMPLATE&")
    assert "dates=20261127T130000Z%2F20261127T150000Z" in url
    assert calendar_url(replace(event(1), event=EventInfo())) is None


def catalogue_messages() -> set[str]:
    found: set[str] = set()
    options = {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}
    for path in sorted((ROOT / "templates").rglob("*.j2")):
        found.update(m[1] if isinstance(m[1], str) else m[1][0] for m in extract_from_file("jinja2", str(path), options=options))
    keywords = {"gettext": None, "ngettext": (1, 2), "pgettext": ((1, "c"), 2), "N_": None}
    for module in ("digest/render.py", "digest/edition_view.py"):
        for _, message, _, _context in extract_from_file("python", str(ROOT / module), keywords=keywords):
            found.add(message if isinstance(message, str) else message[0])
    return found


@pytest.mark.parametrize("language", ["fr", "de"])
def test_catalogues_translate_every_template_string(language):
    with i18n.catalogue_path(language).open("rb") as fh:
        catalog = read_po(fh, locale=language)
    translated = {(m.id if isinstance(m.id, str) else m.id[0]) for m in catalog
                  if m.id and (m.string if isinstance(m.string, str) else all(m.string))}
    missing = catalogue_messages() - translated
    assert not missing, f"untranslated in {language}: {sorted(missing)}"


# --- segments, size budget, UTM -------------------------------------------------------------------

def test_a_segment_shows_only_its_sections(settings):
    issue = demo_issue()
    edition = render_edition(issue, Segment(id="ev", section_ids=("events",), language="en"), settings)
    assert "Upcoming events" in edition.html and "Roundtable 1" in edition.text
    assert "Policy brief 1" not in edition.html and "In the media" not in edition.text
    assert edition.segment_id == "ev" and edition.language == "en"


def test_demo_issue_fits_without_notes(settings):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue), settings)
    assert edition.notes == () and edition.fit == 0


def test_oversized_edition_shortens_summaries_then_caps_sections_and_says_so(tmp_path):
    issue = big_issue()
    roomy = render_edition(issue, all_sections(issue), make_settings(tmp_path, digest={"max_html_kib": 500}))
    assert roomy.notes == ()
    shortened = render_edition(issue, all_sections(issue), make_settings(tmp_path, digest={"max_html_kib": 80}))
    assert shortened.html_bytes <= 80 * 1024
    assert any("summaries shortened" in n for n in shortened.notes)
    assert not any("items per section" in n for n in shortened.notes)
    tight = render_edition(issue, all_sections(issue), make_settings(tmp_path, digest={"max_html_kib": 40}))
    assert tight.html_bytes <= 40 * 1024
    assert any("items per section" in n for n in tight.notes)
    more = [(href, label) for href, label in parse(tight.html).links if "more items on our site" in label]
    assert more and all(href.startswith("https://www.example.org") for href, _ in more)
    # The text edition still lists every item's title and URL.
    for sec in issue.sections:
        for entry in sec.entries:
            assert entry.item.title in tight.text and entry.item.url in tight.text


def test_impossible_budget_is_reported_not_hidden(tmp_path):
    issue = big_issue()
    edition = render_edition(issue, all_sections(issue), make_settings(tmp_path, digest={"max_html_kib": 8}))
    assert any("after every shortening" in n for n in edition.notes)


def test_text_edition_has_titles_urls_event_dates_and_unsubscribe(settings):
    issue = demo_issue()
    text = render_edition(issue, all_sections(issue), settings).text
    for sec in issue.sections:
        for entry in sec.entries:
            assert entry.item.title in text and entry.item.url in text
    assert "Friday, 27 November 2026, 14:00–16:00 CET" in text
    assert f"Unsubscribe: {placeholder('unsubscribe_url')}" in text


def test_utm_parameters_only_on_site_links_when_enabled(tmp_path):
    issue = demo_issue()
    off = render_edition(issue, all_sections(issue), make_settings(tmp_path)).html
    assert "utm_" not in off
    on = render_edition(issue, all_sections(issue), make_settings(tmp_path, delivery={"utm": True})).html
    hrefs = [h for h, _ in parse(on).links]
    assert ("https://www.example.org/publications/brief-1/?utm_source=digest&utm_medium=email"
            "&utm_campaign=digest-12&utm_content=esa-security-defence") in hrefs
    assert any(h.endswith("utm_content=events") for h in hrefs)
    assert "https://press.example.net/article/1" in hrefs
    assert not any("utm_" in h for h in hrefs if h.startswith(("https://press.", "https://calendar.")))


# --- templates: overrides and errors --------------------------------------------------------------

def test_user_templates_override_single_files(tmp_path):
    mine = tmp_path / "mine" / "partials"
    mine.mkdir(parents=True)
    (mine / "media.mjml.j2").write_text('<p class="mine">Press: {{ item.title }}</p>\n')
    settings = make_settings(tmp_path, templates_dir="mine")
    issue = demo_issue()
    html = render_edition(issue, all_sections(issue), settings).html
    assert '<p class="mine"' in html and "Press: Europas strategische Autonomie" in html and "<mj-" not in html
    assert "Policy brief 1" in html  # everything else still comes from the bundled files


def test_template_syntax_error_names_file_and_line(tmp_path):
    mine = tmp_path / "mine" / "partials"
    mine.mkdir(parents=True)
    (mine / "event.mjml.j2").write_text("<div>\n<p>{{ item.title }</p>\n</div>\n")
    settings = make_settings(tmp_path, templates_dir="mine")
    issue = demo_issue()
    with pytest.raises(RenderError, match=r"mine/partials/event\.mjml\.j2:2: unexpected '}'"):
        render_edition(issue, all_sections(issue), settings)


def test_template_runtime_error_names_file_and_line(tmp_path):
    mine = tmp_path / "mine" / "partials"
    mine.mkdir(parents=True)
    (mine / "media.mjml.j2").write_text("<div>\n\n<p>{{ item.no_such_field }}</p></div>\n")
    settings = make_settings(tmp_path, templates_dir="mine")
    issue = demo_issue()
    with pytest.raises(RenderError, match=r"mine/partials/media\.mjml\.j2:3: .*no_such_field"):
        render_edition(issue, all_sections(issue), settings)


def render_with_override(tmp_path, name: str, source: str):
    """Render the demo issue with one user template; returns the RenderError it raises."""
    mine = tmp_path / "mine" / "partials"
    mine.mkdir(parents=True)
    (mine / name).write_text(source)
    issue = demo_issue()
    with pytest.raises(RenderError) as raised:
        render_edition(issue, all_sections(issue), make_settings(tmp_path, templates_dir="mine"))
    return str(raised.value)


def test_invalid_mjml_names_the_template_file_and_line_and_quotes_the_rendered_mjml(tmp_path):
    # MRML itself complains about the next section's <mj-text>, far from the culprit partial.
    message = render_with_override(tmp_path, "item.mjml.j2", "<div>{{ item.title }}\n<p>x</p></mj-text></mj-column></div>\n")
    assert re.match(r".*/mine/partials/item\.mjml\.j2:2: invalid MJML: </mj-text> closes an element", message), message
    assert re.search(r"MRML: unexpected element at line \d+, column \d+ of the rendered MJML: '.*</mj-column>", message), message
    assert "position" not in message


def test_an_mjml_element_left_unclosed_is_named(tmp_path):
    message = render_with_override(tmp_path, "media.mjml.j2", "<div>\n<mj-text>{{ item.title }}</div>\n")
    assert re.match(r".*/mine/partials/media\.mjml\.j2:2: invalid MJML: <mj-text> is opened but never closed", message)


def test_mjml_that_mrml_would_accept_but_is_unbalanced_is_refused(tmp_path):
    # MRML compiles this without a word and drops what it cannot place.
    message = render_with_override(tmp_path, "item.mjml.j2", "<div>{{ item.title }}</div></mj-text>\n")
    assert re.match(r".*/mine/partials/item\.mjml\.j2:1: invalid MJML: </mj-text> closes an element", message)


def test_an_xml_invalid_character_in_a_template_is_named_with_its_file_and_line(tmp_path):
    # MRML says only "unable to parse next template": the character is found in the traced MJML.
    message = render_with_override(tmp_path, "item.mjml.j2", "<div>{{ item.title }}\n\n<p>a\x0bb</p></div>\n")
    assert re.match(r".*/mine/partials/item\.mjml\.j2:3: invalid MJML: the character U\+000B is not allowed in MJML "
                    r"\(MRML: unable to parse", message), message


def test_mjml_that_cannot_be_parsed_for_no_reason_found_still_names_a_file_and_line(tmp_path):
    # A bare "<": balanced, no invalid character, no position from MRML: the fallback names the
    # first template line of the edition.
    message = render_with_override(tmp_path, "item.mjml.j2", "<div>{{ item.title }} <</div>\n")
    assert re.match(r".*/templates/edition\.mjml\.j2:\d+: invalid MJML: the MJML cannot be parsed \(MRML: ", message), message


def test_a_missing_included_template_is_named_with_the_including_file_and_line(tmp_path):
    message = render_with_override(tmp_path, "item.mjml.j2", "<div>{{ item.title }}\n{% include 'nope.j2' %}</div>\n")
    assert re.match(r".*/mine/partials/item\.mjml\.j2:2: template 'nope\.j2' not found$", message), message


@pytest.mark.parametrize("tag", ["mj-foo", "mj-text", "mj-button"])
def test_mjml_tags_left_in_the_html_are_refused(tmp_path, tag):
    # MRML copies unknown tags, and known ones inside mj-text (whose content it keeps as it is), into the HTML.
    message = render_with_override(tmp_path, "item.mjml.j2", f"<div>{{{{ item.title }}}}\n\n<{tag}>x</{tag}></div>\n")
    assert re.match(rf".*/mine/partials/item\.mjml\.j2:3: <{tag}> was left in the HTML", message), message


@pytest.mark.parametrize("name", ["section.mjml.j2", "media.mjml.j2"])
def test_unrendered_jinja_left_in_the_output_is_refused(tmp_path, name):
    source = ('<mj-text css-class="section"><h2>{{ section.title }}</h2>\n{% raw %}{{ section.id }}{% endraw %}</mj-text>\n'
              if name == "section.mjml.j2" else "<div>{{ item.title }}\n{% raw %}{% if %}{% endraw %}</div>\n")
    message = render_with_override(tmp_path, name, source)
    assert re.match(rf".*/mine/partials/{re.escape(name)}:2: unrendered Jinja '{{[{{%]' was left", message), message


def test_unrendered_jinja_in_the_text_edition_is_refused(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    bundled = (ROOT / "templates" / "edition.txt.j2").read_text()
    (mine / "edition.txt.j2").write_text(bundled.replace("{{ site.name }}\n", "{% raw %}{{ site.name }}{% endraw %}\n", 1))
    issue = demo_issue()
    with pytest.raises(RenderError, match=r"mine/edition\.txt\.j2:\d+: unrendered Jinja '\{\{'"):
        render_edition(issue, all_sections(issue), make_settings(tmp_path, templates_dir="mine"))


def test_template_like_text_in_content_is_shown_not_refused(full_name_settings):
    issue = demo_issue(intro="Our {{ guide }} to {% templates %} and <mj-text> tags")
    edition = render_edition(issue, all_sections(issue), full_name_settings)
    html, text = personalise(edition, {**VALUES, "name": "{{ Zoë }}"})
    assert "Our {\u2060{ guide }} to {\u2060% templates %} and &lt;mj-text&gt; tags" in html
    assert "Hello {\u2060{ Zoë }}," in text


def test_missing_templates_dir_is_a_config_error(tmp_path):
    settings = make_settings(tmp_path, templates_dir="nowhere")
    issue = demo_issue()
    with pytest.raises(ConfigError, match="templates_dir"):
        render_edition(issue, all_sections(issue), settings)


# --- digest render --------------------------------------------------------------------------------

@pytest.fixture
def stored(tmp_path):
    """A config file, a store holding the demo issue and a confirmed French subscriber."""
    from digest.manifest import issue_to_manifest
    from digest.store import open_store
    from digest.store.issues import create_issue
    from digest.store.subscribers import add_subscriber

    config = tmp_path / "digest.toml"
    config.write_text('[store]\nurl = "sqlite:///digest.db"\n[web]\nbase_url = "https://news.example.org"\n')
    settings = make_settings(tmp_path)
    engine = open_store(settings.store.url)
    issue = demo_issue()
    create_issue(engine, issue, issue_to_manifest(issue, settings), datetime.now(UTC))
    add_subscriber(engine, Subscriber(email="marie@example.com", name="Marie", language="fr",
                                      series=(SERIES_IDS[1],), want_media=False, status=SubscriberStatus.CONFIRMED))
    engine.dispose()
    return config


def run_cli(*args: str):
    from digest.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_render_command_writes_full_edition(stored, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "test-secret")
    out = tmp_path / "out"
    result = run_cli("--config", str(stored), "render", "--issue", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    html = (out / "issue.html").read_text()
    text = (out / "issue.txt").read_text()
    assert "[[DIGEST:" not in html + text and "Hello there," in text
    assert "https://news.example.org/archive/1" in text
    message = message_from_bytes((out / "issue.eml").read_bytes(), policy=policy.default)
    assert not message.defects
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
    assert str(out / "issue.html") in result.output


def test_render_command_for_one_subscriber(stored, tmp_path, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "test-secret")
    out = tmp_path / "marie"
    result = run_cli("--config", str(stored), "render", "--issue", "1", "--subscriber", "Marie@Example.com",
                     "--out", str(out))
    assert result.exit_code == 0, result.output
    text = (out / "issue.txt").read_text()
    assert "Bonjour Marie," in text and "marie@example.com" in text
    assert "Economy & Trade" in text and "Security & Defence ==" not in text and "Dans les médias" not in text
    assert "https://news.example.org/unsubscribe/" in text
    message = message_from_bytes((out / "issue.eml").read_bytes(), policy=policy.default)
    assert message["To"].addresses[0].addr_spec == "marie@example.com"
    assert not message.defects


@pytest.mark.parametrize("args,message", [
    (("--issue", "9"), "no issue 9"),
    (("--issue", "1", "--subscriber", "nobody@example.com"), "no subscriber"),
])
def test_render_command_errors_exit_2(stored, tmp_path, args, message):
    result = run_cli("--config", str(stored), "render", *args, "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert message in result.output


def test_render_command_template_error_exits_1(stored, tmp_path):
    broken = tmp_path / "broken" / "partials"
    broken.mkdir(parents=True)
    (broken / "item.mjml.j2").write_text("<div>{% if %}</div>\n")
    stored.write_text('templates_dir = "broken"\n' + stored.read_text())  # a top-level key goes first
    result = run_cli("--config", str(stored), "render", "--issue", "1", "--out", str(tmp_path / "x"))
    assert result.exit_code == 1
    assert "template error: " in result.output and "item.mjml.j2:1:" in result.output


def test_render_command_subscriber_with_nothing_to_read_exits_2(tmp_path, monkeypatch):
    from digest.manifest import issue_to_manifest
    from digest.store import open_store
    from digest.store.issues import create_issue
    from digest.store.subscribers import add_subscriber

    monkeypatch.setenv("DIGEST_SECRET", "test-secret")
    config = tmp_path / "digest.toml"
    config.write_text('[store]\nurl = "sqlite:///digest.db"\n')
    settings = make_settings(tmp_path)
    engine = open_store(settings.store.url)
    issue = Issue(number=None, status=IssueStatus.DRAFT, window=WINDOW,
                  sections=(section("events", SectionType.EVENTS, "Upcoming events", [event(1)]),))
    create_issue(engine, issue, issue_to_manifest(issue, settings), datetime.now(UTC))
    add_subscriber(engine, Subscriber(email="no-events@example.com", want_events=False,
                                      status=SubscriberStatus.CONFIRMED))
    engine.dispose()
    result = run_cli("--config", str(config), "render", "--issue", "1", "--subscriber", "no-events@example.com",
                     "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "receives nothing from issue 1" in result.output


def test_reader_without_a_name_is_greeted_in_their_language():
    from digest.render import reader_values

    assert reader_values("", "a@example.org", "en", "https://u", "https://p")["name"] == "there"
    assert reader_values("  ", "a@example.org", "de", "https://u", "https://p")["name"] == "zusammen"
    assert reader_values("Ana", "a@example.org", "fr", "https://u", "https://p", "https://v")["view_url"] == "https://v"
