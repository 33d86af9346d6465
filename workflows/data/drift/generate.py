#!/usr/bin/env python3
"""Writes reference.jsonl and production.jsonl, the shipped drift data (seeded, so the
files are reproducible): a month of answers the assistant gave before, and the last day and a
half of production, in which billing questions surge, answers slow down and refusals rise.
`age_hours` is how long before the drift window's end a row was logged; drift_check's
`stamp` task turns it into a timestamp."""

import json
import random

QUESTIONS = {
    "account": ["How do I reset my password?", "How long is the reset link valid?", "How do I change my email address?", "Why was I signed out?"],
    "security": ["How do I turn on two-factor authentication?", "I lost my phone, how do I sign in?", "Are my files encrypted?", "Can your staff read my files?"],
    "storage": ["How much storage do I get for free?", "How long do deleted files stay in the trash?", "How do I restore an older version?", "What is the upload limit?"],
    "sharing": ["How do I share a folder?", "Can a sharing link expire?", "How do I turn off a sharing link?", "Can people view without an account?"],
    "billing": ["Can I get my money back after paying?", "When will my refund arrive on my card?", "Will my files stay when I cancel the paid plan?", "Why was my card charged twice?", "How do I change the card I pay with?", "When is the yearly plan charged?"],
}
CORRECTIONS = {
    "Can I get my money back after paying?": "14 days",
    "When will my refund arrive on my card?": "5 business days",
    "Will my files stay when I cancel the paid plan?": "keeps your files",
}
REFUSAL = "I'm sorry, but I can't help with that."


def rows(rng, n, topic_weights, latency, refusal_rate, ages):
    topics = list(topic_weights)
    out = []
    for i in range(n):
        topic = rng.choices(topics, [topic_weights[t] for t in topics])[0]
        question = rng.choice(QUESTIONS[topic])
        refused = rng.random() < refusal_rate
        answer_length = max(20, int(rng.gauss(96, 22)))
        row = {
            "id": f"{i + 1:05d}",
            "question": question,
            "topic": topic,
            "latency_ms": round(max(80.0, rng.gauss(*latency)), 1),
            "answer_length": answer_length,
            "refused": int(refused),
            "pii": int(rng.random() < 0.01),
            "feedback": "down" if refused or (question in CORRECTIONS and rng.random() < 0.5) else "up",
        }
        if row["feedback"] == "down" and question in CORRECTIONS:
            row["correction"] = CORRECTIONS[question]
        if ages:
            row["age_hours"] = ages(rng, i)
        out.append(row)
    return out


def write(path, data):
    with open(path, "w", encoding="utf-8") as f:
        for row in data:
            f.write(json.dumps(row) + "\n")


def main():
    rng = random.Random(7)
    reference = rows(rng, 600, {"account": 30, "security": 20, "storage": 30, "sharing": 15, "billing": 5}, (620, 110), 0.03, None)
    # The last 40 rows are older than a day: outside the 24 h window.
    production = rows(
        rng, 440, {"account": 20, "security": 12, "storage": 18, "sharing": 10, "billing": 40}, (780, 150), 0.12,
        lambda r, i: round(r.uniform(30, 40), 2) if i >= 400 else round(r.uniform(0.25, 23.75), 2),
    )
    write("reference.jsonl", reference)
    write("production.jsonl", production)


if __name__ == "__main__":
    main()
