"""Generated datasets: the embedded defaults that need no files and no downloads.

One or more for each problem shape (``DATASETS`` says which), chosen with
``data.synthetic`` in a config. Every dataset is a pure function
``make(n, *, seed, split="train")`` of plain strings, deterministic for ``(n, seed, split)``,
and the first ``k`` items of a call with ``n >= k`` equal the items of a call with ``n = k``.
seq2seq and classify datasets give ``(source, target)`` pairs (for classify the target is the
label); lm and tag datasets give lines of text. Pure Python, no torch.

dates
    Human-written dates -> ISO ``YYYY-MM-DD``. The demo task of ``seqlab demo``: a
    character-level seq2seq with attention learns it in minutes, and its attention map is
    worth looking at because the alignment is not monotonic (the year comes first in the
    target but last in most sources, the month is spelled out, the weekday is ignored)::

        Sunday, March 3, 2024        ->  2024-03-03
        2024년 3월 3일 일요일         ->  2024-03-03
        3. März 2024                 ->  2024-03-03

    Years run from 1950 to 2049 (``YEARS``). The split of a date is a fixed hash of the
    date (about 90% train, 5% valid, 5% test; ``date_split``), so the splits are disjoint
    by *date*, and held-out pairs test generalization rather than memory. ``FORMATS`` maps
    each of the 21 format names to its format string, with an example of each, and
    ``format_date(date, name)`` writes one. Sources are at most 30 characters long.

copy
    Random tokens -> the same tokens, space separated: ``"c a h h e" -> "c a h h e"``.
    A sanity task: every attention variant must learn it.

reverse
    Random tokens -> the tokens reversed: ``"c a h h e" -> "e h h a c"``. Also a sanity
    task, with an anti-diagonal attention map.

sort
    Random digits -> the digits sorted: ``"3 1 4 1 5" -> "1 1 3 4 5"``. Attention must
    find the smallest digit left, not follow a position.

is_sorted (classify)
    Random digits -> ``sorted`` if they never decrease, else ``unsorted``, half of each:
    ``"1 3 3 7" -> sorted``, ``"3 1 4" -> unsorted``. A many-to-one problem that needs the
    whole sequence: no single position decides it.

alphabet (lm)
    Lines of consecutive letters from a random start, wrapping after z: ``"xyzab"``. A
    character model learns that each letter is followed by the next one; only a line's first
    letter and its length are random.

spacing (tag)
    Short Korean sentences made from a small grammar, spaced as Korean is (띄어쓰기: a
    particle is written onto its noun, a space follows the word)::

        고양이가 사과를 천천히 먹는다.      오늘 아이는 책을 읽었다.

    The subject particle is 이/가 and the object particle 을/를, chosen by whether the noun
    ends in a final consonant (받침), so a tagger must learn where a word ends from the
    characters around it; the tag problem removes the spaces and learns to restore them.

For copy, reverse, sort, is_sorted, alphabet and spacing the split only changes the random stream,
so the splits differ but may share a sequence by chance.

Ambiguity. Every date format is unambiguous, on its own and among all the others:
a numeric format is identified by its separator and never shares it with a format that
orders the fields differently::

    "/"                 month/day/year (US):   03/03/2024, 3/3/2024, 3/3/24
    "." (no spaces)     day.month.year (DE):   03.03.2024, 3.3.2024
    ". " (+ final ".")  year. month. day. (KO): 2024. 3. 3.

Two-digit years (``3/3/24``, ``24년 3월 3일``) follow the rule of ``YEARS``: ``50``-``99``
mean 1950-1999 and ``00``-``49`` mean 2000-2049.
"""

from __future__ import annotations

import datetime
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

YEARS = (1950, 2049)  # inclusive; two-digit year yy means 19yy if yy >= 50 else 20yy
SPLITS = ("train", "valid", "test")
SPLIT_PERCENT = {"train": 90, "valid": 5, "test": 5}

MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
MONTHS_DE = (
    "Januar", "Februar", "März", "April", "Mai", "Juni",
    "Juli", "August", "September", "Oktober", "November", "Dezember",
)  # fmt: skip
# Indexed by datetime.date.weekday(): Monday = 0.
WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEKDAYS_DE = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
WEEKDAYS_KO = ("월", "화", "수", "목", "금", "토", "일")  # 월요일, 화요일, ...


def _ordinal(day: int) -> str:
    """1 -> 1st, 2 -> 2nd, 3 -> 3rd, 11 -> 11th, 22 -> 22nd."""
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _fields(d: datetime.date) -> dict[str, str | int]:
    """The pieces a format string may use, for one date."""
    month, weekday = MONTHS_EN[d.month - 1], WEEKDAYS_EN[d.weekday()]
    return {
        "year": d.year,
        "yy": f"{d.year % 100:02d}",  # two-digit year, see YEARS
        "m": d.month,
        "mm": f"{d.month:02d}",
        "d": d.day,
        "dd": f"{d.day:02d}",
        "dth": _ordinal(d.day),
        "month": month,
        "month_lower": month.lower(),
        "mon": month[:3],
        "MON": month[:3].upper(),
        "weekday": weekday,
        "wkd": weekday[:3],
        "monat": MONTHS_DE[d.month - 1],
        "wochentag": WEEKDAYS_DE[d.weekday()],
        "yoil": WEEKDAYS_KO[d.weekday()],
    }


# Each format: name -> format string over _fields. Examples for 2024-03-03, a Sunday.
FORMATS: dict[str, str] = {
    # English, month in words
    "en_mdy": "{month} {d}, {year}",  # March 3, 2024
    "en_dmy": "{d} {month} {year}",  # 3 March 2024
    "en_mdy_abbr": "{mon} {d}, {year}",  # Mar 3, 2024
    "en_dmy_abbr": "{d} {mon} {year}",  # 3 Mar 2024
    "en_mdy_ordinal": "{month} {dth}, {year}",  # March 3rd, 2024
    "en_weekday_mdy": "{weekday}, {month} {d}, {year}",  # Sunday, March 3, 2024
    "en_weekday_dmy_abbr": "{wkd}, {d} {mon} {year}",  # Sun, 3 Mar 2024
    "en_mdy_lower": "{month_lower} {d}, {year}",  # march 3, 2024
    "en_dmy_abbr_upper": "{d} {MON} {year}",  # 3 MAR 2024
    # US numeric: month/day/year, always and only with "/"
    "us_slash": "{mm}/{dd}/{year}",  # 03/03/2024
    "us_slash_unpadded": "{m}/{d}/{year}",  # 3/3/2024
    "us_slash_yy": "{m}/{d}/{yy}",  # 3/3/24
    # German numeric: day.month.year, always and only with "." (no spaces)
    "de_dot": "{dd}.{mm}.{year}",  # 03.03.2024
    "de_dot_unpadded": "{d}.{m}.{year}",  # 3.3.2024
    # German, month in words
    "de_long": "{d}. {monat} {year}",  # 3. März 2024
    "de_weekday": "{wochentag}, {d}. {monat} {year}",  # Sonntag, 3. März 2024
    # Korean: year month day
    "ko": "{year}년 {m}월 {d}일",  # 2024년 3월 3일
    "ko_weekday": "{year}년 {m}월 {d}일 {yoil}요일",  # 2024년 3월 3일 일요일
    "ko_weekday_paren": "{year}년 {m}월 {d}일 ({yoil})",  # 2024년 3월 3일 (일)
    "ko_yy": "{yy}년 {m}월 {d}일",  # 24년 3월 3일
    "ko_dot": "{year}. {m}. {d}.",  # 2024. 3. 3.
}


def format_date(d: datetime.date, fmt: str) -> str:
    """Write date `d` in the format named `fmt` (a key of FORMATS)."""
    return FORMATS[fmt].format(**_fields(d))


def date_split(d: datetime.date) -> str:
    """The split a date belongs to: a fixed hash of its ISO string, about 90/5/5."""
    h = int.from_bytes(hashlib.sha256(d.isoformat().encode()).digest()[:8], "big") % 100
    if h < SPLIT_PERCENT["train"]:
        return "train"
    return "valid" if h < SPLIT_PERCENT["train"] + SPLIT_PERCENT["valid"] else "test"


@cache
def _dates_of(split: str) -> tuple[datetime.date, ...]:
    """Every date in YEARS that belongs to `split`, in calendar order."""
    first, last = datetime.date(YEARS[0], 1, 1), datetime.date(YEARS[1], 12, 31)
    days = (first + datetime.timedelta(days=i) for i in range((last - first).days + 1))
    return tuple(d for d in days if date_split(d) == split)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def dates(
    n: int, *, seed: int, split: str = "train", formats: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """`n` pairs (human-written date, ISO date): a date drawn uniformly from the split's
    dates, written in a format drawn uniformly from `formats` (default: all of FORMATS)."""
    _check_split(split)
    names = list(FORMATS) if formats is None else list(formats)
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown date formats {unknown}; choose from {', '.join(FORMATS)}")
    pool = _dates_of(split)
    rng = random.Random(f"dates:{split}:{seed}")
    pairs = []
    for _ in range(n):
        d = pool[rng.randrange(len(pool))]
        fmt = names[rng.randrange(len(names))]
        pairs.append((format_date(d, fmt), d.isoformat()))
    return pairs


def _tokens(
    name: str, n: int, seed: int, split: str, min_len: int, max_len: int, alphabet: str
) -> list[list[str]]:
    """`n` random token lists, lengths uniform in [min_len, max_len], tokens from `alphabet`."""
    _check_split(split)
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    if not alphabet:
        raise ValueError("alphabet must not be empty")
    rng = random.Random(f"{name}:{split}:{seed}")
    return [[rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))] for _ in range(n)]


def copy(
    n: int,
    *,
    seed: int,
    split: str = "train",
    min_len: int = 3,
    max_len: int = 8,
    alphabet: str = "abcdefgh",
) -> list[tuple[str, str]]:
    """`n` pairs (tokens, the same tokens), space separated: "c a h" -> "c a h"."""
    seqs = _tokens("copy", n, seed, split, min_len, max_len, alphabet)
    return [(" ".join(s), " ".join(s)) for s in seqs]


def reverse(
    n: int,
    *,
    seed: int,
    split: str = "train",
    min_len: int = 3,
    max_len: int = 8,
    alphabet: str = "abcdefgh",
) -> list[tuple[str, str]]:
    """`n` pairs (tokens, the tokens reversed), space separated: "c a h" -> "h a c"."""
    seqs = _tokens("reverse", n, seed, split, min_len, max_len, alphabet)
    return [(" ".join(s), " ".join(reversed(s))) for s in seqs]


def sort(
    n: int,
    *,
    seed: int,
    split: str = "train",
    min_len: int = 3,
    max_len: int = 8,
    alphabet: str = "0123456789",
) -> list[tuple[str, str]]:
    """`n` pairs (tokens, the tokens sorted), space separated: "3 1 4" -> "1 3 4"."""
    seqs = _tokens("sort", n, seed, split, min_len, max_len, alphabet)
    return [(" ".join(s), " ".join(sorted(s))) for s in seqs]


def is_sorted(n: int, *, seed: int, split: str = "train", min_len: int = 3, max_len: int = 8,
              alphabet: str = "0123456789") -> list[tuple[str, str]]:
    """`n` pairs (digits, "sorted" | "unsorted"), alternating labels: even items are sorted
    sequences, odd items are sequences that decrease somewhere."""
    seqs = _tokens("is_sorted", n, seed, split, max(min_len, 2), max_len, alphabet)
    rng = random.Random(f"is_sorted-order:{split}:{seed}")
    pairs = []
    for i, s in enumerate(seqs):
        if i % 2 == 0:
            s = sorted(s)
        else:
            while s == sorted(s):  # a decreasing step somewhere (redraw a constant run)
                s = [rng.choice(alphabet) for _ in s]
        pairs.append((" ".join(s), "sorted" if i % 2 == 0 else "unsorted"))
    return pairs


def alphabet(n: int, *, seed: int, split: str = "train", min_len: int = 3,
             max_len: int = 12) -> list[str]:
    """`n` lines of consecutive lower-case letters from a random start, wrapping after z."""
    _check_split(split)
    rng = random.Random(f"alphabet:{split}:{seed}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    lines = []
    for _ in range(n):
        start, length = rng.randrange(26), rng.randint(min_len, max_len)
        lines.append("".join(letters[(start + i) % 26] for i in range(length)))
    return lines


NOUNS = ("고양이", "강아지", "아이", "남자", "여자", "학생", "선생님", "친구", "사과", "책",
         "공", "물", "빵", "편지", "노래", "음악", "영화", "꽃", "우유", "신문")
ADVERBS = ("오늘", "어제", "천천히", "빨리", "자주", "함께", "다시", "조용히")
VERBS = ("먹는다", "읽었다", "좋아한다", "본다", "만들었다", "찾는다", "기다린다", "보냈다")
TOPIC_OR_SUBJECT = (("이", "가"), ("은", "는"))  # (after a final consonant, after a vowel)
OBJECT = ("을", "를")


def _particle(noun: str, pair: tuple[str, str]) -> str:
    """The form of a particle that follows `noun`: pair[0] after a final consonant (받침)."""
    has_final = (ord(noun[-1]) - 0xAC00) % 28 != 0
    return pair[0] if has_final else pair[1]


def spacing(n: int, *, seed: int, split: str = "train") -> list[str]:
    """`n` spaced Korean sentences: [adverb] subject+이/가|은/는 object+을/를 [adverb] verb."""
    _check_split(split)
    rng = random.Random(f"spacing:{split}:{seed}")
    lines = []
    for _ in range(n):
        subject, obj = rng.choice(NOUNS), rng.choice(NOUNS)
        words = [subject + _particle(subject, rng.choice(TOPIC_OR_SUBJECT)),
                 obj + _particle(obj, OBJECT)]
        if rng.random() < 0.5:
            words.insert(0, rng.choice(ADVERBS))
        if rng.random() < 0.5:
            words.append(rng.choice(ADVERBS))
        lines.append(" ".join(words + [rng.choice(VERBS)]) + ".")
    return lines


@dataclass(frozen=True)
class Dataset:
    problem: str  # the problem shape it is made for (config.problem)
    make: Callable[..., list]


DATASETS: dict[str, Dataset] = {
    "dates": Dataset("seq2seq", dates),
    "copy": Dataset("seq2seq", copy),
    "reverse": Dataset("seq2seq", reverse),
    "sort": Dataset("seq2seq", sort),
    "is_sorted": Dataset("classify", is_sorted),
    "alphabet": Dataset("lm", alphabet),
    "spacing": Dataset("tag", spacing),
}


def make_dataset(name: str, n: int, *, seed: int, split: str = "train") -> list:
    """`n` items of the generated dataset `name` with its default settings."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name].make(n, seed=seed, split=split)
