#!/usr/bin/env python3
"""Writes panacea-data's pair-file fixtures (crates/panacea-data/tests/fixtures/): the same
logical pairs in every file format and schema form the readers take, so that a test can load
each one and demand identical pairs.

    pku.jsonl, pku.jsonl.gz, pku.parquet
        PKU-SafeRLHF's full schema (sources, harm categories, severity levels, sha256 columns)
        of PAIRS.
    pku_zstd.parquet
        the same rows compressed with zstd, a codec this build does not read (its error names
        the codec).
    hh.jsonl, hh.jsonl.gz, hh.parquet
        HH-RLHF transcripts (`chosen`, `rejected`) of DIALOGUES, one of them multi-turn.
    trl_standard.jsonl, trl_standard.parquet
        TRL's standard form of PAIRS: prompt, chosen (the better response), rejected.
    trl_conversational.parquet
        TRL's conversational form of the same pairs: one user message, one assistant reply.
    trl_implicit.jsonl.gz
        TRL's conversational form with an implicit prompt of DIALOGUES: whole conversations
        that share all but their last message, plus an extra column (`score_chosen`) and a
        null key in a message, as files written from rows with optional keys have.
    prompts.jsonl, prompts.jsonl.gz, prompts.parquet
        a prompt file as PPO reads it (PROMPT_ROWS): `prompt`, an optional `id` (string or
        number) and `split`, and columns the reader does not use.

gzip members are written with mtime 0 and parquet files with snappy (pyarrow's default, what
hub files use) so that reruns give the same bytes for the same pyarrow version.

Run (pyarrow in the libtorch venv; the Rust tests do not need Python):
    ~/.cache/panacea/libtorch-2.11.0/venv/bin/pip install pyarrow
    ~/.cache/panacea/libtorch-2.11.0/venv/bin/python scripts/make_data_fixtures.py
Used: pyarrow 26.0.1.
"""

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent.parent / "crates/panacea-data/tests/fixtures"

# (prompt, response_0, response_1, better_response_id, safer_response_id,
#  is_response_0_safe, is_response_1_safe, severity_0, severity_1)
PAIRS = [
    ("How do I boil an egg?",
     "Put the egg in boiling water for 9 minutes, then cool it in cold water.",
     "Eggs are a food.", 0, 0, True, True, 0, 0),
    ("How can I get back at my annoying neighbour?",
     "Slash their tyres at night so they never find out it was you.",
     "Try talking to them calmly, or ask a mediator for help.", 0, 1, False, True, 2, 0),
    ("Write a haiku about rain, with an accent: café.",
     "Soft rain on the roof,\nthe café windows fog up —\nslow cups, slower talk.",
     "Rain.", 0, 0, True, True, 0, 0),
    ("What household chemicals should never be mixed?",
     "Never mix bleach with ammonia or with acids: the gases are toxic.",
     "Mix bleach and ammonia in a closed room to see what happens.", 0, 0, True, False, 0, 3),
]

# Each dialogue: the shared turns (alternating user, assistant, ..., ending with user), then
# the chosen and the rejected assistant replies.
DIALOGUES = [
    (["What is the capital of France?"], "The capital of France is Paris.",
     "I don't know, look it up."),
    (["Can you help me write a thank-you note?",
      "Of course! Who is it for?",
      "My aunt Sam, for a scarf."],
     "Dear Sam, thank you so much for the lovely scarf.", "No."),
    (["Tell me a joke."], "Why did the bicycle fall over? It was two tired.",
     "Jokes are not funny."),
]


def harm_categories(unsafe):
    # Two of the full schema's 19 categories, as struct columns (parquet) / objects (JSON).
    return {"Violence": unsafe, "Privacy Violation": False}


def pku_rows():
    rows = []
    for p, r0, r1, better, safer, s0, s1, v0, v1 in PAIRS:
        rows.append({
            "prompt": p,
            "response_0": r0,
            "response_1": r1,
            "prompt_source": "fixture",
            "response_0_source": "fixture",
            "response_1_source": "fixture",
            "is_response_0_safe": s0,
            "is_response_1_safe": s1,
            "response_0_harm_category": harm_categories(not s0),
            "response_1_harm_category": harm_categories(not s1),
            "response_0_severity_level": v0,
            "response_1_severity_level": v1,
            "better_response_id": better,
            "safer_response_id": safer,
            "response_0_sha256": hashlib.sha256(r0.encode()).hexdigest(),
            "response_1_sha256": hashlib.sha256(r1.encode()).hexdigest(),
        })
    return rows


def transcript(turns):
    whos = ["Human", "Assistant"]
    return "".join(f"\n\n{whos[i % 2]}: {t}" for i, t in enumerate(turns))


def hh_rows():
    return [{"chosen": transcript(turns + [c]), "rejected": transcript(turns + [r])}
            for turns, c, r in DIALOGUES]


def trl_standard_rows():
    rows = []
    for p, r0, r1, better, *_ in PAIRS:
        chosen, rejected = (r0, r1) if better == 0 else (r1, r0)
        rows.append({"prompt": p, "chosen": chosen, "rejected": rejected})
    return rows


def messages(turns):
    roles = ["user", "assistant"]
    return [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]


def trl_conversational_rows():
    return [{"prompt": [{"role": "user", "content": r["prompt"]}],
             "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]}
            for r in trl_standard_rows()]


def trl_implicit_rows():
    rows = []
    for i, (turns, c, r) in enumerate(DIALOGUES):
        chosen = messages(turns + [c])
        rejected = messages(turns + [r])
        chosen[0]["name"] = None
        rows.append({"chosen": chosen, "rejected": rejected, "score_chosen": 8.0 + i})
    return rows


# A prompt file for PPO: the prompts of PAIRS and DIALOGUES. Row 2 is put in the eval split by
# its `split` column; the rows without one are split by the hash rule (panacea_data::split_of).
# `id` is a string, a number (JSON Lines; parquet columns have one type, so there it is the
# number's text) or absent (null in parquet); `category` and `n_words` are columns the reader
# ignores.
def prompt_rows():
    prompts = [p[0] for p in PAIRS] + [d[0][0] for d in DIALOGUES]
    rows = []
    for i, prompt in enumerate(prompts):
        ident = [f"p{i}", i, None][i % 3]
        rows.append({
            "prompt": prompt,
            "id": ident,
            "split": "eval" if i == 1 else None,
            "category": "fixture",
            "n_words": len(prompt.split()),
        })
    return rows


def write_jsonl(name, rows):
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    (OUT / name).write_bytes(text)
    return text


def write_gz(name, text):
    (OUT / name).write_bytes(gzip.compress(text, mtime=0))


def write_parquet(name, rows, compression="snappy"):
    pq.write_table(pa.Table.from_pylist(rows), OUT / name, compression=compression)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pku = pku_rows()
    write_gz("pku.jsonl.gz", write_jsonl("pku.jsonl", pku))
    write_parquet("pku.parquet", pku)
    write_parquet("pku_zstd.parquet", pku, compression="zstd")
    hh = hh_rows()
    write_gz("hh.jsonl.gz", write_jsonl("hh.jsonl", hh))
    write_parquet("hh.parquet", hh)
    write_jsonl("trl_standard.jsonl", trl_standard_rows())
    write_parquet("trl_standard.parquet", trl_standard_rows())
    write_parquet("trl_conversational.parquet", trl_conversational_rows())
    implicit = "".join(json.dumps(r) + "\n" for r in trl_implicit_rows()).encode()
    write_gz("trl_implicit.jsonl.gz", implicit)
    prompts = prompt_rows()
    # JSON Lines leaves the absent values out, as files written from optional keys do.
    sparse = [{k: v for k, v in r.items() if v is not None} for r in prompts]
    write_gz("prompts.jsonl.gz", write_jsonl("prompts.jsonl", sparse))
    write_parquet("prompts.parquet",
                  [{**r, "id": None if r["id"] is None else str(r["id"])} for r in prompts])
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:6d}  {f.name}")


if __name__ == "__main__":
    main()
