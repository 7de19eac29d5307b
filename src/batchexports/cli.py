"""The `batchexports` command: `up`, `api`, `bootstrap`, `api-key`, `set-password`, `import`, `demo`, `migrate`.

The commands that open the data directory's single-process stores (`up`; `worker`, `api`, `import`
and `demo` with the DuckDB events store) first take its lock, and `up`/`api` bind their port: a
second instance, or a port in use, is refused before anything is migrated, bootstrapped, printed
or started.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

EXIT_DATA_DIR_IN_USE = 3
EXIT_PORT_IN_USE = 4


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchexports.settings")
    import django

    django.setup()


def _uses_duckdb() -> bool:
    return os.environ.get("BATCHEXPORTS_EVENTS_STORE", "duckdb") == "duckdb"


def _lock_data_dir_or_exit(command: str, url: str | None = None, worker_identity: str | None = None) -> Any:
    """The data dir's lock, or exit naming the process that holds it (touching nothing)."""
    from batchexports.datadir import DataDirBusy, DataDirLock

    try:
        return DataDirLock().acquire(command, url=url, worker_identity=worker_identity)
    except DataDirBusy as busy:
        print(f"error: {busy}", file=sys.stderr)
        raise SystemExit(EXIT_DATA_DIR_IN_USE) from None


def _bind_or_exit(host: str, port: int, option: str = "--port") -> Any:
    from batchexports.service import bind_listener

    try:
        return bind_listener(host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            problem = f"port {port} on {host} is already in use by another program"
        elif error.errno == errno.EACCES:
            problem = f"port {port} on {host} needs privileges this process does not have"
        else:
            problem = f"cannot listen on {host}:{port} ({error.strerror or error})"
        print(
            f"error: {problem}. Stop what uses it, or choose another port: {option} N "
            "(or BATCHEXPORTS_PORT=N). Nothing was started.",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_PORT_IN_USE) from None


def _url(host: str, port: int) -> str:
    return f"http://{host}:{port}/"


def _migrate(verbosity: int = 0) -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=verbosity)


def cmd_migrate(args: argparse.Namespace) -> int:
    _setup_django()
    _migrate(verbosity=1)
    return 0


def cmd_bootstrap(args: argparse.Namespace) -> int:
    _setup_django()
    _migrate()
    from batchexports.accounts.bootstrap import bootstrap

    result = bootstrap(args.organization, args.email, new_key=args.new_key)
    if args.json:
        print(json.dumps(result.as_dict()))
    elif args.env:
        print(_shell_assignments(result.as_dict()))
    else:
        _print_bootstrap(result)
    return 0


def _shell_assignments(data: dict[str, object]) -> str:
    """`eval "$(batchexports bootstrap --env)"`: the ids and keys as shell variables (KEY only when minted)."""
    names = {"organization_id": "ORGANIZATION", "project_id": "PROJECT", "personal_api_key": "KEY",
             "project_api_key": "PROJECT_KEY"}  # fmt: skip
    return " ".join(f"{names[k]}={shlex.quote(str(v))}" for k, v in data.items() if v is not None)


def _print_bootstrap(result: object) -> None:
    data = result.as_dict()  # type: ignore[attr-defined]
    print(f"organization id:   {data['organization_id']}")
    print(f"project id:        {data['project_id']}")
    if data["personal_api_key"]:
        print(f"personal API key:  {data['personal_api_key']}   (shown once; scope *)")
    else:
        print("personal API key:  not shown again (`batchexports bootstrap --new-key` mints a new one)")
    print(f"project API key:   {data['project_api_key']}   (for capture)")
    password = getattr(result, "generated_password", None)
    if password:
        print(f"admin user:        {result.user.email} / {password}")  # type: ignore[attr-defined]


def cmd_api_key_create(args: argparse.Namespace) -> int:
    _setup_django()
    _migrate()
    from batchexports.accounts.bootstrap import create_api_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    try:
        key, value = create_api_key(args.email, scopes, label=args.label)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"id": str(key.id), "personal_api_key": value, "scopes": key.scopes}))
    else:
        print(value)
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    """Set a user's password (for the web page and /admin/): prompted twice, or one line on stdin."""
    _setup_django()
    _migrate()
    from batchexports.accounts.models import User

    user = User.objects.filter(email__iexact=args.email).first()
    if user is None:
        print(f"error: there is no user with email {args.email}", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        import getpass

        password = getpass.getpass(f"New password for {user.email}: ")
        if getpass.getpass("Repeat it: ") != password:
            print("error: the passwords differ; nothing changed", file=sys.stderr)
            return 2
    if not password:
        print("error: the password is empty; nothing changed", file=sys.stderr)
        return 2
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    try:
        validate_password(password, user)
    except ValidationError as error:
        print(f"error: {' '.join(error.messages)}", file=sys.stderr)
        return 2
    user.set_password(password)
    user.save(update_fields=["password"])
    print(f"password of {user.email} changed")
    return 0


def _project_or_exit(project_id: int) -> int:
    from batchexports.accounts.models import Project

    if not Project.objects.filter(id=project_id).exists():
        print(f"error: there is no project {project_id} (see `batchexports bootstrap`)", file=sys.stderr)
        raise SystemExit(2)
    return project_id


def _open_store_or_exit() -> object:
    from batchexports.events.store import StoreUnavailable
    from batchexports.events.stores import open_store

    try:
        return open_store()
    except StoreUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(3) from None


def _progress(total: int | None, unit: str = "events") -> Any:
    from tqdm import tqdm

    # Drawn on a terminal only; in pipes and CI the summary line below is enough.
    return tqdm(total=total, unit=f" {unit}", unit_scale=True, disable=None, file=sys.stderr)


def cmd_import(args: argparse.Namespace) -> int:
    # Held while this command writes the events store, released when it returns (in-process callers
    # such as the tests run it more than once).
    lock = _lock_data_dir_or_exit("import") if _uses_duckdb() else None
    try:
        return _import(args)
    finally:
        if lock is not None:
            lock.release()


def _import(args: argparse.Namespace) -> int:
    _setup_django()
    _migrate()
    from batchexports.events.importer import EventsFile, ImportFileError

    team_id = _project_or_exit(args.project)
    try:
        source = EventsFile(args.file, batch_rows=args.batch_rows)
        total = source.count()
    except ImportFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    store = _open_store_or_exit()
    imported = 0
    try:
        with _progress(total) as bar:
            for table in source.batches():
                imported += store.import_table(team_id, table)  # type: ignore[attr-defined]
                bar.update(table.num_rows)
    except ImportFileError as error:
        print(f"error: {error} ({imported} events imported before it)", file=sys.stderr)
        return 2
    finally:
        source.close()
        store.close()  # type: ignore[attr-defined]
    print(f"imported {imported} events into project {team_id}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    # Held while this command writes the events store, released when it returns (in-process callers
    # such as the tests run it more than once).
    lock = _lock_data_dir_or_exit("demo") if _uses_duckdb() else None
    try:
        return _demo(args)
    finally:
        if lock is not None:
            lock.release()


def _demo(args: argparse.Namespace) -> int:
    _setup_django()
    _migrate()
    from batchexports.events.demo import DemoTraffic

    team_id = _project_or_exit(args.project)
    store = _open_store_or_exit()
    traffic = DemoTraffic(args.events, args.days, args.seed)
    written = 0
    try:
        with _progress(args.events) as bar:
            for table in traffic.batches():
                written += store.import_table(team_id, table)  # type: ignore[attr-defined]
                bar.update(table.num_rows)
    finally:
        store.close()  # type: ignore[attr-defined]
    print(f"generated {written} demo events over {args.days} days into project {team_id}")
    return 0


def _check_grace_or_exit() -> None:
    from batchexports.engine.config import shutdown_grace

    try:
        shutdown_grace()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_api(args: argparse.Namespace) -> int:
    if _uses_duckdb():  # capture writes to the DuckDB file, which has one writing process
        _lock_data_dir_or_exit("api", url=_url(args.host, args.port))
    listener = _bind_or_exit(args.host, args.port)
    from batchexports.service import StopRequest, run_api

    stop = StopRequest().install()
    _setup_django()
    _migrate()
    print(f"API:               http://{args.host}:{args.port}/api/", flush=True)
    return run_api(listener, stop)


def cmd_worker(args: argparse.Namespace) -> int:
    _check_grace_or_exit()
    from batchexports.engine.config import worker_identity

    identity = worker_identity()
    previous = None
    if _uses_duckdb():  # activities read the DuckDB file, which has one process
        previous = _lock_data_dir_or_exit("worker", worker_identity=identity).previous.get("worker_identity")
    from batchexports.service import StopRequest, run_worker_forever

    stop = StopRequest().install()
    _setup_django()
    return run_worker_forever(stop, identity, previous)


def cmd_up(args: argparse.Namespace) -> int:
    _check_grace_or_exit()
    from batchexports.engine.config import worker_identity

    identity = worker_identity()
    lock = _lock_data_dir_or_exit("up", url=_url(args.host, args.port), worker_identity=identity)
    listener = _bind_or_exit(args.host, args.port)
    from batchexports.service import StopRequest, run_up

    # From here on SIGINT/SIGTERM are a graceful stop, even while migrating or starting up.
    stop = StopRequest().install()
    _setup_django()
    _migrate()
    from django.conf import settings

    from batchexports.accounts.bootstrap import bootstrap
    from batchexports.accounts.models import User

    fresh = not User.objects.exists()
    result = None
    if fresh:
        print("First start: created an organization, a project and an admin user.")
        result = bootstrap()
        _print_bootstrap(result)

    def after_start() -> None:
        if fresh and args.demo and result is not None:
            from batchexports.demo_setup import load_demo

            load_demo(result.project, result.user, print)

    print(f"data directory:    {settings.DATA_DIR}")
    print(f"web page:          http://{args.host}:{args.port}/")
    print(f"API:               http://{args.host}:{args.port}/api/", flush=True)
    return run_up(listener, stop, after_start, identity, lock.previous.get("worker_identity"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batchexports", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the service with embedded defaults")
    up.add_argument("--host", default=os.environ.get("BATCHEXPORTS_HOST", "127.0.0.1"))
    up.add_argument("--port", type=int, default=int(os.environ.get("BATCHEXPORTS_PORT", "8000")))
    up.add_argument("--demo", action="store_true", help="on a fresh data dir, load demo data and a sample export")
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser("worker", help="run a worker (scaled mode; needs TEMPORAL_ADDRESS)")
    worker.set_defaults(func=cmd_worker)

    api = sub.add_parser("api", help="serve the API only")
    api.add_argument("--host", default=os.environ.get("BATCHEXPORTS_HOST", "127.0.0.1"))
    api.add_argument("--port", type=int, default=int(os.environ.get("BATCHEXPORTS_PORT", "8000")))
    api.set_defaults(func=cmd_api)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    boot = sub.add_parser("bootstrap", help="create an organization, project, admin user and API key")
    boot.add_argument("--organization", default="Default")
    boot.add_argument("--email", default="admin@localhost")
    output = boot.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the ids and keys as JSON")
    output.add_argument("--env", action="store_true", help="print them as shell assignments, for eval")
    boot.add_argument(
        "--new-key", action="store_true", help="mint a new full-access personal API key (one is made with the user)"
    )
    boot.set_defaults(func=cmd_bootstrap)

    importer = sub.add_parser("import", help="load past events from a Parquet, JSON lines or CSV file")
    importer.add_argument("file")
    importer.add_argument("--project", type=int, required=True)
    importer.add_argument("--batch-rows", type=int, default=100_000)
    importer.set_defaults(func=cmd_import)

    demo = sub.add_parser("demo", help="generate deterministic demo traffic over the last days")
    demo.add_argument("--project", type=int, required=True)
    demo.add_argument("--events", type=int, default=10_000)
    demo.add_argument("--days", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    set_password = sub.add_parser("set-password", help="set a user's password (web page and /admin/)")
    set_password.add_argument("--email", required=True)
    set_password.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    set_password.set_defaults(func=cmd_set_password)

    api_key = sub.add_parser("api-key", help="manage personal API keys")
    api_key_sub = api_key.add_subparsers(dest="api_key_command", required=True)
    create = api_key_sub.add_parser("create", help="create a personal API key")
    create.add_argument("--email", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. batch_export:read,plugin:read")
    create.add_argument("--label", default="")
    create.add_argument("--json", action="store_true")
    create.set_defaults(func=cmd_api_key_create)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
