"""``charlm run JOB [overrides] [--resume auto|PATH [--restart]]``: train as the job says.

JOB is a job file or the name of a recipe (``charlm recipes``); an existing file wins.
"""

from pathlib import Path

from charlm.commands import add_job_arguments, load_job
from charlm.errors import UsageError
from charlm.recipes import lookup


def add_parser(sub):
    parser = sub.add_parser("run", help="train a model from a job file or a recipe name")
    add_job_arguments(parser)
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from a checkpoint: 'auto' takes the newest good one in the run's checkpoints/",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="with --resume auto: when no checkpoint loads, set the damaged ones aside and start again from step 0",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.restart and args.resume != "auto":
        raise UsageError("--restart goes with --resume auto")
    job = load_job(args)
    recipe = lookup(args.job)
    if recipe is not None:
        recipe.check_data(job.data.train, job.data.val)
    from charlm.atomic import remove_stale_temps
    from charlm.runlock import run_lock
    from charlm.train import train  # torch-heavy: imported only when training

    with run_lock(job.out_dir) as lock_file:  # before anything is written: one run per directory
        if lock_file is not None:  # rank 0, the only writer: what a killed run left half-written goes
            for directory in (Path(job.out_dir), Path(job.out_dir) / "checkpoints"):
                remove_stale_temps(directory)
        train(job, resume=args.resume, restart=args.restart)
    return 0
