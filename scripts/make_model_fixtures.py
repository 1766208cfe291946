#!/usr/bin/env python3
"""Writes the Hugging Face parity fixtures of panacea-lm (crates/panacea-lm/tests/fixtures/):

models/<family>/  a complete, tiny, random-initialised model folder of each family the loader
                  supports, saved by transformers' `save_pretrained`, plus the reference outputs
                  of transformers' own forward:
    config.json, model.safetensors (or shards + model.safetensors.index.json),
    tokenizer.json (a byte-level BPE trained here on CORPUS, with the family's special tokens),
    tokenizer_config.json (the family's chat template), generation_config.json,
    reference.json         prompts, their token ids, the left-padded batch (prompt + greedy
                           continuation) and its attention mask,
    reference.safetensors  `logits` [B, T, V] (f32) of that batch.
chat_templates/cases.json   transformers' `apply_chat_template` renderings of a few
                            conversations with each template in chat_templates/*.jinja
                            (the templates themselves are inputs; see chat_templates/README.md).

Families (2 layers, hidden 64, vocab 384):
    llama3   Llama 3.2 style: rope_scaling llama3, tied head, several EOS ids, f32, the folder
             rewritten the way transformers 4.x writes it (top-level rope_theta /
             rope_scaling; the chat template inside tokenizer_config.json).
    mistral  untied head, bf16 weights, three safetensors shards with an index, 4.x config.
    qwen2    q/k/v biases, untied head, θ = 1e6, the folder as transformers 5.x writes it
             (`rope_parameters`, chat_template.jinja); this script runs under transformers
             5.x, so that is its native output.
    qwen3    per-head q/k RMSNorm, explicit head_dim (≠ hidden / heads), tied head, 4.x config.

Every parameter is redrawn (norm weights around 1, biases non-zero) so that each one matters to
the logits. Greedy continuations are computed by full forwards with position ids taken from the
attention mask (what `generate` does), and every greedy choice is checked to win by a margin, so
a 1e-5 difference cannot flip a token.

Run (transformers and tokenizers in the libtorch venv; the Rust tests do not need Python):
    ~/.cache/panacea/libtorch-2.11.0/venv/bin/pip install transformers
    ~/.cache/panacea/libtorch-2.11.0/venv/bin/python scripts/make_model_fixtures.py
Used: torch 2.11.0, transformers 5.25.0, tokenizers 0.23.3.
"""

import json
import shutil
from pathlib import Path

import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "crates" / "panacea-lm" / "tests" / "fixtures"
TEMPLATES = FIXTURES / "chat_templates"
VOCAB = 384
NEW_TOKENS = 4
MIN_MARGIN = 1e-3

CORPUS = [
    "The capital of France is Paris. The capital of Germany is Berlin.",
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on.",
    "What is the capital of France? Paris is the capital of France.",
    "You are a helpful assistant. Answer the question in one sentence.",
    "Hello! How can I help you today? I would like to know about the weather.",
    "Numbers like 12, 345 and 6789 appear in text; so do symbols: (a + b) * c = d.",
    "Grüße aus Köln! Ça va? 你好 — emoji too: 👋",
] * 20

FAMILIES = {
    "llama3": dict(
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|end_of_text|>",
        gen_eos=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"],
        template="llama3.jinja",
    ),
    "mistral": dict(
        specials=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
        bos="<s>", eos="</s>", pad="</s>", gen_eos=["</s>"], template="mistral.jinja",
    ),
    "qwen2": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None, eos="<|im_end|>", pad="<|endoftext|>",
        gen_eos=["<|im_end|>", "<|endoftext|>"], template="qwen2.5.jinja",
    ),
}
FAMILIES["qwen3"] = FAMILIES["qwen2"]

PROMPT_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello",
]


def train_tokenizer(specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def model_config(family, ids):
    common = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, bos_token_id=ids.get("bos"), eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    if family == "llama3":
        # Llama 3.2's scaling with a short original context, so that the three frequency
        # bands (kept, blended, divided by `factor`) all occur at head_dim 16.
        return LlamaConfig(**common, tie_word_embeddings=True, rope_parameters={
            "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64})
    if family == "mistral":
        return MistralConfig(**common, tie_word_embeddings=False, sliding_window=None,
                             rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    if family == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    if family == "qwen3":
        return Qwen3Config(**common, head_dim=24, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
    raise ValueError(family)


def randomise(model, seed):
    """Redraws every parameter so that each one changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            r = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * r)
            elif name.endswith(".bias"):
                p.copy_(0.5 * r)
            elif "embed_tokens" in name or "lm_head" in name:
                p.copy_(0.3 * r)
            else:
                p.copy_(0.15 * r)


def as_transformers4(folder):
    """Rewrites the folder the way transformers 4.x writes it: config.json with `rope_theta` and
    `rope_scaling` at the top level instead of 5.x's `rope_parameters`, and the chat template
    inside tokenizer_config.json instead of 5.x's chat_template.jinja."""
    jinja = folder / "chat_template.jinja"
    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = jinja.read_text()
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    jinja.unlink()
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    cfg["transformers_version"] = "4.46.0 (rewritten by make_model_fixtures.py)"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


def make_family(family, seed):
    spec = FAMILIES[family]
    out = FIXTURES / "models" / family
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    raw = train_tokenizer(spec["specials"])
    vocab = raw.get_vocab()
    ids = {"eos": vocab[spec["eos"]], "pad": vocab[spec["pad"]]}
    if spec["bos"]:
        ids["bos"] = vocab[spec["bos"]]
    template = (TEMPLATES / spec["template"]).read_text()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=spec["bos"], eos_token=spec["eos"],
        pad_token=spec["pad"], chat_template=template,
    )
    tok.padding_side = "left"
    tok.save_pretrained(out)

    cfg = model_config(family, ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    randomise(model, seed)
    model.generation_config = GenerationConfig(
        bos_token_id=ids.get("bos"), pad_token_id=ids["pad"],
        eos_token_id=[vocab[t] for t in spec["gen_eos"]])
    if family == "mistral":
        # bf16 weights on disk, in shards.
        model.to(torch.bfloat16).save_pretrained(out, max_shard_size="120KB")
    else:
        model.save_pretrained(out)
    if family != "qwen2":
        as_transformers4(out)
    # The reference is the folder as transformers loads it, in f32 (bf16 weights widened
    # exactly). Not the in-memory model: `.to(bfloat16)` also rounds RoPE's inv_freq buffer.
    model = AutoModelForCausalLM.from_pretrained(
        out, dtype=torch.float32, attn_implementation="eager").eval()

    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False, add_generation_prompt=True)
    texts = [chat] + PROMPT_TEXTS
    prompt_ids = [raw.encode(t).ids for t in texts]
    p = max(len(x) for x in prompt_ids)
    batch = torch.tensor([[ids["pad"]] * (p - len(x)) + x for x in prompt_ids])
    mask = torch.tensor([[0] * (p - len(x)) + [1] * len(x) for x in prompt_ids])
    margins = []
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = model(input_ids=batch, attention_mask=mask,
                           position_ids=positions(mask)).logits[:, -1]
            top2 = logits.topk(2, dim=-1).values
            margins.append(float((top2[:, 0] - top2[:, 1]).min()))
            nxt = logits.argmax(-1, keepdim=True)
            batch = torch.cat([batch, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(nxt)], 1)
        logits = model(input_ids=batch, attention_mask=mask,
                       position_ids=positions(mask)).logits.float().contiguous()
    assert min(margins) > MIN_MARGIN, f"{family}: greedy margin {min(margins)}; change the seed"
    save_file({"logits": logits}, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps({
        "source": f"scripts/make_model_fixtures.py, transformers {transformers.__version__}, "
                  f"torch {torch.__version__}, seed {seed}, eager attention, f32",
        "prompts": texts,
        "prompt_ids": prompt_ids,
        "prompt_len": p,
        "new_tokens": NEW_TOKENS,
        "ids": batch.tolist(),
        "attention_mask": mask.tolist(),
        "eos_ids": [vocab[t] for t in spec["gen_eos"]],
        "min_greedy_margin": min(margins),
    }, indent=1) + "\n")
    print(f"{family}: prompt len {p}, logits {tuple(logits.shape)}, "
          f"|logit| max {logits.abs().max():.2f}, greedy margin {min(margins):.4f}")


CONVERSATIONS = {
    "system_user": ([
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "  What is the capital of France?  \n"},
    ], True),
    "multi_turn": ([
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": " Hi, how can I help? "},
        {"role": "user", "content": "Grüße — what is 2 + 2? 👋"},
    ], True),
    "user_only": ([{"role": "user", "content": "What is the capital of France?"}], True),
    "no_generation_prompt": ([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ], False),
    "user_assistant_user": ([
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one?"},
    ], True),
}

TEMPLATE_TOKENS = {  # the special-token strings each model's tokenizer_config.json declares
    "smollm2.jinja": ("<|im_start|>", "<|im_end|>"),
    "llama3.jinja": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5.jinja": (None, "<|im_end|>"),
    "mistral.jinja": ("<s>", "</s>"),
    "mistral-instruct-system.jinja": ("<s>", "</s>"),
}


def make_chat_cases():
    raw = train_tokenizer(sorted({t for f in FAMILIES.values() for t in f["specials"]}))
    cases = []
    for name, (bos, eos) in TEMPLATE_TOKENS.items():
        template = (TEMPLATES / name).read_text()
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=bos, eos_token=eos,
                                      chat_template=template)
        for conv_name, (messages, gen) in CONVERSATIONS.items():
            case = {"template": name, "conversation": conv_name, "bos_token": bos or "",
                    "eos_token": eos, "messages": messages, "add_generation_prompt": gen}
            try:
                case["expected"] = tok.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=gen)
            except Exception as e:  # the template's raise_exception
                case["expected_error"] = str(e)
            cases.append(case)
    (TEMPLATES / "cases.json").write_text(json.dumps({
        "source": f"scripts/make_model_fixtures.py: transformers {transformers.__version__} "
                  "apply_chat_template(messages, tokenize=False, add_generation_prompt=...)",
        "cases": cases,
    }, indent=1, ensure_ascii=False) + "\n")
    print(f"chat templates: {len(cases)} cases")


def main():
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
          f"torch {torch.__version__}")
    for seed, family in enumerate(["llama3", "mistral", "qwen2", "qwen3"]):
        make_family(family, seed)
    make_chat_cases()


if __name__ == "__main__":
    main()
