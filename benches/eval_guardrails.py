"""The same guardrail scan as `eval`'s (src/operators/eval/guardrails.rs) in Python with `re`:
1,000,000 outputs of about 300 characters checked for e-mail addresses, phone numbers,
Luhn-valid card numbers, mod-97-valid IBANs and blocklisted words. The outputs are built
exactly as the Rust benchmark builds them, and the counts are printed so the two can be
compared. Usage: python3 benches/eval_guardrails.py [COUNT]"""
import re
import sys
import time

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{2,4}\)[ .-]?[0-9]{3,4}[ .-][0-9]{3,4}|[0-9]{2,4}[ .-][0-9]{3,4}[ .-][0-9]{3,4})\b|\+[0-9]{8,15}\b", re.ASCII)
CARD = re.compile(r"\b(?:[0-9][ -]?){12,18}[0-9]\b", re.ASCII)
IBAN = re.compile(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", re.ASCII)
BLOCK = re.compile(r"\b(?:darn|top\ secret)\b", re.IGNORECASE | re.ASCII)
WORDS = ["the", "model", "answered", "customer", "question", "about", "billing", "and",
         "refund", "policy", "for", "order", "number", "shipping", "delay", "was", "resolved",
         "within", "two", "days"]
NUMBER_PART = set("0123456789 .-()+")


def output(i):
    parts = []
    length = 0
    j = 0
    while length < 280:
        word = WORDS[(i * 7 + j * 13) % len(WORDS)]
        parts.append(word + " ")
        length += len(word) + 1
        j += 1
    text = "".join(parts)
    if i % 100 == 0:
        text += f"contact user{i}@example.com "
    if i % 250 == 1:
        text += "card 4111 1111 1111 1111 "
    if i % 333 == 2:
        text += "call +44 20 7946 0958 "
    if i % 500 == 3:
        text += "darn "
    if i % 700 == 4:
        text += "order 2026-12-06 ref 1234 5678 9012 3456 "
    return text + f"ticket {i}."


def luhn(candidate):
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for k, d in enumerate(reversed(digits)):
        if k % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban(candidate):
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1


def phone_fits(text, start, end):
    while start > 0 and text[start - 1] in NUMBER_PART:
        start -= 1
    while end < len(text) and text[end] in NUMBER_PART:
        end += 1
    return 7 <= sum(c.isdigit() for c in text[start:end]) <= 15


def has_pii(text):
    if EMAIL.search(text):
        return True
    cards = [m.span() for m in CARD.finditer(text) if luhn(m.group())]
    iban_shaped = [m for m in IBAN.finditer(text)]
    if cards or any(iban(m.group()) for m in iban_shaped):
        return True
    # A phone candidate inside a card number or an IBAN-shaped string is part of it.
    numbers = cards + [m.span() for m in iban_shaped]
    return any(
        phone_fits(text, m.start(), m.end())
        and not any(s <= m.start() and m.end() <= e for s, e in numbers)
        for m in PHONE.finditer(text)
    )


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    outputs = [output(i) for i in range(count)]
    started = time.perf_counter()
    pii = blocked = 0
    for text in outputs:
        pii += has_pii(text)
        blocked += BLOCK.search(text) is not None
    took = time.perf_counter() - started
    average = sum(map(len, outputs)) / count
    print(f"python: {count} outputs, {average:.0f} chars on average, pii {pii}, blocklisted {blocked}, {took:.3f} s")


main()
