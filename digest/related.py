"""Related content: at most a couple of links per issue item, each worth clicking.

Rules (issue 14):
- at most `limit` links per item (`digest.related_links`, 2 by default);
- never a link to an item placed in the same section of the issue (`section_of`), nor to itself
  (same key or same article URL), nor to a media mention (not our content);
- no target linked more than `MAX_TARGET_USES` times in one issue (items are served in issue order);
- a minimum similarity for every link: no link is better than a wrong one. A candidate must score
  `MIN_SIMILARITY` (TF-IDF cosine plus a bonus per shared category; a series' name as a category
  counts for nothing, since every item of the series has it, nor does a category on more than a
  fifth of the pool, "Policy Brief") *and* share at least `MIN_SHARED_TERMS` distinctive words (not
  numbers, not function words, not words in more than a fifth of the pool), so "Vienna Forum" never
  matches "Madrid Forum" on "forum" alone;
- the reader's language is preferred among links of similar relevance: for the edition of language
  L, a candidate in another known language ranks with its score times `OTHER_LANGUAGE_FACTOR`
  (one in L, or of unknown language, with its own); the minimum similarity applies to the score
  itself, so language never lets a weaker link in, it only reorders the ones that qualify;
- a series item links to content of its own series first, then to similar content in no series,
  never to content only of other series; an item in no series links by similarity to content in no
  series or to a series' briefs and articles, never to a series' event;
- upcoming events of the item's own series are not item links: the edition shows them once per
  section ("Coming up in this series", edition_view), first.
Similarity is scikit-learn TF-IDF with cosine similarity, fitted once on the candidate pool, so an
issue costs one vectorisation and one sparse product.

Where the language preference lives: an issue is composed once, and rendered per segment, each in
one language. So compose picks the links for every edition language (`languages`, all the offered
ones by default), each language with its own count of target uses, and an entry keeps the union:
each RelatedLink says its target's `language` and the `editions` that show it (empty: every
edition, as on a one-language site, where the picks are the same). An edition in language L shows
exactly the links whose `editions` are empty or name L, in their order (`RelatedLink.shown_in`): its
own pick, in its own order (so one target may be in the tuple twice, for different editions).
Picks are made at compose and stored in the manifest: a sent issue never changes its links.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

import numpy as np

from .config import LANGUAGES
from .models import Item, ItemKind, RelatedLink

# A shared category (not a series) counts like this much cosine similarity (at most three are counted).
CATEGORY_WEIGHT = 0.15
# Every link must be at least this similar (cosine plus category bonus).
MIN_SIMILARITY = 0.15
# ... and share this many distinctive words.
MIN_SHARED_TERMS = 2
# For an edition in one language, a candidate in another known language ranks with its score times this.
OTHER_LANGUAGE_FACTOR = 0.6
# A word or category on more than this share of the pool (and more than COMMON_MIN_DOCS items) is no
# topic: "Europe" in a European foundation's feeds, "Policy Brief" as a category.
COMMON_SHARE = 0.2
COMMON_MIN_DOCS = 3
# No target is linked from more items than this in one issue.
MAX_TARGET_USES = 2
_TAG = re.compile(r"<[^>]+>")
# Words only: digits ("2026") and one-letter words say nothing about a topic.
_TOKEN = r"(?u)\b[^\W\d_]{2,}\b"
# Function words of the edition languages (scikit-learn ships English only); accents already stripped.
_STOP_WORDS = frozenset("""
a about after against all also an and are as at be been before between but by can could do for from
has have how in into is it its more new not of on or our over s than that the their them there these
this those through to under up was we what when where which who why will with within without you your
au aux avec ce ces cette dans de des du elle en entre est et il ils la le les leur lui mais ne nos notre
ou par pas plus pour qu que qui sa se ses son sont sur un une vers apres avant comme d l
am an auf aus bei bis das dass dem den der des die durch ein eine einem einen einer eines es fur im
in ist mit nach nicht noch oder sich sie sind uber um und unter vom von vor was wie wir zu zum zur
zwischen
back first get how last made make many most much need needs next now one only three two way well year years
encore nouveau nouvelle premier tout tous neue neuen erste jahr jahre mehr nur
""".split())
# The candidate pool build_issue reads from the store: the latest content overall, plus the
# latest of each series present in the issue (older same-series content rarely beats newer).
POOL_RECENT = 2000
POOL_PER_SERIES = 300


def find_related(items: Sequence[Item], candidates: Sequence[Item], series_order: Sequence[str],
                 limit: int, reference: datetime,
                 section_of: Mapping[str, str] | None = None,
                 series_terms: Collection[str] = (),
                 languages: Sequence[str] = LANGUAGES) -> dict[str, tuple[RelatedLink, ...]]:
    """Related links for each of `items` (in issue order), keyed by item key: at most `limit` per edition language.

    Events from `reference` on are upcoming. `section_of` maps the key of each item placed in the
    issue to its section id; items of one section never link each other. `series_terms` are the
    series' names and aliases: as categories they say nothing about a topic. `languages` are the
    edition languages to pick for (see the module docstring).
    """
    if not items or limit <= 0:
        return {}
    languages = list(dict.fromkeys(languages)) or [""]
    pool = _pool(items, candidates)
    facts = _PoolFacts(pool, reference, section_of or {})
    rows = [facts.index[item.key] for item in items]
    ignored = {_norm(t) for t in [*series_order, *series_terms]}
    scores, shared_terms, shared_cats = _similarity(pool, rows, ignored)
    uses: dict[str, dict[int, int]] = {language: {} for language in languages}
    related = {}
    for n, item in enumerate(items):
        eligible = _eligible(item, scores[n], shared_terms[n], facts)
        picks = {language: _pick(item, eligible, scores[n], facts, language, limit, uses[language])
                 for language in languages}
        related[item.key] = _merged(picks, facts)
    return related


def _pool(items: Sequence[Item], candidates: Sequence[Item]) -> list[Item]:
    by_key = {c.key: c for c in candidates if c.kind != ItemKind.MEDIA}
    by_key.update({i.key: i for i in items})
    return list(by_key.values())


class _PoolFacts:
    """Per-candidate arrays, so ranking one item is a few vector operations."""

    def __init__(self, pool: list[Item], reference: datetime, section_of: Mapping[str, str]) -> None:
        self.pool = pool
        self.index = {c.key: n for n, c in enumerate(pool)}
        self.is_event = np.array([c.kind == ItemKind.EVENT for c in pool])
        self.is_media = np.array([c.kind == ItemKind.MEDIA for c in pool])
        # An item without a usable URL (a feed entry with no link) is shown without one: as a related
        # link it would be dropped at render time, after using up one of the item's places.
        self.linkless = np.array([not c.url for c in pool])
        self.has_series = np.array([bool(c.series) for c in pool])
        starts = [c.event.start if c.event and c.event.start else None for c in pool]
        self.upcoming = np.array([s is not None and s >= reference for s in starts])
        self.published_ts = np.array([c.effective_published.timestamp() if c.effective_published else 0.0
                                      for c in pool])
        self.key_rank = np.argsort(np.argsort(np.array([c.key for c in pool], dtype=object)))
        self.urls = [_article_url(c.url) for c in pool]
        self.languages = np.array([_language(c) for c in pool], dtype=object)
        self.section = np.array([section_of.get(c.key, "") for c in pool], dtype=object)
        self.section_of = section_of
        self.members: dict[str, np.ndarray] = {}
        for n, c in enumerate(pool):
            for sid in c.series:
                self.members.setdefault(sid, np.zeros(len(pool), dtype=bool))[n] = True

    def in_series(self, series: Sequence[str]) -> np.ndarray:
        mask = np.zeros(len(self.pool), dtype=bool)
        for sid in series:
            if sid in self.members:
                mask |= self.members[sid]
        return mask


def _similarity(pool: list[Item], rows: list[int],
                series_terms: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, shared distinctive words, shared categories) of each row item to every pool item."""
    # Imported here, not at the top: scikit-learn takes about a second to import, and every command
    # that reaches the issues use case (`digest approve`, `digest issue …`) would pay it; only
    # composing an issue needs it.
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    common_limit = max(COMMON_MIN_DOCS, COMMON_SHARE * len(pool))
    # A series' name as a category is on every item of the series, a generic one on most items.
    named = [[n for n in dict.fromkeys(_norm(c) for c in item.categories) if n and n not in series_terms]
             for item in pool]
    counts = Counter(n for names in named for n in names)
    cats = [[n for n in names if counts[n] <= common_limit] for names in named]
    texts = [_text(c, kept) for c, kept in zip(pool, cats, strict=True)]
    shape = (len(rows), len(pool))
    try:
        vectorizer = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode", token_pattern=_TOKEN,
                                     stop_words=list(_STOP_WORDS), dtype=np.float32)
        tfidf = vectorizer.fit_transform(texts)
        cosine = (tfidf[rows] @ tfidf.T).toarray()
        present = tfidf.copy()
        present.data[:] = 1.0
        # Words shared by most of the pool ("europe" in a European foundation's feeds) are not a topic.
        common = np.asarray(present.sum(axis=0)).ravel() > common_limit
        present = present[:, np.flatnonzero(~common)]
        terms = (present[rows] @ present.T).toarray()
    except ValueError:  # no word at all in the pool (e.g. titles of digits only)
        cosine = np.zeros(shape, dtype=np.float32)
        terms = np.zeros(shape, dtype=np.float32)
    shared = np.zeros(shape, dtype=np.float32)
    if any(cats):
        matrix = CountVectorizer(analyzer=lambda x: x, binary=True).fit_transform(cats)
        shared = (matrix[rows] @ matrix.T).toarray()
    return cosine + CATEGORY_WEIGHT * np.minimum(shared, 3), terms, shared


def _eligible(item: Item, score: np.ndarray, terms: np.ndarray, facts: _PoolFacts) -> np.ndarray:
    """Which pool items may be linked from `item` at all (every rule but language and target uses)."""
    same_series = facts.in_series(item.series)
    own_section = facts.section_of.get(item.key, "")
    # A series item never links to content only of other series; an item in no series may link to
    # any series' briefs and articles by similarity, but never to a series' event.
    foreign = facts.has_series & (~same_series if item.series else facts.is_event)
    # Upcoming events of the item's own series are shown once per section, not under each item.
    section_events = same_series & facts.is_event & facts.upcoming
    topical = terms >= MIN_SHARED_TERMS
    # The threshold is on the score itself: a language never makes a weaker link good enough.
    eligible = ~facts.is_media & ~facts.linkless & ~foreign & ~section_events & topical & (score >= MIN_SIMILARITY)
    if own_section:
        eligible &= facts.section != own_section
    eligible[facts.index[item.key]] = False
    return eligible


def _pick(item: Item, eligible: np.ndarray, score: np.ndarray, facts: _PoolFacts, language: str,
          limit: int, uses: dict[int, int]) -> list[int]:
    """Pool indexes of the links an edition in `language` shows under `item`, best first."""
    other_language = (facts.languages != "") & (facts.languages != language) if language else \
        np.zeros(len(facts.pool), dtype=bool)
    ranked = np.where(other_language, score * OTHER_LANGUAGE_FACTOR, score)
    idx = np.flatnonzero(eligible)
    tier = np.where(facts.in_series(item.series)[idx], 0, 1)
    order = idx[np.lexsort((facts.key_rank[idx], -facts.published_ts[idx], -ranked[idx], tier))]
    picked: list[int] = []
    seen = {_article_url(item.url)}
    for n in order:
        if facts.urls[n] in seen or uses.get(n, 0) >= MAX_TARGET_USES:
            continue
        seen.add(facts.urls[n])
        uses[n] = uses.get(n, 0) + 1
        picked.append(int(n))
        if len(picked) == limit:
            break
    return picked


def _merged(picks: Mapping[str, list[int]], facts: _PoolFacts) -> tuple[RelatedLink, ...]:
    """One tuple holding every language's picks, each link naming the editions that show it.

    Each edition's links, filtered from the tuple, are exactly its pick in its order: a language
    shares a link already there when it comes after the language's previous one, else the link is
    there a second time for this language (two languages ranking one pair both ways).
    """
    entries: list[tuple[int, list[str]]] = []
    for language, pick in picks.items():
        cursor = 0
        for n in pick:
            at = next((i for i in range(cursor, len(entries)) if entries[i][0] == n), None)
            if at is None:
                entries.insert(cursor, (n, []))
                at = cursor
            entries[at][1].append(language)
            cursor = at + 1
    links = []
    for n, editions in entries:
        c = facts.pool[n]
        links.append(RelatedLink(key=c.key, kind=c.kind, title=c.title, url=c.url, language=_language(c) or None,
                                 editions=() if len(editions) == len(picks) else tuple(editions)))
    return tuple(links)


def _language(item: Item) -> str:
    code = (item.language or "").strip().lower()[:2]
    return code if code.isalpha() and len(code) == 2 else ""


def _text(item: Item, categories: list[str]) -> str:
    """What an item is about: the title (counted twice), its telling categories, the summary."""
    summary = html.unescape(_TAG.sub(" ", item.summary_html or item.content_html))[:2000]
    return " ".join([item.title, item.title, *categories, summary])


def _norm(category: str) -> str:
    return " ".join(html.unescape(category).casefold().split())


def _article_url(url: str) -> str:
    return url.strip().split("#", 1)[0].rstrip("/").lower()
