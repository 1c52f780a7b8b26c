"""The ``stepkernel`` command: demo, worker, show, complete, cancel, retry, prune, inspect.

Errors stepkernel raises on purpose (:class:`StepkernelError`) print ``error: <message>``
on stderr and exit 2; usage errors exit 2 as well (argparse).  ``--app module:attr``
names the user's :class:`Registry` (or a zero-argument callable returning one); without
it the demo registry is used.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from stepkernel import (
    ActionStatus,
    ActionTree,
    App,
    InvalidInputError,
    Registry,
    StepkernelError,
    Worker,
    open_app,
)
from stepkernel.demo.render import Style, action_line, clock_time, render_tree
from stepkernel.demo.run import run_demo, style_for
from stepkernel.demo.workflow import DemoWorld
from stepkernel.ports.store import ActionQuery
from stepkernel.runtime.grouping import DEFAULT_GROUP, DEFAULT_WINDOW

Handler = Callable[[argparse.Namespace], int]


def load_registry(spec: str | None) -> Registry:
    """The registry named by *spec* (``"pkg.module:attr"``), or the demo registry."""
    if spec is None:
        return DemoWorld().registry
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidInputError(f"--app needs 'module:attribute', got {spec!r}", app=spec)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidInputError(f"cannot import {module_name!r}: {exc}", app=spec) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise InvalidInputError(
                f"{module_name!r} has no attribute {attr!r}", app=spec
            ) from None
    if not isinstance(target, Registry) and callable(target):
        target = target()
    if not isinstance(target, Registry):
        raise InvalidInputError(
            f"{spec!r} is not a Registry nor a callable returning one", app=spec
        )
    return target


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[App]:
    """The app for ``--app``/``--db``; its store is closed on the way out."""
    app = open_app(load_registry(args.app), args.db)
    try:
        yield app
    finally:
        app.store.close()


def _style() -> Style:
    return style_for(sys.stdout)


# -- verbs -----------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    code = run_demo(db=args.db, fast=args.fast)
    if args.db:
        print(f"records kept in {args.db}: stepkernel show ID --db {args.db}")
    return code


def cmd_worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    world = DemoWorld() if args.app is None else None
    app = open_app(
        world.registry if world else load_registry(args.app),
        args.db,
        lease_seconds=args.lease_seconds,
        pool_size=args.threads + 4,  # a connection per thread, plus heartbeat, sweep, main
    )
    try:
        if world is not None:
            world.dns.bind(app)
        recovered = app.recover()
        worker: Worker = app.worker(
            threads=args.threads,
            recover_every=args.recover_every,
            group=args.group,
            group_window=args.group_window,
        )
        print(
            f"worker {worker.name}: {args.threads} thread(s) on {args.db}; "
            f"{recovered} wake-up(s) recovered; SIGTERM or Ctrl-C to stop",
            flush=True,
        )
        worker.run_forever()
        print(f"worker stopped: {worker.processed} message(s), {worker.errors} error(s)")
    finally:
        if world is not None:
            world.dns.stop()
        app.store.close()
    return 0


def _subtree(tree: ActionTree, action_id: str) -> ActionTree | None:
    if tree.action.id == action_id:
        return tree
    for child in tree.children:
        found = _subtree(child, action_id)
        if found is not None:
            return found
    return None


def cmd_show(args: argparse.Namespace) -> int:
    with _opened(args) as app:
        action = app.get(args.id)
        tree = _subtree(app.tree(action.root_id or args.id), args.id)
        if tree is None:
            tree = ActionTree(action)
        print(render_tree(tree, _style(), now=app.store.now(), detail=True))
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    try:
        payload = None if args.payload is None else json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--payload is not JSON: {exc}") from None
    with _opened(args) as app:
        action = app.complete(args.id, args.status, payload)
        print(action_line(action, _style(), now=app.store.now(), detail=False))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _opened(args) as app:
        action = app.cancel(args.id)
        print(action_line(action, _style(), now=app.store.now(), detail=False))
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with _opened(args) as app:
        action = app.retry(args.id)
        print(f"retried {args.id} as {action.id or '(no records)'}: {action.status.value}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with _opened(args) as app:
        deleted = app.prune(older_than=args.older_than)
        print(f"pruned {deleted} action(s) of trees finished over {args.older_than:g}s ago")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    with _opened(args) as app:
        store = app.store
        by_status = Counter({s.value: n for s, n in store.count_actions().items()})
        performing = store.find_actions(ActionQuery(statuses=frozenset({ActionStatus.PERFORMING})))
        queued = store.queued()
        by_kind = Counter(m.kind.value for m in queued)
        now = store.now()
        due = store.next_due()
        waiting = [a.id for a in performing if a.awaiting_completion]
        print(f"store: {args.db}")
        print(f"actions: {by_status.total()}" + _counts(by_status))
        print(f"queued messages: {len(queued)}" + _counts(by_kind))
        if due is None:
            print("next due: nothing queued")
        else:
            when = "now" if due <= now else f"in {due - now:.1f}s"
            print(f"next due: {clock_time(due)} ({when})")
        print(f"awaiting completion: {len(waiting)}" + "".join(f"\n  {i}" for i in waiting[:20]))
        dead = store.dead_letters()
        print(f"dead letters: {len(dead)}" + (" (see: stepkernel dead-letters)" if dead else ""))
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    with _opened(args) as app:
        store = app.store
        if args.drop:
            dropped = store.drop_dead_letters(args.drop)
            print(f"dropped {dropped} of {len(set(args.drop))} dead letter(s)")
            return 0
        letters = store.dead_letters()
        print(f"dead letters: {len(letters)}")
        for letter in letters:
            text = letter.data if len(letter.data) <= 200 else letter.data[:200] + "..."
            print(
                f"{letter.message_id}  action={letter.action_id or '?'}  "
                f"at={clock_time(letter.dead_at)}  deliveries={letter.deliveries}\n"
                f"  reason: {letter.reason}\n  stored: {text}"
            )
    return 0


def _counts(counter: Counter[str]) -> str:
    if not counter:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in sorted(counter.items())) + ")"


# -- parser ------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepkernel", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str, handler: Handler, help_: str, *, app: bool = True
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_, description=help_)
        sub.set_defaults(handler=handler)
        if app:
            sub.add_argument(
                "--db",
                required=True,
                metavar="URL",
                help="sqlite:///file.db, postgresql+psycopg://..., redis://... or memory://",
            )
            sub.add_argument("--app", metavar="MODULE:ATTR", help="registry (default: the demo's)")
        return sub

    demo = verb("demo", cmd_demo, "run the deployment demo with a live tree", app=False)
    demo.add_argument("--db", metavar="URL", help="keep records here (default: a temp SQLite file)")
    demo.add_argument("--fast", action="store_true", help="shorter simulated delays")

    worker = verb("worker", cmd_worker, "run workers until SIGTERM/SIGINT")
    worker.add_argument(
        "--concurrency",
        "--threads",
        dest="threads",
        type=_positive,
        default=2,
        metavar="N",
        help="messages handled at once (threads in this process; run more processes, on "
        "this machine or others, to scale out)",
    )
    worker.add_argument(
        "--lease-seconds",
        type=_positive_float,
        default=60.0,
        metavar="S",
        help="how long a dead worker's messages wait before redelivery (default 60)",
    )
    worker.add_argument(
        "--recover-every",
        type=_positive_float,
        default=300.0,
        metavar="S",
        help="seconds between recovery sweeps for lost wake-ups (default 300)",
    )
    worker.add_argument(
        "--group",
        type=_positive,
        default=DEFAULT_GROUP,
        metavar="N",
        help=f"step outcomes committed together at most (default {DEFAULT_GROUP}; 1: each "
        "on its own)",
    )
    worker.add_argument(
        "--group-window",
        type=_non_negative_float,
        default=DEFAULT_WINDOW,
        metavar="S",
        help=f"seconds the oldest held outcome waits for more (default {DEFAULT_WINDOW})",
    )

    show = verb("show", cmd_show, "print an action tree with statuses, timings and errors")
    show.add_argument("id")

    complete = verb("complete", cmd_complete, "complete an outbound action from outside")
    complete.add_argument("id")
    complete.add_argument(
        "--status", default="succeeded", choices=("succeeded", "failed", "cancelled")
    )
    complete.add_argument("--payload", metavar="JSON")

    cancel = verb("cancel", cmd_cancel, "cancel an action and its unfinished descendants")
    cancel.add_argument("id")

    retry = verb("retry", cmd_retry, "invoke a finished root again as a new root")
    retry.add_argument("id")

    prune = verb("prune", cmd_prune, "delete finished trees older than --older-than seconds")
    prune.add_argument("--older-than", type=float, default=7 * 24 * 3600.0, metavar="SECONDS")

    verb("inspect", cmd_inspect, "counts of actions by status, queued messages, next due time")

    dead = verb("dead-letters", cmd_dead_letters, "list queued messages set aside as undecodable")
    dead.add_argument("--drop", action="append", metavar="ID", help="forget this dead letter")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stepkernel`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    started = time.monotonic()
    try:
        return handler(args)
    except StepkernelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
