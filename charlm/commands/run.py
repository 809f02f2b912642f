"""``charlm run JOB [overrides] [--resume auto|PATH]``: train as the job says.

JOB is a job file or the name of a recipe (``charlm recipes``); an existing file wins.
"""

from charlm.commands import add_job_arguments, load_job
from charlm.recipes import lookup


def add_parser(sub):
    parser = sub.add_parser("run", help="train a model from a job file or a recipe name")
    add_job_arguments(parser)
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from a checkpoint: 'auto' takes the newest good one in the run's checkpoints/",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    job = load_job(args)
    recipe = lookup(args.job)
    if recipe is not None:
        recipe.check_data(job.data.train, job.data.val)
    from charlm.train import train  # torch-heavy: imported only when training

    train(job, resume=args.resume)
    return 0
