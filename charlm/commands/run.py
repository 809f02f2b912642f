"""``charlm run JOB [overrides] [--resume auto|PATH]``: train as the job says."""

from charlm.commands import add_job_arguments, load_job


def add_parser(sub):
    parser = sub.add_parser("run", help="train a model from a job file")
    add_job_arguments(parser)
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from a checkpoint: 'auto' takes the newest good one in the run's checkpoints/",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    job = load_job(args)
    from charlm.runlock import run_lock
    from charlm.train import train  # torch-heavy: imported only when training

    with run_lock(job.out_dir):  # before anything is written: one run per directory
        train(job, resume=args.resume)
    return 0
