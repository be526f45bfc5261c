"""A deterministic generator of realistic production logs for the demo and the tests.

The simulated application is *Kestrel*, the support assistant of Kestrel Bank (a fictional digital
bank). It makes one model call per user turn; every call is logged in one of three formats
(canonical, OpenAI request/response, OpenTelemetry OTLP/JSON), mixed in the same folder and with
several dates per file. Ground truth for every record (true intent, true extraction fields, the
PII that was inserted, the malformed lines) goes to a separate truth folder that must never be
ingested.

Entry point: :func:`generate_logs`. The same arguments give byte-identical files: every random
choice comes from ``random.Random`` instances seeded with strings derived from ``seed``
(``"<seed>:day:<offset>"`` per day, so a day's content does not depend on how many days follow
it, except through the default cutover date); no clock, no set or hash order is used.

What the records contain
------------------------
User turns are real customer queries from Banking77 (Casanueva et al. 2020, CC-BY-4.0), real
prompts from MT-Bench and Arena-Hard (Apache-2.0), and templated transfer requests. Package
data lives in ``data/`` (see ``data/README.md`` for sources and licenses).

``task_type`` shares of records (on average; each day is drawn independently):

* ``intent_routing`` ~35%: the system prompt lists the 77 allowed intents, the user turn is a
  Banking77 query, the completion is an intent label. Errors depend on the model version
  (old 5% / new 2% on most intents, 30% / 14% on the intents of :data:`CONFUSABLE_GROUPS`,
  where a wrong label is usually the confusable partner). The old version sometimes answers
  with something that is not a bare label (``"Intent: card_arrival"``): the ``label_check``
  post-processing step is then ``ok=False`` and ``feedback.parse_error`` is set.
* ``extraction`` ~15%: a transfer request built from templates (varied phrasing, 7 currencies,
  amount formats such as ``€1,250.50``, ``1.250,50 €``, ``2k GBP``, dates such as ``5 March``,
  ``05/03/2026``, ``next Friday``, ``tomorrow``). The completion is the JSON
  ``{"amount": <number>, "currency": <ISO 4217>, "date": "YYYY-MM-DD"}``. Old version: ~8% wrong
  fields and ~6% invalid JSON; new version: ~3% and ~1%. Invalid JSON sets
  ``feedback.parse_error`` and a ``json_parse`` step with ``ok=False``; valid JSON has a
  ``json_parse`` step with ``ok=True``.
* ``rag_qa`` ~25%: a Banking77 query answered from 2-4 chunks retrieved from a small help-centre
  knowledge base written for this project (``data/help_centre_kb.json``, doc ids such as
  ``kb-card-arrival-01``). The chunks are also injected into the system prompt
  (``"Use the following context:\\n[kb-...] ..."``). About 10% of retrievals miss the relevant
  documents (more on the hard intents); the old version then answers from the wrong document,
  the new one says it could not find the answer.
* ``open_question`` ~10%: MT-Bench (first turn; templated completions) and Arena-Hard prompts
  (the real answers of gpt-3.5-turbo-0125 for the old model version and gpt-4-0613 for the new
  one, truncated to ~1,500 characters).
* ``multi_turn`` ~15% of records: support chats of 2-4 turns. Turn 0 is a Banking77 query; later
  turns are follow-ups ("How long will it take?", "Can I talk to a human?", ...) or a second
  Banking77 query. Every record of turn k carries the full history in ``messages`` (system,
  user, assistant, ..., user: k+1 user messages), shares ``conversation_id`` with the other turns
  and has ``turn_index`` k. All turns have ``task_type="multi_turn"``; the intent of the
  conversation's topic is in the truth file.

Intents follow a Zipf-like law (exponent 1.1) over a fixed ranking (:data:`HEAD_INTENTS`
first, then the rest in Banking77 category order). Some intents appear only later
(:data:`NEW_INTENTS_BY_MONTH`, months counted as calendar months from the month of ``start``):
``apple_pay_or_google_pay`` from month 1, ``get_disposable_virtual_card``,
``virtual_card_not_working`` and ``disposable_card_limits`` from month 2. They rank high once
launched, so month-to-month drift is visible.

PII is inserted in ~15% of new user messages (names, emails, phone numbers in national and
international formats, Luhn-valid test card numbers, IBANs with valid check digits), some
completions (the assistant greets the user by name) and some feedback comments. The truth file
lists, per record, every inserted value and the field it is in (earlier turns included).

Quality signals are correlated with categories: thumbs down is frequent on
:data:`HARD_INTENTS`, after a wrong answer and for the old model version on extraction;
abandonment grows with the length of open questions and with latency; clarification is requested
on very short queries; regeneration and escalation happen occasionally (escalation always when the
user asks for a human); thumbs up sometimes; comments occasionally (some with PII).

Model: ``support-assistant``, version ``2026-06-01`` before the cutover date and
``2026-09-15`` from it on (default cutover: ``start + round(0.6 * days)`` days). Parameters,
the support system prompt and the speed differ slightly per version.

On-disk layout (everything under ``out_dir`` is meant to be ingested)
-------------------------------------------------------------------
* ``canonical/YYYY-MM-DD.jsonl``: one file per day, one canonical record per line
  (``LogRecord`` JSON, default-valued optional fields left out).
* ``openai/week-YYYY-MM-DD.jsonl``: one file per 7-day block counted from ``start`` (the name is
  the block's first day), one ``{"request": ..., "response": ..., ...}`` line per call.
* ``otel/spans-YYYY-MM-DD_YYYY-MM-DD.otlp.jsonl``: one file per 3-day block (first and last day),
  one ``ExportTraceServiceRequest`` per line with the spans of 3-8 calls, at most 20 spans per
  line (per call: an HTTP server span ``POST /chat``, for RAG a retrieval span, and its child, the
  LLM client span ``chat support-assistant`` with the GenAI attributes).

A conversation is logged in one format and lies within one UTC day, so each UTC day has exactly
``per_day`` valid records. Lines in each file are in timestamp order. About 0.3% extra lines
(at least ``min(5, records // 20)``) are malformed (kinds in :data:`MALFORMED_KINDS`); they are
never the first line of a file and are listed in ``<truth_dir>/malformed.jsonl``.

Truth (``truth_dir``, default ``out_dir.parent / "demo_truth"``; refused inside ``out_dir``)
-------------------------------------------------------------------------------------------
``records.jsonl``: one line per valid record, in timestamp order, always with the same keys:
``request_id``, ``conversation_id``, ``turn_index``, ``timestamp``, ``date``, ``format``
(canonical / openai / otlp), ``file`` (relative to ``out_dir``) and ``line`` (1-based; for OTLP the
line holding the span), ``task_type``, ``model_version``, ``user_id``, ``source`` (``banking77``,
``template``, ``mt_bench``, ``arena_hard``) and ``source_id`` (train.csv data row, template id,
question_id or uid), ``intent`` (Banking77 label: of the query, or of the conversation's current
topic for multi-turn; null otherwise), ``predicted_intent`` (routing), ``extraction`` (``amount``,
``currency``, ``date`` plus ``amount_format`` and ``date_format``; null otherwise),
``relevant_doc_ids`` and ``retrieval_hit`` (RAG), ``error`` (``wrong_intent``, ``invalid_label``,
``wrong_fields``, ``invalid_json``, ``retrieval_miss``, ``unresolved`` or null), ``turn_intent``
and ``followup`` (multi-turn), and ``pii``: a list of ``{"type", "value", "field", "turn_index"}``
with Presidio entity names (PERSON, EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE), the field
the value is in verbatim (``messages``, ``completion``, ``feedback.comment``) and the turn that
introduced it. Only inserted PII is listed (the public prompts may contain their own).

``malformed.jsonl``: ``{"file", "line", "format", "kind", "request_id", "date"}`` per broken line
(``request_id`` null when the line has none). ``summary.json``: the :class:`GenerationSummary`
without the folder paths.
"""

from __future__ import annotations

import calendar
import csv
import json
import math
import random
import re
from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_DIR",
    "MODEL",
    "OLD_VERSION",
    "NEW_VERSION",
    "MODEL_VERSIONS",
    "ANSWER_MODEL_BY_VERSION",
    "TASK_SHARES",
    "FORMAT_SHARES",
    "PII_SHARE",
    "NEW_INTENTS_BY_MONTH",
    "HEAD_INTENTS",
    "HARD_INTENTS",
    "CONFUSABLE_GROUPS",
    "USER_SEGMENTS",
    "CHANNELS",
    "MALFORMED_KINDS",
    "GenerationSummary",
    "default_cutover",
    "generate_logs",
    "month_index",
    "available_intents",
    "luhn_valid",
    "iban_valid",
]

DATA_DIR = Path(__file__).parent / "data"

MODEL = "support-assistant"
OLD_VERSION = "2026-06-01"
NEW_VERSION = "2026-09-15"
MODEL_VERSIONS = (OLD_VERSION, NEW_VERSION)
# Arena-Hard answers that stand in for each version's output on open questions.
ANSWER_MODEL_BY_VERSION = {OLD_VERSION: "gpt-3.5-turbo-0125", NEW_VERSION: "gpt-4-0613"}
CUTOVER_FRACTION = 0.6

TASK_SHARES = {
    "intent_routing": 0.35,
    "extraction": 0.15,
    "rag_qa": 0.25,
    "open_question": 0.10,
    "multi_turn": 0.15,
}
FORMAT_SHARES = {"canonical": 0.60, "openai": 0.25, "otlp": 0.15}
PII_SHARE = 0.15
# Open questions (real prompts) carry no inserted PII, so the other user messages get a bit more.
_PII_PROB = PII_SHARE / (1.0 - TASK_SHARES["open_question"])
MALFORMED_SHARE = 0.003

USER_SEGMENTS = {"retail": 0.55, "premium": 0.20, "business": 0.15, "student": 0.10}
CHANNELS = {"web": 0.35, "ios": 0.40, "android": 0.25}

# Month index (calendar months after the month of ``start``) -> intents that appear from then on.
NEW_INTENTS_BY_MONTH: dict[int, tuple[str, ...]] = {
    1: ("apple_pay_or_google_pay",),
    2: ("get_disposable_virtual_card", "virtual_card_not_working", "disposable_card_limits"),
}

# The most frequent intents, most frequent first; the other intents follow in Banking77 order.
HEAD_INTENTS = (
    "card_arrival",
    "card_not_working",
    "transfer_not_received_by_recipient",
    "apple_pay_or_google_pay",
    "pending_transfer",
    "lost_or_stolen_card",
    "get_disposable_virtual_card",
    "card_payment_not_recognised",
    "top_up_failed",
    "exchange_rate",
    "virtual_card_not_working",
    "balance_not_updated_after_bank_transfer",
    "declined_card_payment",
    "verify_my_identity",
    "request_refund",
    "disposable_card_limits",
    "pending_card_payment",
    "activate_my_card",
    "transaction_charged_twice",
    "change_pin",
)
ZIPF_EXPONENT = 1.1

# Intents whose answers users dislike much more often (thumbs down, escalation).
HARD_INTENTS = (
    "card_not_working",
    "transfer_not_received_by_recipient",
    "pending_transfer",
    "card_payment_not_recognised",
    "top_up_failed",
    "Refund_not_showing_up",
    "compromised_card",
    "declined_transfer",
)

# Intents the router confuses with each other.
CONFUSABLE_GROUPS = (
    ("card_arrival", "card_delivery_estimate"),
    ("pending_transfer", "transfer_not_received_by_recipient", "transfer_timing"),
    ("top_up_failed", "top_up_reverted", "pending_top_up"),
    ("card_payment_not_recognised", "direct_debit_payment_not_recognised", "extra_charge_on_statement"),
    ("balance_not_updated_after_bank_transfer", "balance_not_updated_after_cheque_or_cash_deposit"),
    ("exchange_rate", "card_payment_wrong_exchange_rate", "wrong_exchange_rate_for_cash_withdrawal"),
    ("lost_or_stolen_card", "compromised_card"),
    ("virtual_card_not_working", "card_not_working", "contactless_not_working"),
    ("pending_cash_withdrawal", "declined_cash_withdrawal"),
    ("transfer_fee_charged", "card_payment_fee_charged", "cash_withdrawal_charge"),
    ("verify_my_identity", "why_verify_identity", "unable_to_verify_identity"),
    ("get_physical_card", "order_physical_card"),
    ("getting_virtual_card", "get_disposable_virtual_card"),
    ("request_refund", "Refund_not_showing_up"),
    ("declined_transfer", "failed_transfer", "beneficiary_not_allowed"),
    ("top_up_by_card_charge", "top_up_by_bank_transfer_charge"),
)

MALFORMED_KINDS = {
    "canonical": ("truncated_json", "missing_completion", "negative_latency", "invalid_timestamp",
                  "wrong_type", "not_json"),
    "openai": ("truncated_json", "missing_completion", "negative_latency", "invalid_timestamp",
               "wrong_type"),
    "otlp": ("truncated_json", "missing_completion", "negative_latency", "invalid_timestamp",
             "wrong_type"),
}

_VERSION_PARAMS = {
    OLD_VERSION: {"temperature": 0.3, "max_tokens": 1024, "top_p": 1.0},
    NEW_VERSION: {"temperature": 0.2, "max_tokens": 1536, "top_p": 0.9},
}
# Per task overrides (classification and extraction run greedy with a small budget).
_TASK_PARAMS = {
    "intent_routing": {"temperature": 0.0, "max_tokens": 16},
    "extraction": {"temperature": 0.0, "max_tokens": 128},
}
# Per-output-token generation time (ms) and time to first token medians (ms) per task.
_MS_PER_TOKEN = {OLD_VERSION: 24.0, NEW_VERSION: 19.0}
_TTFT_MS = {"intent_routing": 260.0, "extraction": 380.0, "rag_qa": 850.0, "open_question": 650.0,
            "multi_turn": 620.0}

BANK = "Kestrel Bank"
_SUPPORT_SYSTEM = {
    OLD_VERSION: (
        f"You are Kestrel, the virtual assistant of {BANK}, a digital bank. Be friendly and "
        "concise. Never ask for full card numbers, PINs or passwords. If you are not sure, offer "
        "to connect the customer with a human agent."
    ),
    NEW_VERSION: (
        f"You are Kestrel, the virtual assistant of {BANK}, a digital bank. Be friendly and "
        "concise; keep answers under 120 words. Never ask for full card numbers, PINs or "
        "passwords, and remind customers not to share them. If you are not sure, say so and offer "
        "to connect the customer with a human agent."
    ),
}
_RAG_INSTRUCTION = (
    "Answer only from the context below. If the context does not contain the answer, say that "
    "you could not find it and offer to connect the customer with an agent."
)
_EXTRACTION_SYSTEM = (
    f"You extract payment instructions for {BANK}. Read the customer's message and reply with "
    'JSON only, no prose: {"amount": <number>, "currency": "<ISO 4217 code>", "date": '
    '"YYYY-MM-DD"}. Resolve relative dates against today\'s date: {today}.'
)

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000


# ---------------------------------------------------------------------------------------------
# package data


@dataclass(frozen=True)
class _Doc:
    doc_id: str
    family: str
    title: str
    text: str
    intents: tuple[str, ...]
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class _Data:
    categories: tuple[str, ...]
    queries: dict[str, tuple[tuple[int, str], ...]]  # intent -> ((train.csv row, text), ...)
    docs: tuple[_Doc, ...]
    docs_by_intent: dict[str, tuple[_Doc, ...]]  # primary documents of an intent
    family_of: dict[str, str]  # intent -> family
    family_docs: dict[str, tuple[_Doc, ...]]
    family_info: dict[str, dict[str, str]]  # family -> timing / fee / app
    mt_bench: tuple[dict[str, Any], ...]
    arena: tuple[dict[str, Any], ...]  # uid, cluster, prompt, answers {model: text}


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@lru_cache(maxsize=1)
def _data() -> _Data:
    categories = tuple(json.loads((DATA_DIR / "banking77" / "categories.json").read_text("utf-8")))
    by_intent: dict[str, list[tuple[int, str]]] = {c: [] for c in categories}
    with open(DATA_DIR / "banking77" / "train.csv", encoding="utf-8", newline="") as handle:
        for row_no, row in enumerate(csv.DictReader(handle)):
            by_intent[row["category"]].append((row_no, row["text"].strip()))
    kb = json.loads((DATA_DIR / "help_centre_kb.json").read_text("utf-8"))
    docs: list[_Doc] = []
    family_info: dict[str, dict[str, str]] = {}
    for family, spec in kb["families"].items():
        family_info[family] = {k: spec[k] for k in ("timing", "fee", "app")}
        for d in spec["docs"]:
            docs.append(_Doc(d["doc_id"], family, d["title"], d["text"], tuple(d["intents"]),
                             tuple(_SENTENCE_SPLIT.split(d["text"]))))
    docs_by_intent: dict[str, list[_Doc]] = {}
    family_of: dict[str, str] = {}
    family_docs: dict[str, list[_Doc]] = {}
    for doc in docs:
        family_docs.setdefault(doc.family, []).append(doc)
        for intent in doc.intents:
            docs_by_intent.setdefault(intent, []).append(doc)
            family_of[intent] = doc.family
    mt_bench = tuple(
        json.loads(line) for line in (DATA_DIR / "mt_bench" / "question.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    )
    answers: dict[str, dict[str, str]] = {}
    for model in ANSWER_MODEL_BY_VERSION.values():
        path = DATA_DIR / "arena_hard" / f"model_answer_{model}.jsonl"
        for line in path.read_text("utf-8").splitlines():
            obj = json.loads(line)
            text = next(m["content"]["answer"] for m in obj["messages"] if m["role"] == "assistant")
            answers.setdefault(obj["uid"], {})[model] = text
    arena = []
    for line in (DATA_DIR / "arena_hard" / "question.jsonl").read_text("utf-8").splitlines():
        q = json.loads(line)
        arena.append({"uid": q["uid"], "cluster": q["cluster"], "prompt": q["prompt"],
                      "answers": answers[q["uid"]]})
    return _Data(
        categories=categories,
        queries={k: tuple(v) for k, v in by_intent.items()},
        docs=tuple(docs),
        docs_by_intent={k: tuple(v) for k, v in docs_by_intent.items()},
        family_of=family_of,
        family_docs={k: tuple(v) for k, v in family_docs.items()},
        family_info=family_info,
        mt_bench=mt_bench,
        arena=tuple(arena),
    )


def month_index(start: date, day: date) -> int:
    """Calendar months from the month of ``start`` to the month of ``day`` (0 for the first)."""
    return (day.year - start.year) * 12 + day.month - start.month


def available_intents(month: int) -> list[str]:
    """The intents users ask about in the given month index (later launches excluded)."""
    late = {i for m, intents in NEW_INTENTS_BY_MONTH.items() if m > month for i in intents}
    return [c for c in _ranked_intents() if c not in late]


@lru_cache(maxsize=1)
def _ranked_intents() -> tuple[str, ...]:
    categories = _data().categories
    return tuple(HEAD_INTENTS) + tuple(c for c in categories if c not in HEAD_INTENTS)


@lru_cache(maxsize=None)
def _intent_sampler(month: int) -> tuple[tuple[str, ...], tuple[float, ...]]:
    ranked = _ranked_intents()
    allowed = set(available_intents(month))
    weights = [1.0 / (rank + 1) ** ZIPF_EXPONENT if intent in allowed else 0.0
               for rank, intent in enumerate(ranked)]
    return ranked, tuple(accumulate(weights))


@lru_cache(maxsize=1)
def _confusable_partners() -> dict[str, tuple[str, ...]]:
    partners: dict[str, list[str]] = {}
    for group in CONFUSABLE_GROUPS:
        for intent in group:
            partners.setdefault(intent, []).extend(x for x in group if x != intent)
    return {k: tuple(v) for k, v in partners.items()}


@lru_cache(maxsize=1)
def _routing_system() -> str:
    labels = ", ".join(sorted(_data().categories, key=str.lower))
    return (
        f"You route customer messages for {BANK} support. Reply with exactly one intent label "
        "from the list below and nothing else, without explanation.\n\n"
        f"Allowed intents: {labels}"
    )


# ---------------------------------------------------------------------------------------------
# small helpers


def _choice_w(rng: random.Random, items: tuple[Any, ...] | list[Any], cum: tuple[float, ...]) -> Any:
    return items[bisect_right(cum, rng.random() * cum[-1])]


def _cum(weights: dict[str, float]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    return tuple(weights), tuple(accumulate(weights.values()))


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _hex(rng: random.Random, nibbles: int) -> str:
    return f"{rng.getrandbits(4 * nibbles):0{nibbles}x}"


def _iso_ms(epoch_ms: int) -> str:
    days, ms = divmod(epoch_ms, _DAY_MS)
    d = _EPOCH + timedelta(days=days)
    s, ms = divmod(ms, 1000)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d.isoformat()}T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def luhn_valid(number: str) -> bool:
    """True when the digits of ``number`` pass the Luhn check (spaces and dashes ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, dgt in enumerate(reversed(digits)):
        if i % 2 == 1:
            dgt *= 2
            if dgt > 9:
                dgt -= 9
        total += dgt
    return bool(digits) and total % 10 == 0


def _iban_number(text: str) -> int:
    return int("".join(str(int(c, 36)) for c in text))


def iban_valid(iban: str) -> bool:
    """True when the IBAN's mod-97 check digits are right (spaces ignored)."""
    compact = iban.replace(" ", "").upper()
    return len(compact) > 4 and _iban_number(compact[4:] + compact[:4]) % 97 == 1


# ---------------------------------------------------------------------------------------------
# PII


_FIRST_NAMES = (
    "Anna", "James", "Sofia", "Mohammed", "Emily", "Lukas", "Chloe", "Oliver", "Aisha", "Mateo",
    "Hannah", "Wei", "Priya", "Jonas", "Olivia", "Daniel", "Fatima", "Tomasz", "Isabella", "Kenji",
    "Amelia", "Noah", "Leila", "Marco", "Grace", "Ahmed", "Sarah", "Pierre", "Zofia", "Liam",
    "Ingrid", "Diego", "Mei", "Samuel", "Nadia", "Erik",
)
_LAST_NAMES = (
    "Schmidt", "Smith", "Rossi", "Khan", "Kowalski", "Nguyen", "Müller", "Garcia", "O'Brien",
    "Patel", "Johansson", "Dubois", "Novak", "Williams", "Tanaka", "Fernandes", "Murphy", "Ahmed",
    "Jensen", "Moreau", "Brown", "Silva", "Fischer", "Kaya", "Martin", "Costa", "Wright", "Lindqvist",
    "Okafor", "Becker",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
_CARD_PREFIXES = ("400000", "424242", "411111", "555555", "510510", "222300", "401288")
_IBAN_SPECS = (
    # country, bank codes (letters, as in the country's BBAN), digits after them
    ("GB", ("WEST", "NWBK", "MIDL"), 14),
    ("IE", ("AIBK", "BOFI"), 14),
    ("DE", ("",), 18),
    ("NL", ("ABNA", "RABO", "INGB"), 10),
)


def _ascii_name(name: str) -> str:
    return (name.replace("ü", "ue").replace("ö", "oe").replace("ä", "ae").replace("'", "")
            .replace(" ", ""))


def _person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)


def _email(rng: random.Random, first: str, last: str) -> str:
    f, l = _ascii_name(first).lower(), _ascii_name(last).lower()
    domain = rng.choice(_EMAIL_DOMAINS)
    style = rng.randrange(4)
    if style == 0:
        return f"{f}.{l}@{domain}"
    if style == 1:
        return f"{f[0]}{l}{rng.randint(1, 99)}@{domain}"
    if style == 2:
        return f"{f}_{l}{rng.randint(1970, 2006)}@{domain}"
    return f"{f}{rng.randint(10, 99)}@{domain}"


def _phone(rng: random.Random) -> str:
    n3 = rng.randrange(1000)
    n2 = rng.randrange(100)
    style = rng.randrange(9)
    if style == 0:
        return f"+44 20 7946 0{n3:03d}"
    if style == 1:
        return f"+44 7700 900{n3:03d}"
    if style == 2:
        return f"07700 900{n3:03d}"
    if style == 3:
        return f"020 7946 0{n3:03d}"
    area = rng.choice(("415", "212", "312", "646", "206", "617"))
    if style == 4:
        return f"+1 ({area}) 555-01{n2:02d}"
    if style == 5:
        return f"+1 {area}-555-01{n2:02d}"
    if style == 6:
        return f"({area}) 555-01{n2:02d}"
    if style == 7:
        return f"+1{area}55501{n2:02d}"
    return f"+353 20 91{rng.randrange(10)} {rng.randrange(10000):04d}"


def _card(rng: random.Random) -> str:
    body = rng.choice(_CARD_PREFIXES) + "".join(str(rng.randrange(10)) for _ in range(9))
    check = next(str(d) for d in range(10) if luhn_valid(body + str(d)))
    digits = body + check
    style = rng.randrange(3)
    if style == 0:
        return " ".join(digits[i:i + 4] for i in range(0, 16, 4))
    if style == 1:
        return "-".join(digits[i:i + 4] for i in range(0, 16, 4))
    return digits


def _iban(rng: random.Random) -> str:
    country, banks, ndigits = rng.choice(_IBAN_SPECS)
    bban = rng.choice(banks) + "".join(str(rng.randrange(10)) for _ in range(ndigits))
    check = 98 - _iban_number(bban + country + "00") % 97
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:
        return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
    return compact


_PII_KINDS, _PII_CUM = _cum({"name": 0.30, "email": 0.18, "phone": 0.20, "card": 0.12, "iban": 0.08,
                             "name_email": 0.06, "name_phone": 0.06})


def _pii_snippet(rng: random.Random) -> tuple[str, list[dict[str, str]], bool, str | None]:
    """A sentence with PII: (text, items, goes_before_query, first name when a name is given)."""
    kind = _choice_w(rng, _PII_KINDS, _PII_CUM)
    first, last = _person(rng)
    full = f"{first} {last}"
    if kind == "name":
        style = rng.randrange(5)
        if style == 0:
            return f"Hi, this is {full}.", [{"type": "PERSON", "value": full}], True, first
        if style == 1:
            return f"My name is {full}.", [{"type": "PERSON", "value": full}], False, first
        if style == 2:
            return f"- {full}", [{"type": "PERSON", "value": full}], False, first
        if style == 3:
            return f"Thanks, {first}", [{"type": "PERSON", "value": first}], False, first
        return f"Hello, {full} here.", [{"type": "PERSON", "value": full}], True, first
    if kind == "email":
        email = _email(rng, first, last)
        text = rng.choice(("My email is {e}.", "Please reply to {e}", "My account email is {e}.",
                           "(registered with {e})")).format(e=email)
        return text, [{"type": "EMAIL_ADDRESS", "value": email}], False, None
    if kind == "phone":
        phone = _phone(rng)
        text = rng.choice(("Call me on {p}.", "You can reach me at {p}.", "my number is {p}",
                           "Please call me back on {p} asap")).format(p=phone)
        return text, [{"type": "PHONE_NUMBER", "value": phone}], False, None
    if kind == "card":
        card = _card(rng)
        text = rng.choice(("My card number is {c}.", "card no {c}", "It's the card {c}.",
                           "(card {c})")).format(c=card)
        return text, [{"type": "CREDIT_CARD", "value": card}], False, None
    if kind == "iban":
        iban = _iban(rng)
        text = rng.choice(("My IBAN is {i}.", "The account is {i}.", "Refund to IBAN {i} please.")
                          ).format(i=iban)
        return text, [{"type": "IBAN_CODE", "value": iban}], False, None
    if kind == "name_email":
        email = _email(rng, first, last)
        return (f"I'm {full} ({email}).",
                [{"type": "PERSON", "value": full}, {"type": "EMAIL_ADDRESS", "value": email}], True, first)
    phone = _phone(rng)
    return (f"{full}, phone {phone}.",
            [{"type": "PERSON", "value": full}, {"type": "PHONE_NUMBER", "value": phone}], False, first)


def _attach(query: str, snippet: str, before: bool) -> str:
    if before:
        return f"{snippet} {query}"
    return f"{query} {snippet}"


# ---------------------------------------------------------------------------------------------
# quality signals


_NEGATIVE_COMMENTS = (
    "This didn't answer my question.",
    "Useless, I still don't have my card.",
    "Wrong answer.",
    "Too generic, I need a real answer.",
    "I asked about something else.",
    "The app keeps telling me the same thing.",
    "Still waiting, this is the third time I ask.",
)
_POSITIVE_COMMENTS = ("Thanks, that worked!", "Quick and clear.", "Very helpful, thank you.",
                      "Solved, thanks.")


@dataclass
class _Signals:
    thumbs: str | None = None
    abandoned: bool = False
    clarification_requested: bool = False
    parse_error: bool = False
    regenerated: bool = False
    escalated: bool = False
    comment: str | None = None
    comment_pii: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.thumbs is not None:
            out["thumbs"] = self.thumbs
        for key in ("abandoned", "clarification_requested", "parse_error", "regenerated", "escalated"):
            if getattr(self, key):
                out[key] = True
        if self.comment is not None:
            out["comment"] = self.comment
        return out


def _signals(
    rng: random.Random,
    *,
    task: str,
    version: str,
    intent: str | None,
    error: str | None,
    query_words: int,
    prompt_chars: int,
    latency_ms: float,
    parse_error: bool = False,
    clarification: bool = False,
    escalate: bool = False,
    thanks: bool = False,
) -> _Signals:
    s = _Signals(parse_error=parse_error, clarification_requested=clarification, escalated=escalate)
    hard = intent in HARD_INTENTS
    p_down = 0.05 + (0.22 if hard else 0.0) + (0.35 if error else 0.0) + (0.08 if clarification else 0.0)
    if task == "extraction" and version == OLD_VERSION:
        p_down += 0.12
    if task == "intent_routing":
        p_down *= 0.6  # routing is invisible to users: feedback only through the final answer
    if thanks:
        p_down = 0.01
    roll = rng.random()
    if roll < p_down:
        s.thumbs = "down"
    elif roll < p_down + (0.45 if thanks else 0.12):
        s.thumbs = "up"
    p_abandon = 0.03 + (0.06 if latency_ms > 8000 else 0.0)
    if task == "open_question":
        p_abandon += 0.30 * min(1.0, prompt_chars / 1500.0)
    if error:
        p_abandon += 0.05
    s.abandoned = rng.random() < p_abandon
    if task != "extraction" and not clarification and query_words:
        p_clar = 0.35 if query_words <= 3 else 0.10 if query_words <= 5 else 0.02
        s.clarification_requested = rng.random() < p_clar
    s.regenerated = rng.random() < 0.03 + (0.15 if error else 0.0) + (0.05 if s.thumbs == "down" else 0.0)
    if not s.escalated:
        s.escalated = rng.random() < 0.012 + (0.06 if hard else 0.0) + (0.05 if s.thumbs == "down" else 0.0)
    p_comment = 0.08 if s.thumbs else 0.01
    if rng.random() < p_comment:
        if s.thumbs != "up" and rng.random() < 0.35:
            first, last = _person(rng)
            style = rng.randrange(3)
            if style == 0:
                phone = _phone(rng)
                s.comment = f"Please call me on {phone}, this is urgent."
                s.comment_pii = [{"type": "PHONE_NUMBER", "value": phone}]
            elif style == 1:
                email = _email(rng, first, last)
                s.comment = f"Email me at {email} instead."
                s.comment_pii = [{"type": "EMAIL_ADDRESS", "value": email}]
            else:
                full = f"{first} {last}"
                s.comment = f"{full} - still waiting for a callback."
                s.comment_pii = [{"type": "PERSON", "value": full}]
        elif s.thumbs == "up":
            s.comment = rng.choice(_POSITIVE_COMMENTS)
        else:
            s.comment = rng.choice(_NEGATIVE_COMMENTS)
    return s


# ---------------------------------------------------------------------------------------------
# records


@dataclass
class _User:
    user_id: str
    segment: str
    channel: str
    lag: bool  # updates the app late


@dataclass
class _Rec:
    canon: dict[str, Any]
    truth: dict[str, Any]
    fmt: str
    user_id: str
    epoch_ms: int
    tokens_in: int
    tokens_out: int


class _Day:
    """Everything one day's generation needs."""

    def __init__(self, ctx: _Ctx, offset: int):
        self.ctx = ctx
        self.offset = offset
        self.day = ctx.start + timedelta(days=offset)
        self.rng = random.Random(f"{ctx.seed}:day:{offset}")
        self.version = OLD_VERSION if self.day < ctx.cutover else NEW_VERSION
        self.month = month_index(ctx.start, self.day)
        self.day_ms = (self.day - _EPOCH).days * _DAY_MS
        release = offset // 14
        self.app_versions = (f"5.{3 + release}.0", f"5.{3 + max(0, release - 1)}.{1 if release else 0}")


class _Ctx:
    def __init__(self, start: date, days: int, per_day: int, seed: int, cutover: date):
        self.start = start
        self.days = days
        self.per_day = per_day
        self.seed = seed
        self.cutover = cutover
        self.data = _data()
        urng = random.Random(f"{seed}:users")
        n_users = min(50_000, max(100, per_day * days // 5))
        seg_items, seg_cum = _cum(USER_SEGMENTS)
        ch_items, ch_cum = _cum(CHANNELS)
        self.users = [
            _User(f"u_{_hex(urng, 12)}", _choice_w(urng, seg_items, seg_cum),
                  _choice_w(urng, ch_items, ch_cum), urng.random() < 0.3)
            for _ in range(n_users)
        ]
        self.user_cum = tuple(accumulate(1.0 / (i + 1) ** 0.8 for i in range(n_users)))


def _query(rng: random.Random, data: _Data, intent: str) -> tuple[int, str]:
    return rng.choice(data.queries[intent])


def _params(version: str, task: str) -> dict[str, Any]:
    params = dict(_VERSION_PARAMS[version])
    params.update(_TASK_PARAMS.get(task, {}))
    return params


def _latency(rng: random.Random, task: str, version: str, completion: str) -> float:
    ttft = rng.lognormvariate(math.log(_TTFT_MS[task]), 0.35)
    gen = _tokens(completion) * _MS_PER_TOKEN[version] * rng.lognormvariate(0.0, 0.15)
    if version == NEW_VERSION:
        ttft *= 0.9
    return round(ttft + gen, 1)


def _make(
    dctx: _Day,
    *,
    user: _User,
    fmt: str,
    epoch_ms: int,
    request_id: str,
    conversation_id: str,
    turn_index: int,
    messages: list[dict[str, str]],
    completion: str,
    task: str,
    latency: float,
    signals: _Signals,
    truth: dict[str, Any],
    chunks: list[dict[str, Any]] | None = None,
    post: list[dict[str, Any]] | None = None,
) -> _Rec:
    version = dctx.version
    canon: dict[str, Any] = {
        "request_id": request_id,
        "conversation_id": conversation_id,
        "turn_index": turn_index,
        "timestamp": _iso_ms(epoch_ms),
        "messages": messages,
        "completion": completion,
        "model": MODEL,
        "model_version": version,
        "params": _params(version, task),
        "latency_ms": latency,
        "task_type": task,
    }
    if chunks:
        canon["retrieved_chunks"] = chunks
    if post:
        canon["post_processing"] = post
    fb = signals.as_json()
    if fb:
        canon["feedback"] = fb
    canon["user_segment"] = user.segment
    canon["metadata"] = {"app_version": dctx.app_versions[1 if user.lag else 0], "channel": user.channel}
    pii = list(truth.pop("pii"))
    pii += [{**item, "field": "feedback.comment", "turn_index": turn_index} for item in signals.comment_pii]
    full_truth = {
        "request_id": request_id,
        "conversation_id": conversation_id,
        "turn_index": turn_index,
        "timestamp": canon["timestamp"],
        "date": dctx.day.isoformat(),
        "format": fmt,
        "file": None,
        "line": None,
        "task_type": task,
        "model_version": version,
        "user_id": user.user_id,
        "source": truth.get("source"),
        "source_id": truth.get("source_id"),
        "intent": truth.get("intent"),
        "predicted_intent": truth.get("predicted_intent"),
        "extraction": truth.get("extraction"),
        "relevant_doc_ids": truth.get("relevant_doc_ids", []),
        "retrieval_hit": truth.get("retrieval_hit"),
        "error": truth.get("error"),
        "turn_intent": truth.get("turn_intent"),
        "followup": truth.get("followup"),
        "pii": pii,
    }
    tokens_in = sum(_tokens(m["content"]) + 4 for m in messages) + 3
    return _Rec(canon, full_truth, fmt, user.user_id, epoch_ms, tokens_in, _tokens(completion))


def _pii_items(items: list[dict[str, str]], fld: str, turn: int) -> list[dict[str, Any]]:
    return [{**item, "field": fld, "turn_index": turn} for item in items]


# ---- intent routing ---------------------------------------------------------------------------


def _routing(dctx: _Day, unit: dict[str, Any]) -> list[_Rec]:
    rng, data, version = dctx.rng, dctx.ctx.data, dctx.version
    intent = unit["intent"]
    row, query = _query(rng, data, intent)
    user_text, pii = query, []
    if rng.random() < _PII_PROB:
        snippet, items, before, _first = _pii_snippet(rng)
        user_text = _attach(query, snippet, before)
        pii = _pii_items(items, "messages", 0)
    partners = _confusable_partners().get(intent, ())
    p_err = (0.30 if partners else 0.05) if version == OLD_VERSION else (0.14 if partners else 0.02)
    label, error = intent, None
    if rng.random() < p_err:
        error = "wrong_intent"
        if partners and rng.random() < 0.8:
            label = rng.choice(partners)
        else:
            label = rng.choice([c for c in data.categories if c != intent])
    completion, ok = label, True
    if rng.random() < (0.03 if version == OLD_VERSION else 0.005):
        ok = False
        error = error or "invalid_label"
        completion = rng.choice((f"Intent: {label}", f"{label}.", f"The intent is {label}",
                                 label.replace("_", " ")))
    post = [{"name": "label_check", "ok": True}] if ok else [
        {"name": "label_check", "ok": False, "detail": "not an allowed intent label"}]
    latency = _latency(rng, "intent_routing", version, completion)
    signals = _signals(rng, task="intent_routing", version=version, intent=intent, error=error,
                       query_words=len(query.split()), prompt_chars=len(user_text),
                       latency_ms=latency, parse_error=not ok)
    messages = [{"role": "system", "content": _routing_system()}, {"role": "user", "content": user_text}]
    truth = {"source": "banking77", "source_id": row, "intent": intent,
             "predicted_intent": label if ok else None, "error": error, "pii": pii}
    return [_make(dctx, user=unit["user"], fmt=unit["fmt"], epoch_ms=unit["t0"],
                  request_id=unit["ids"][0], conversation_id=unit["conv"], turn_index=0,
                  messages=messages, completion=completion, task="intent_routing", latency=latency,
                  signals=signals, truth=truth, post=post)]


# ---- extraction -------------------------------------------------------------------------------

# code, weight, symbol, words, uses a decimal comma sometimes, no minor unit
_CURRENCIES = (
    ("EUR", 40, "€", ("euros", "euro", "EUR"), True, False),
    ("GBP", 25, "£", ("pounds", "quid", "GBP"), False, False),
    ("USD", 15, "$", ("dollars", "US dollars", "USD"), False, False),
    ("CHF", 7, None, ("Swiss francs", "francs", "CHF"), False, False),
    ("PLN", 7, "zł", ("zloty", "złoty", "PLN"), True, False),
    ("SEK", 3, None, ("Swedish kronor", "kronor", "SEK"), True, False),
    ("JPY", 3, "¥", ("yen", "JPY"), False, True),
)
_CURRENCY_CUM = tuple(accumulate(c[1] for c in _CURRENCIES))
_RELATIONS = (
    "my landlord", "my sister", "my brother", "my mum", "my dad", "my flatmate", "my friend",
    "my savings account", "the plumber", "my accountant", "my daughter", "my son", "the nursery",
    "my cleaner", "my partner", "the builder", "my grandma",
)
_MONTHS = tuple(calendar.month_name)[1:]
_MONTHS_ABBR = tuple(calendar.month_abbr)[1:]
_WEEKDAYS = tuple(calendar.day_name)
_EXTRACTION_TEMPLATES = (
    "Please send {amt} to {rcp} {when}.",
    "Can you transfer {amt} to {rcp} {when}?",
    "I need to pay {rcp} {amt} {when}",
    "Schedule a payment of {amt} to {rcp} for {bare}.",
    "send {rcp} {amt} {when} pls",
    "Transfer {amt} to {rcp}, date: {bare}",
    "{When}, send {amt} to {rcp}.",
    "I'd like to make a transfer of {amt} to {rcp} {when}. Thanks!",
    "hey can u move {amt} to {rcp} {when}",
    "Pay {rcp} {amt} {when} for the rent.",
    "Set up a one-off transfer: {amt} to {rcp}, {bare}.",
    "Please wire {amt} to {rcp} {when}, reference: invoice 2231",
)


def _fmt_amount_number(cents: int, style: str, force_cents: bool) -> str:
    units, minor = divmod(cents, 100)
    if style == "comma":
        whole = f"{units:,}"
    elif style == "euro":
        whole = f"{units:,}".replace(",", ".")
    else:
        whole = str(units)
    sep = "," if style == "euro" else "."
    if minor or force_cents:
        return f"{whole}{sep}{minor:02d}"
    return whole


def _amount_text(rng: random.Random, cur: tuple[Any, ...], cents: int) -> tuple[str, str]:
    """The amount as a customer would type it, and a label of the format used."""
    code, _w, sym, words, decimal_comma, _zero = cur
    style = "euro" if decimal_comma and rng.random() < 0.3 else ("comma" if rng.random() < 0.5 else "plain")
    num = _fmt_amount_number(cents, style, force_cents=rng.random() < 0.12)
    options = ["code_after", "code_before", "word"]
    if sym:
        options += ["symbol", "symbol"]
    if cents % 50_000 == 0 and cents >= 100_000 and code != "JPY":
        options.append("k")
    kind = rng.choice(options)
    if kind == "k":
        return f"{cents / 100_000:g}k {code}", kind
    if kind == "code_after":
        text = f"{num} {code}"
    elif kind == "code_before":
        text = f"{code} {num}"
    elif kind == "word":
        text = f"{num} {rng.choice(words)}"
    elif code == "PLN" or (code == "EUR" and (style == "euro" or rng.random() < 0.3)):
        text = f"{num} {sym}" if rng.random() < 0.6 else f"{num}{sym}"  # 250 €, 1.250,50€, 99 zł
    else:
        text = f"{sym}{num}"
    # "_decimal_comma": written the continental way (1.250,50); only when it shows in the number
    return text, f"{kind}_decimal_comma" if style == "euro" and num != str(cents // 100) else kind


def _date_text(rng: random.Random, today: date, target: date) -> tuple[str, str, str]:
    """(phrase with preposition, bare phrase, format name) for ``target`` as seen from ``today``."""
    delta = (target - today).days
    d, m, y = target.day, target.month, target.year
    options: list[str] = ["dmy_long", "mdy_long", "ordinal_of", "dmy_year", "abbr", "numeric_dmy", "iso"]
    if delta == 0:
        options += ["today"] * 4
    if delta == 1:
        options += ["tomorrow"] * 5
    if 1 <= delta <= 7:
        options += ["next_weekday"] * 3
    if 2 <= delta <= 10:
        options.append("in_days")
    if 0 < delta < 28:
        options.append("day_of_month")
    kind = rng.choice(options)
    if kind == "today":
        return "today", "today", kind
    if kind == "tomorrow":
        return "tomorrow", "tomorrow", kind
    if kind == "next_weekday":
        bare = f"next {_WEEKDAYS[target.weekday()]}"
        return bare, bare, kind
    if kind == "in_days":
        return f"in {delta} days", f"{delta} days from now", kind
    if kind == "day_of_month":
        return f"on the {_ordinal(d)}", f"the {_ordinal(d)}", kind
    if kind == "dmy_long":
        bare = f"{d} {_MONTHS[m - 1]}"
    elif kind == "mdy_long":
        bare = f"{_MONTHS[m - 1]} {_ordinal(d) if rng.random() < 0.5 else d}"
    elif kind == "ordinal_of":
        bare = f"the {_ordinal(d)} of {_MONTHS[m - 1]}"
    elif kind == "dmy_year":
        bare = f"{d} {_MONTHS[m - 1]} {y}"
    elif kind == "abbr":
        bare = f"{d} {_MONTHS_ABBR[m - 1]}"
    elif kind == "numeric_dmy":
        bare = f"{d:02d}/{m:02d}/{y}" if rng.random() < 0.6 else f"{d}/{m}/{y}"
    else:
        bare = target.isoformat()
    return f"on {bare}", bare, kind


def _amount_json(cents: int) -> int | float:
    return cents // 100 if cents % 100 == 0 else cents / 100


def _extraction(dctx: _Day, unit: dict[str, Any]) -> list[_Rec]:
    rng, version = dctx.rng, dctx.version
    today = dctx.day
    cur = _CURRENCIES[bisect_right(_CURRENCY_CUM, rng.random() * _CURRENCY_CUM[-1])]
    code = cur[0]
    if cur[5]:
        cents = rng.randrange(5, 3000) * 100 * 100
    else:
        units = math.exp(rng.uniform(math.log(5), math.log(5000)))
        if rng.random() < 0.7:
            step = 50 if units > 500 else 10 if units > 100 else 1
            cents = max(1, round(units / step)) * step * 100
        else:
            cents = round(units * 100)
    roll = rng.random()
    delta = 0 if roll < 0.05 else 1 if roll < 0.2 else rng.randint(2, 7) if roll < 0.5 else rng.randint(8, 45)
    target = today + timedelta(days=delta)
    amt, amount_format = _amount_text(rng, cur, cents)
    when, bare, date_format = _date_text(rng, today, target)
    pii: list[dict[str, Any]] = []
    if rng.random() < _PII_PROB:
        first, last = _person(rng)
        full = f"{first} {last}"
        style = rng.randrange(10)
        if style < 6:
            rcp = full
            items = [{"type": "PERSON", "value": full}]
        elif style < 8:
            iban = _iban(rng)
            rcp = f"IBAN {iban}"
            items = [{"type": "IBAN_CODE", "value": iban}]
        else:
            iban = _iban(rng)
            rcp = f"{full} ({iban})"
            items = [{"type": "PERSON", "value": full}, {"type": "IBAN_CODE", "value": iban}]
        pii = _pii_items(items, "messages", 0)
    else:
        rcp = rng.choice(_RELATIONS)
    template_no = rng.randrange(len(_EXTRACTION_TEMPLATES))
    template = _EXTRACTION_TEMPLATES[template_no]
    text = template.format(amt=amt, rcp="\x00", when=when, bare=bare, When=when[:1].upper() + when[1:])
    if rng.random() < 0.1:
        text = text.lower()  # typed in a hurry (names and IBANs stay as typed: the truth has them verbatim)
    text = text.replace("\x00", rcp)
    truth_fields = {"amount": _amount_json(cents), "currency": code, "date": target.isoformat()}
    out = dict(truth_fields)
    hard_format = amount_format == "k" or amount_format.endswith("_decimal_comma") or date_format in (
        "next_weekday", "numeric_dmy", "day_of_month", "in_days")
    p_wrong = (0.08 if version == OLD_VERSION else 0.03) * (2.0 if hard_format else 0.7)
    p_invalid = 0.06 if version == OLD_VERSION else 0.01
    error = None
    if rng.random() < p_wrong:
        error = "wrong_fields"
        mistakes = []
        if date_format == "numeric_dmy" and target.day <= 12 and target.day != target.month:
            mistakes.append("swap_day_month")
        if date_format == "next_weekday":
            mistakes.append("week_late")
        if amount_format.endswith("_decimal_comma") and cents >= 100_000:
            mistakes.append("euro_thousands")
        if amount_format == "k":
            mistakes.append("drop_k")
        if cents % 100:
            mistakes.append("drop_cents")
        mistakes += ["day_off", "currency"]
        mistake = rng.choice(mistakes)
        if mistake == "swap_day_month":
            out["date"] = date(target.year, target.day, target.month).isoformat()
        elif mistake == "week_late":
            out["date"] = (target + timedelta(days=7)).isoformat()
        elif mistake == "euro_thousands":
            out["amount"] = _amount_json(cents // 1000)
        elif mistake == "drop_k":
            out["amount"] = _amount_json(cents // 1000)
        elif mistake == "drop_cents":
            out["amount"] = cents // 100
        elif mistake == "day_off":
            out["date"] = (target + timedelta(days=rng.choice((-1, 1)))).isoformat()
        else:
            out["currency"] = {"EUR": "USD", "GBP": "EUR", "USD": "EUR", "CHF": "EUR", "PLN": "EUR",
                               "SEK": "NOK", "JPY": "CNY"}[code]
    body = json.dumps(out)
    completion = body
    post: list[dict[str, Any]]
    parse_error = False
    if rng.random() < p_invalid:
        error = "invalid_json"
        style = rng.randrange(5)
        if style == 0:
            completion = f"```json\n{body}\n```"
        elif style == 1:
            completion = f"Sure! Here are the transfer details: {body}"
        elif style == 2:
            completion = body.replace('"', "'")
        elif style == 3:
            completion = body[:-1] + ",}"
        else:
            completion = body[: rng.randint(8, len(body) - 4)]
        try:
            json.loads(completion)
            detail = None
        except json.JSONDecodeError as err:
            detail = str(err)
        parse_error = True
        post = [{"name": "json_parse", "ok": False, "detail": detail}]
    else:
        post = [{"name": "json_parse", "ok": True}]
    latency = _latency(rng, "extraction", version, completion)
    signals = _signals(rng, task="extraction", version=version, intent=None, error=error,
                       query_words=len(text.split()), prompt_chars=len(text), latency_ms=latency,
                       parse_error=parse_error)
    messages = [{"role": "system", "content": _EXTRACTION_SYSTEM.replace("{today}", today.isoformat())},
                {"role": "user", "content": text}]
    truth = {"source": "template", "source_id": f"transfer-{template_no:02d}",
             "extraction": {**truth_fields, "amount_format": amount_format, "date_format": date_format},
             "error": error, "pii": pii}
    return [_make(dctx, user=unit["user"], fmt=unit["fmt"], epoch_ms=unit["t0"],
                  request_id=unit["ids"][0], conversation_id=unit["conv"], turn_index=0,
                  messages=messages, completion=completion, task="extraction", latency=latency,
                  signals=signals, truth=truth, post=post)]


# ---- RAG ----------------------------------------------------------------------------------------

_CLARIFY = (
    "Could you tell me a bit more so I can help? For example, what happened and when?",
    "I'd like to help with that. Can you give me a few more details about the problem?",
    "Sorry, I'm not sure I understood. Is this about a card, a transfer or a top-up?",
)
_RAG_OPENERS = ("", "Thanks for reaching out. ", "I can help with that. ", "Good question. ",
                "Sorry to hear that. ")
_RAG_CLOSERS = ("", " Is there anything else I can help you with?", " Let me know if you have other questions.")


def _retrieve(rng: random.Random, data: _Data, intent: str, hit: bool) -> list[tuple[_Doc, float]]:
    k = rng.choice((2, 3, 3, 4))
    primary = data.docs_by_intent[intent]
    family = data.family_of[intent]
    others = [d for d in data.docs if d.family != family]
    picked: list[_Doc] = []
    if hit:
        picked.append(rng.choice(primary))
        siblings = [d for d in data.family_docs[family] if d not in picked]
        if siblings and rng.random() < 0.5:
            picked.append(rng.choice(siblings))
    while len(picked) < k:
        doc = rng.choice(others)
        if doc not in picked:
            picked.append(doc)
    if hit:
        scores = [rng.uniform(0.76, 0.95)]
        scores += [rng.uniform(0.60, 0.80) if d.family == family else rng.uniform(0.32, 0.62)
                   for d in picked[1:]]
    else:
        scores = [rng.uniform(0.45, 0.72) for _ in picked]
    pairs = sorted(zip(picked, (round(s, 3) for s in scores)), key=lambda p: -p[1])
    return pairs


def _grounded_answer(rng: random.Random, version: str, doc: _Doc, first_name: str | None,
                     cite: bool = True) -> str:
    """A short answer made of the first sentences of ``doc`` (the new version cites the doc id)."""
    n = 2 if len(doc.sentences) > 1 and rng.random() < 0.7 else 1
    answer = rng.choice(_RAG_OPENERS) + " ".join(doc.sentences[:n]) + rng.choice(_RAG_CLOSERS)
    if first_name and rng.random() < 0.5:
        answer = f"Hi {first_name}! {answer}"
    if cite and version == NEW_VERSION:
        answer += f" [{doc.doc_id}]"
    return answer


def _rag(dctx: _Day, unit: dict[str, Any]) -> list[_Rec]:
    rng, data, version = dctx.rng, dctx.ctx.data, dctx.version
    intent = unit["intent"]
    row, query = _query(rng, data, intent)
    user_text, pii, first = query, [], None
    if rng.random() < _PII_PROB:
        snippet, items, before, first = _pii_snippet(rng)
        user_text = _attach(query, snippet, before)
        pii = _pii_items(items, "messages", 0)
    hit = rng.random() < (0.78 if intent in HARD_INTENTS else 0.92)
    chunks = _retrieve(rng, data, intent, hit)
    relevant = [d.doc_id for d in data.docs_by_intent[intent]]
    words = len(query.split())
    clarify = words <= 3 and rng.random() < 0.4
    error = None if hit else "retrieval_miss"
    if clarify:
        completion = rng.choice(_CLARIFY)
    elif hit:
        completion = _grounded_answer(rng, version, chunks[0][0], first)
    elif version == OLD_VERSION:
        completion = _grounded_answer(rng, version, chunks[0][0], first)  # answers from a wrong doc
    else:
        completion = ("I'm sorry, I couldn't find information about that in our help centre. "
                      "Would you like me to connect you with one of our agents?")
    if first and completion.startswith(f"Hi {first}"):
        pii.append({"type": "PERSON", "value": first, "field": "completion", "turn_index": 0})
    latency = _latency(rng, "rag_qa", version, completion)
    signals = _signals(rng, task="rag_qa", version=version, intent=intent, error=error,
                       query_words=words, prompt_chars=len(user_text), latency_ms=latency,
                       clarification=clarify)
    context = "\n".join(f"[{d.doc_id}] {d.text}" for d, _s in chunks)
    system = f"{_SUPPORT_SYSTEM[version]}\n{_RAG_INSTRUCTION}\n\nUse the following context:\n{context}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user_text}]
    truth = {"source": "banking77", "source_id": row, "intent": intent, "relevant_doc_ids": relevant,
             "retrieval_hit": hit, "error": error, "pii": pii}
    chunk_json = [{"doc_id": d.doc_id, "text": d.text, "score": s} for d, s in chunks]
    return [_make(dctx, user=unit["user"], fmt=unit["fmt"], epoch_ms=unit["t0"],
                  request_id=unit["ids"][0], conversation_id=unit["conv"], turn_index=0,
                  messages=messages, completion=completion, task="rag_qa", latency=latency,
                  signals=signals, truth=truth, chunks=chunk_json)]


# ---- open questions -----------------------------------------------------------------------------

_MT_BODIES = {
    "writing": (
        "Here is a first draft.\n\nThe piece opens with a short, vivid scene, moves on to "
        "the main points in three paragraphs and ends with a clear call to action.",
        "Sure! Below is a draft you can adapt.\n\nEvery good story starts with a "
        "moment of surprise, and this one is no exception. From the first line, the reader should "
        "feel why the subject matters.",
    ),
    "roleplay": (
        "*stays in character* Well, that's an interesting question! Let me put it this way: I'd "
        "approach it with confidence, a bit of humour and a clear plan.",
        "Of course, I'll play along. In my view, the key is to stay calm, listen first and then "
        "answer with conviction.",
    ),
    "reasoning": (
        "Let's reason step by step.\n\n1. Restate what we know: {topic}\n2. Check each possibility "
        "against the constraints.\n3. Only one option is consistent with all of them, so that is "
        "the answer.",
        "Step by step: first list the facts given in the question, then eliminate the options "
        "that contradict them. The remaining option answers the question.",
    ),
    "math": (
        "Let's solve it step by step.\n\nWrite down the quantities in the problem, set up the "
        "equation and simplify. Substituting back confirms the result satisfies the conditions.",
        "We can set up an equation from the problem statement and solve for the unknown. "
        "Checking the solution in the original statement shows it is consistent.",
    ),
    "coding": (
        "Here's an implementation:\n\n```python\ndef solve(data):\n    # handle the empty case first\n"
        "    if not data:\n        return None\n    result = []\n    for item in data:\n"
        "        result.append(item)\n    return result\n```\n\nThe function runs in O(n) time.",
        "You can do this with a single pass over the input:\n\n```python\ndef solve(items):\n"
        "    seen = {}\n    for i, x in enumerate(items):\n        seen[x] = i\n    return seen\n```\n\n"
        "Time complexity O(n), memory O(n).",
    ),
    "extraction": (
        "Here is the extracted information:\n\n- Item 1: see the first paragraph\n- Item 2: see "
        "the second paragraph\n\nLet me know if you need it as JSON.",
        '```json\n{"results": [{"name": "first entry", "value": "..."}, {"name": "second entry", '
        '"value": "..."}]}\n```',
    ),
    "stem": (
        "In short, it comes down to one idea.\n\nThe underlying principle is that the system tends toward the state "
        "of lowest energy, and the observations follow from that.",
        "Good question. The explanation rests on a few basic principles: conservation of energy, "
        "the structure of the system involved and the conditions it operates under.",
    ),
    "humanities": (
        "This is a rich topic. Scholars usually point to three factors: economic pressure, "
        "political institutions and cultural change.",
        "There are several perspectives. On the one hand, the traditional view emphasises "
        "continuity; on the other, recent scholarship stresses the role of ordinary people.",
    ),
}


def _topic(text: str) -> str:
    first = _SENTENCE_SPLIT.split(text.strip())[0]
    return first if len(first) <= 120 else first[:117].rsplit(" ", 1)[0] + "..."


def _open_question(dctx: _Day, unit: dict[str, Any]) -> list[_Rec]:
    rng, data, version = dctx.rng, dctx.ctx.data, dctx.version
    if rng.random() < 0.6:
        q = rng.choice(data.arena)
        prompt = q["prompt"]
        completion = q["answers"][ANSWER_MODEL_BY_VERSION[version]]
        source, source_id = "arena_hard", q["uid"]
    else:
        q = rng.choice(data.mt_bench)
        prompt = q["turns"][0]
        body = rng.choice(_MT_BODIES.get(q["category"], _MT_BODIES["stem"])).replace("{topic}", _topic(prompt))
        if version == NEW_VERSION:
            completion = f"{body}\n\nIf you'd like, I can go into more detail on any part of this."
        else:
            completion = body
        source, source_id = "mt_bench", q["question_id"]
    latency = _latency(rng, "open_question", version, completion)
    signals = _signals(rng, task="open_question", version=version, intent=None, error=None,
                       query_words=len(prompt.split()), prompt_chars=len(prompt), latency_ms=latency)
    messages = [{"role": "system", "content": _SUPPORT_SYSTEM[version]}, {"role": "user", "content": prompt}]
    truth = {"source": source, "source_id": source_id, "pii": []}
    return [_make(dctx, user=unit["user"], fmt=unit["fmt"], epoch_ms=unit["t0"],
                  request_id=unit["ids"][0], conversation_id=unit["conv"], turn_index=0,
                  messages=messages, completion=completion, task="open_question", latency=latency,
                  signals=signals, truth=truth)]


# ---- multi-turn ---------------------------------------------------------------------------------

_FOLLOWUPS = {
    "didnt_help": ("That didn't help, what else can I do?", "That doesn't answer my question.",
                   "I already tried that and it still doesn't work.", "ok but what else can I do?",
                   "still not working"),
    "timing": ("How long will it take?", "How long does that usually take?", "When can I expect it?",
               "how many days?"),
    "fee": ("Is there a fee for that?", "Will I be charged for this?", "Does it cost anything?"),
    "app": ("Can I do this in the app?", "Where do I find that in the app?",
            "Is there a way to do it online?"),
    "human": ("Can I talk to a human?", "I want to speak to a real person.", "agent please",
              "Can you put me through to someone?"),
    "thanks": ("Ok, thanks!", "Great, that worked. Thank you.", "thanks", "Perfect, thanks for your help."),
    "switch": (),
}
_FOLLOWUP_KINDS, _FOLLOWUP_CUM = _cum({"didnt_help": 0.24, "timing": 0.2, "fee": 0.12, "app": 0.1,
                                       "human": 0.08, "thanks": 0.1, "switch": 0.16})


def _followup_answer(rng: random.Random, data: _Data, kind: str, intent: str, used: list[_Doc]) -> str:
    family = data.family_of[intent]
    info = data.family_info[family]
    if kind == "didnt_help":
        fresh = [d for d in data.family_docs[family] if d not in used]
        if fresh:
            doc = rng.choice(fresh)
            used.append(doc)
            alt = doc.sentences[0]
        else:
            alt = used[0].sentences[-1] if used else info["app"]
        return (f"I'm sorry that didn't solve it. {alt} If it still doesn't work, I can connect you "
                "with one of our specialists.")
    if kind == "timing":
        return info["timing"]
    if kind == "fee":
        return info["fee"]
    if kind == "app":
        return f"Yes. {info['app']}"
    if kind == "human":
        return (f"Of course. I'm transferring you to a support agent now; the current waiting time "
                f"is about {rng.randint(2, 25)} minutes.")
    return rng.choice(("You're welcome! Is there anything else I can help you with?",
                       "Glad I could help. Have a nice day!"))


def _multi_turn(dctx: _Day, unit: dict[str, Any]) -> list[_Rec]:
    rng, data, version = dctx.rng, dctx.ctx.data, dctx.version
    n_turns = unit["turns"]
    intent = unit["intent"]
    system = _SUPPORT_SYSTEM[version]
    history: list[dict[str, str]] = [{"role": "system", "content": system}]
    carried: list[dict[str, Any]] = []  # PII already in the history
    recs: list[_Rec] = []
    t = unit["t0"]
    used: list[_Doc] = []
    first_name: str | None = None
    topic_intent = intent
    for turn in range(n_turns):
        new_pii: list[dict[str, Any]] = []
        escalate = thanks = clarify = False
        error = None
        source, source_id, turn_intent = "template", None, None
        kind = "question"
        if turn == 0:
            row, query = _query(rng, data, intent)
            source, source_id, turn_intent = "banking77", row, intent
        else:
            kind = _choice_w(rng, _FOLLOWUP_KINDS, _FOLLOWUP_CUM)
            if kind == "thanks" and turn < n_turns - 1:
                kind = "timing"
            if kind == "switch":
                family = data.family_of[topic_intent]
                related = [i for i in available_intents(dctx.month) if data.family_of[i] == family
                           and i != topic_intent]
                topic_intent = rng.choice(related) if related and rng.random() < 0.7 else \
                    _choice_w(rng, *_intent_sampler(dctx.month))
                row, query = _query(rng, data, topic_intent)
                source, source_id, turn_intent = "banking77", row, topic_intent
            else:
                query = rng.choice(_FOLLOWUPS[kind])
        user_text = query
        if rng.random() < _PII_PROB:
            snippet, items, before, name = _pii_snippet(rng)
            user_text = _attach(query, snippet, before)
            new_pii = _pii_items(items, "messages", turn)
            first_name = first_name or name
        words = len(query.split())
        if kind in ("question", "switch"):
            clarify = turn == 0 and words <= 3 and rng.random() < 0.4
            if clarify:
                completion = rng.choice(_CLARIFY)
            else:
                doc = rng.choice(data.docs_by_intent[topic_intent])
                used.append(doc)
                # no retrieval in chat, so no doc id to cite
                completion = _grounded_answer(rng, version, doc, first_name if turn == 0 else None,
                                              cite=False)
        else:
            completion = _followup_answer(rng, data, kind, topic_intent, used)
            escalate = kind == "human"
            thanks = kind == "thanks"
            if kind == "didnt_help":
                error = "unresolved"
        comp_pii = []
        if first_name and completion.startswith(f"Hi {first_name}"):
            comp_pii = [{"type": "PERSON", "value": first_name, "field": "completion", "turn_index": turn}]
        messages = history + [{"role": "user", "content": user_text}]
        latency = _latency(rng, "multi_turn", version, completion)
        signals = _signals(rng, task="multi_turn", version=version, intent=topic_intent, error=error,
                           query_words=words if kind in ("question", "switch") else 0,
                           prompt_chars=len(user_text), latency_ms=latency, clarification=clarify,
                           escalate=escalate, thanks=thanks)
        truth = {"source": source, "source_id": source_id, "intent": topic_intent,
                 "turn_intent": turn_intent, "followup": None if kind == "question" else kind,
                 "error": error, "pii": carried + new_pii + comp_pii}
        recs.append(_make(dctx, user=unit["user"], fmt=unit["fmt"], epoch_ms=t,
                          request_id=unit["ids"][turn], conversation_id=unit["conv"], turn_index=turn,
                          messages=messages, completion=completion, task="multi_turn", latency=latency,
                          signals=signals, truth=truth))
        history = messages + [{"role": "assistant", "content": completion}]
        carried = carried + new_pii + [{**p, "field": "messages"} for p in comp_pii]
        if turn < len(unit["gaps"]):
            t += int(latency) + unit["gaps"][turn]
    return recs


_BUILDERS = {
    "intent_routing": _routing,
    "extraction": _extraction,
    "rag_qa": _rag,
    "open_question": _open_question,
    "multi_turn": _multi_turn,
}


# ---------------------------------------------------------------------------------------------
# one day

_TURNS, _TURNS_CUM = (2, 3, 4), tuple(accumulate((0.5, 0.3, 0.2)))
_MEAN_TURNS = 2 * 0.5 + 3 * 0.3 + 4 * 0.2


@lru_cache(maxsize=1)
def _unit_sampler() -> tuple[tuple[str, ...], tuple[float, ...]]:
    # A multi-turn unit yields ~2.7 records; weight it down so its share of *records* is right.
    weights = {t: (s / _MEAN_TURNS if t == "multi_turn" else s) for t, s in TASK_SHARES.items()}
    return _cum(weights)


def _time_of_day_ms(rng: random.Random) -> int:
    if rng.random() < 0.82:
        hour = rng.gauss(14.0, 3.6)
        while not 0.0 <= hour < 24.0:
            hour = rng.gauss(14.0, 3.6)
    else:
        hour = rng.uniform(0.0, 24.0)
    return min(_DAY_MS - 1, int(hour * 3_600_000))


def _generate_day(ctx: _Ctx, offset: int) -> list[_Rec]:
    dctx = _Day(ctx, offset)
    rng = dctx.rng
    tasks, task_cum = _unit_sampler()
    formats, fmt_cum = _cum(FORMAT_SHARES)
    intents, intent_cum = _intent_sampler(dctx.month)
    recs: list[_Rec] = []
    count = 0
    while count < ctx.per_day:
        remaining = ctx.per_day - count
        task = _choice_w(rng, tasks, task_cum)
        turns = 1
        if task == "multi_turn":
            if remaining < 2:
                continue
            turns = min(_choice_w(rng, _TURNS, _TURNS_CUM), remaining)
        user = ctx.users[bisect_right(ctx.user_cum, rng.random() * ctx.user_cum[-1])]
        gaps = [rng.randint(8_000, 120_000) for _ in range(turns - 1)]
        t0 = _time_of_day_ms(rng)
        # Keep a conversation inside its UTC day (latency adds at most a minute per turn here).
        budget = sum(gaps) + 120_000 * turns
        t0 = min(t0, _DAY_MS - 1 - budget) if turns > 1 else t0
        unit = {
            "user": user,
            "fmt": _choice_w(rng, formats, fmt_cum),
            "t0": dctx.day_ms + max(0, t0),
            "conv": f"conv_{_hex(rng, 16)}",
            "ids": [f"req_{_hex(rng, 20)}" for _ in range(turns)],
            "intent": _choice_w(rng, intents, intent_cum),
            "turns": turns,
            "gaps": gaps,
        }
        new = _BUILDERS[task](dctx, unit)
        recs.extend(new)
        count += len(new)
    return recs


# ---------------------------------------------------------------------------------------------
# formats


def _openai_obj(rec: _Rec, rng: random.Random) -> dict[str, Any]:
    c = rec.canon
    params = c["params"]
    meta = {
        "request_id": c["request_id"],
        "conversation_id": c["conversation_id"],
        "turn_index": str(c["turn_index"]),
        "task_type": c["task_type"],
        "user_segment": c["user_segment"],
        **{k: str(v) for k, v in c["metadata"].items()},
    }
    obj: dict[str, Any] = {
        "request": {
            "model": c["model"],
            "messages": [{"role": m["role"], "content": m["content"]} for m in c["messages"]],
            "temperature": params["temperature"],
            "max_tokens": params["max_tokens"],
            "top_p": params["top_p"],
            "user": rec.user_id,
            "metadata": meta,
        },
        "response": {
            "id": f"chatcmpl-{_hex(rng, 24)}",
            "object": "chat.completion",
            "created": rec.epoch_ms // 1000,
            "model": c["model_version"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c["completion"]},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": rec.tokens_in, "completion_tokens": rec.tokens_out,
                      "total_tokens": rec.tokens_in + rec.tokens_out},
        },
        "latency_ms": c["latency_ms"],
        "timestamp": c["timestamp"],
    }
    for key in ("retrieved_chunks", "post_processing", "feedback"):
        if key in c:
            obj[key] = c[key]
    return obj


def _sv(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _iv(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)}}


def _dv(key: str, value: float) -> dict[str, Any]:
    return {"key": key, "value": {"doubleValue": float(value)}}


def _parts(text: str) -> list[dict[str, str]]:
    return [{"type": "text", "content": text}]


def _otel_spans(rec: _Rec, rng: random.Random) -> list[dict[str, Any]]:
    c = rec.canon
    trace_id = _hex(rng, 32)
    http_id, llm_id = _hex(rng, 16), _hex(rng, 16)
    start_ns = rec.epoch_ms * 1_000_000
    end_ns = start_ns + int(round(c["latency_ms"] * 1_000_000))
    messages = c["messages"]
    system = [m["content"] for m in messages if m["role"] == "system"]
    inputs = [{"role": m["role"], "parts": _parts(m["content"])} for m in messages if m["role"] != "system"]
    params = c["params"]
    attrs = [
        _sv("gen_ai.operation.name", "chat"),
        _sv("gen_ai.provider.name", "openai"),
        _sv("gen_ai.request.model", c["model"]),
        _dv("gen_ai.request.temperature", params["temperature"]),
        _iv("gen_ai.request.max_tokens", params["max_tokens"]),
        _dv("gen_ai.request.top_p", params["top_p"]),
        _sv("gen_ai.response.model", c["model_version"]),
        _sv("gen_ai.response.id", c["request_id"]),
        {"key": "gen_ai.response.finish_reasons", "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}}},
        _sv("gen_ai.conversation.id", c["conversation_id"]),
        _iv("gen_ai.usage.input_tokens", rec.tokens_in),
        _iv("gen_ai.usage.output_tokens", rec.tokens_out),
    ]
    if system:
        attrs.append(_sv("gen_ai.system_instructions", _dumps([{"type": "text", "content": s} for s in system])))
    attrs += [
        _sv("gen_ai.input.messages", _dumps(inputs)),
        _sv("gen_ai.output.messages", _dumps([{"role": "assistant", "parts": _parts(c["completion"]),
                                               "finish_reason": "stop"}])),
        _sv("app.request_id", c["request_id"]),
        _sv("app.task_type", c["task_type"]),
        _iv("app.turn_index", c["turn_index"]),
        _sv("app.user_segment", c["user_segment"]),
    ]
    attrs += [_sv(f"app.metadata.{k}", str(v)) for k, v in c["metadata"].items()]
    for key in ("retrieved_chunks", "feedback", "post_processing"):
        if key in c:
            attrs.append(_sv(f"app.{key}", _dumps(c[key])))
    spans: list[dict[str, Any]] = []
    http_start = start_ns - rng.randint(3, 30) * 1_000_000
    if "retrieved_chunks" in c:
        r_end = start_ns - rng.randint(1, 4) * 1_000_000
        r_start = r_end - rng.randint(15, 120) * 1_000_000
        http_start = r_start - rng.randint(2, 10) * 1_000_000
        spans.append({
            "traceId": trace_id, "spanId": _hex(rng, 16), "parentSpanId": http_id,
            "name": "retrieve help-centre", "kind": 1,
            "startTimeUnixNano": str(r_start), "endTimeUnixNano": str(r_end),
            "attributes": [_sv("app.retrieval.index", "help-centre-kb"),
                           _iv("app.retrieval.top_k", len(c["retrieved_chunks"]))],
            "status": {},
        })
    spans.append({
        "traceId": trace_id, "spanId": llm_id, "parentSpanId": http_id, "name": f"chat {c['model']}",
        "kind": 3, "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns),
        "attributes": attrs, "status": {},
    })
    spans.append({
        "traceId": trace_id, "spanId": http_id, "name": "POST /chat", "kind": 2,
        "startTimeUnixNano": str(http_start),
        "endTimeUnixNano": str(end_ns + rng.randint(2, 15) * 1_000_000),
        "attributes": [_sv("http.request.method", "POST"), _sv("http.route", "/chat"),
                       _iv("http.response.status_code", 200), _sv("url.scheme", "https")],
        "status": {},
    })
    return spans


_MAX_SPANS_PER_LINE = 20


def _span_count(rec: _Rec) -> int:
    return 3 if "retrieved_chunks" in rec.canon else 2


def _otel_line(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [_sv("service.name", MODEL), _sv("deployment.environment", "production")]},
        "scopeSpans": [{"scope": {"name": "support-assistant.llm"}, "spans": spans}],
    }]}


# ---- malformed lines ----------------------------------------------------------------------------

_BAD_TIMESTAMP = "2026-13-45T99:00:00Z"


def _malformed_line(rec: _Rec, kind: str, rng: random.Random) -> tuple[str, str | None]:
    """A broken line modelled on ``rec`` (with a fresh request id): (line, request id)."""
    rid = f"req_{_hex(rng, 20)}"
    canon = json.loads(_dumps(rec.canon))
    canon["request_id"] = rid
    clone = _Rec(canon, rec.truth, rec.fmt, rec.user_id, rec.epoch_ms, rec.tokens_in, rec.tokens_out)
    if kind == "not_json":
        ts = canon["timestamp"].replace("T", " ").rstrip("Z").replace(".", ",")
        return f"{ts} ERROR worker-{rng.randint(1, 8)} upstream timed out after 30000 ms; record dropped", None
    if rec.fmt == "canonical":
        if kind == "missing_completion":
            del canon["completion"]
        elif kind == "negative_latency":
            canon["latency_ms"] = -round(rng.uniform(1, 900), 1)
        elif kind == "invalid_timestamp":
            canon["timestamp"] = _BAD_TIMESTAMP
        elif kind == "wrong_type":
            canon["turn_index"] = "two"
        text = _dumps(canon)
    elif rec.fmt == "openai":
        obj = _openai_obj(clone, rng)
        if kind == "missing_completion":
            obj["response"]["choices"] = []
        elif kind == "negative_latency":
            obj["latency_ms"] = -round(rng.uniform(1, 900), 1)
        elif kind == "invalid_timestamp":
            obj["timestamp"] = _BAD_TIMESTAMP
        elif kind == "wrong_type":
            obj["request"]["metadata"]["turn_index"] = "two"
        text = _dumps(obj)
    else:
        spans = _otel_spans(clone, rng)
        llm = next(s for s in spans if s["kind"] == 3)
        if kind == "missing_completion":
            llm["attributes"] = [a for a in llm["attributes"] if a["key"] != "gen_ai.output.messages"]
        elif kind == "negative_latency":
            llm["endTimeUnixNano"] = str(int(llm["startTimeUnixNano"]) - rng.randint(1, 900) * 1_000_000)
        elif kind == "invalid_timestamp":
            llm["startTimeUnixNano"] = _BAD_TIMESTAMP
        elif kind == "wrong_type":
            for a in llm["attributes"]:
                if a["key"] == "app.turn_index":
                    a["value"] = {"stringValue": "two"}
        text = _dumps(_otel_line(spans))
    if kind == "truncated_json":
        text = text[: rng.randint(len(text) // 4, (3 * len(text)) // 4)]
    return text, rid


# ---------------------------------------------------------------------------------------------
# entry point


@dataclass
class GenerationSummary:
    """What :func:`generate_logs` wrote (all mappings sorted by key)."""

    out_dir: Path
    truth_dir: Path
    start: date
    days: int
    per_day: int
    seed: int
    cutover: date
    records: int
    records_by_format: dict[str, int]
    records_by_task_type: dict[str, int]
    records_by_model_version: dict[str, int]
    records_by_day: dict[str, int]
    lines_by_format: dict[str, int]
    malformed_lines: int
    malformed_by_kind: dict[str, int]
    files: list[str]  # paths relative to out_dir, POSIX style, sorted

    @property
    def files_written(self) -> int:
        return len(self.files)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("out_dir", "truth_dir"):
            out[key] = str(out[key])
        for key in ("start", "cutover"):
            out[key] = out[key].isoformat()
        out["files_written"] = self.files_written
        return out


def default_cutover(start: date, days: int) -> date:
    """The default switch to the new model version: about 60% into the range."""
    return start + timedelta(days=round(days * CUTOVER_FRACTION))


def _file_for(start: date, offset: int, days: int, fmt: str) -> str:
    day = start + timedelta(days=offset)
    if fmt == "canonical":
        return f"canonical/{day.isoformat()}.jsonl"
    if fmt == "openai":
        return f"openai/week-{(start + timedelta(days=7 * (offset // 7))).isoformat()}.jsonl"
    first = 3 * (offset // 3)
    last = min(first + 2, days - 1)
    return (f"otel/spans-{(start + timedelta(days=first)).isoformat()}_"
            f"{(start + timedelta(days=last)).isoformat()}.otlp.jsonl")


def _is_within(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def generate_logs(
    out_dir: Path,
    start: date,
    days: int,
    per_day: int,
    seed: int,
    truth_dir: Path | None = None,
    cutover: date | None = None,
) -> GenerationSummary:
    """Write ``days`` days of simulated production logs from ``start`` into ``out_dir``.

    Each UTC day gets exactly ``per_day`` valid records (plus a few malformed lines). Ground truth
    goes to ``truth_dir`` (default ``out_dir.parent / "demo_truth"``), which must not be inside
    ``out_dir``. Files of the same name are overwritten; other files are left alone. The same
    arguments always produce byte-identical files.
    """
    out_dir = Path(out_dir)
    truth_dir = Path(truth_dir) if truth_dir is not None else out_dir.parent / "demo_truth"
    if days < 1 or per_day < 1:
        raise ValueError("days and per_day must be at least 1")
    if _is_within(truth_dir, out_dir):
        raise ValueError(f"truth_dir {truth_dir} must not be inside out_dir {out_dir} (it would be ingested)")
    cutover = cutover or default_cutover(start, days)
    ctx = _Ctx(start, days, per_day, seed, cutover)

    files: dict[str, list[_Rec]] = {}
    fmt_of: dict[str, str] = {}
    for offset in range(days):
        for rec in _generate_day(ctx, offset):
            name = _file_for(start, offset, days, rec.fmt)
            files.setdefault(name, []).append(rec)
            fmt_of[name] = rec.fmt
    all_recs = [r for name in sorted(files) for r in files[name]]
    for name in files:
        files[name].sort(key=lambda r: (r.epoch_ms, r.canon["request_id"]))

    # Which records get a malformed sibling line right after theirs (never line 1 of a file).
    total = len(all_recs)
    target = max(round(MALFORMED_SHARE * total), min(5, total // 20))
    mrng = random.Random(f"{seed}:malformed")
    hosts = {id(r) for r in mrng.sample(all_recs, min(target, total))}
    kind_counter = {fmt: mrng.randrange(len(kinds)) for fmt, kinds in MALFORMED_KINDS.items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    malformed: list[dict[str, Any]] = []
    lines_by_format: dict[str, int] = {f: 0 for f in FORMAT_SHARES}
    for name in sorted(files):
        recs = files[name]
        fmt = fmt_of[name]
        frng = random.Random(f"{seed}:file:{name}")
        lines: list[str] = []

        def add_malformed(host: _Rec) -> None:
            kinds = MALFORMED_KINDS[fmt]
            kind = kinds[kind_counter[fmt] % len(kinds)]
            kind_counter[fmt] += 1
            text, rid = _malformed_line(host, kind, frng)
            lines.append(text)
            malformed.append({"file": name, "line": len(lines), "format": fmt, "kind": kind,
                              "request_id": rid, "date": host.truth["date"]})

        if fmt == "otlp":
            i = 0
            while i < len(recs):
                # 3-8 calls per export request, at most _MAX_SPANS_PER_LINE spans
                want, batch, n_spans = frng.randint(3, 8), [recs[i]], _span_count(recs[i])
                i += 1
                while i < len(recs) and len(batch) < want and n_spans + _span_count(recs[i]) <= _MAX_SPANS_PER_LINE:
                    n_spans += _span_count(recs[i])
                    batch.append(recs[i])
                    i += 1
                spans = [s for r in batch for s in _otel_spans(r, frng)]
                lines.append(_dumps(_otel_line(spans)))
                for r in batch:
                    r.truth["file"], r.truth["line"] = name, len(lines)
                for r in batch:
                    if id(r) in hosts:
                        add_malformed(r)
        else:
            for r in recs:
                obj = r.canon if fmt == "canonical" else _openai_obj(r, frng)
                lines.append(_dumps(obj))
                r.truth["file"], r.truth["line"] = name, len(lines)
                if id(r) in hosts:
                    add_malformed(r)
        lines_by_format[fmt] += len(lines)
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\n".join(lines))
            handle.write("\n")

    ordered = sorted(all_recs, key=lambda r: (r.epoch_ms, r.canon["request_id"]))
    with open(truth_dir / "records.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        for r in ordered:
            handle.write(_dumps(r.truth))
            handle.write("\n")
    with open(truth_dir / "malformed.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        for m in malformed:
            handle.write(_dumps(m))
            handle.write("\n")

    def count(key: Any) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in ordered:
            k = key(r)
            out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))

    kinds: dict[str, int] = {}
    for m in malformed:
        kinds[m["kind"]] = kinds.get(m["kind"], 0) + 1
    summary = GenerationSummary(
        out_dir=out_dir,
        truth_dir=truth_dir,
        start=start,
        days=days,
        per_day=per_day,
        seed=seed,
        cutover=cutover,
        records=total,
        records_by_format=count(lambda r: r.fmt),
        records_by_task_type=count(lambda r: r.canon["task_type"]),
        records_by_model_version=count(lambda r: r.canon["model_version"]),
        records_by_day=count(lambda r: r.truth["date"]),
        lines_by_format=dict(sorted(lines_by_format.items())),
        malformed_lines=len(malformed),
        malformed_by_kind=dict(sorted(kinds.items())),
        files=sorted(files),
    )
    # Without the folders, so the truth files too are identical wherever they are written.
    saved = {k: v for k, v in summary.to_json().items() if k not in ("out_dir", "truth_dir")}
    (truth_dir / "summary.json").write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    return summary
