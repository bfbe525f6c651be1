"""The `crm-assets` command: run everything, update one field, serve the demo CRM."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Sequence

from crm_assets.settings import SettingsError


def _domain_names() -> list[str]:
    from crm_assets.domains import DOMAIN_NAMES

    return list(DOMAIN_NAMES)


def _whole_number(text: str, low: int, high: int | None, rule: str) -> int:
    """An option's value, or argparse's usage error (exit 2) saying what it must be."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{text!r} is not {rule}")
    return value


def _port(text: str) -> int:
    return _whole_number(text, 0, 65535, "a port number (0 to 65535)")


def _count(text: str) -> int:
    return _whole_number(text, 0, None, "a whole number of records (0 or more)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crm-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="sync the CRM, refresh the aggregations it changed, and summarize",
        description="Sync the CRM into the warehouse (crm_sync: raw, clean, exports), then refresh the "
        "aggregation partitions whose deals changed (all of them on the first run), and print a summary. "
        "Runs go to the Dagster instance in $DAGSTER_HOME (default ./.crm_assets/dagster_home, with the "
        "SQLite warehouse in it unless DATABASE_URL is set) and show on their job's page in the UI.",
    )
    run.add_argument("--full-refresh", action="store_true", help="re-read every CRM record, not only changes")
    run.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="apply a sync that deletes or removes more than 10%% of a table's rows, which is otherwise refused "
        "as an accident; only for the day such a loss is real",
    )
    run.add_argument(
        "--rebuild-reports",
        action="store_true",
        help="recompute every aggregation partition, not only those whose deals changed",
    )

    update = commands.add_parser("update", help="write one field back to the CRM and the warehouse")
    update.add_argument("--domain", required=True, choices=_domain_names(), help="which records")
    update.add_argument("--key", required=True, help="field that selects the records, e.g. deal_id")
    update.add_argument("--value", required=True, help="value of --key to match")
    update.add_argument("--key-to-update", required=True, help="field to change, e.g. deal_size")
    update.add_argument("--update-value", required=True, help="new value, cast to the field's type")
    update.add_argument("--dry-run", action="store_true", help="show the planned changes, write nothing")

    demo = commands.add_parser("demo-crm", help="serve the Freshsales-compatible demo CRM over HTTP")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=_port, default=8765, help="TCP port, 0 for any free one (default: 8765)")
    demo.add_argument("--accounts", type=_count, default=None, help="number of accounts (default: a few hundred)")
    demo.add_argument("--contacts", type=_count, default=None, help="number of contacts")
    demo.add_argument("--deals", type=_count, default=None, help="number of deals")
    demo.add_argument("--seed", type=int, default=None, help="random seed of the synthetic data")
    return parser


def _exiting(code: int) -> int:
    """The command's exit code, once Python's last garbage collection is spared: at exit it would walk
    Dagster's whole object graph (about a second after a run) to free memory the process returns anyway."""
    gc.freeze()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from crm_assets.defs.instance import dagster_home, quiet_dagster_warnings

    quiet_dagster_warnings()
    if args.command == "demo-crm":
        from crm_assets.demo_crm.server import serve_forever

        return serve_forever(
            host=args.host,
            port=args.port,
            accounts=args.accounts,
            contacts=args.contacts,
            deals=args.deals,
            seed=args.seed,
        )
    from crm_assets.defs.command_process import exit_interrupted, terminal_stderr
    from crm_assets.resources import check_export_dir_from_env, check_settings_from_env, check_warehouse_from_env

    # Stopped by a supervisor's SIGTERM as by Ctrl-C. SIGINT too, even when inherited as ignored (a script's
    # `crm-assets run &`): Dagster gives SIGTERM SIGINT's handler while a run executes, and the log-capture
    # helpers it starts inherit an ignored one, so neither the command nor they could be stopped.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.default_int_handler)
    try:
        check_settings_from_env()  # a mistake the runs would fail on stops the command before any run
        dagster_home()  # one instance, and the SQLite warehouse in it, for every command
        check_warehouse_from_env()
        if args.command == "run":  # the exports are its last step
            check_export_dir_from_env()
        terminal_stderr()  # before a run's log capture takes fd 2
        return _exiting(_run_command(args))
    except SettingsError as exc:  # nothing ran: the variable to fix, in one line
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # between runs (during one, the run is canceled and the process ends there)
        exit_interrupted("interrupted")


def _run_command(args: argparse.Namespace) -> int:
    """`run` or `update`: Dagster runs on the one instance."""
    if args.command == "run":
        from crm_assets.run_all import run_all

        return run_all(
            full_refresh=args.full_refresh,
            rebuild_reports=args.rebuild_reports,
            allow_mass_delete=args.allow_mass_delete,
        )
    if args.command == "update":
        from crm_assets.defs.write_back.launch import launch_update

        return launch_update(
            domain=args.domain,
            key=args.key,
            value=args.value,
            key_to_update=args.key_to_update,
            update_value=args.update_value,
            dry_run=args.dry_run,
        )
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
