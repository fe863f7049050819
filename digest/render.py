"""Issue + Segment → an Edition (HTML and plain text), compiled once per segment and language.

Jinja2 renders `templates/edition.mjml.j2` to MJML, mjml-python (MRML) compiles it to HTML, and
css-inline inlines `styles/inline.css` (MRML does not inline `mj-style inline`). The plain text comes
from the same view data through `edition.txt.j2`. Per-subscriber values stay in the compiled edition
as PLACEHOLDERS; `personalise` fills them by joining precomputed parts, so delivery never runs Jinja or MJML.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import css_inline
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from mjml import mjml2html

from . import i18n
from .config import LANGUAGES, ConfigError, Settings
from .edition_view import (
    PLACEHOLDER_PREFIX,
    display_line,
    edition_view,
    neutralise_markers,
    replace_controls,
    safe_url,
)
from .models import Issue, Segment
from .template_errors import (
    RenderError,
    TracingTemplate,
    find_leftover,
    leftover_error,
    mjml_error,
    render_template,
    trace_render,
    unbalanced,
)

# --- placeholders -------------------------------------------------------------------------------------

PLACEHOLDERS = ("name", "first_name", "email", "unsubscribe_url", "preferences_url", "view_url")
# Placeholders whose value is worked out from another when not given: the first name from the name
# (so every caller that knows a name fills the `render.greeting = "first_name"` greeting the same way).
_DERIVED = frozenset({"first_name"})
# Only the known names: anything else in the text is content, never a slot.
_PLACEHOLDER_RE = re.compile(r"\[\[DIGEST:(" + "|".join(PLACEHOLDERS) + r")\]\]")
_URL_PLACEHOLDERS = frozenset(name for name in PLACEHOLDERS if name.endswith("_url"))
# The address shown in editions rendered for no one in particular (RFC 2606 reserved domain).
PREVIEW_EMAIL = "reader@example.org"


def placeholder(name: str) -> str:
    """The marker left in a compiled edition for a per-subscriber value (ASCII, not Jinja, survives MJML)."""
    if name not in PLACEHOLDERS:
        raise KeyError(f"unknown placeholder {name!r}; placeholders are {', '.join(PLACEHOLDERS)}")
    return f"{PLACEHOLDER_PREFIX}{name}]]"


# --- palettes (the contrast test reads these) -----------------------------------------------------

@dataclass(frozen=True)
class Palette:
    page: str
    card: str
    text: str
    muted: str
    link: str
    border: str
    accent: str
    badge_bg: str
    badge_text: str


@dataclass(frozen=True)
class Theme:
    light: Palette
    dark: Palette
    font: str = "Helvetica, Arial, sans-serif"


THEME = Theme(
    light=Palette(page="#eef0f3", card="#ffffff", text="#1f2933", muted="#4a5565", link="#1a4fb4",
                  border="#d5dae1", accent="#1a4fb4", badge_bg="#e3e7ed", badge_text="#1f2933"),
    dark=Palette(page="#0f141a", card="#1b222c", text="#eef1f5", muted="#c3cad4", link="#9cc4ff",
                 border="#3a4452", accent="#9cc4ff", badge_bg="#394452", badge_text="#f5f7fa"),
)

# --- the edition ----------------------------------------------------------------------------------

# (share of settings.digest.summary_chars kept, items per section) tried in order until the HTML fits.
FIT_STEPS: tuple[tuple[float, int | None], ...] = (
    (1.0, None), (0.5, None), (0.25, None), (0.0, None), (0.0, 12), (0.0, 8), (0.0, 5), (0.0, 3), (0.0, 1))
# Room kept for placeholder values (signed URLs, long names) on top of the placeholder-filled size.
TOKEN_RESERVE_BYTES = 2048


@dataclass(frozen=True)
class Edition:
    """One compiled edition for a (segment, language), with placeholders where subscriber values go."""

    html: str
    text: str
    subject: str
    preheader: str
    language: str
    segment_id: str
    notes: tuple[str, ...] = ()
    fit: int = 0
    # The html and text cut at their placeholders, once: literal parts plus (index, placeholder, in_attribute) slots.
    html_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    html_slots: tuple[tuple[int, str, bool], ...] = field(init=False, repr=False, compare=False)
    text_parts: tuple[str, ...] = field(init=False, repr=False, compare=False)
    text_slots: tuple[tuple[int, str, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value, is_html in (("html", self.html, True), ("text", self.text, False)):
            parts, slots = _split_at_placeholders(value, is_html)
            object.__setattr__(self, f"{name}_parts", parts)
            object.__setattr__(self, f"{name}_slots", slots)

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


def render_edition(issue: Issue, segment: Segment, settings: Settings, *,
                   values: Mapping[str, str] | None = None, fit: int | None = None) -> Edition:
    """Compile the edition a segment receives: its sections, in its language, within the size budget.

    Without `values` the per-subscriber places hold placeholders (fill them with `personalise`); with
    `values` the subscriber is rendered directly (the slow path, for tests and the naive bench).
    `fit` forces a FIT_STEPS index; by default the first step whose HTML fits max_html_kib is used,
    and `notes` says what was shortened.
    """
    subscriber = _subscriber_context(values)
    env = template_environment(settings.templates_dir and str(settings.resolve_path(settings.templates_dir)),
                               segment.language)
    inliner = _inliner(env)
    limit = settings.digest.max_html_kib * 1024 - TOKEN_RESERVE_BYTES
    steps = range(len(FIT_STEPS)) if fit is None else (fit,)
    for step in steps:
        share, cap = FIT_STEPS[step]
        view = _template_context(edition_view(issue, segment, settings, int(settings.digest.summary_chars * share), cap),
                                 subscriber)
        html = _compile_html(env, view, inliner)
        if fit is not None or len(html.encode("utf-8")) <= limit:
            break
    full_view = _template_context(edition_view(issue, segment, settings, settings.digest.summary_chars), subscriber)
    text = render_template(env, "edition.txt.j2", full_view)
    leftover = find_leftover(text, is_html=False)
    if leftover is not None:
        raise leftover_error(trace_render(env, "edition.txt.j2", full_view), leftover)
    notes = _fit_notes(step, view, settings, segment, len(html.encode("utf-8")), limit)
    return Edition(html=html, text=_tidy_text(text), subject=view["subject"], preheader=view["preheader"],
                   language=segment.language, segment_id=segment.id, notes=notes, fit=step)


def personalise(edition: Edition, values: Mapping[str, str]) -> tuple[str, str]:
    """(html, text) for one subscriber: placeholder slots filled, HTML-escaped in html, raw in text.

    `values` needs every name in PLACEHOLDERS but `first_name` (taken from `name` when not given);
    URL values must be http(s). Byte-identical to
    `render_edition(..., values=values, fit=edition.fit).html/.text`.
    """
    clean = _clean_values(values)
    in_text = {name: _escape_html_text(v) for name, v in clean.items()}
    in_attr = {name: _escape_html_attribute(v) for name, v in clean.items()}
    html_parts = list(edition.html_parts)
    for index, name, attribute in edition.html_slots:
        html_parts[index] = in_attr[name] if attribute else in_text[name]
    text_parts = list(edition.text_parts)
    for index, name, _ in edition.text_slots:
        text_parts[index] = clean[name]
    return "".join(html_parts), "".join(text_parts)


def render_note(settings: Settings, language: str, *, subject: str, preheader: str, heading: str,
                paragraphs: Sequence[str], button_text: str = "", button_url: str = "",
                small: Sequence[str] = ()) -> str:
    """The HTML of a one-person email (note.mjml.j2): the edition's look, a heading, words and a button.

    Everything given is text (escaped); `button_url` must be http(s). RenderError for a template problem.
    """
    env = template_environment(settings.templates_dir and str(settings.resolve_path(settings.templates_dir)),
                               language)
    view = {"subject": subject, "preheader": preheader, "heading": heading, "paragraphs": list(paragraphs),
            "button_text": button_text, "button_url": safe_url(button_url) if button_url else "",
            "small": list(small), "site": settings.site, "theme": THEME, "language": language}
    return _compile_html(env, view, _inliner(env), "note.mjml.j2")


@dataclass(frozen=True)
class RenderedIssue:
    """What `digest render` writes: the edition, its filled html/text and the complete message."""

    edition: Edition
    html: str
    text: str
    eml: bytes
    recipient: str


def preview_values(settings: Settings, language: str, view_url: str) -> dict[str, str]:
    """Token values for an edition nobody in particular receives (previews, the archive, `digest render`)."""
    base = safe_url(settings.web.base_url) or safe_url(settings.site.url) or "https://www.example.org"
    return {"name": greeting_name("", language), "email": PREVIEW_EMAIL,
            "unsubscribe_url": f"{base.rstrip('/')}/unsubscribe", "preferences_url": f"{base.rstrip('/')}/preferences",
            "view_url": view_url}


def reader_values(name: str, email: str, language: str, unsubscribe_url: str, preferences_url: str,
                  view_url: str | None = None) -> dict[str, str]:
    """Token values for one reader; the one place that decides how an absent name reads."""
    values = {"name": greeting_name(name, language), "email": email,
              "unsubscribe_url": unsubscribe_url, "preferences_url": preferences_url}
    if view_url is not None:
        values["view_url"] = view_url
    return values


def greeting_name(name: str, language: str) -> str:
    """The value for the `name` placeholder: the subscriber's name, else a word that reads well after "Hello"."""
    name = display_line(name)
    return name or _nameless(language)


@functools.lru_cache(maxsize=16)
def _nameless(language: str) -> str:
    return i18n.translations(language).pgettext("greeting without a name", "there")


# Titles that make a first name alone read wrong ("Hello Dr.,"): such names are used whole.
_TITLES = frozenset({"dr", "prof", "mr", "mrs", "ms", "mx", "m", "mme", "mlle", "herr", "frau", "sir", "dame"})


def first_name(name: str) -> str:
    """The first name of a name as readers type it: "Anna Schmidt" → "Anna", "Schmidt, Anna" → "Anna";
    a name led by a title ("Dr. Anna Schmidt") is kept whole."""
    name = " ".join(name.split())
    if "," in name:
        rest = name.split(",", 1)[1].strip()
        return rest.split(" ", 1)[0] if rest else name.split(",", 1)[0].strip()
    words = name.split(" ")
    if words[0].rstrip(".").casefold() in _TITLES:
        return name
    return words[0]


@functools.lru_cache(maxsize=1)
def _nameless_words() -> frozenset[str]:
    return frozenset(_nameless(language) for language in LANGUAGES)


def _first_name_value(name: str) -> str:
    """The `first_name` placeholder's value from the `name` one; the nameless word stays whole ("à vous")."""
    return name if not name or name in _nameless_words() else first_name(name)


def full_segment(issue: Issue, language: str) -> Segment:
    """The full edition of an issue (every section) as a segment, e.g. for previews and the archive."""
    return Segment(id="all", section_ids=tuple(s.id for s in issue.sections), language=language)


def _elide(text: Any, language: str) -> Any:
    # Jinja hands the filter Markup when autoescaping: elision only touches letters and spaces, so
    # the result stays safe markup.
    result = i18n.elide(str(text), language)
    return type(text)(result) if isinstance(text, str) and type(text) is not str else result


# --- placeholder splitting and escaping -----------------------------------------------------------------

def _split_at_placeholders(document: str, is_html: bool) -> tuple[tuple[str, ...], tuple[tuple[int, str, bool], ...]]:
    parts: list[str] = []
    slots: list[tuple[int, str, bool]] = []
    last = 0
    for match in _PLACEHOLDER_RE.finditer(document):
        parts.append(document[last:match.start()])
        in_attribute = is_html and document.rfind("<", 0, match.start()) > document.rfind(">", 0, match.start())
        slots.append((len(parts), match.group(1), in_attribute))
        parts.append(match.group(0))
        last = match.end()
    parts.append(document[last:])
    return tuple(parts), tuple(slots)


# css-inline re-serialises the document (html5ever): these are exactly its escapes, so a filled placeholder
# equals what Jinja-escaping the value and re-serialising would give.
def _escape_html_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_html_attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace("\xa0", "&nbsp;").replace('"', "&quot;")


# The usual shape of a signed link, accepted without parsing (safe_url decides everything else).
_PLAIN_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%!$&()*+,;=:@/?#-]*)?")


def _clean_values(values: Mapping[str, str]) -> dict[str, str]:
    missing = [name for name in PLACEHOLDERS if name not in values and name not in _DERIVED]
    if missing:
        raise KeyError(f"personalise needs values for {', '.join(missing)}")
    clean = {}
    for name in PLACEHOLDERS:
        if name not in values:
            continue
        # No line breaks or control characters: they would forge lines in the text part.
        value = neutralise_markers(replace_controls(str(values[name])).strip())
        if name in _URL_PLACEHOLDERS and not _PLAIN_URL.fullmatch(value) and safe_url(value) != value:
            raise ValueError(f"{name} must be an absolute http(s) URL without spaces, got {value!r}")
        clean[name] = value
    if "first_name" not in clean:
        clean["first_name"] = _first_name_value(clean["name"])
    return clean


def _template_context(view: dict[str, Any], subscriber: Mapping[str, str]) -> dict[str, Any]:
    return {**view, "theme": THEME, "subscriber": subscriber}


def _subscriber_context(values: Mapping[str, str] | None) -> dict[str, str]:
    if values is None:
        return {name: placeholder(name) for name in PLACEHOLDERS}
    return _clean_values(values)


# --- templates ------------------------------------------------------------------------------------

def bundled_templates_dir() -> Path:
    """The templates shipped with digest (the package's copy, else the source tree's templates/)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "edition.mjml.j2").exists():
            return candidate
    raise RenderError(f"bundled templates not found in {here / 'templates'}; reinstall digest")


@functools.lru_cache(maxsize=32)
def template_environment(user_dir: str, language: str) -> Environment:
    """A Jinja environment for one language: the user's templates_dir first, then the bundled files."""
    loaders = []
    if user_dir:
        if not Path(user_dir).is_dir():
            raise ConfigError(f"'templates_dir' is {user_dir!r}, which is not a folder: create it or set templates_dir = \"\"")
        loaders.append(FileSystemLoader(user_dir))
    loaders.append(FileSystemLoader(str(bundled_templates_dir())))
    env = Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(enabled_extensions=(), disabled_extensions=("txt.j2", "txt"),
                                     default_for_string=True, default=True),
        undefined=StrictUndefined, extensions=["jinja2.ext.i18n"],
        trim_blocks=True, lstrip_blocks=True,
    )
    env.template_class = TracingTemplate  # error messages can then say which template wrote what
    env.install_gettext_translations(i18n.translations(language), newstyle=True)
    # `{% filter elide %}` makes the language's elisions where a name went into a sentence ("d’Europa").
    env.filters["elide"] = functools.partial(_elide, language=language)
    return env


@functools.lru_cache(maxsize=32)
def _inliner(env: Environment) -> css_inline.CSSInliner:
    css = render_template(env, "styles/inline.css", {"theme": THEME})
    return css_inline.CSSInliner(keep_style_tags=True, keep_at_rules=True, load_remote_stylesheets=False,
                                 extra_css=css)


_IMG_HEIGHT_AUTO = re.compile(r'(<img\b[^>]*?) height="auto"')


def _compile_html(env: Environment, view: Mapping[str, Any], inliner: css_inline.CSSInliner,
                  name: str = "edition.mjml.j2") -> str:
    source = render_template(env, name, view)
    try:
        compiled = mjml2html(source, disable_comments=True, fonts={})
    except ValueError as exc:
        raise mjml_error(trace_render(env, name, view), str(exc)) from None
    if unbalanced(source):
        raise mjml_error(trace_render(env, name, view))
    # MRML copies tags it does not know into the HTML, and leaves text alone: neither may reach a reader.
    leftover = find_leftover(compiled)
    if leftover is not None:
        raise leftover_error(trace_render(env, name, view), leftover)
    # MRML writes height="auto" on images, which is not valid HTML (the inline style already says it).
    compiled = _IMG_HEIGHT_AUTO.sub(r"\1", compiled)
    # MRML's own <style> blocks (responsive columns, dark mode) stay as they are; only inline.css is inlined.
    head, sep, body = compiled.partition("</head>")
    head = head.replace("<style", '<style data-css-inline="ignore"')
    inlined = inliner.inline(head + sep + body)
    head, sep, body = inlined.partition("</head>")
    return head.replace(' data-css-inline="ignore"', "") + sep + _TAG.sub(_compact_style, body)


# css-inline writes "color: #222;margin: 0"; compacting the inlined styles saves ~10% of an edition.
_TAG = re.compile(r"<[a-zA-Z][^<>]*>")
_STYLE = re.compile(r' style="([^"]*)"')


def _compact_style(tag: re.Match) -> str:
    # Within a serialised tag ` style="` can only start the style attribute (quotes in values are &quot;).
    return _STYLE.sub(lambda m: ' style="' + m.group(1).replace(": ", ":").replace("; ", ";") + '"', tag.group(0))


def _tidy_text(text: str) -> str:
    lines = [line.rstrip() if line != "-- " else line for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def _fit_notes(step: int, view: Mapping[str, Any], settings: Settings, segment: Segment,
               size: int, limit: int) -> tuple[str, ...]:
    share, cap = FIT_STEPS[step]
    where = f"edition {segment.id} ({segment.language})"
    budget = f"{settings.digest.max_html_kib} KiB"
    notes = []
    if share < 1.0:
        kept = int(settings.digest.summary_chars * share)
        notes.append(f"{where}: summaries shortened to {kept} characters to stay under {budget}"
                     if kept else f"{where}: summaries left out to stay under {budget}")
    if cap is not None:
        hidden = sum(s["hidden"] for s in view["sections"])
        notes.append(f"{where}: at most {cap} items per section; {hidden} items linked as \"more on our site\"")
    if size > limit:
        notes.append(f"{where}: still {size / 1024:.0f} KiB after every shortening (limit {budget}); "
                     "Gmail may clip it")
    return tuple(notes)
