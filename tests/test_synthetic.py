"""Generated datasets: determinism, date splits, each date format checked by a parser."""

from __future__ import annotations

import datetime
import re
from collections import Counter

import pytest

from seqlab import synthetic as tasks

# --- an independent reader of the date formats, with its own name tables -------------------

EN_MONTHS = "january february march april may june july august september october november december"
DE_MONTHS = "januar februar märz april mai juni juli august september oktober november dezember"
MONTH_NO = {name: i + 1 for i, name in enumerate(EN_MONTHS.split())}
MONTH_NO |= {name[:3]: i + 1 for i, name in enumerate(EN_MONTHS.split())}
DE_MONTH_NO = {name: i + 1 for i, name in enumerate(DE_MONTHS.split())}
# Weekday number as in date.isoweekday(): Monday = 1 ... Sunday = 7.
EN_WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday"
DE_WEEKDAYS = "montag dienstag mittwoch donnerstag freitag samstag sonntag"
EN_WD = {name: i + 1 for i, name in enumerate(EN_WEEKDAYS.split())}
EN_WD |= {name[:3]: i + 1 for i, name in enumerate(EN_WEEKDAYS.split())}
DE_WD = {name: i + 1 for i, name in enumerate(DE_WEEKDAYS.split())}
KO_WD = {c: i + 1 for i, c in enumerate("월화수목금토일")}
ORDINAL_SUFFIX = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}


def full_year(y: str) -> int:
    """The documented two-digit rule: 50-99 -> 19xx, 00-49 -> 20xx."""
    if len(y) == 4:
        return int(y)
    assert len(y) == 2
    return 1900 + int(y) if int(y) >= 50 else 2000 + int(y)


def parse(src: str) -> tuple[datetime.date, int | None]:
    """(date, isoweekday named in the string or None); raises if the string is not a date."""
    s = src.lower()
    if m := re.fullmatch(r"(\d{2}|\d{4})년 (\d{1,2})월 (\d{1,2})일(?: (.)요일| \((.)\))?", s):
        y, mo, d, wd1, wd2 = m.groups()
        wd = wd1 or wd2
        return datetime.date(full_year(y), int(mo), int(d)), KO_WD[wd] if wd else None
    if m := re.fullmatch(r"(\d{4})\. (\d{1,2})\. (\d{1,2})\.", s):  # Korean y. m. d.
        return datetime.date(int(m[1]), int(m[2]), int(m[3])), None
    if m := re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})", s):  # US m/d/y
        return datetime.date(full_year(m[3]), int(m[1]), int(m[2])), None
    if m := re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", s):  # German d.m.y
        return datetime.date(int(m[3]), int(m[2]), int(m[1])), None
    if m := re.fullmatch(r"(?:(\w+), )?(\d{1,2})\. (\w+) (\d{4})", s):  # German d. Monat y
        wd, d, mo, y = m.groups()
        return datetime.date(int(y), DE_MONTH_NO[mo], int(d)), DE_WD[wd] if wd else None
    if m := re.fullmatch(r"(?:(\w+), )?(\w+) (\d{1,2})(st|nd|rd|th)?, (\d{4})", s):  # M d, y
        wd, mo, d, suffix, y = m.groups()
        if suffix:
            assert suffix == ORDINAL_SUFFIX.get(int(d), "th"), src
        return datetime.date(int(y), MONTH_NO[mo], int(d)), EN_WD[wd] if wd else None
    if m := re.fullmatch(r"(?:(\w+), )?(\d{1,2}) (\w+) (\d{4})", s):  # d M y
        wd, d, mo, y = m.groups()
        return datetime.date(int(y), MONTH_NO[mo], int(d)), EN_WD[wd] if wd else None
    raise AssertionError(f"unreadable date {src!r}")


# --- hand-written expectations for two fixed dates -----------------------------------------

# 2024-03-03 is a Sunday; 1987-11-25 is a Wednesday.
EXPECTED = {
    "en_mdy": ("March 3, 2024", "November 25, 1987"),
    "en_dmy": ("3 March 2024", "25 November 1987"),
    "en_mdy_abbr": ("Mar 3, 2024", "Nov 25, 1987"),
    "en_dmy_abbr": ("3 Mar 2024", "25 Nov 1987"),
    "en_mdy_ordinal": ("March 3rd, 2024", "November 25th, 1987"),
    "en_weekday_mdy": ("Sunday, March 3, 2024", "Wednesday, November 25, 1987"),
    "en_weekday_dmy_abbr": ("Sun, 3 Mar 2024", "Wed, 25 Nov 1987"),
    "en_mdy_lower": ("march 3, 2024", "november 25, 1987"),
    "en_dmy_abbr_upper": ("3 MAR 2024", "25 NOV 1987"),
    "us_slash": ("03/03/2024", "11/25/1987"),
    "us_slash_unpadded": ("3/3/2024", "11/25/1987"),
    "us_slash_yy": ("3/3/24", "11/25/87"),
    "de_dot": ("03.03.2024", "25.11.1987"),
    "de_dot_unpadded": ("3.3.2024", "25.11.1987"),
    "de_long": ("3. März 2024", "25. November 1987"),
    "de_weekday": ("Sonntag, 3. März 2024", "Mittwoch, 25. November 1987"),
    "ko": ("2024년 3월 3일", "1987년 11월 25일"),
    "ko_weekday": ("2024년 3월 3일 일요일", "1987년 11월 25일 수요일"),
    "ko_weekday_paren": ("2024년 3월 3일 (일)", "1987년 11월 25일 (수)"),
    "ko_yy": ("24년 3월 3일", "87년 11월 25일"),
    "ko_dot": ("2024. 3. 3.", "1987. 11. 25."),
}
FIXED = (datetime.date(2024, 3, 3), datetime.date(1987, 11, 25))


def test_every_format_has_a_hand_written_example():
    assert set(EXPECTED) == set(tasks.FORMATS)


@pytest.mark.parametrize("fmt", sorted(EXPECTED))
def test_format_matches_hand_written_example(fmt):
    for d, want in zip(FIXED, EXPECTED[fmt], strict=True):
        assert tasks.format_date(d, fmt) == want
        assert parse(want)[0] == d


def test_ordinals():
    d = datetime.date
    days = (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)
    got = [tasks.format_date(d(2001, 1, k), "en_mdy_ordinal").split()[1] for k in days]
    want = "1st 2nd 3rd 4th 11th 12th 13th 21st 22nd 23rd 31st".split()
    assert got == [w + "," for w in want]


# --- the generated data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    return tasks.dates(4000, seed=0)


def test_sample_parses_back_to_its_target(sample):
    for src, tgt in sample:
        d, weekday = parse(src)
        assert tgt == d.isoformat(), src
        assert datetime.date.fromisoformat(tgt).isoformat() == tgt
        if weekday is not None:
            assert weekday == d.isoweekday(), f"wrong weekday in {src!r}"
        assert tasks.YEARS[0] <= d.year <= tasks.YEARS[1]
        assert len(src) <= 30


def test_every_format_appears_in_a_sample(sample):
    # A source's format is recognised by regenerating it from the target. Some formats agree
    # on some dates (03/03/2024 vs 3/3/2024 differ, 11/25/1987 is both): count only the
    # sources that exactly one format writes.
    seen = Counter()
    for src, tgt in sample:
        day = datetime.date.fromisoformat(tgt)
        fmts = [f for f in tasks.FORMATS if tasks.format_date(day, f) == src]
        assert fmts, src
        if len(fmts) == 1:
            seen[fmts[0]] += 1
    assert set(seen) == set(tasks.FORMATS)
    assert min(seen.values()) > 80  # about 4000 / 21 = 190 each, fewer for the padded ones


def test_korean_formats_present(sample):
    korean = [s for s, _ in sample if re.search("[가-힣]", s)]
    assert len(korean) > len(sample) // 10
    assert any("요일" in s for s in korean)
    assert any(re.fullmatch(r"\d\d년 .*", s) for s in korean)  # two-digit year
    assert any(re.fullmatch(r"\d{4}\. \d+\. \d+\.", s) for s, _ in sample)


def test_weekdays_correct_for_every_weekday_format_over_a_whole_year():
    weekday_formats = [f for f in tasks.FORMATS if "weekday" in f]
    assert len(weekday_formats) == 5
    day = datetime.date(2023, 1, 1)
    while day.year == 2023:
        for f in weekday_formats:
            got, weekday = parse(tasks.format_date(day, f))
            assert got == day and weekday == day.isoweekday()
        day += datetime.timedelta(days=1)


def test_no_source_string_means_two_dates():
    """Among all formats together, with the years at both ends of the range and a leap year."""
    meaning: dict[str, datetime.date] = {}
    for year in (1950, 1999, 2000, 2024, 2049):
        day = datetime.date(year, 1, 1)
        while day.year == year:
            for f in tasks.FORMATS:
                src = tasks.format_date(day, f)
                assert meaning.setdefault(src, day) == day, f"{src!r} is ambiguous"
            day += datetime.timedelta(days=1)


def test_dates_deterministic():
    a = tasks.dates(300, seed=7, split="valid")
    assert a == tasks.dates(300, seed=7, split="valid")
    assert a[:100] == tasks.dates(100, seed=7, split="valid")
    assert a != tasks.dates(300, seed=8, split="valid")


def test_date_splits_disjoint_and_sized():
    pools = {s: tasks._dates_of(s) for s in tasks.SPLITS}
    total = sum(len(p) for p in pools.values())
    first, last = datetime.date(tasks.YEARS[0], 1, 1), datetime.date(tasks.YEARS[1], 12, 31)
    assert total == (last - first).days + 1
    assert 0.88 < len(pools["train"]) / total < 0.92
    for s in ("valid", "test"):
        assert 0.04 < len(pools[s]) / total < 0.06
    targets = {s: {t for _, t in tasks.dates(2000, seed=1, split=s)} for s in tasks.SPLITS}
    assert not targets["train"] & targets["valid"]
    assert not targets["train"] & targets["test"]
    assert not targets["valid"] & targets["test"]
    for s, ts in targets.items():
        assert all(tasks.date_split(datetime.date.fromisoformat(t)) == s for t in ts)


def test_dates_formats_argument():
    pairs = tasks.dates(50, seed=0, formats=["ko", "us_slash"])
    assert all(re.fullmatch(r"\d{4}년 .*|\d\d/\d\d/\d{4}", s) for s, _ in pairs)
    with pytest.raises(ValueError, match="en_mdy"):
        tasks.dates(5, seed=0, formats=["klingon"])
    with pytest.raises(ValueError, match="train"):
        tasks.dates(5, seed=0, split="dev")


# --- copy, reverse, sort --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expect",
    [("copy", lambda t: t), ("reverse", lambda t: t[::-1]), ("sort", sorted)],
)
def test_token_tasks(name, expect):
    pairs = tasks.make_dataset(name, 500, seed=3, split="train")
    assert pairs == tasks.DATASETS[name].make(500, seed=3)
    alphabet = "0123456789" if name == "sort" else "abcdefgh"
    lengths = set()
    for src, tgt in pairs:
        toks = src.split(" ")
        assert tgt.split(" ") == list(expect(toks))
        assert set(toks) <= set(alphabet)
        lengths.add(len(toks))
    assert lengths == set(range(3, 9))
    assert pairs != tasks.make_dataset(name, 500, seed=3, split="test")
    assert pairs != tasks.make_dataset(name, 500, seed=4, split="train")


def test_copy_options():
    pairs = tasks.copy(100, seed=0, min_len=2, max_len=2, alphabet="xy")
    assert {s for s, _ in pairs} == {"x x", "x y", "y x", "y y"}
    with pytest.raises(ValueError):
        tasks.reverse(1, seed=0, min_len=5, max_len=2)


def test_make_task_unknown_name_lists_choices():
    with pytest.raises(ValueError) as err:
        tasks.make_dataset("nope", 3, seed=0, split="train")
    for name in tasks.DATASETS:
        assert name in str(err.value)
    assert set(tasks.DATASETS) >= {"dates", "copy", "reverse", "is_sorted", "alphabet"}


def test_make_task_dates_matches_dates():
    want = tasks.dates(20, seed=5, split="test")
    assert tasks.make_dataset("dates", 20, seed=5, split="test") == want


def test_is_sorted_labels_say_whether_the_digits_never_decrease():
    pairs = tasks.make_dataset("is_sorted", 400, seed=2)
    for src, label in pairs:
        digits = src.split(" ")
        assert label == ("sorted" if digits == sorted(digits) else "unsorted")
        assert 2 <= len(digits) <= 8
    assert [label for _, label in pairs].count("sorted") == 200
    assert pairs[:50] == tasks.make_dataset("is_sorted", 50, seed=2)


def test_alphabet_lines_are_runs_of_consecutive_letters():
    lines = tasks.make_dataset("alphabet", 300, seed=1)
    for line in lines:
        assert 3 <= len(line) <= 12
        assert all((ord(b) - ord(a)) % 26 == 1 for a, b in zip(line, line[1:]))
    assert lines != tasks.make_dataset("alphabet", 300, seed=1, split="valid")
