"""Feed text cleaned at ingest, so the archive, the API and every edition show the same words.

Pure functions over sanitised HTML (digest.sanitize's nh3 output: lower-case tags, attributes in
double quotes, `<`, `>` and `&` escaped in text) and plain text. What goes:
- the item's title repeated as the first element (Drupal's teasers), and boilerplate at the end of
  a summary or content: WordPress/Yoast's "The post … appeared first on …"
  (en, de, fr), a trailing more-link ("Continue reading →", "Read more", "Weiterlesen", "Lire la
  suite", Drupal's "Read more about …"), also as bare text, and a trailing lone call-to-action
  link ("Register", "Sign up", "Anmelden", "S'inscrire");
- "[…]" and "[...]" become "…", "..." becomes "…", and a block's final ellipsis follows its word;
- double quotes in one style per language (en “ ” ‘ ’, de „ “ ‚ ‘, fr « » “ ” with a space inside « »), nested ones in
  the inner style, but only where every quote in the block pairs up: an unbalanced block (a cut
  excerpt, inches after a number) keeps its quotes as they are. Single quotes and apostrophes
  (l'Europe, Europe's) are never touched, nor is anything inside <code>, <pre>, <kbd> or <samp>;
- an event's place drops what only repeats its mode ("Online", "(Hybrid)") once the mode is known;
- a media mention's author that only repeats its outlet.
`clean_item` keeps the feed's own values in `Item.raw` when anything changed.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace

from .models import EventInfo, Item, ItemKind

# --- boilerplate at the end of a fragment ---------------------------------------------------------

# Yoast SEO's RSS footer in its English, German and French wording, after the text or in its own <p>.
_FOOTER_PHRASES = ("appeared first on", "erschien zuerst auf", "est apparu en premier sur")
_FOOTER = re.compile(
    r"(?P<open><p>\s*)?(?:The post|Der Beitrag|L[’']article)\s+(?:<a\b[^>]*>(?:(?!</a>).)*</a>|[^<]{1,300}?)\s+"
    r"(?:appeared first on|erschien zuerst auf|est apparu en premier sur)\s+"
    r"(?:<a\b[^>]*>(?:(?!</a>).)*</a>|[^<]{1,200}?)\s*\.?\s*(?P<close></p>)?\s*\Z",
    re.DOTALL | re.IGNORECASE,
)
# A more-link's words, lower-cased, at the start of the link's text.
_MORE = (r"(?:continue reading|keep reading|read more|read on|read the (?:full|whole|rest of the)"
         r"(?: (?:article|story|post|text|piece|brief|paper))?|more(?=\s*(?:[→»›…\]]|\.\.\.))|"
         r"learn more|find out more|weiterlesen|mehr lesen|mehr erfahren|(?:den )?ganzen (?:artikel|beitrag) lesen|"
         r"lire la suite|lire plus|la suite|en savoir plus)")
_DECORATION = r"[\s→»›>…:.\[\]()|\-–—]*"
# The whole text of a more-link: its words, then decoration, the item's title quoted, or Drupal's
# hidden " about <title>" ("über", "sur").
_MORE_LINK = re.compile(rf"{_DECORATION}{_MORE}{_DECORATION}(?:(?:about|über|sur|on)\s.*|[\"“«„'‘].*)?\Z",
                        re.DOTALL)
# A lone call to action: the link's whole text.
_CTA_LINK = re.compile(
    r"[\s→»›>\[\]]*(?:register|register (?:now|here|today)|registration|sign up|sign up (?:now|here)|"
    r"book (?:now|here|your (?:seat|place|ticket))|get (?:your )?tickets?|tickets?|rsvp|join us|join now|subscribe|"
    r"(?:jetzt |hier )?(?:anmelden|registrieren)|zur anmeldung|anmeldung|"
    r"s[’']inscrire|inscrivez-vous|je m[’']inscris|inscription|réserver|réservez)[\s→»›!.\[\]]*\Z")
_ANCHOR = re.compile(r"<a\b[^>]*>((?:(?!</a>).)*)</a>", re.DOTALL)
_INLINE = r"(?:span|em|strong|b|i|u|small)"
_BLOCK = r"(?:p|li|ul|ol|div|blockquote|dd|dl|section|article|figure)"
# What may follow the last link of a fragment for it to be "trailing": decoration and closing tags.
_AFTER_TRAILING = re.compile(rf"(?:\s|&nbsp;|[\]\)»›→.…|]|</{_INLINE}>|</{_BLOCK}>)*\Z")
# What may precede a lone link: the start of its block, a line break, a finished sentence or a row of links.
_BEFORE_LONE = re.compile(rf"(?:\A|<{_BLOCK}>|<br>|</a>|[.!?…:])(?:\s|&nbsp;|<{_INLINE}>|[\[|(])*\Z")
_EMPTY_TAIL = re.compile(rf"(?:<(?P<tag>{_BLOCK}|{_INLINE})>(?:\s|&nbsp;|<br>)*</(?P=tag)>|<br>|\s|&nbsp;)+"
                         rf"(?=(?:</{_BLOCK}>|</{_INLINE}>|\s)*\Z)")
_SPACE_BEFORE_CLOSE = re.compile(rf"(?:\s|&nbsp;)+(?=(?:</(?:{_BLOCK}|{_INLINE})>\s*)+\Z)")
_TAGS = re.compile(r"<[^>]*>")
_WORDS = re.compile(r"\s+")
_LINK_BUDGET = 400  # characters before a trailing link that tell whether it stands alone


def strip_boilerplate(fragment: str, title: str = "") -> str:
    """`fragment` without the feed boilerplate: the title repeated at its start; footer, more-link and
    lone call to action at its end."""
    if not fragment:
        return fragment
    fragment = _strip_leading_title(fragment, title)
    for _ in range(_MAX_PASSES):  # a few things at most end a fragment; hostile input gets no more
        before = fragment
        fragment = _strip_footer(fragment)
        fragment = _strip_trailing_link(fragment)
        fragment = _strip_bare_more(fragment, title)
        fragment = _tidy_tail(fragment)
        if fragment == before:
            break
    return fragment


_MAX_PASSES = 8


_LEADING_ELEMENT = re.compile(r"\A\s*<(span|strong|b|p|div|h[1-6])>((?:(?!</?\1\b).){1,1000}?)</\1>\s*", re.DOTALL)


def _strip_leading_title(fragment: str, title: str) -> str:
    """The item's title repeated as the first element (Drupal's teaser renders its title field)."""
    if not title or title[:20].lower() not in fragment[: len(title) + 80].lower():
        return fragment
    match = _LEADING_ELEMENT.match(fragment)
    if match and _link_text(match.group(2)) == _WORDS.sub(" ", title).strip().lower():
        return fragment[match.end():]
    return fragment


def _strip_footer(fragment: str) -> str:
    lowered = fragment[-800:].lower()
    if not any(phrase in lowered for phrase in _FOOTER_PHRASES):
        return fragment
    match = _FOOTER.search(fragment, max(0, len(fragment) - 800))
    if not match:
        return fragment
    # A footer inside the text's last <p> keeps that paragraph's closing tag.
    keep = "</p>" if match.group("close") and not match.group("open") else ""
    return fragment[: match.start()].rstrip() + keep


def _strip_trailing_link(fragment: str) -> str:
    start = _last_anchor(fragment)
    if start < 0:
        return fragment
    match = _ANCHOR.match(fragment, start)
    if not match or not _AFTER_TRAILING.match(fragment, match.end()):
        return fragment
    text = _link_text(match.group(1))
    head = fragment[:start]
    if not _MORE_LINK.match(text) and not (_CTA_LINK.match(text) and _BEFORE_LONE.search(head[-_LINK_BUDGET:])):
        return fragment
    # A bracket or bar that introduced the link goes with it, and so does decoration after it
    # ("»", "]", "→"); closing tags stay.
    head = re.sub(r"(?:\s|&nbsp;)*[\[(|]?(?:\s|&nbsp;)*\Z", "", head[-40:])
    head = fragment[: max(0, start - 40)] + head
    tail = re.sub(r"\A(?:\s|&nbsp;|[\]\)»›→|])*", "", fragment[match.end():])
    return head.rstrip() + tail


def _last_anchor(fragment: str) -> int:
    start = fragment.rfind("<a")
    while start >= 0 and fragment[start + 2 : start + 3] not in (" ", ">"):
        start = fragment.rfind("<a", 0, start)
    return start


def _link_text(inner: str) -> str:
    return _WORDS.sub(" ", html.unescape(_TAGS.sub("", inner))).strip().lower()


_BARE_MORE_WORDS = ("continue reading", "read more", "weiterlesen", "lire la suite")
_BARE_WINDOW = 300


def _strip_bare_more(fragment: str, title: str) -> str:
    """A more-link's words as bare text at the very end (a feed that stripped the link's tags)."""
    lowered = fragment[-_BARE_WINDOW:].lower()
    if not any(words in lowered for words in _BARE_MORE_WORDS):
        return fragment
    closers = _CLOSERS_AT_END.search(fragment, max(0, len(fragment) - _BARE_WINDOW))
    body, closing = fragment[: closers.start()], fragment[closers.start():]
    window = body[-_BARE_WINDOW:]
    title_pattern = ""
    if title:
        escaped = re.escape(html.escape(title, quote=False))
        title_pattern = rf"(?:\s+[\"“«„]?{escaped}[\"”»“]?)?"
    # After a finished sentence, an ellipsis, a tag or at the very start: never inside a sentence
    # ("… for those who want to read more.").
    bare = re.compile(
        rf"(?:(?<=[.!?…\]>])|\A)(?:\s|&nbsp;)*\[?(?:Continue reading|Read more|Weiterlesen|Lire la suite)"
        rf"{title_pattern}(?:\s|&nbsp;)*(?:→|&gt;|»|›|\.\.\.|…)?\]?\Z", re.IGNORECASE)
    match = bare.search(body, len(body) - len(window))
    if not match:
        return fragment
    return body[: match.start()].rstrip() + closing


_CLOSERS_AT_END = re.compile(rf"(?:\s|</{_BLOCK}>|</{_INLINE}>)*\Z")


def _tidy_tail(fragment: str) -> str:
    """No empty paragraph, line break or space left at the end (or before the last closing tags)."""
    if not _untidy_end(fragment):
        return fragment.strip()
    # Only the end can change, so only the end is searched (each search tries every position).
    cut = max(0, len(fragment) - _TIDY_WINDOW)
    tail = _SPACE_BEFORE_CLOSE.sub("", _EMPTY_TAIL.sub("", fragment[cut:]))
    return (fragment[:cut] + tail).strip()


_TIDY_WINDOW = 300


def _untidy_end(fragment: str) -> bool:
    """Whether, behind its closing tags, the fragment ends in a space, an entity, a line break or an open tag."""
    end = len(fragment.rstrip())
    for _ in range(_TIDY_WINDOW):
        if not end or fragment[end - 1] != ">":
            break
        start = fragment.rfind("<", 0, end)
        if start < 0 or fragment[start + 1 : start + 2] != "/":
            return True  # <br>, or an element opened and left empty
        if start and fragment[start - 1].isspace():
            return True  # a space before a closing tag
        end = start
    else:
        return True  # closing tags without end: let the (bounded) search decide
    return end > 0 and fragment[end - 1] in ";\u00a0"


# --- ellipses and quotes --------------------------------------------------------------------------

_HTML_TOKEN = re.compile(r'(<(?:[^>"]|"[^"]*")*>)')
_VERBATIM = frozenset({"code", "pre", "kbd", "samp"})
_BLOCK_TAGS = frozenset({"p", "li", "ul", "ol", "div", "blockquote", "dd", "dt", "dl", "h1", "h2", "h3", "h4",
                         "h5", "h6", "td", "th", "tr", "table", "figure", "figcaption", "section", "article", "br",
                         "hr"})
_TAG_NAME = re.compile(r"</?([a-z0-9]+)")
_BRACKETED_ELLIPSIS = re.compile(r"\[\s*(?:…|\.\.\.|&hellip;)\s*\]")
_THREE_DOTS = re.compile(r"(?<![.:/])\.\.\.(?![.\w/])")
# A final ellipsis follows its word: "budget …" and "budget […]" end as "budget…".
_SPACED_FINAL_ELLIPSIS = re.compile(rf"(?<=\w)(?:\s|&nbsp;)+…(?=(?:\s|</(?:{_BLOCK}|{_INLINE})>)*\Z)")
_DOUBLE_QUOTES = frozenset('"“”„«»‟')
_ANY_QUOTE = re.compile('["“”„«»‟]')
# A double quote outside tags: the next ">" is not before the next "<" (attribute quotes are inside one).
_QUOTE_IN_TEXT = re.compile('[“”„«»‟]|"(?=[^<>]*(?:<|\\Z))')
# (outer open, outer close, inner open, inner close) per language.
QUOTE_STYLES = {
    "en": ("“", "”", "‘", "’"),
    "de": ("„", "“", "‚", "‘"),
    "fr": ("«", "»", "“", "”"),  # with one space inside (_french_spacing)
}
_OPENING_CONTEXT = frozenset(" \t\n\r\u00a0\u202f([{—–-/")


def normalise_ellipses(text: str) -> str:
    """"[…]", "[...]" and "..." as "…" (three dots only: "...." and "a.../b" are left alone)."""
    if "." not in text and "[" not in text:
        return text
    text = _BRACKETED_ELLIPSIS.sub("…", text)
    return _THREE_DOTS.sub("…", text) if "..." in text else text


def normalise_quotes(text: str, language: str | None) -> str:
    """Plain text with its double quotes in `language`'s style (see the module docstring)."""
    style = QUOTE_STYLES.get((language or "")[:2])
    if style is None or not _ANY_QUOTE.search(text):
        return text
    return "".join(_restyle_block([text], style))


def clean_plain(text: str, language: str | None) -> str:
    """A title or another line of plain text: one ellipsis and one quote style."""
    if not text:
        return text
    return normalise_quotes(normalise_ellipses(text), language)


def clean_html(fragment: str, language: str | None, title: str = "") -> str:
    """Sanitised HTML without boilerplate, with one ellipsis and one quote style in its text."""
    if not fragment:
        return fragment
    fragment = strip_boilerplate(fragment, title)
    style = QUOTE_STYLES.get((language or "")[:2])
    dots = "..." in fragment or "[" in fragment
    quotes = style is not None and _QUOTE_IN_TEXT.search(fragment) is not None
    if dots or quotes:
        fragment = _text_runs(fragment, style if quotes else None, dots)
    if "…" in fragment:
        fragment = _SPACED_FINAL_ELLIPSIS.sub("…", fragment)
    return fragment


def _text_runs(fragment: str, style: tuple[str, str, str, str] | None, dots: bool) -> str:
    """The fragment with its text (not tags, not verbatim elements) restyled block by block."""
    tokens = _HTML_TOKEN.split(fragment)
    verbatim = 0
    block: list[int] = []  # indexes of the current block's text tokens

    def flush() -> None:
        if style is not None and block:
            for index, text in zip(block, _restyle_block([tokens[i] for i in block], style), strict=True):
                tokens[index] = text
        block.clear()

    for index, token in enumerate(tokens):
        if index % 2:  # a tag
            name_match = _TAG_NAME.match(token)
            name = name_match.group(1) if name_match else ""
            if name in _VERBATIM:
                verbatim += -1 if token.startswith("</") else 1
                flush()
            elif name in _BLOCK_TAGS:
                flush()
            continue
        if verbatim > 0 or not token:
            continue
        if dots:
            token = tokens[index] = normalise_ellipses(token)
        block.append(index)
    flush()
    return "".join(tokens)


def _restyle_block(texts: list[str], style: tuple[str, str, str, str]) -> list[str]:
    """The texts of one block (one run of text, split by inline tags) with paired double quotes restyled.

    Every double quote is an opener or a closer by its own shape („ « open, » closes) or, for the
    others, by what comes before it (a space, a bracket or the block's start: an opener). Quotes
    pair up like brackets; if one is left over, the block keeps all its quotes as they were.
    """
    marks: list[tuple[int, int, bool]] = []  # (text index, char index, opens)
    previous = " "
    for t, text in enumerate(texts):
        for c, char in enumerate(text):
            if char in _DOUBLE_QUOTES:
                following = text[c + 1 : c + 2] or " "
                if char in "„«":
                    opens = True
                elif char == "»":
                    opens = False
                elif previous in _DOUBLE_QUOTES and marks:
                    opens = marks[-1][2]  # “„…“” and ”” go the way of the quote before them
                elif previous in _OPENING_CONTEXT:
                    if following in _OPENING_CONTEXT:
                        return texts  # a quote standing alone between spaces: no telling what it is
                    opens = True
                else:
                    opens = False
                marks.append((t, c, opens))
            previous = char
    depth_of: dict[tuple[int, int], int] = {}
    stack: list[tuple[int, int]] = []
    for t, c, opens in marks:
        if opens:
            stack.append((t, c))
            depth_of[(t, c)] = len(stack) - 1
        elif stack:
            depth_of[(t, c)] = depth_of[stack.pop()]
        else:
            return texts
    if stack:
        return texts
    by_text: dict[int, list[tuple[int, bool]]] = {}
    for t, c, opens in marks:
        by_text.setdefault(t, []).append((c, opens))
    out = []
    for t, text in enumerate(texts):
        chars = list(text)
        for c, opens in by_text.get(t, ()):
            outer = depth_of[(t, c)] % 2 == 0
            if opens:
                chars[c] = style[0] if outer else style[2]
            else:
                chars[c] = style[1] if outer else style[3]
        out.append(_french_spacing("".join(chars)) if style[0] == "«" else "".join(chars))
    return out


def _french_spacing(text: str) -> str:
    """One space inside « »: the feed's no-break one if it had one, else an ordinary one."""
    text = _SPACE_AFTER_GUILLEMET.sub(lambda m: "«" + _one_space(m.group(1)), text)
    return _SPACE_BEFORE_GUILLEMET.sub(lambda m: _one_space(m.group(1)) + "»", text)


_SPACE_AFTER_GUILLEMET = re.compile(r"«((?:\s|&nbsp;)*)")
_SPACE_BEFORE_GUILLEMET = re.compile(r"((?:\s|&nbsp;)*)»")


def _one_space(spaces: str) -> str:
    for no_break in ("\u202f", "\u00a0", "&nbsp;"):
        if no_break in spaces:
            return no_break
    return " "


# --- events and media mentions --------------------------------------------------------------------

# Words that only say how an event is attended; a part of a place made only of them (and of the
# joining words) repeats the mode the edition shows anyway.
_MODE_WORDS = frozenset("""
online hybrid hybride hybrid-event virtual virtuell virtuel virtuelle webinar webinaire livestream live-stream
stream streaming zoom teams webex distanciel visioconférence visioconference en ligne in-person person presence
présentiel presentiel präsenz vor ort on site on-site onsite and und et & + / via on über sur event veranstaltung
online-veranstaltung online-event only nur uniquement format mode and/or - – — : in
""".split())
_PLACE_PARTS = re.compile(r"(\s*\([^()]*\)|\s*[,;|·/]\s*|\s+[–—-]\s+)")


def clean_location(location: str, online: bool, hybrid: bool) -> str:
    """The place without the parts that only repeat the attendance mode ("Online", "(Hybrid)").

    Only when the mode is known (online or hybrid), so nothing the edition shows is lost.
    """
    if not location or not (online or hybrid):
        return location
    parts = _PLACE_PARTS.split(location)
    kept: list[str] = []
    for n, part in enumerate(parts):
        if n % 2:  # a separator, or a parenthesised part
            if part.strip().startswith("(") and not _only_mode(part.strip()[1:-1]):
                kept.append(part)
            elif not part.strip().startswith("("):
                kept.append(part)
            continue
        kept.append("" if _only_mode(part) else part)
    # Separators left at either end, or doubled, go.
    text = "".join(kept)
    text = re.sub(r"(?:\s*[,;|·/]\s*|\s+[–—-]\s+)(?=(?:\s*[,;|·/]\s*|\s+[–—-]\s+)|\s*\Z)", "", text)
    text = re.sub(r"\A(?:\s*[,;|·/]\s*|\s*[–—-]\s+)", "", text)
    return text.strip()


def _only_mode(part: str) -> bool:
    words = re.findall(r"[^\s,]+", part.lower())
    return bool(words) and all(word in _MODE_WORDS for word in words)


def _outlet_name(name: str) -> str:
    """"Euractiv", "EURACTIV.com", "www.euractiv.com" all as "euractiv"."""
    name = name.casefold().strip()
    name = re.sub(r"\A(?:https?://)?(?:www\.)?", "", name)
    name = re.sub(r"\.(?:com|org|net|eu|de|fr|at|be|ch|co\.uk|uk|it|es|nl)\Z", "", name)
    return re.sub(r"[\W_]+", "", name)


def authors_without_outlet(authors: tuple[str, ...], outlet: str) -> tuple[str, ...]:
    """A media mention's authors without the one that only repeats its outlet."""
    if not outlet or not authors:
        return authors
    name = _outlet_name(outlet)
    return tuple(a for a in authors if _outlet_name(a) != name) if name else authors


# --- an item --------------------------------------------------------------------------------------

def clean_item(item: Item) -> Item:
    """`item` with cleaned title, summary, content, place and authors; `raw` keeps the feed's own values.

    `raw` holds ("title", …), ("summary_html", …), ("content_html", …), ("author", …) for each of the
    feed's authors and ("event.location", …), only for the fields that changed; () when none did.
    """
    language = item.language
    title = clean_plain(item.title, language)
    summary = clean_html(item.summary_html, language, item.title)
    # Atom entries with only <content> carry it as their summary too: clean it once.
    content = summary if item.content_html == item.summary_html else clean_html(item.content_html, language, item.title)
    authors = item.authors
    if item.kind is ItemKind.MEDIA and item.media is not None:
        authors = authors_without_outlet(authors, item.media.outlet)
    event = item.event
    if event is not None:
        event = _clean_event(event)
    raw: list[tuple[str, str]] = []
    for name, old, new in (("title", item.title, title), ("summary_html", item.summary_html, summary),
                           ("content_html", item.content_html, content)):
        if old != new:
            raw.append((name, old))
    if authors != item.authors:
        raw.extend(("author", a) for a in item.authors)
    if event is not item.event:
        raw.append(("event.location", item.event.location))
    if not raw:
        return item
    return replace(item, title=title, summary_html=summary, content_html=content, authors=authors,
                   event=event, raw=tuple(raw))


def _clean_event(event: EventInfo) -> EventInfo:
    location = clean_location(event.location, event.online, event.hybrid)
    return event if location == event.location else replace(event, location=location)
