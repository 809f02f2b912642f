"""``charlm config show|validate JOB [overrides]``: JOB is a job file or a recipe name, as for ``charlm run``."""

from charlm.commands import add_job_arguments, load_job
from charlm.config import config_to_toml


def add_parser(sub):
    parser = sub.add_parser("config", help="show or validate a job config")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print the resolved job as TOML")
    add_job_arguments(show)
    show.set_defaults(func=show_config)
    validate = actions.add_parser("validate", help="check a job: exit 0 when valid, 2 with the first error")
    add_job_arguments(validate)
    validate.set_defaults(func=validate_config)


def show_config(args) -> int:
    print(config_to_toml(load_job(args)), end="")
    return 0


def validate_config(args) -> int:
    load_job(args)
    print(f"ok: {args.job}")
    return 0
