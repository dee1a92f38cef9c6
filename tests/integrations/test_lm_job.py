"""``divergent distill --task lm`` as a library call on tiny settings: report.json's schema,
the measures against a float64 reference, the cached teacher and its fingerprint, --resume,
user folders (``--teacher`` / ``--student``) and one-line errors that keep what was written."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    ViTConfig,
    ViTModel,
)

from divergent.integrations.lm_job import (
    TINY_SETTINGS,
    LMDistillConfig,
    evaluate_causal_lm,
    load_causal_lm_folder,
    parse_lm_objectives,
    run_lm_distill,
)
from divergent.train.distill_job import DistillError

RUN_KEYS = {
    "objective": str,
    "seed": int,
    "perplexity": float,
    "token_kl": float,
    "agreement": float,
    "tokens_per_s": float,
    "peak_rss_mb": float,
    "sample": str,
}


def _config(out, **changes) -> LMDistillConfig:
    base = {
        "objectives": ("kd:js", "gkd:0.5"),
        "seeds": 1,
        "steps": 3,
        "teacher_steps": 3,
        "out": out,
        **TINY_SETTINGS,
    }
    return LMDistillConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    seen = []
    report = run_lm_distill(_config(out), on_run=seen.append)
    return out, report, seen


def test_report_json_schema(finished):
    out, report, seen = finished
    saved = json.loads((out / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["task"] == "lm"
    assert isinstance(saved["teacher"]["perplexity"], float)
    assert [(r["objective"], r["seed"]) for r in saved["runs"]] == [
        ("ce", 0),
        ("kd:js", 0),
        ("gkd:0.5", 0),
    ]
    assert [r["objective"] for r in seen] == ["ce", "kd:js", "gkd:0.5"]
    vocab = saved["corpus"]["tokenizer_vocab"]
    for run in saved["runs"]:
        for key, kind in RUN_KEYS.items():
            assert isinstance(run[key], kind), (key, run[key])
        assert 1.0 < run["perplexity"] < 2 * vocab  # a barely trained model: near uniform
        assert run["token_kl"] >= 0.0 and 0.0 <= run["agreement"] <= 1.0
        assert run["tokens_per_s"] > 0 and run["peak_rss_mb"] > 10
        assert math.isclose(math.log(run["perplexity"]), run["nll"], rel_tol=1e-12)
    assert saved["student"]["parameters"] * 2 < saved["teacher"]["parameters"]
    assert not saved["teacher"]["cached"]
    markdown = (out / "report.md").read_text()
    assert "| kd:js |" in markdown and "| gkd:0.5 |" in markdown and "| teacher |" in markdown
    for name in ("loss_curves.png", "perplexity.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".hf*"))


def test_saved_student_and_teacher_folders_give_the_reported_numbers(finished):
    out, report, _ = finished
    teacher, tokenizer = load_causal_lm_folder(out / "teacher", "teacher")
    student, _ = load_causal_lm_folder(out / "runs" / "kd-js" / "seed-0" / "model", "student")
    from divergent.train.text_corpus import load_pydoc_corpus, token_blocks

    corpus = load_pydoc_corpus(max_documents=TINY_SETTINGS["max_documents"])
    blocks = token_blocks(tokenizer, corpus.heldout, TINY_SETTINGS["block_size"])
    blocks = blocks[: TINY_SETTINGS["eval_blocks"]]
    run = report["runs"][1]
    again = evaluate_causal_lm(student, blocks, reference=teacher)
    assert again["perplexity"] == pytest.approx(run["perplexity"], rel=1e-9)
    assert again["token_kl"] == pytest.approx(run["token_kl"], rel=1e-9)
    assert again["agreement"] == run["agreement"]
    assert evaluate_causal_lm(teacher, blocks)["perplexity"] == pytest.approx(
        report["teacher"]["perplexity"], rel=1e-9
    )


def _tiny_lm(vocab=40, seed=0, layers=1, width=16):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=16, n_embd=width, n_layer=layers, n_head=2)
    return GPT2LMHeadModel(config).eval()


def test_measures_match_a_float64_reference():
    student, teacher = _tiny_lm(seed=1), _tiny_lm(seed=2, width=32)
    blocks = torch.randint(0, 40, (5, 9), generator=torch.Generator().manual_seed(0))
    got = evaluate_causal_lm(student, blocks, reference=teacher, batch_size=2)
    with torch.no_grad():
        s = student(input_ids=blocks).logits[:, :-1].double().log_softmax(-1)
        t = teacher(input_ids=blocks).logits[:, :-1].double().log_softmax(-1)
    nll = torch.nn.functional.nll_loss(s.reshape(-1, 40), blocks[:, 1:].reshape(-1))
    kl = (t.exp() * (t - s)).sum(-1).mean()
    agree = (t.argmax(-1) == s.argmax(-1)).double().mean()
    assert got["perplexity"] == pytest.approx(math.exp(nll), rel=1e-10)
    assert got["token_kl"] == pytest.approx(float(kl), rel=1e-9)
    assert got["agreement"] == pytest.approx(float(agree), abs=1e-12)
    itself = evaluate_causal_lm(student, blocks, reference=student)
    assert itself["token_kl"] == pytest.approx(0.0, abs=1e-12) and itself["agreement"] == 1.0


def test_resume_skips_finished_runs_and_reuses_the_teacher(finished):
    out, report, _ = finished
    teacher_bytes = (out / "teacher" / "model.safetensors").read_bytes()
    kept = out / "runs" / "ce" / "seed-0" / "result.json"
    kept_text = kept.read_text()
    (out / "runs" / "gkd-0.5" / "seed-0" / "result.json").unlink()  # as if killed in that run
    seen, told = [], []
    again = run_lm_distill(
        _config(out, resume=True),
        on_run=seen.append,
        on_resume=lambda kept, to_run: told.append((kept, to_run)),
    )
    assert told == [(2, 1)]  # said once, before training: 2 finished runs kept, 1 to train
    assert [r["objective"] for r in seen] == ["ce", "kd:js", "gkd:0.5"]
    assert again["teacher"]["cached"]
    assert (out / "teacher" / "model.safetensors").read_bytes() == teacher_bytes
    assert kept.read_text() == kept_text  # a finished run is not rewritten
    assert again["runs"][:2] == report["runs"][:2]  # kept as they were (seconds too)
    retrained, before = again["runs"][2], report["runs"][2]
    assert retrained["seconds"] != before["seconds"]  # run again ...
    for key in ("perplexity", "token_kl", "agreement"):  # ... to the same numbers
        assert retrained[key] == pytest.approx(before[key], rel=1e-6), key
    assert retrained["sample"] == before["sample"]
    # every finished run is checked before any training: with ce unfinished, a changed setting
    # stops the job at kd:js's record before ce is trained again
    kept.unlink()
    changed = _config(out, resume=True, steps=4)
    with pytest.raises(DistillError, match=r"--resume: .*result.json was written with other"):
        run_lm_distill(changed, on_resume=lambda kept, to_run: pytest.fail("told"))
    assert not kept.exists()
    kept.write_text(kept_text)


def test_a_cached_teacher_from_other_settings_is_refused_and_kept(finished):
    out, _, _ = finished
    before = (out / "teacher" / "model.safetensors").read_bytes()
    with pytest.raises(
        DistillError, match=r"holds a teacher trained with other settings \(steps\)"
    ):
        run_lm_distill(_config(out, teacher_steps=4))
    assert (out / "teacher" / "model.safetensors").read_bytes() == before


def test_user_folders_take_the_download_path(finished, tmp_path):
    out, report, _ = finished
    student_dir = out / "runs" / "ce" / "seed-0" / "model"
    config = _config(
        tmp_path / "user",
        objectives=("kd:kl",),
        steps=2,
        teacher=out / "teacher",
        student=student_dir,
    )
    user = run_lm_distill(config)
    assert user["teacher"]["source"] == str(out / "teacher")
    # the same teacher, tokenizer and held-out blocks: the same teacher perplexity
    assert user["teacher"]["perplexity"] == pytest.approx(report["teacher"]["perplexity"], rel=1e-9)
    # the student starts from the folder's weights (ce, seed 0), not from a fresh init
    assert user["student"]["parameters"] == report["student"]["parameters"]
    assert [r["objective"] for r in user["runs"]] == ["ce", "kd:kl"]


def test_parse_objectives():
    parsed = parse_lm_objectives(["kd:js,ce", "gkd:0.5", "kd:js", " gkd:1:0 ", "kd"])
    assert [o.id for o in parsed] == ["ce", "kd:js", "gkd:0.5", "gkd:1:0", "kd"]
    assert [o.kind for o in parsed] == ["ce", "kd", "gkd", "gkd", "kd"]
    assert parsed[2].divergence == "js" and parsed[2].params == {"beta": 0.5}
    assert parsed[2].lmbda == 0.5
    assert parsed[3].divergence == "kl" and parsed[3].lmbda == 1.0
    assert parsed[4].divergence == "kl"
    assert parse_lm_objectives(["gkd:0.2:1"])[1].divergence == "reverse_kl"
    assert parse_lm_objectives(["gkd:0:0.9"])[1].params == {"beta": 0.9}


@pytest.mark.parametrize(
    "objective, fragment",
    [
        ("kd:helinger", "did you mean 'kd:hellinger'"),
        ("kd:notadivergence", "unknown objective 'kd:notadivergence' for --task lm"),
        ("kd:notadivergence", "gkd:<lmbda>[:<beta>]"),  # the lm ids, not the classifier's
        ("dkd", "'dkd' is for --task classifier"),
        ("nope", "unknown objective 'nope' for --task lm"),
        ("gkd:1.5", "lmbda (the on-policy fraction) must be a number in [0, 1], got '1.5'"),
        ("gkd:x", "got 'x'"),
        ("gkd:0.5:2", "beta must be a number in [0, 1], got '2'"),
        ("gkd:0.1:0.2:0.3", "use gkd:<lmbda> or gkd:<lmbda>:<beta>"),
        ("", "empty objective id in ['']"),
        ("kd:js,", "empty objective id in ['kd:js,']"),
    ],
)
def test_bad_objectives(objective, fragment):
    with pytest.raises(DistillError) as caught:
        parse_lm_objectives([objective])
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_folders_that_are_not_causal_lms(tmp_path):
    with pytest.raises(DistillError, match=r"--teacher .*none: no such folder"):
        load_causal_lm_folder(tmp_path / "none", "teacher")
    (tmp_path / "teacher.ckpt").write_bytes(b"classifier teacher")
    with pytest.raises(DistillError, match=r"teacher.ckpt: a file, not a folder; --task lm takes"):
        load_causal_lm_folder(tmp_path / "teacher.ckpt", "teacher")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillError, match=r"not a Hugging Face model folder .no config.json"):
        load_causal_lm_folder(tmp_path / "empty", "student")
    vit = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    ViTModel(vit).save_pretrained(tmp_path / "vit")
    with pytest.raises(DistillError, match=r"not a causal language model \(ViTConfig"):
        load_causal_lm_folder(tmp_path / "vit", "teacher")
    _tiny_lm().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(DistillError, match=r"--student .*gpt2: missing tokenizer"):
        load_causal_lm_folder(tmp_path / "gpt2", "student")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "gpt2") is not None  # folder intact


def test_teacher_and_student_vocabularies_that_differ(finished, tmp_path):
    out, _, _ = finished
    teacher, tokenizer = load_causal_lm_folder(out / "teacher", "teacher")
    config = copy.deepcopy(teacher.config)
    config.vocab_size += 8
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "wide")
    tokenizer.save_pretrained(tmp_path / "wide")
    target = tmp_path / "o"
    with pytest.raises(DistillError) as caught:
        run_lm_distill(_config(target, teacher=out / "teacher", student=tmp_path / "wide"))
    message = str(caught.value)
    assert "vocabularies differ" in message and 'vocab="truncate"' in message
    assert "ULD" in message and "\n" not in message
    assert not (target / "report.json").exists()


def test_a_report_of_another_task_is_not_overwritten(tmp_path):
    (tmp_path / "report.json").write_text('{"task": "digits"}')
    with pytest.raises(DistillError, match=r"holds the report of another job .task 'digits'"):
        run_lm_distill(_config(tmp_path))
    assert (tmp_path / "report.json").read_text() == '{"task": "digits"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_bad_numbers(tmp_path):
    for changes, fragment in (
        ({"seeds": 0}, "--seeds must be an integer >= 1, got 0"),
        ({"steps": 0}, "--steps must be an integer >= 1, got 0"),
        ({"block_size": 2}, "--block-size must be an integer >= 4, got 2"),
        ({"vocab_size": 100}, "--vocab-size must be an integer >= 258, got 100"),
        ({"lr": -1.0}, "--lr must be a positive number, got -1.0"),
        ({"device": "tpu"}, "--device must be cpu, cuda, cuda:N or auto, got 'tpu'"),
        ({"batch_size": 10_000}, "--batch-size 10000: more than the"),
    ):
        with pytest.raises(DistillError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            run_lm_distill(_config(tmp_path / "bad", **changes))
