"""The demo's own redaction allow-list: words of its logs that the small NER model tags as names.

The production default (``lib/privacy/redaction.py: DEFAULT_ALLOW_LIST``) holds only what public data
needs (Banking77 *train*, MT-Bench, Arena-Hard). The demo's logs add the bank's name, the
payment, banking and API vocabulary of its support turns and knowledge base, and the verbs that
start its assistant's sentences ("Email me at ..."). ``eval-pipeline demo`` passes this list as
``RedactionSettings.extra_allow_list`` (:func:`eval_pipeline.demo.settings.demo_resources`),
the way a deployment passes the known false positives of its own traffic; the default plus this
list is the allow-list the demo had before, so it redacts as it did.

Measured with ``benchmarks/allow_list.py`` (empty allow-list; 1,200 demo rows, 2,069 distinct
texts, seed 1): Kestrel 296 findings, Email 6; neither on the public data. The other entries
were in the former default without a measured need on public data; they stay for the demo's
larger months (100,000 records a month), where rarer phrasings occur.
"""

from __future__ import annotations

__all__ = ["ALLOW_LIST"]

ALLOW_LIST: tuple[str, ...] = (
    # the demo's bank
    "Kestrel", "Kestrel Bank",
    # payment networks, wallets, products
    "Maestro", "Amex", "Apple Pay", "Samsung Pay", "PayPal", "Venmo", "Revolut", "Wise",
    "Stripe", "Western Union",
    # banking vocabulary
    "PIN", "IBAN", "BIC", "SWIFT", "SEPA", "BACS", "CHAPS", "KYC", "ID", "OTP", "CVV", "CVC",
    "Cards", "Transfer", "Top Up", "Top-up", "Refund", "Merchant", "App", "Pending",
    "Euro", "Euros", "Pound", "Pounds", "Dollar", "Dollars", "Ruble", "Rubles",
    # month and day names (dates are not redacted; the model tags some, e.g. "27 Mar")
    "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec",
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday",
    "Saturday", "Sunday",
    # technical words
    "JSON", "API", "SDK", "URL", "HTTP", "HTTPS", "SQL", "CSV", "PDF", "OAuth",
    "Assistant", "User", "System",
    # imperative verbs at the start of a sentence or code comment
    "Email", "E-mail", "Text", "Phone", "Ring", "Contact", "Message", "Reply", "Write", "Import",
    "Initialize", "Initialise",
)
