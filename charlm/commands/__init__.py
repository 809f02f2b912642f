"""One module per ``charlm`` subcommand: ``add_parser(subparsers)`` sets ``func`` on its parser."""

from __future__ import annotations

from charlm.config import JobConfig, load_config
from charlm.recipes import lookup


def add_job_arguments(parser) -> None:
    """A job file, dotted overrides, and the shortcuts every job command accepts."""
    parser.add_argument("job", help="job file (.toml, or .yaml with PyYAML) or recipe name (charlm recipes)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. model.n_layer=4 optimizer.lr=3e-4")
    parser.add_argument("--max-steps", type=int, help="override max_steps")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], help="override precision")
    parser.add_argument("--device", help='override device ("auto", "cpu", "cuda", "mps")')
    parser.add_argument("--no-val", action="store_true", help="no validation during or after the run")


def job_overrides(args) -> list[str]:
    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.precision:
        overrides.append(f'precision="{args.precision}"')
    if args.device:
        overrides.append(f'device="{args.device}"')
    if args.no_val:
        overrides += ["logging.eval_every=0", "logging.final_eval=false"]
    return overrides


def load_job(args) -> JobConfig:
    """The job that ``args.job`` names: a job file, or a recipe (an existing file wins)."""
    recipe = lookup(args.job)
    return load_config(args.job if recipe is None else recipe.path, job_overrides(args))
