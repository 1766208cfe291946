#!/usr/bin/env python3
"""Export the alt-profanity-check 1.9.1 toxicity model to JSON for panacea-data's Rust scorer.

The model is a scikit-learn TfidfVectorizer followed by a 5-fold CalibratedClassifierCV (sigmoid)
over LinearSVC. This script unpickles it with the package's pinned versions
and writes everything the Rust scorer needs, so Rust never runs Python:

    data/scorers/profanity_check-1.9.1.json   the vocabulary, idf, stop words, token pattern and,
                                               per fold, the LinearSVC coef/intercept and the
                                               sigmoid calibrator (a, b); versions and sha256s
    data/fixtures/profanity_check_expected.json  predict_proba(...)[:, 1] on a fixed text list
                                               (including non-ASCII text) for the Rust parity test

Run it once, in a throwaway venv (the pins matter: other scikit-learn versions may misread the
pickles):

    python3 -m venv /tmp/profvenv
    /tmp/profvenv/bin/pip install alt-profanity-check==1.9.1   # pulls scikit-learn==1.9.1, joblib==1.6.0
    /tmp/profvenv/bin/python scripts/export_profanity_check.py

Licence: alt-profanity-check is MIT (https://github.com/dimitrismistriotis/alt-profanity-check).
"""

import hashlib
import json
import os
import sys
from importlib import metadata, resources

import joblib
import numpy as np
import sklearn

FORMAT_VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_MODEL = os.path.join(ROOT, "data", "scorers", "profanity_check-1.9.1.json")
OUT_FIXTURE = os.path.join(ROOT, "data", "fixtures", "profanity_check_expected.json")

# Four anchor sentences first, then ordinary, edge-case and non-ASCII text.
TEXTS = [
    "you are a stupid idiot and everyone hates you",
    "those people are trash and should all die",
    "recipe needs two cups of flour",
    "have a wonderful day",
    "",
    "a",
    "I I I a b c",
    "The the THE tHe",
    "what the hell is this shit",
    "Fuck off, you moron!!!",
    "Thank you so much for your help with the garden.",
    "snake_case_words and under_score are single tokens",
    "numbers 42 and 3.14159 and 2024-01-01",
    "Café naïve résumé — déjà vu, über cool straße",
    "ΣΙΣΥΦΟΣ ΟΔΟΣ and plain greek σοφία",
    "İstanbul DİKKAT ıi",
    "Привет, идиот! Как дела?",
    "日本語のテキストです 中文文本 한국어",
    "emoji 😀 between 🤬 words idiot😡idiot",
    "x² and ½ and ① fractions",
    "tab\tseparated\nnew lines\r\nidiot\u00a0nbsp",
    "combining e\u0301 and n\u0303o marks",
    "you're a complete and utter loser, nobody likes you",
    "kill yourself",
    "I love puppies and kittens",
    "shut up stupid",
    "DAMN damn Damn",
    "This is a perfectly polite sentence about the weather in Paris.",
    # Word-character edge cases where Python's `\w` (str.isalnum() or "_") differs from the Rust
    # regex crate's `\w`: superscripts (No) are word characters, combining marks (Mn) and
    # connector punctuation other than "_" (U+203F) are not.
    "stupid\u00b2idiot",
    "stupid\u0301 idiot",
    "stupid\u203fidiot",
    "shit\u200dhead",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    pkg = resources.files("profanity_check") / "data"
    vec_path, model_path = str(pkg / "vectorizer.joblib"), str(pkg / "model.joblib")
    vectorizer = joblib.load(vec_path)
    model = joblib.load(model_path)

    params = vectorizer.get_params()
    assert params["lowercase"] and params["norm"] == "l2" and params["use_idf"]
    assert params["smooth_idf"] and not params["sublinear_tf"] and params["ngram_range"] == (1, 1)
    assert params["analyzer"] == "word" and params["strip_accents"] is None
    assert model.method == "sigmoid" and list(model.classes_) == [0, 1]

    vocab = vectorizer.vocabulary_
    n = len(vocab)
    terms = [None] * n
    for term, col in vocab.items():
        terms[col] = term
    assert all(t is not None for t in terms)

    folds = []
    for cc in model.calibrated_classifiers_:
        svc = cc.estimator
        assert svc.coef_.shape == (1, n), svc.coef_.shape
        (cal,) = cc.calibrators
        folds.append(
            {
                "coef": [float(x) for x in svc.coef_[0]],
                "intercept": float(svc.intercept_[0]),
                "sigmoid_a": float(cal.a_),
                "sigmoid_b": float(cal.b_),
            }
        )

    export = {
        "format_version": FORMAT_VERSION,
        "source": {
            "package": "alt-profanity-check",
            "version": metadata.version("alt-profanity-check"),
            "licence": "MIT",
            "url": "https://pypi.org/project/alt-profanity-check/1.9.1/",
            "scikit_learn": sklearn.__version__,
            "joblib": joblib.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "vectorizer_joblib_sha256": sha256(vec_path),
            "model_joblib_sha256": sha256(model_path),
        },
        "token_pattern": params["token_pattern"],
        "lowercase": True,
        "norm": "l2",
        "stop_words": sorted(vectorizer.get_stop_words()),
        "vocabulary": terms,
        "idf": [float(x) for x in vectorizer.idf_],
        "folds": folds,
        "scoring": "p = mean_f 1 / (1 + exp(a_f * (coef_f . x + intercept_f) + b_f)), "
        "x = l2-normalised tf * idf over the vocabulary",
    }
    os.makedirs(os.path.dirname(OUT_MODEL), exist_ok=True)
    with open(OUT_MODEL, "w", encoding="utf-8") as f:
        json.dump(export, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")

    probs = model.predict_proba(vectorizer.transform(TEXTS))[:, 1]
    fixture = {
        "version": FORMAT_VERSION,
        "generated_by": "scripts/export_profanity_check.py",
        "model_json_sha256": sha256(OUT_MODEL),
        "cases": [{"text": t, "p_profane": float(p)} for t, p in zip(TEXTS, probs)],
    }
    os.makedirs(os.path.dirname(OUT_FIXTURE), exist_ok=True)
    with open(OUT_FIXTURE, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for t, p in zip(TEXTS, probs):
        print(f"{p:.6f}  {t!r}")
    print(f"wrote {OUT_MODEL} ({os.path.getsize(OUT_MODEL)} bytes) and {OUT_FIXTURE}")


if __name__ == "__main__":
    main()
