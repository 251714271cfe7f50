"""``generate``: K responses per prompt, written as JSONL rows for ``import_responses``.

Row shape: ``{"prompt": str | chat, "responses": [{"id", "text", "token_count",
"finished", "seed"}, ...]}``. Texts are storable (NUL and lone surrogates replaced by
U+FFFD at decoding, counted as ``text/replaced_chars``), so the import takes them.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from training.ml.commands.common import (
    CommandError,
    add_model_args,
    load_model_from_args,
    set_threads_from_env,
    write_text_atomic,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample K responses per prompt",
        description="Sample K responses per prompt of a JSONL/CSV prompt file.",
    )
    add_model_args(parser)
    parser.add_argument("--data", required=True, metavar="FILE", help="prompts (JSONL or CSV)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output JSONL file")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 for greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8, help="responses per forward batch")
    parser.add_argument("--max-length", type=int, default=1024, help="max prompt tokens")
    parser.set_defaults(handler=run)


def _check(args: argparse.Namespace) -> None:
    if args.k < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise CommandError("--k, --batch-size and --max-new-tokens must be >= 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise CommandError("--temperature must be >= 0 and --top-p in (0, 1]")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from training.ml.data import read_prompts

    _check(args)
    prompts = read_prompts(args.data)  # all lines validated before torch is even imported

    from training.ml.progress import CountProgress
    from training.ml.sampling import GenerationSettings, sample_responses

    set_threads_from_env()
    model, tokenizer = load_model_from_args(args)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_prompt_tokens=args.max_length,
    )
    started = time.perf_counter()
    with CountProgress("generate", unit="resp") as progress:
        samples = sample_responses(
            model,
            tokenizer,
            prompts,
            k=args.k,
            settings=settings,
            batch_size=args.batch_size,
            on_progress=progress,
        )
    seconds = time.perf_counter() - started
    rows = [
        _row(i, prompt, group)
        for i, (prompt, group) in enumerate(zip(prompts, samples, strict=True))
    ]
    write_text_atomic(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tokens = sum(s.token_count for group in samples for s in group)
    return {
        "prompts": len(prompts),
        "responses": len(prompts) * args.k,
        "new_tokens": tokens,
        "finished_fraction": sum(s.finished for g in samples for s in g) / (len(prompts) * args.k),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "text/replaced_chars": sum(s.replaced_chars for group in samples for s in group),
        "out": str(args.out),
    }


def _row(index: int, prompt: Any, group: list[Any]) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "responses": [
            {
                "id": f"p{index}r{j}",
                "text": sample.text,
                "token_count": sample.token_count,
                "finished": sample.finished,
                "seed": sample.seed,
            }
            for j, sample in enumerate(group)
        ],
    }
