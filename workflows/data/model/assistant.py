#!/usr/bin/env python3
"""The shipped local model: a help-centre assistant that answers from a corpus.

Standard library only, deterministic. Its behaviour is set by a versioned config
(data/prompts/assistant.json): retrieval settings and few-shot examples, which
`train` learns from failures, so a retrained config really answers differently.

  answer   the eval `command` target: example JSON lines on stdin, answers on stdout
  judge    faithfulness of eval's results against each example's context (offline judge)
  stamp    stamps shipped production rows with times inside the drift window
  collect  the training set: corrected production outputs and eval failures
  train    a new config whose few-shot examples come from the training set
  prepare  the candidate config: given as JSON text, or the shipped file
"""

import argparse
import json
import math
import os
import re
import sys
from datetime import datetime, timedelta, timezone

STOPWORDS = set(
    """a an and are as at be by can do does for from get go how i if in into is it its
    me my of on or our so than that the their then there these this to up use was we
    what when where which who why will with you your after before any every long much
    many there's what's i'm""".split()
)


def tokens(text):
    """Content words, lower-cased, with a plural `s` dropped, in order."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = []
    for word in words:
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.append(word)
    return out


def sentences(text):
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{number}: not JSON: {e}")
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")


def load_config(path):
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    for key in ("retrieval", "answer", "few_shot"):
        if key not in config:
            sys.exit(f"{path}: the config has no `{key}`")
    return config


def expand(words, synonyms):
    out = list(words)
    for word in words:
        out.extend(tokens(" ".join(synonyms.get(word, []))))
    return out


class Assistant:
    def __init__(self, config, corpus):
        self.config = config
        self.docs = corpus
        retrieval = config["retrieval"]
        self.k1 = float(retrieval.get("k1", 1.2))
        self.b = float(retrieval.get("b", 0.75))
        self.title_weight = int(retrieval.get("title_weight", 1))
        self.min_score = float(retrieval.get("min_score", 0.0))
        self.synonyms = retrieval.get("synonyms", {})
        self.doc_tokens = {
            d["id"]: tokens(d["text"]) + tokens(d["title"]) * self.title_weight for d in corpus
        }
        self.by_id = {d["id"]: d for d in corpus}
        lengths = [len(t) for t in self.doc_tokens.values()]
        self.avg_len = sum(lengths) / max(len(lengths), 1)
        self.df = {}
        for words in self.doc_tokens.values():
            for word in set(words):
                self.df[word] = self.df.get(word, 0) + 1
        self.examples = [
            (set(tokens(e["question"])), e["doc"], int(e["sentence"]))
            for e in config["few_shot"]
        ]
        self.min_similarity = float(config["answer"].get("few_shot_similarity", 0.6))

    def bm25(self, query, doc_id):
        words = self.doc_tokens[doc_id]
        n = len(self.docs)
        score = 0.0
        for word in set(query):
            tf = words.count(word)
            if tf == 0:
                continue
            idf = math.log(1 + (n - self.df[word] + 0.5) / (self.df[word] + 0.5))
            norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * len(words) / self.avg_len))
            score += idf * norm
        return score

    def recall(self, query):
        """The few-shot example most like the question, when it is alike enough."""
        best, best_similarity = None, 0.0
        for words, doc, sentence in self.examples:
            union = words | query
            similarity = len(words & query) / len(union) if union else 0.0
            if similarity > best_similarity:
                best, best_similarity = (doc, sentence), similarity
        return best if best_similarity >= self.min_similarity else None

    def answer(self, question):
        query_words = tokens(question)
        query = set(query_words)
        recalled = self.recall(query)
        if recalled and recalled[0] in self.by_id:
            doc_id, index = recalled
            parts = sentences(self.by_id[doc_id]["text"])
            return parts[min(index, len(parts) - 1)], doc_id
        expanded = expand(query_words, self.synonyms)
        scored = sorted(((self.bm25(expanded, d["id"]), d["id"]) for d in self.docs), key=lambda s: -s[0])
        score, doc_id = scored[0]
        if score < self.min_score:
            return self.config["answer"]["fallback"], None
        parts = sentences(self.by_id[doc_id]["text"])
        overlaps = [len(query & set(tokens(p))) for p in parts]
        best = max(range(len(parts)), key=lambda i: (overlaps[i], -i))
        return parts[best], doc_id


def question_of(example):
    if example.get("input"):
        return example["input"]
    for message in reversed(example.get("messages") or []):
        if message.get("role") == "user":
            return message.get("content", "")
    return ""


def cmd_answer(args):
    assistant = Assistant(load_config(args.config), read_jsonl(args.corpus))
    for line in sys.stdin:
        if not line.strip():
            continue
        example = json.loads(line)
        question = question_of(example)
        output, doc = assistant.answer(question)
        context = assistant.by_id[doc]["text"] if doc else ""
        print(
            json.dumps(
                {
                    "id": example.get("id"),
                    "output": output,
                    "input_tokens": len(question.split()) + len(context.split()),
                    "output_tokens": len(output.split()),
                }
            ),
            flush=True,
        )


def supported(claim, context_words, share):
    words = tokens(claim)
    if not words:
        return True
    return sum(1 for w in words if w in context_words) / len(words) >= share


def cmd_judge(args):
    """Faithfulness as docs/eval.md defines it: the share of an answer's claims (its
    sentences) the example's context supports; a claim is supported when at least `share`
    of its content words occur in the context. Unanswered examples score 0."""
    contexts = {}
    for example in read_jsonl(args.golden):
        context = example.get("context") or ""
        contexts[str(example["id"])] = " ".join(context) if isinstance(context, list) else context
    scores = []
    for result in read_jsonl(args.results):
        output = result.get("output")
        context_words = set(tokens(contexts.get(str(result["id"]), "")))
        claims = sentences(output) if output else []
        if not claims:
            scores.append(0.0)
            continue
        held = sum(1 for c in claims if supported(c, context_words, args.share))
        scores.append(held / len(claims))
    faithfulness = round(sum(scores) / len(scores), 6) if scores else 0.0
    print(json.dumps({"faithfulness": faithfulness, "judged": len(scores)}))


def parse_time(text):
    if not text:
        return datetime.now(timezone.utc).replace(microsecond=0)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def cmd_stamp(args):
    end = parse_time(args.end)
    rows = read_jsonl(args.rows)
    for row in rows:
        row["ts"] = (end - timedelta(hours=float(row.pop("age_hours")))).isoformat().replace("+00:00", "Z")
    write_jsonl(args.out, rows)
    print(json.dumps({"window_end": end.isoformat().replace("+00:00", "Z"), "rows": len(rows)}))


def cmd_collect(args):
    """Training rows: production answers a reviewer corrected, and the golden-set examples
    the current config gets wrong (each with the answer it should have given)."""
    assistant = Assistant(load_config(args.config), read_jsonl(args.corpus))
    rows, seen = [], set()
    for row in read_jsonl(args.production):
        if row.get("feedback") == "down" and row.get("correction") and row["question"] not in seen:
            seen.add(row["question"])
            rows.append({"question": row["question"], "expected": row["correction"], "source": "production"})
    failures = 0
    for example in read_jsonl(args.golden):
        output, _ = assistant.answer(question_of(example))
        if str(example["expected"]).lower() not in output.lower():
            failures += 1
            rows.append({"question": question_of(example), "expected": example["expected"], "source": "eval"})
    write_jsonl(args.out, rows)
    print(json.dumps({"examples": len(rows), "eval_failures": failures, "production_corrections": len(rows) - failures}))


def cmd_train(args):
    """Few-shot selection: each training question becomes an example pointing at the
    corpus sentence that holds its expected answer; questions no sentence answers are
    left out. The result is the old config with those examples added."""
    config = load_config(args.config)
    corpus = read_jsonl(args.corpus)
    known = {e["question"] for e in config["few_shot"]}
    added, unmatched = 0, 0
    for row in read_jsonl(args.train):
        if row["question"] in known:
            continue
        found = None
        for doc in corpus:
            for index, sentence in enumerate(sentences(doc["text"])):
                if row["expected"].lower() in sentence.lower():
                    found = (doc["id"], index)
                    break
            if found:
                break
        if not found:
            unmatched += 1
            continue
        config["few_shot"].append({"question": row["question"], "doc": found[0], "sentence": found[1]})
        known.add(row["question"])
        added += 1
    config["trained_from"] = args.reason or "failures"
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps({"config": config, "added_examples": added, "unmatched": unmatched, "few_shot": len(config["few_shot"])}))


def cmd_prepare(args):
    """The candidate config as a file, and the system prompt an OpenAI-compatible model gets
    from it (its instructions and few-shot examples)."""
    text = os.environ.get(args.env, "").strip()
    if text:
        config = json.loads(text)
    else:
        config = load_config(args.default)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    corpus = {d["id"]: d for d in read_jsonl(args.corpus)}
    lines = [config.get("instructions", "")]
    for example in config["few_shot"]:
        doc = corpus.get(example["doc"])
        if doc:
            parts = sentences(doc["text"])
            lines.append(f"Q: {example['question']}\nA: {parts[min(int(example['sentence']), len(parts) - 1)]}")
    print(json.dumps({"system": "\n\n".join(line for line in lines if line), "few_shot": len(config["few_shot"])}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("answer")
    p.add_argument("--config", required=True)
    p.add_argument("--corpus", required=True)
    p.set_defaults(run=cmd_answer)
    p = sub.add_parser("judge")
    p.add_argument("--golden", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--share", type=float, default=0.8)
    p.set_defaults(run=cmd_judge)
    p = sub.add_parser("stamp")
    p.add_argument("--rows", required=True)
    p.add_argument("--end", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_stamp)
    p = sub.add_parser("collect")
    for name in ("--production", "--golden", "--config", "--corpus", "--out"):
        p.add_argument(name, required=True)
    p.set_defaults(run=cmd_collect)
    p = sub.add_parser("train")
    for name in ("--config", "--corpus", "--train", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--reason", default="")
    p.set_defaults(run=cmd_train)
    p = sub.add_parser("prepare")
    p.add_argument("--env", default="CANDIDATE_CONFIG")
    p.add_argument("--default", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_prepare)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
