#!/usr/bin/env python3
"""DPO step speed: panacea-dpo (`panacea train-dpo`) vs TRL's DPOTrainer with a PEFT LoRA of the
same rank, on the same model, pairs and batch, measured in the same run (issue #8).

Both sides train SmolLM2-135M-Instruct (the model.safetensors that `cargo xtask fetch-model
smollm2-135m` writes) on the same B·N pairs of data/pairs/smollm2-pku.jsonl for N steps of B
pairs (one epoch, so both see exactly the same sequences; the order within the epoch is each
trainer's own shuffle). Pairs are taken in file order, skipping those whose ChatML prompt plus
the longer response plus EOS exceeds --max-len tokens, so neither side truncates or drops.

- panacea: the embedded default DPO config (SVD-LoRA rank 8 + 2 preference dimensions = 10
  singular values on q, k, v, o, gate, up, down) on the PKU labels, helpful and harmless (two
  losses from the same log-probs; TRL trains on the helpful label) with the reference cache
  OFF, so every step runs the reference forward, like TRL. Each pair's prompt runs once for
  both responses (panacea_dpo::shared_prefix; TRL runs it twice). Step time = `time/step_ms`
  from metrics.jsonl (the step alone: batch collation, reference and policy forward,
  backward, clipping, AdamW).
- TRL: DPOTrainer, PEFT LoRA r = 10 on the same seven projections, sigmoid loss, β = 0.1, same
  lr, ref_model=None (TRL computes the reference with the adapter disabled), f32 and no
  gradient checkpointing (TRL's defaults turn both bf16 autocast and checkpointing on). Step
  time = wall time between the Trainer's on_step_begin and on_step_end callbacks.

Two modes (--modes): `fresh` runs the reference forward in every step on both sides (panacea's
reference cache off; TRL's default); `reuse` computes the reference log-probs once before the
timed epoch (panacea: a first run fills its on-disk cache, the timed second run reads it; TRL:
`precompute_ref_log_probs=True`), so the steps are policy forward + backward only.

The first --warmup steps of each side are dropped; each run reports the median step time and
pairs/s = B / median, and the 1-minute load average before and after it. On a shared machine
use --rounds 2 or more: every round runs each implementation once, in alternating order, and
the speed-up is taken within the round (then the median over rounds). --panacea-before adds a
second panacea binary (the previous commit's) to the same rounds for a before/after.
Threads: torch.set_num_threads and OMP_NUM_THREADS = --threads for both.

Set-up (not part of the build): a venv that sees the libtorch venv's torch 2.11 and adds TRL:
    python -m venv /tmp/trlvenv  # with ~/.cache/panacea/libtorch-2.11.0/venv/bin/python
    echo ~/.cache/panacea/libtorch-2.11.0/venv/lib/python3.11/site-packages \
        > /tmp/trlvenv/lib/python3.11/site-packages/libtorch.pth
    /tmp/trlvenv/bin/pip install trl peft transformers
Run (after `cargo build -p panacea-cli`; the dev profile is optimised):
    OMP_NUM_THREADS=1 /tmp/trlvenv/bin/python scripts/trl_dpo_bench.py \
        --panacea target/debug/panacea --steps 10 --warmup 2 --threads 1 --rounds 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from hf_decode_bench import chatml, load  # the same ChatML prompt and HF model loading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def select_pairs(path, tok, n, max_len):
    """The first n pairs (file order) that fit in max_len tokens on both sides."""
    out, tokens = [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            p = len(tok(chatml(r["prompt"]), add_special_tokens=False).input_ids)
            r0 = len(tok(r["response_0"], add_special_tokens=False).input_ids)
            r1 = len(tok(r["response_1"], add_special_tokens=False).input_ids)
            if r["response_0"] == r["response_1"] or p + max(r0, r1) + 1 > max_len:
                continue
            out.append(r)
            tokens += [p + r0 + 1, p + r1 + 1]
            if len(out) == n:
                return out, tokens
    sys.exit(f"only {len(out)} pairs of {path} fit in {max_len} tokens; {n} needed")


def run_panacea(binary, pairs_file, args, workdir, reuse):
    """Step times of one epoch. With `reuse`, a first (untimed) run fills the on-disk reference
    cache and the timed second run reads it, so its steps skip the reference forward."""
    if reuse:
        run_panacea_once(binary, pairs_file, args, workdir + "-fill", workdir + "-cache")
        return run_panacea_once(binary, pairs_file, args, workdir, workdir + "-cache")
    return run_panacea_once(binary, pairs_file, args, workdir, None)


def run_panacea_once(binary, pairs_file, args, workdir, cache_dir):
    cache = (["--set", "ref_cache.enabled=true", "--set", f"ref_cache.dir={cache_dir}"]
             if cache_dir else ["--set", "ref_cache.enabled=false"])
    cmd = [binary, "train-dpo", "--runs-dir", workdir,
           "--set", f"data.train={pairs_file}", "--set", "data.format=pku-saferlhf",
           "--set", "objectives=[helpful, harmless]", "--set", "data.eval_prompt_stride=0",
           "--set", f"data.max_len={args.max_len}", "--set", f"train.steps={args.steps}",
           "--set", f"train.batch_size={args.batch}", "--set", "train.save_every=0",
           "--set", f"threads={args.threads}", "--set", f"optim.lr={args.lr}"] + cache
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    (run,) = [d for d in os.listdir(workdir) if d.endswith("dpo-default")]
    steps, from_cache = [], []
    with open(os.path.join(workdir, run, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            if "time/step_ms" in m:
                steps.append(m["time/step_ms"] / 1000.0)
                from_cache.append(m["dpo/ref_from_cache"])
    # A reuse run that missed the cache would time the reference forward after all.
    if cache_dir is not None and not workdir.endswith("-fill") and not all(from_cache):
        sys.exit(f"the timed reuse run missed the reference cache: {from_cache}")
    return steps, wall


class StepTimer:
    """A transformers TrainerCallback (built lazily so the module imports without TRL)."""

    @staticmethod
    def make():
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.times, self.t0 = [], None

            def on_step_begin(self, args, state, control, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                self.times.append(time.perf_counter() - self.t0)

        return _Timer()


def run_trl(model_dir, pairs, args, workdir, reuse):
    """Step times of one epoch; with `reuse`, TRL's precompute_ref_log_probs pass (untimed)
    replaces the per-step reference forward."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.threads)
    model, _ = load(model_dir)
    model.train()
    tok = tokenizer(model_dir)
    rows = [{"prompt": chatml(r["prompt"]),
             "chosen": r[f"response_{r['better_response_id']}"],
             "rejected": r[f"response_{1 - r['better_response_id']}"]} for r in pairs]
    dpo_args = DPOConfig(
        output_dir=workdir, per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=args.lr, beta=0.1, max_length=args.max_len, logging_steps=1,
        report_to=[], save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        disable_dropout=True,
        # TRL's defaults differ from TrainingArguments': bf16 autocast is on whenever use_cpu is
        # (emulated on CPUs without bf16 units, ~50x slower here) and gradient checkpointing
        # is on. panacea-dpo runs f32 without checkpointing, so both are turned off.
        bf16=False, gradient_checkpointing=False, precompute_ref_log_probs=reuse)
    lora = LoraConfig(r=10, lora_alpha=20, lora_dropout=0.0, target_modules=PROJECTIONS,
                      task_type="CAUSAL_LM")
    timer = StepTimer.make()
    trainer = DPOTrainer(model=model, ref_model=None, args=dpo_args,
                         train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora, callbacks=[timer])
    t0 = time.perf_counter()
    trainer.train()
    return timer.times, time.perf_counter() - t0


def tokenizer(model_dir):
    from transformers import PreTrainedTokenizerFast
    with open(os.path.join(model_dir, "config.json")) as f:
        eos = json.load(f)["eos_token_id"]
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    tok.pad_token = tok.eos_token
    return tok


def summary(name, times, wall, args):
    kept = times[args.warmup:]
    med = statistics.median(kept)
    return {"impl": name, "steps_timed": len(kept), "median_step_s": med,
            "mean_step_s": statistics.mean(kept), "pairs_per_s": args.batch / med,
            "total_wall_s": wall, "step_s": [round(t, 3) for t in times]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--panacea", default=os.path.join(ROOT, "target/debug/panacea"))
    ap.add_argument("--panacea-before", default=None,
                    help="a second panacea binary (e.g. built from the previous commit), timed "
                         "in the same rounds as 'panacea-before'")
    ap.add_argument("--model-dir",
                    default=os.path.expanduser("~/.cache/panacea/models/smollm2-135m"))
    ap.add_argument("--pairs", default=os.path.join(ROOT, "data/pairs/smollm2-pku.jsonl"))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every implementation per mode; the order alternates between "
                         "rounds (A B, B A, ...) and the ratio is taken within each round")
    ap.add_argument("--only", choices=["panacea", "trl"], default=None)
    ap.add_argument("--modes", default="fresh,reuse",
                    help="fresh: a reference forward every step (cache off / no precompute); "
                         "reuse: reference log-probs computed once before the timed epoch")
    args = ap.parse_args()
    tok = tokenizer(args.model_dir)
    pairs, tokens = select_pairs(args.pairs, tok, args.steps * args.batch, args.max_len)
    print(json.dumps({"pairs": len(pairs), "sequences": len(tokens),
                      "mean_tokens_per_sequence": statistics.mean(tokens),
                      "threads": args.threads, "batch": args.batch}), flush=True)
    impls = []
    if args.only in (None, "panacea"):
        impls.append(("panacea-dpo", args.panacea))
        if args.panacea_before:
            impls.append(("panacea-before", args.panacea_before))
    if args.only in (None, "trl"):
        impls.append(("trl+peft", None))
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = os.path.join(tmp, "pairs.jsonl")
        with open(pairs_file, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in pairs)
        for mode in args.modes.split(","):
            reuse = {"fresh": False, "reuse": True}[mode]
            ratios = {}
            for rnd in range(args.rounds):
                # Other jobs on a shared machine change the speed within minutes: alternating
                # the order and comparing within a round keeps that out of the ratio.
                order = impls if rnd % 2 == 0 else impls[::-1]
                results = {}
                for name, binary in order:
                    load = os.getloadavg()[0]
                    workdir = os.path.join(tmp, f"{name}-{mode}-{rnd}")
                    if binary is None:
                        times, wall = run_trl(args.model_dir, pairs, args, workdir, reuse)
                    else:
                        times, wall = run_panacea(binary, pairs_file, args, workdir, reuse)
                    results[name] = summary(name, times, wall, args) | {
                        "mode": mode, "round": rnd, "load_1min": [load, os.getloadavg()[0]]}
                    print(json.dumps(results[name]), flush=True)
                if "trl+peft" in results:
                    for name in results:
                        if name != "trl+peft":
                            ratio = (results[name]["pairs_per_s"]
                                     / results["trl+peft"]["pairs_per_s"])
                            ratios.setdefault(name, []).append(ratio)
                            print(json.dumps({"mode": mode, "round": rnd, "impl": name,
                                              "speedup_over_trl": ratio}), flush=True)
            for name, rs in ratios.items():
                print(json.dumps({"mode": mode, "impl": name, "speedup_over_trl_per_round": rs,
                                  "median": statistics.median(rs)}), flush=True)


if __name__ == "__main__":
    main()
