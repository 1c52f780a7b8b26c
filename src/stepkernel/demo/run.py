"""The demo driver: deploy v1, supersede v2 with v3, redeploy v3, with a live tree.

Runs a real :class:`~stepkernel.Worker` (two threads) on SQLite (a temporary file unless
``db`` is given) and the simulated DNS provider; redraws the trees every ~0.2 s on a TTY
(clear screen + home), prints progress lines otherwise, then a summary.  Returns 0 only if
every root ended as expected.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TextIO

from attrs import define, field

from stepkernel import Action, ActionStatus, ActionTree, open_app
from stepkernel import App as StepkernelApp
from stepkernel.demo.render import Style, render_tree
from stepkernel.demo.workflow import DemoWorld, Timings

CLEAR = "\x1b[2J\x1b[H"
REDRAW_EVERY = 0.2
DEADLINE = 25.0

EXPECTED = {
    "v1": ActionStatus.SUCCEEDED,
    "v2": ActionStatus.SUPERSEDED,
    "v3": ActionStatus.SUCCEEDED,
}


@define
class DemoResult:
    """What the demo ended with: root ids and statuses per version, and the redeploy."""

    roots: dict[str, str] = field(factory=dict)
    statuses: dict[str, ActionStatus] = field(factory=dict)
    redeploy: Action | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        redeployed = self.redeploy is not None and self.redeploy.outcome == "achieved"
        return redeployed and all(self.statuses.get(v) is s for v, s in EXPECTED.items())


@contextlib.contextmanager
def _database(db: str | None) -> Iterator[str]:
    if db is not None:
        yield db
        return
    handle, path = tempfile.mkstemp(prefix="stepkernel-demo-", suffix=".db")
    os.close(handle)
    try:
        yield "sqlite:///" + path
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)


def style_for(out: TextIO) -> Style:
    """ANSI colour on a TTY; box-drawing characters when the stream encodes UTF-8."""
    encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
    return Style(colour=out.isatty(), unicode=encoding.startswith("utf"))


def run_demo(*, db: str | None = None, fast: bool = False, out: TextIO | None = None) -> int:
    """Run the demo; 0 when every root ended as expected, 1 otherwise."""
    stream = out or sys.stdout
    with _database(db) as url:
        result = _run(url, Timings.fast() if fast else Timings(), stream)
    return 0 if result.ok else 1


def _run(url: str, timings: Timings, out: TextIO) -> DemoResult:
    world = DemoWorld(timings)
    app = open_app(world.registry, url, new_id=lambda: "d" + uuid.uuid4().hex[:10])
    live = Live(app, out, url)
    result = DemoResult()
    world.dns.bind(app)
    worker = app.worker(threads=2).start()
    started = time.monotonic()
    try:
        v1 = app.invoke_later(world.shop, "deploy", "v1")
        assert v1.id is not None
        result.roots["v1"] = v1.id
        live.progress(f"deploy v1 invoked: {v1.status.value}")
        live.wait_for(lambda: app.get(v1.id or "").status is ActionStatus.PERFORMING, 5.0)
        for version in ("v2", "v3"):
            action = app.invoke_later(world.shop, "deploy", version)
            if action.id is not None:
                result.roots[version] = action.id
            live.progress(f"deploy {version} invoked while v1 performs: {action.status.value}")
        live.roots = list(result.roots.values())
        live.wait_for(live.all_finished, DEADLINE)
        result.redeploy = app.invoke_later(world.shop, "deploy", "v3")
        result.statuses = {v: app.get(i).status for v, i in result.roots.items()}
    finally:
        worker.stop()
        world.dns.stop()
        result.elapsed = time.monotonic() - started
        live.final(result)
        app.store.close()
    return result


class Live:
    """Draws the roots' trees: redrawn on a TTY, progress lines plus a final tree otherwise."""

    def __init__(self, app: StepkernelApp, out: TextIO, url: str) -> None:
        self.app = app
        self.out = out
        self.url = url
        self.tty = out.isatty()
        self.style = style_for(out)
        self.roots: list[str] = []
        self.started = time.monotonic()
        self._seen: dict[str, ActionStatus] = {}

    def progress(self, text: str) -> None:
        if not self.tty:
            self.out.write(f"[{time.monotonic() - self.started:5.1f}s] {text}\n")
            self.out.flush()

    def trees(self) -> list[ActionTree]:
        return [self.app.tree(root) for root in self.roots]

    def all_finished(self) -> bool:
        trees = self.trees()
        for tree in trees:
            action = tree.action
            if self._seen.get(action.id or "") is not action.status:
                self._seen[action.id or ""] = action.status
                self.progress(f"deploy {action.arguments[0]}: {action.status.value}")
        if self.tty:
            self._draw(trees)
        return all(t.action.finished for t in trees)

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(REDRAW_EVERY)
        return False

    def _draw(self, trees: list[ActionTree], *, collapse: bool = True) -> None:
        now = self.app.store.now()
        header = (
            f"stepkernel demo: deploying 'shop' on {self.url}  "
            f"({time.monotonic() - self.started:.1f}s)\n\n"
        )
        body = "\n\n".join(render_tree(t, self.style, now=now, collapse=collapse) for t in trees)
        self.out.write(CLEAR + header + body + "\n")
        self.out.flush()

    def final(self, result: DemoResult) -> None:
        trees = self.trees() if self.roots else []
        if self.tty:
            self._draw(trees, collapse=False)
        else:
            self.out.write("\n" + "\n\n".join(render_tree(t, self.style) for t in trees) + "\n")
        self.out.write("\n" + summary(result, trees) + "\n")
        self.out.flush()


def summary(result: DemoResult, trees: list[ActionTree]) -> str:
    """Each root's status and elapsed time, the redeploy, counts by status, verdict."""
    lines = ["summary:"]
    for version, root_id in result.roots.items():
        tree = next((t for t in trees if t.action.id == root_id), None)
        if tree is None:
            continue
        action = tree.action
        took = _elapsed(action)
        expected = EXPECTED.get(version)
        mark = "ok" if action.status is expected else f"expected {expected}"
        lines.append(
            f"  deploy {version}  {action.status.value:<11} {took:>7}  ({mark})  id={root_id}"
        )
    if result.redeploy is not None:
        how = result.redeploy.outcome
        label = "skipped: already achieved" if how == "achieved" else f"not skipped ({how})"
        lines.append(f"  redeploy v3  {result.redeploy.status.value:<11} {'':>7}  {label}")
    counts = Counter(a.status.value for t in trees for a in t.walk())
    lines.append("  actions by status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    verdict = "everything ended as expected" if result.ok else "UNEXPECTED outcome"
    lines.append(f"  {verdict} in {result.elapsed:.1f}s")
    return "\n".join(lines)


def _elapsed(action: Action) -> str:
    start = action.started_at or action.created_at
    if start is None or action.finished_at is None:
        return "-"
    return f"{action.finished_at - start:.2f}s"
