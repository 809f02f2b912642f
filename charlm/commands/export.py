"""``charlm export --format FMT --checkpoint C --out PATH [option=value ...]``: write and validate an artefact.

Formats are the exporter plugins (``charlm export --list``); ``option=value`` pairs are the
format's own options (``charlm export --format int8 ... group_size=32``). Exit 1 when the
artefact fails a validation gate.
"""


def add_parser(sub):
    parser = sub.add_parser("export", help="export a checkpoint (int8, safetensors, torch-export, ...) and validate it")
    parser.add_argument("--list", action="store_true", help="list the export formats and exit")
    parser.add_argument("--format", help="an export format (see --list)")
    parser.add_argument("--checkpoint", metavar="PATH", help="a checkpoint (.pt) or a run directory")
    parser.add_argument("--out", help="the artefact to write (a report PATH.report.json is written beside it)")
    parser.add_argument("--no-validate", action="store_true", help="write the artefact without checking it")
    parser.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="GATE=VALUE",
        help="override a gate: max_logit_diff (1e-4), bpb_delta (0.01), kl (5e-3), top1 (0.98); repeatable",
    )
    parser.add_argument("--data", help="validate on a fixed sample of this split (.bin; default: seeded random bytes)")
    parser.add_argument("options", nargs="*", default=[], metavar="option=value", help="the format's own options")
    parser.set_defaults(func=run_export, overrides=[])


def run_export(args) -> int:
    from charlm.errors import UsageError
    from charlm.export import export, parse_tolerances
    from charlm.options import parse_options
    from charlm.registry import get_registry

    registry = get_registry()
    if args.list:
        for name in registry.names("exporter"):
            comp = registry.get("exporter", name)
            print(f"{name:<14} {comp.help}  [{comp.plugin}]")
        return 0
    missing = [flag for flag in ("format", "checkpoint", "out") if getattr(args, flag) is None]
    if missing:
        raise UsageError(f"missing {', '.join('--' + m for m in missing)} (or --list)")
    options = parse_options(args.options + args.overrides, "export", "group_size=32")
    tolerances = parse_tolerances(args.tolerance)
    report = export(args.format, args.checkpoint, args.out, options, not args.no_validate, tolerances, args.data)
    if report is None:
        print(f"wrote {args.out} (not validated)")
        return 0
    print(report.table())
    return 0 if report.passed else 1
