"""Series matching: tolerant to spelling noise CMSs add, strict about what the words are."""

import pytest

from digest.models import Series
from digest.series import match_series, near_misses, series_key

SERIES = [
    Series("esa-security-defence", "European Strategic Autonomy series – Security & Defence",
           aliases=("ESA series - Security & Defense",)),
    Series("esa-economy-trade", "European Strategic Autonomy series – Economy & Trade"),
    Series("esa-digital-technology", "European Strategic Autonomy series – Digital & Technology"),
]


@pytest.mark.parametrize("category", [
    "European Strategic Autonomy series – Security & Defence",
    "european strategic autonomy series - security & defence",
    "EUROPEAN STRATEGIC AUTONOMY SERIES — SECURITY AND DEFENCE",
    "  European  Strategic Autonomy series –Security &amp; Defence ",
    "European Strategic Autonomy series &#8211; Security &amp; Defence",
    "European Strategic Autonomy series &amp;#8211; Security &amp;amp; Defence",
    "European Strategic Autonomy series\u00a0-\u00a0Security\tand\nDefence",
    "European Strategic Autonomy series \u2212 Security & Defence",
    "ESA series – Security & Defense",  # the alias, with its own dash and ampersand spelling
])
def test_spelling_variants_match(category):
    assert match_series([category], SERIES) == ("esa-security-defence",)


@pytest.mark.parametrize("category", [
    "Security & Defence",  # only resembles the series
    "European Strategic Autonomy",
    "European Strategic Autonomy series",
    "European Strategic Autonomy series – Security & Defense",  # US spelling is not an alias of the name
    "European Strategic Autonomy series Security & Defence",  # the dash is part of the name
    "European Strategic Autonomy series – Security & Defence – Archive",
    "",
    "   ",
])
def test_near_misses_do_not_match(category):
    assert match_series([category], SERIES) == ()


def test_several_series_in_config_order_without_duplicates():
    categories = [
        "European Strategic Autonomy series – Digital & Technology",
        "Study",
        "European Strategic Autonomy series &#8211; Security &amp; Defence",
        "european strategic autonomy series - security and defence",
        "ESA series - Security & Defense",
    ]
    assert match_series(categories, SERIES) == ("esa-security-defence", "esa-digital-technology")


def test_no_categories_or_no_series():
    assert match_series([], SERIES) == ()
    assert match_series(["European Strategic Autonomy series – Economy & Trade"], []) == ()


def test_accepts_any_iterable():
    categories = (c for c in ["European Strategic Autonomy series – Economy and Trade"])
    assert match_series(categories, SERIES) == ("esa-economy-trade",)


def test_series_key_normal_form():
    assert series_key(" A  &amp; B &#8212; C ") == "a and b - c"
    assert series_key("Straße") == series_key("STRASSE")


# --- near misses: reported, never matched -----------------------------------------------------------
@pytest.mark.parametrize("category", [
    "European Strategic Autonomy series – Security & Defence",
    "EUROPEAN STRATEGIC AUTONOMY SERIES — SECURITY AND DEFENCE",
    "European Strategic Autonomy series &amp;#8211; Security &amp;amp; Defence",
    "ESA series – Security & Defense",
])
def test_what_matches_is_no_near_miss(category):
    assert near_misses([category], SERIES) == []


@pytest.mark.parametrize("category, suggested", [
    ("Security & Defence", None),
    ("European Strategic Autonomy", None),
    ("European Strategic Autonomy series", None),
    ("European Strategic Autonomy series – Security & Defence – Archive", None),
    ("European Strategic Autonomy series – Security & Digital", None),
    ("", None),
    ("European Strategic Autonomy series – Security & Defense", "esa-security-defence"),
    ("European Strategic Autonomy series Security & Defence", "esa-security-defence"),
    ("Europen Strategic Autonomy series – Digital & Technology", "esa-digital-technology"),
    ("European Strategic Autonomy series – Economy & Trades", "esa-economy-trade"),
])
def test_must_not_map_categories_stay_unmapped_and_only_typos_are_suggested(category, suggested):
    assert match_series([category], SERIES) == ()
    warnings = near_misses([category], SERIES)
    if suggested is None:
        assert warnings == []
    else:
        (warning,) = warnings
        assert f"id = '{suggested}'" in warning and "did you mean" in warning


def test_a_near_miss_keeps_the_existing_aliases_in_the_line_to_add():
    (warning,) = near_misses(["ESA series – Security & Defencee"], SERIES)
    assert warning.endswith('aliases = ["ESA series - Security & Defense", "ESA series – Security & Defencee"]')


def test_a_near_miss_is_reported_once_and_its_text_is_plain():
    warnings = near_misses(["Europen Strategic Autonomy series &#8211; Digital &amp; Technology\r\n",
                            "europen strategic autonomy series - digital and technology"], SERIES)
    assert len(warnings) == 1 and "\r" not in warnings[0] and "&#8211;" not in warnings[0]
