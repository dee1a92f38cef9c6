"""``divergent distill --task lm``: run the language-model job and print its table.

Imported by :mod:`divergent.cli.distill` only when ``--task lm`` is chosen, since the job
(:mod:`divergent.integrations.lm_job`) needs the optional ``hf`` extra.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.table import Table

from divergent.cli._app import console
from divergent.cli.distill import _run_job, _say, _say_files
from divergent.integrations.lm_job import LMDistillConfig, run_lm_distill

__all__ = ["distill_lm"]


def distill_lm(**settings: Any) -> None:
    """Build the :class:`~divergent.integrations.lm_job.LMDistillConfig` from the command's
    ``settings`` and run it (see :func:`_distill_lm`)."""
    config = LMDistillConfig(**settings)
    # under torchrun every process runs the job (DDP) but only rank 0 writes and prints
    console.quiet = int(os.environ.get("RANK", "0")) != 0
    _distill_lm(config)


def _distill_lm(config: LMDistillConfig) -> None:
    """``--task lm``: run :func:`~divergent.integrations.lm_job.run_lm_distill`, print the table."""
    out = Path(config.out)

    def on_run(record: dict[str, Any]) -> None:
        _say(
            f"  {record['objective']:<14} seed {record['seed']}  perplexity "
            f"{record['perplexity']:.2f}  token KL {record['token_kl']:.4f}  agreement "
            f"{record['agreement']:.4f}  ({record['tokens_per_s']:.0f} tokens/s, "
            f"{record['seconds']:.1f} s)"
        )

    report = _run_job(run_lm_distill, config, out, on_run)
    teacher_row, settings = report["teacher"], report["settings"]
    table = Table(
        title=f"divergent distill --task lm (teacher {teacher_row['parameters']:,} parameters → "
        f"student {report['student']['parameters']:,}; {settings['seeds']} seed(s) × "
        f"{settings['steps']} steps; held-out perplexity, mean over seeds)"
    )
    columns = ("objective", "perplexity", "± sd", "token KL", "agreement", "tokens/s", "RSS MB")
    for column in columns:
        table.add_column(column, justify="left" if column == "objective" else "right", no_wrap=True)
    cached = " (cached)" if teacher_row["cached"] else ""
    table.add_row(f"teacher{cached}", f"{teacher_row['perplexity']:.2f}", *["—"] * 5)
    for row in report["summary"]:
        table.add_row(
            row["objective"],
            f"{row['perplexity_mean']:.2f}",
            f"{row['perplexity_sd']:.2f}" if row["n"] > 1 else "—",
            f"{row['token_kl_mean']:.4f}",
            f"{row['agreement_mean']:.4f}",
            f"{row['tokens_per_s_mean']:.0f}",
            f"{row['peak_rss_mb_mean']:.0f}",
        )
    console.print(table)
    for run in report["runs"]:
        if run["seed"] == 0:
            _say(f"  sample {run['objective']:<14} {run['sample']!r}")
    earlier = report.get("earlier_runs_not_in_report") or []
    if earlier:
        _say(
            f"note: {len(earlier)} finished run(s) of an earlier invocation are kept in {out} but "
            f"not in this report ({', '.join(earlier[:4])}{' ...' if len(earlier) > 4 else ''});"
            " rerun with their objectives and --resume to include them"
        )
    _say_files(out, report)
