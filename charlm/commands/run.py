"""``charlm run JOB [overrides] [--resume auto|PATH [--restart]]``: train as the job says."""

from charlm.commands import add_job_arguments, load_job
from charlm.errors import UsageError


def add_parser(sub):
    parser = sub.add_parser("run", help="train a model from a job file")
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
    from charlm.train import train  # torch-heavy: imported only when training

    train(job, resume=args.resume, restart=args.restart)
    return 0
