"""Template problems, named by file and line: Jinja errors, invalid MJML, and leftovers in the output.

Jinja reports its own errors with a file and line. MRML (mjml-python) reports only a byte offset into
the generated MJML, and copies unknown `<mj-…>` tags into the HTML without a word. To say which
template is at fault, the edition is rendered a second time, only after something went wrong, with a
marker before every chunk of output (the template file and line that wrote it) and around every
template rendered (each include, block and extended layout). Normal rendering pays nothing:
TracingTemplate hands back Jinja's own generator unless a trace is running.
"""

from __future__ import annotations

import bisect
import re
import traceback
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, Template, TemplateNotFound, TemplateSyntaxError
from jinja2.runtime import Context

from .unsafe_chars import XML_INVALID


class RenderError(Exception):
    """A template or MJML problem; the message starts with the template file and line ("file:line: …")."""


# --- rendering one template -----------------------------------------------------------------------

def render_template(env: Environment, name: str, context: Mapping[str, Any]) -> str:
    """Render one template; any template error becomes a RenderError naming the file and line."""
    try:
        return env.get_template(name).render(context)
    except TemplateSyntaxError as exc:
        raise RenderError(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}") from None
    except TemplateNotFound as exc:
        raise RenderError(f"{_template_location(exc, name)}: template {exc.name!r} not found") from None
    except RenderError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user's template can fail in any way; say where
        raise RenderError(f"{_template_location(exc, name)}: {exc.__class__.__name__}: {exc}") from None


def _template_location(exc: BaseException, name: str) -> str:
    # Jinja rewrites tracebacks so template frames carry the template's file name and line.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith((".j2", ".css"))]
    if frames:
        return f"{frames[-1].filename}:{frames[-1].lineno}"
    return name


# --- tracing: which template wrote which part of the output ---------------------------------------

# Markers use control characters, which edition_view strips from every piece of content.
_CHUNK, _OPEN, _CLOSE, _END = "\x02", "\x04", "\x05", "\x03"
_MARKER = re.compile("([\x02\x04\x05])([0-9]+)\x03")


@dataclass
class _Recorder:
    places: list[tuple[str, int]] = field(default_factory=list)
    place_index: dict[tuple[str, int], int] = field(default_factory=dict)
    instances: list[str] = field(default_factory=list)

    def place(self, filename: str, line: int) -> int:
        key = (filename, line)
        if key not in self.place_index:
            self.place_index[key] = len(self.places)
            self.places.append(key)
        return self.place_index[key]


_RECORDER: ContextVar[_Recorder | None] = ContextVar("digest_template_trace", default=None)


class TracingTemplate(Template):
    """A Jinja Template whose output can be traced, chunk by chunk, to its file and line."""

    @classmethod
    def _from_namespace(cls, environment: Environment, namespace: dict[str, Any],  # Jinja's signature
                        globals: MutableMapping[str, Any]) -> Template:
        template = super()._from_namespace(environment, namespace, globals)
        template.root_render_func = _traceable(template, template.root_render_func)
        template.blocks = {name: _traceable(template, func) for name, func in template.blocks.items()}
        return template


def _traceable(template: Template, render: Callable) -> Callable:
    def render_maybe_traced(context: Context, *args: Any, **kwargs: Any) -> Iterator[str]:
        chunks = render(context, *args, **kwargs)
        recorder = _RECORDER.get()
        return chunks if recorder is None else _traced_chunks(template, chunks, recorder)

    return render_maybe_traced


def _traced_chunks(template: Template, chunks: Iterator[str], recorder: _Recorder) -> Iterator[str]:
    filename = template.filename or template.name or "?"
    instance = len(recorder.instances)
    recorder.instances.append(filename)
    yield f"{_OPEN}{instance}{_END}"
    try:
        for chunk in chunks:
            # A suspended generator's frame is at the yield that produced this chunk.
            frame = getattr(chunks, "gi_frame", None)
            line = template.get_corresponding_lineno(frame.f_lineno) if frame is not None else 0
            yield f"{_CHUNK}{recorder.place(filename, line)}{_END}{chunk}"
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    yield f"{_CLOSE}{instance}{_END}"


@dataclass(frozen=True)
class TracedOutput:
    """A rendered template, and for each part of it the template file and line that wrote it."""

    text: str
    starts: list[int]                       # offsets in `text` where a chunk starts, ascending
    places: list[tuple[str, int]]           # (file, line) of the chunk starting at starts[i]
    instances: list[tuple[int, int, str]]   # (start, end, file) of every template rendered

    def place(self, offset: int) -> tuple[str, int] | None:
        """The (file, line) that wrote the character at `offset`."""
        i = bisect.bisect_right(self.starts, offset) - 1
        if i < 0:
            return None
        filename, line = self.places[i]
        # A chunk of template text can span lines (an expression's value never does: it is one line).
        return filename, line + self.text.count("\n", self.starts[i], offset)


def trace_render(env: Environment, name: str, context: Mapping[str, Any]) -> TracedOutput:
    """Render `name` again with every chunk traced to its template file and line."""
    recorder = _Recorder()
    token = _RECORDER.set(recorder)
    try:
        marked = render_template(env, name, context)
    finally:
        _RECORDER.reset(token)
    return _untangle(marked, recorder)


def _untangle(marked: str, recorder: _Recorder) -> TracedOutput:
    parts: list[str] = []
    starts: list[int] = []
    places: list[tuple[str, int]] = []
    opened: dict[int, int] = {}
    instances: list[tuple[int, int, str]] = []
    size = last = 0
    for match in _MARKER.finditer(marked):
        parts.append(marked[last:match.start()])
        size += match.start() - last
        last = match.end()
        kind, number = match.group(1), int(match.group(2))
        if kind == _CHUNK:
            starts.append(size)
            places.append(recorder.places[number])
        elif kind == _OPEN:
            opened[number] = size
        elif number in opened:
            instances.append((opened.pop(number), size, recorder.instances[number]))
    parts.append(marked[last:])
    return TracedOutput("".join(parts), starts, places, instances)


# --- invalid MJML ---------------------------------------------------------------------------------

_POSITION = re.compile(r"\s*in root template at position ([0-9]+):([0-9]+)$")
_MJ_TAG = re.compile(r"<(/?)(mjml|mj-[A-Za-z0-9-]+)\b(?:[^>\"']|\"[^\"]*\"|'[^']*')*?(/?)>")
# XML 1.0 refuses these; MRML says only "unable to parse next template".
_XML_INVALID = re.compile(f"[{XML_INVALID}]")


def unbalanced(source: str) -> bool:
    """Whether the MJML opens and closes its elements out of order (MRML accepts some such documents
    and silently drops what it cannot place)."""
    return _first_imbalance(_mj_tags(source)) is not None


def _mj_tags(source: str) -> list[tuple[int, bool, str, bool]]:
    """(offset, is a closing tag, name, is self-closing) of every MJML tag."""
    return [(m.start(), m.group(1) == "/", m.group(2), m.group(3) == "/") for m in _MJ_TAG.finditer(source)]


def mjml_error(traced: TracedOutput, message: str = "") -> RenderError:
    """A RenderError for MRML's `message` (or for unbalanced MJML, without one) about `traced.text`,
    naming the template file and line at fault."""
    match = _POSITION.search(message)
    what = _POSITION.sub("", message).strip() or "unreadable MJML"
    offset = _char_offset(traced.text, int(match.group(1))) if match else None
    at = f" at {_where_in_mjml(traced.text, offset)}" if offset is not None else ""
    culprit = _unbalanced_template(traced)
    if culprit is not None and (offset is None or culprit[0] <= offset):
        said = f" (MRML: {what}{at})" if message else ""
        return RenderError(f"{_named(traced.place(culprit[0]))}: invalid MJML: {culprit[1]}{said}")
    if offset is not None:
        return RenderError(f"{_named(traced.place(offset))}: invalid MJML: {what}{at}")
    where, problem = _invalid_character(traced)
    return RenderError(f"{_named(where)}: invalid MJML: {problem} (MRML: {what})")


def _char_offset(text: str, byte_offset: int) -> int:
    """MRML counts UTF-8 bytes; Python counts characters."""
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))


def _where_in_mjml(text: str, offset: int) -> str:
    """"line L, column C of the rendered MJML: '…'", quoting from a little before the offset."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    quote = text[max(line_start, offset - 40):min(line_end, offset + 80)]
    return (f"line {text.count(chr(10), 0, offset) + 1}, column {offset - line_start + 1} of the rendered MJML: "
            f"{quote!r}")


def _unbalanced_template(traced: TracedOutput) -> tuple[int, str] | None:
    """(offset, problem) in the innermost template whose own output opens or closes MJML elements
    it does not close or open: the usual cause of MRML's "unexpected element" somewhere later."""
    tags = _mj_tags(traced.text)
    offsets = [t[0] for t in tags]
    found = []
    for start, end, _ in traced.instances:
        problem = _first_imbalance(tags[bisect.bisect_left(offsets, start):bisect.bisect_left(offsets, end)])
        if problem is not None:
            found.append((start, end, problem))
    innermost = [f for f in found if not any(o is not f and f[0] <= o[0] and o[1] <= f[1] for o in found)]
    return min((f[2] for f in innermost), default=None)


def _first_imbalance(tags: list[tuple[int, bool, str, bool]]) -> tuple[int, str] | None:
    stack: list[tuple[int, str]] = []
    for offset, closing, name, self_closing in tags:
        if self_closing:
            continue
        if not closing:
            stack.append((offset, name))
        elif stack and stack[-1][1] == name:
            stack.pop()
        elif any(n == name for _, n in stack):
            return stack[-1][0], f"<{stack[-1][1]}> is not closed before </{name}>"
        else:
            return offset, f"</{name}> closes an element this template did not open"
    if stack:
        return stack[-1][0], f"<{stack[-1][1]}> is opened but never closed in this template"
    return None


def _invalid_character(traced: TracedOutput) -> tuple[tuple[str, int] | None, str]:
    match = _XML_INVALID.search(traced.text)
    if match is None:
        return (traced.places[0] if traced.places else None), "the MJML cannot be parsed"
    return traced.place(match.start()), f"the character U+{ord(match.group()):04X} is not allowed in MJML"


def _named(where: tuple[str, int] | None) -> str:
    return f"{where[0]}:{where[1]}" if where else "edition.mjml.j2"


# --- leftovers ------------------------------------------------------------------------------------

_LEFTOVER_HTML = re.compile(r"</?mj-[A-Za-z0-9-]*|\{\{|\{%")
_LEFTOVER_TEXT = re.compile(r"\{\{|\{%")
MJML_ELEMENTS = frozenset((
    "mjml mj-head mj-body mj-attributes mj-all mj-class mj-breakpoint mj-font mj-html-attributes "
    "mj-html-attribute mj-selector mj-preview mj-style mj-title mj-include mj-accordion mj-accordion-element "
    "mj-accordion-title mj-accordion-text mj-button mj-carousel mj-carousel-image mj-column mj-divider mj-group "
    "mj-hero mj-image mj-navbar mj-navbar-link mj-raw mj-section mj-social mj-social-element mj-spacer mj-table "
    "mj-text mj-wrapper").split())
# Elements whose content MJML keeps as it is, up to their closing tag: MJML tags in there are copied.
RAW_CONTENT = frozenset((
    "mj-text mj-button mj-table mj-raw mj-navbar-link mj-accordion-title mj-accordion-text mj-social-element "
    "mj-style mj-title mj-preview").split())


def find_leftover(output: str, is_html: bool = True) -> str | None:
    """The first `<mj-…` tag (HTML only) or unrendered Jinja opener left in compiled output, else None."""
    match = (_LEFTOVER_HTML if is_html else _LEFTOVER_TEXT).search(output)
    return match.group() if match else None


def leftover_error(traced: TracedOutput, leftover: str) -> RenderError:
    """A RenderError for `leftover` found in the compiled output, naming the template that wrote it."""
    offset = _copied_tag(traced.text, leftover.lstrip("</")) if leftover.startswith("<") else -1
    offset = offset if offset >= 0 else traced.text.find(leftover)
    where = _named(traced.place(offset)) if offset >= 0 else _named(traced.places[0] if traced.places else None)
    if leftover.startswith("<"):
        tag = leftover.lstrip("</")
        return RenderError(f"{where}: <{tag}> was left in the HTML: MRML does not know this element, or MJML "
                           "does not allow it here (inside mj-text, write plain HTML)")
    return RenderError(f"{where}: unrendered Jinja {leftover!r} was left in the output: check this line's "
                       "delimiters ({{ … }} and {% … %})")


def _copied_tag(source: str, name: str) -> int:
    """Where in the MJML the tag MRML copied into the HTML is: the first `name` tag that is not an
    MJML element, or that sits in an element whose content is kept as it is (-1 if none is found)."""
    raw_until: str | None = None  # inside raw content: the closing tag that ends it
    for offset, closing, tag, self_closing in _mj_tags(source):
        if raw_until is not None:
            if closing and tag == raw_until:
                raw_until = None
            elif tag == name:
                return offset
        elif tag == name and tag not in MJML_ELEMENTS:
            return offset
        elif tag in RAW_CONTENT and not closing and not self_closing:
            raw_until = tag
    return -1
