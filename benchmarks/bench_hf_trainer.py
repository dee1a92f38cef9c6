"""Benchmark: one training step of divergent's DistillationTrainer vs TRL's (issue 10, Performance).

Cases (same student, teacher, batch and sequence length; forward KL at temperature 1, off-policy:
the completions are given, nothing is generated):

* ``divergent``: :class:`divergent.integrations.transformers.DistillationTrainer` (default:
  fused backbone + head loss, :func:`fused_token_distillation_loss`);
* ``divergent-materialised``: the same trainer with ``fused=False`` (both B×T×V logits);
* ``trl-distillation``: ``trl.DistillationTrainer`` (TRL ≥ 1.x; its chunked JSD kernel with
  ``beta=0``). It is an on-policy trainer (it always generates), so its generation is bypassed:
  ``_prepare_inputs`` returns the same fixed prompt/completion batch;
* ``trl-gkd``: ``trl.experimental.gkd.GKDTrainer`` with ``lmbda=0`` (never generates),
  ``beta=0``: full student and teacher logits and ``generalized_jsd_loss``.

One step = ``trainer.training_step`` (forward, loss, backward) + ``AdamW.step`` + ``zero_grad``.
Both TRL configs get ``gradient_checkpointing=False`` and ``bf16=False`` (their defaults are
True / bf16 on GPUs) so that every case runs the same fp32 models without recomputation.

Models: GPT-2 configs with hidden 64, 2 heads, a vocabulary of 32768 (so the head dominates);
student 1 layer, teacher 2 layers; batch 4 × 256 tokens (64 prompt + 192 completion tokens, the
supervised ones). Each case runs in a fresh subprocess on one PyTorch thread: build, one warm-up
step (allocates the optimiser state and gradients), then the peak RSS of one step above the RSS
before it (``/proc/self/clear_refs`` reset, ``VmHWM``), then ``--steps`` timed steps (median).
Rounds interleave the cases so that load on this shared machine hits all alike; the table gives
medians over rounds and ratios to ``trl-distillation`` (targets: time < 1, peak-over-base ≤ 0.6).

Usage::

    python benchmarks/bench_hf_trainer.py              # ~5-10 min on 2 busy cores
    python benchmarks/bench_hf_trainer.py --quick      # V = 8192, 128 tokens, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

from _memory import measure_peak_rss

CASES = ("divergent", "divergent-materialised", "trl-distillation", "trl-gkd")
REFERENCE = "trl-distillation"


def _models(vocab: int, hidden: int, positions: int):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    def gpt2(layers: int, seed: int):
        torch.manual_seed(seed)
        config = GPT2Config(
            n_layer=layers,
            n_embd=hidden,
            n_head=2,
            vocab_size=vocab,
            n_positions=positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=1,
            eos_token_id=1,
            pad_token_id=0,
        )
        return GPT2LMHeadModel(config)

    return gpt2(1, 0), gpt2(2, 1)


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "a": 2}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<pad>")),
        pad_token="<pad>",
        eos_token="<eos>",
    )


def _trainer_and_batch(
    case: str, vocab: int, hidden: int, batch: int, prompt: int, completion: int
):
    """(trainer, model, the inputs of one training step)."""
    import torch

    student, teacher = _models(vocab, hidden, prompt + completion + 8)
    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(2, vocab, (batch, prompt), generator=g)
    completion_ids = torch.randint(2, vocab, (batch, completion), generator=g)
    ids = torch.cat([prompt_ids, completion_ids], 1)
    labels = ids.clone()
    labels[:, :prompt] = -100
    out_dir = tempfile.mkdtemp(prefix="bench_hf_trainer_")
    common = dict(
        output_dir=out_dir,
        use_cpu=True,
        per_device_train_batch_size=batch,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    if case.startswith("divergent"):
        from transformers import TrainingArguments

        from divergent.integrations.transformers import DistillationTrainer

        trainer = DistillationTrainer(
            model=student,
            args=TrainingArguments(**common),
            teacher_model=teacher,
            divergence="kl",
            fused=case == "divergent",
        )
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        return trainer, trainer.model, lambda: dict(inputs)
    from datasets import Dataset

    if case == "trl-distillation":
        import trl

        config = trl.DistillationConfig(
            **common,
            bf16=False,
            gradient_checkpointing=False,
            beta=0.0,
            temperature=1.0,
            max_completion_length=completion,
        )
        trainer = trl.DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": ["a"] * batch}),
            processing_class=_tokenizer(),
        )
        fixed = {
            "prompt_ids": prompt_ids,
            "prompt_mask": torch.ones_like(prompt_ids),
            "completion_ids": completion_ids,
            "completion_mask": torch.ones_like(completion_ids),
        }
        trainer._prepare_inputs = lambda _batch: dict(fixed)  # no generation: the given batch
        return trainer, trainer.model, dict
    if case == "trl-gkd":
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        config = GKDConfig(
            **common,
            bf16=False,
            gradient_checkpointing=False,
            lmbda=0.0,
            beta=0.0,
            temperature=1.0,
            seq_kd=False,
        )
        messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "a"}]
        trainer = GKDTrainer(
            model=student,
            teacher_model=teacher,
            args=config,
            train_dataset=Dataset.from_dict({"messages": [messages] * batch}),
            processing_class=_tokenizer(),
        )
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        return trainer, trainer.model, lambda: dict(inputs)
    raise ValueError(f"unknown case {case!r}; choose from {CASES}")


def run_case(
    case: str, vocab: int, hidden: int, batch: int, prompt: int, completion: int, steps: int
):
    """Build ``case``, warm up, measure one step's peak RSS, then time ``steps`` steps."""
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    trainer, model, make_inputs = _trainer_and_batch(case, vocab, hidden, batch, prompt, completion)
    model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() otherwise
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> float:
        loss = trainer.training_step(model, make_inputs(), None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    loss = step()  # warm-up: optimiser state, gradients, lazy initialisations
    base, peak, method = measure_peak_rss(step)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {
        "case": case,
        "loss": loss,
        "seconds": statistics.median(times),
        "peak_over_base_mb": (peak - base) / 1024,
        "peak_rss_mb": peak / 1024,
        "method": method,
    }


def _spawn(case: str, ns: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--case",
        case,
        *("--vocab", str(ns.vocab), "--hidden", str(ns.hidden), "--batch", str(ns.batch)),
        *("--prompt", str(ns.prompt), "--completion", str(ns.completion), "--steps", str(ns.steps)),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600, env=env)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    return {"case": case, "error": (out.stderr or out.stdout)[-800:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="V=8192, 32+96 tokens, 1 round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case and round")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--completion", type=int, default=192)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case here
    ns = ap.parse_args()
    if ns.case:
        print(json.dumps(run_case(ns.case, ns.vocab, ns.hidden, ns.batch, ns.prompt,
                                  ns.completion, ns.steps)))  # fmt: skip
        return 0
    if ns.quick:
        ns.vocab, ns.prompt, ns.completion, ns.rounds, ns.steps = 8192, 32, 96, 1, 2
    cases = [c for c in ns.cases.split(",") if c]
    print(
        f"one training step, B={ns.batch}, T={ns.prompt + ns.completion} "
        f"({ns.completion} supervised), V={ns.vocab}, hidden {ns.hidden}; student 1 layer, "
        f"teacher 2; {ns.rounds} rounds × {ns.steps} steps; torch 1 thread, fp32, CPU"
    )
    results: dict[str, list[dict]] = {c: [] for c in cases}
    for r in range(ns.rounds):
        for case in cases:
            got = _spawn(case, ns)
            results[case].append(got)
            status = got.get("error", "").splitlines()[-1:] if "error" in got else ""
            print(f"  round {r + 1} {case}: {status or json.dumps(got)}", flush=True)
    summary = {}
    for case, rows in results.items():
        ok = [x for x in rows if "error" not in x]
        if ok:
            summary[case] = {
                key: statistics.median(x[key] for x in ok)
                for key in ("seconds", "peak_over_base_mb", "peak_rss_mb", "loss")
            }
    ref = summary.get(REFERENCE)
    print()
    header = f"{'case':<24}{'s/step':>9}{'step peak MB':>14}{'peak RSS MB':>13}{'loss':>10}"
    header += f"{'time ×TRL':>11}{'mem ×TRL':>10}"
    print(header)
    print("-" * len(header))
    for case, s in summary.items():
        t_ratio = s["seconds"] / ref["seconds"] if ref else float("nan")
        m_ratio = s["peak_over_base_mb"] / ref["peak_over_base_mb"] if ref else float("nan")
        print(
            f"{case:<24}{s['seconds']:>9.3f}{s['peak_over_base_mb']:>14.1f}"
            f"{s['peak_rss_mb']:>13.1f}{s['loss']:>10.5f}{t_ratio:>11.2f}{m_ratio:>10.2f}"
        )
    if ref and "divergent" in summary:
        d = summary["divergent"]
        t_ratio = d["seconds"] / ref["seconds"]
        m_ratio = d["peak_over_base_mb"] / ref["peak_over_base_mb"]
        print(
            f"\ntargets vs {REFERENCE}: time {t_ratio:.2f}× (target < 1: "
            f"{'met' if t_ratio < 1 else 'missed'}), step peak memory {m_ratio:.2f}× "
            f"(target ≤ 0.60: {'met' if m_ratio <= 0.6 else 'missed'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
