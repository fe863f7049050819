"""Related content: up to N links per issue item to other content of ours.

Ranking for an item in one or more series:
  1. upcoming events of the same series, soonest first;
  2. other content of the same series (any feed, any date), by shared categories and text similarity;
  3. content in no series that is textually similar.
Items in no series get similarity-based links only (to content in no series, or to a series'
briefs, articles and news, never to a series' event). Never: the item itself (same key or same
article URL), media mentions (not our content), for a series item content only of other series.
Similarity is scikit-learn TF-IDF with cosine similarity, fitted once on the
candidate pool, so an issue costs one vectorisation and one sparse product.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from .models import Item, ItemKind, RelatedLink

# A shared category counts like this much cosine similarity (at most three are counted).
CATEGORY_WEIGHT = 0.15
# Content outside the item's series must be at least this similar to be worth a link.
MIN_SIMILARITY = 0.08
_TAG = re.compile(r"<[^>]+>")
# The candidate pool build_issue reads from the store: the latest content overall, plus the
# latest of each series present in the issue (older same-series content rarely beats newer).
POOL_RECENT = 2000
POOL_PER_SERIES = 300


def find_related(items: Sequence[Item], candidates: Sequence[Item], series_order: Sequence[str],
                 limit: int, reference: datetime) -> dict[str, tuple[RelatedLink, ...]]:
    """Related links for each of `items`, keyed by item key; events from `reference` on are upcoming."""
    if not items or limit <= 0:
        return {}
    pool = _pool(items, candidates)
    facts = _PoolFacts(pool, reference)
    rows = [facts.index[item.key] for item in items]
    scores = _similarity(pool, rows)
    return {item.key: _links_for(item, scores[n], facts, limit) for n, item in enumerate(items)}


def _pool(items: Sequence[Item], candidates: Sequence[Item]) -> list[Item]:
    by_key = {c.key: c for c in candidates if c.kind != ItemKind.MEDIA}
    by_key.update({i.key: i for i in items})
    return list(by_key.values())


class _PoolFacts:
    """Per-candidate arrays, so ranking one item is a few vector operations."""

    def __init__(self, pool: list[Item], reference: datetime) -> None:
        self.pool = pool
        self.index = {c.key: n for n, c in enumerate(pool)}
        self.is_event = np.array([c.kind == ItemKind.EVENT for c in pool])
        self.is_media = np.array([c.kind == ItemKind.MEDIA for c in pool])
        self.has_series = np.array([bool(c.series) for c in pool])
        starts = [c.event.start if c.event and c.event.start else None for c in pool]
        self.upcoming = np.array([s is not None and s >= reference for s in starts])
        self.start_ts = np.array([s.timestamp() if s else 0.0 for s in starts])
        self.published_ts = np.array([c.effective_published.timestamp() if c.effective_published else 0.0
                                      for c in pool])
        self.key_rank = np.argsort(np.argsort(np.array([c.key for c in pool], dtype=object)))
        self.urls = [_article_url(c.url) for c in pool]
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


def _similarity(pool: list[Item], rows: list[int]) -> np.ndarray:
    """Cosine similarity of each row item to every pool item, plus the shared-category bonus."""
    # Imported here, not at the top: scikit-learn takes about a second to import, and every command
    # that reaches the issues use case (`digest approve`, `digest issue …`) would pay it; only
    # composing an issue needs it.
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    texts = [_text(c) for c in pool]
    try:
        tfidf = TfidfVectorizer(sublinear_tf=True, strip_accents="unicode", dtype=np.float32).fit_transform(texts)
        cosine = (tfidf[rows] @ tfidf.T).toarray()
    except ValueError:  # no word at all in the pool (e.g. titles of digits only)
        cosine = np.zeros((len(rows), len(pool)), dtype=np.float32)
    cats = [[_norm(c) for c in item.categories] for item in pool]
    if any(cats):
        matrix = CountVectorizer(analyzer=lambda x: x, binary=True).fit_transform(cats)
        shared = (matrix[rows] @ matrix.T).toarray()
        cosine = cosine + CATEGORY_WEIGHT * np.minimum(shared, 3)
    return cosine


def _links_for(item: Item, score: np.ndarray, facts: _PoolFacts, limit: int) -> tuple[RelatedLink, ...]:
    same_series = facts.in_series(item.series)
    own_url = _article_url(item.url)
    # A series item never links to content only of other series; an item in no series may link to
    # any series' briefs and articles by similarity, but never to a series' event.
    foreign = facts.has_series & (~same_series if item.series else facts.is_event)
    eligible = ~facts.is_media & ~foreign & (same_series | (score >= MIN_SIMILARITY))
    eligible[facts.index[item.key]] = False
    idx = np.flatnonzero(eligible)
    tier = np.where(same_series[idx] & facts.is_event[idx] & facts.upcoming[idx], 0, np.where(same_series[idx], 1, 2))
    secondary = np.where(tier == 0, facts.start_ts[idx], -score[idx])
    order = idx[np.lexsort((facts.key_rank[idx], -facts.published_ts[idx], secondary, tier))]
    links: list[RelatedLink] = []
    seen = {own_url}
    for n in order:
        if facts.urls[n] in seen:
            continue
        seen.add(facts.urls[n])
        c = facts.pool[n]
        links.append(RelatedLink(key=c.key, kind=c.kind, title=c.title, url=c.url))
        if len(links) == limit:
            break
    return tuple(links)


def _text(item: Item) -> str:
    summary = html.unescape(_TAG.sub(" ", item.summary_html or item.content_html))[:2000]
    return " ".join([item.title, item.title, *item.categories, summary])


def _norm(category: str) -> str:
    return " ".join(html.unescape(category).casefold().split())


def _article_url(url: str) -> str:
    return url.strip().split("#", 1)[0].rstrip("/").lower()
