"""The ``stepkernel`` command, run in-process with ``main([...])`` on temp SQLite files."""

from __future__ import annotations

import os
import signal
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stepkernel import (
    ActionNotFoundError,
    ActionStatus,
    InvalidInputError,
    Registry,
    RetryPolicy,
    open_app,
)
from stepkernel.cli import load_registry, main
from stepkernel.demo.workflow import DemoWorld, DnsRecord
from stepkernel.ports.store import ActionQuery

HOST = "shop.example.com"


def _fixture_registry() -> Registry:
    """Actions on plain ``str`` actors: one that fails at once, one that waits an hour."""
    reg = Registry()

    def explode(step: object, actor: str) -> None:
        raise RuntimeError(f"boom on {actor}")

    def linger(step: Any, actor: str) -> None:
        step.wait(3600)

    reg.action(str, "explode", steps=[explode], retry=RetryPolicy(attempts=1))
    reg.action(str, "linger", steps=[linger])
    return reg


@pytest.fixture
def url(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "cli.db")


@pytest.fixture
def fixture_app(monkeypatch: pytest.MonkeyPatch) -> str:
    """Registers a module ``sk_cli_fixture`` holding the fixture registry; returns the
    ``--app`` spec naming it."""
    module = types.ModuleType("sk_cli_fixture")
    module.registry = _fixture_registry()  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "sk_cli_fixture", module)
    return "sk_cli_fixture:registry"


def _outbound_waiting(url: str) -> str:
    """Invoke ``create_record`` (outbound) on the demo registry and run its step; the DNS
    provider is not answering, so the action waits for a completion.  Returns its id."""
    world = DemoWorld()
    app = open_app(world.registry, url)
    try:
        action = app.invoke_now(DnsRecord(HOST), "create_record", "v1")
        assert action.id is not None
        assert app.get(action.id).awaiting_completion
        return action.id
    finally:
        app.store.close()


def _invoke(url: str, name: str, actor: str = "a") -> str:
    app = open_app(_fixture_registry(), url)
    try:
        action = app.invoke_now(actor, name)
        assert action.id is not None
        return action.id
    finally:
        app.store.close()


def _status(url: str, action_id: str) -> ActionStatus:
    app = open_app(DemoWorld().registry, url)
    try:
        return app.get(action_id).status
    finally:
        app.store.close()


def test_main_show_prints_tree_with_steps(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` prints the action, its status, its steps and its id; exit 0."""
    action_id = _outbound_waiting(url)
    assert main(["show", action_id, "--db", url]) == 0
    out = capsys.readouterr().out
    assert f'create_record("v1") on DnsRecord/{HOST}  performing' in out
    assert "awaiting completion" in out
    assert "step 1 request_record  succeeded" in out
    assert f"id={action_id}" in out
    assert "\x1b[" not in out


def test_main_show_prints_errors(
    url: str, fixture_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show`` prints a failed action's error type and message."""
    action_id = _invoke(url, "explode")
    assert main(["show", action_id, "--db", url, "--app", fixture_app]) == 0
    out = capsys.readouterr().out
    assert "explode() on str/a  failed" in out
    assert "error: RuntimeError: boom on a" in out


def test_main_show_unknown_id_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``show`` of an unknown id prints ``error: no action ...`` on stderr and exits 2."""
    assert main(["show", "nope", "--db", url]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: no action 'nope'\n"
    assert captured.out == ""


def test_main_complete_succeeds_outbound(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``complete`` with a JSON payload ends an outbound action with that output."""
    action_id = _outbound_waiting(url)
    payload = '{"record": "manual"}'
    assert main(["complete", action_id, "--payload", payload, "--db", url]) == 0
    assert "succeeded" in capsys.readouterr().out
    app = open_app(DemoWorld().registry, url)
    try:
        assert app.get(action_id).output == {"record": "manual"}
        assert app.get(action_id).status is ActionStatus.SUCCEEDED
    finally:
        app.store.close()


def test_main_complete_with_status_failed(url: str) -> None:
    """``complete --status failed`` ends the outbound action as failed."""
    action_id = _outbound_waiting(url)
    assert main(["complete", action_id, "--status", "failed", "--db", url]) == 0
    assert _status(url, action_id) is ActionStatus.FAILED


def test_main_complete_unknown_id_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``complete`` of an unknown id is a user error: message on stderr, exit 2."""
    assert main(["complete", "nope", "--db", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no action 'nope'")
    assert "Traceback" not in err


def test_main_complete_not_outbound_exits_2(
    url: str, fixture_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``complete`` of a performing action that is not outbound exits 2, changing nothing."""
    action_id = _invoke(url, "linger")
    assert main(["complete", action_id, "--db", url, "--app", fixture_app]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert _status(url, action_id) is ActionStatus.PERFORMING


def test_main_complete_bad_payload_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``complete --payload`` that is not JSON exits 2 with a message naming the option."""
    action_id = _outbound_waiting(url)
    assert main(["complete", action_id, "--payload", "{", "--db", url]) == 2
    assert capsys.readouterr().err.startswith("error: --payload is not JSON")
    assert _status(url, action_id) is ActionStatus.PERFORMING


def test_main_cancel_cancels_action(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``cancel`` ends a performing action as cancelled."""
    action_id = _outbound_waiting(url)
    assert main(["cancel", action_id, "--db", url]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert _status(url, action_id) is ActionStatus.CANCELLED


def test_main_cancel_finished_action_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``cancel`` of an action already finished is a user error: exit 2."""
    action_id = _outbound_waiting(url)
    assert main(["cancel", action_id, "--db", url]) == 0
    capsys.readouterr()
    assert main(["cancel", action_id, "--db", url]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_main_inspect_counts(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``inspect`` prints counts by status, queued messages, next due time and the
    actions awaiting completion."""
    action_id = _outbound_waiting(url)
    assert main(["inspect", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "actions: 1 (performing=1)" in out
    assert "queued messages: 0" in out
    assert "next due: nothing queued" in out
    assert f"awaiting completion: 1\n  {action_id}" in out


def test_main_inspect_shows_next_due_timer(
    url: str, fixture_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``inspect`` shows a queued timer and when it is due."""
    _invoke(url, "linger")
    assert main(["inspect", "--db", url, "--app", fixture_app]) == 0
    out = capsys.readouterr().out
    assert "queued messages: 1 (settle=1)" in out
    assert "next due: " in out
    assert "(in " in out


def test_main_inspect_empty_memory_store(capsys: pytest.CaptureFixture[str]) -> None:
    """``inspect`` on a fresh in-memory store reports nothing."""
    assert main(["inspect", "--db", "memory://"]) == 0
    out = capsys.readouterr().out
    assert "actions: 0\n" in out
    assert "next due: nothing queued" in out


def test_main_unknown_store_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown ``--db`` scheme is a user error: exit 2."""
    assert main(["inspect", "--db", "nosuch://x"]) == 2
    assert capsys.readouterr().err.startswith("error: no store for URL")


def test_main_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing verb is a usage error: exit 2."""
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


def test_main_bad_app_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """``--app`` naming a module that does not import exits 2 with a message."""
    assert main(["inspect", "--db", "memory://", "--app", "no_such_module_x:reg"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot import 'no_such_module_x'")


def test_load_registry_calls_factory() -> None:
    """``load_registry`` accepts a zero-argument callable returning a Registry."""
    registry = load_registry("stepkernel.demo.workflow:build_registry")
    assert isinstance(registry, Registry)
    assert registry.actor_type_named("App").name == "App"


def test_load_registry_rejects_non_registry() -> None:
    """``load_registry`` rejects an attribute that is not (and does not make) a Registry."""
    with pytest.raises(InvalidInputError, match="not a Registry"):
        load_registry("stepkernel.demo.workflow:log")


def test_load_registry_needs_colon() -> None:
    """``load_registry`` requires ``module:attribute``."""
    with pytest.raises(InvalidInputError, match="module:attribute"):
        load_registry("stepkernel.demo.workflow")


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _terminate_when_succeeded(url: str, action_id: str, original: object) -> None:
    """From a helper thread: once the worker installed its handler and the action
    succeeded (or 15 s passed), send SIGTERM to this process."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _status(url, action_id) is ActionStatus.SUCCEEDED:
            break
        time.sleep(0.05)
    while time.monotonic() < deadline + 5:
        if signal.getsignal(signal.SIGTERM) is not original:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(0.05)


@pytest.mark.usefixtures("restore_signals")
def test_main_worker_runs_until_sigterm(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``worker`` processes the queue (the demo DNS provider answers outbound records)
    and exits 0 on SIGTERM."""
    world = DemoWorld()
    app = open_app(world.registry, url)
    try:
        action = app.invoke_later(DnsRecord(HOST), "create_record", "v1")
    finally:
        app.store.close()
    assert action.id is not None
    helper = threading.Thread(
        target=_terminate_when_succeeded,
        args=(url, action.id, signal.getsignal(signal.SIGTERM)),
        daemon=True,
    )
    helper.start()
    assert main(["worker", "--db", url, "--threads", "1"]) == 0
    helper.join(5)
    assert _status(url, action.id) is ActionStatus.SUCCEEDED
    assert "worker stopped" in capsys.readouterr().out


def test_main_retry_invokes_a_failed_root_again(
    url: str, fixture_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``retry`` re-invokes a finished root with the same actor and arguments as a new
    root, keeping the old one."""
    action_id = _invoke(url, "explode")
    assert main(["retry", action_id, "--db", url, "--app", fixture_app]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"retried {action_id} as ")
    app = open_app(_fixture_registry(), url)
    try:
        roots = app.find(ActionQuery(name="explode"))
        assert len(roots) == 2
        assert app.get(action_id).status is ActionStatus.FAILED
    finally:
        app.store.close()


def test_main_retry_of_unfinished_root_exits_2(
    url: str, fixture_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``retry`` refuses an action that has not finished: exit 2, nothing created."""
    action_id = _invoke(url, "linger")
    assert main(["retry", action_id, "--db", url, "--app", fixture_app]) == 2
    assert capsys.readouterr().err.startswith("error: only finished roots")


def test_main_prune_deletes_old_finished_trees(
    url: str, fixture_app: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``prune --older-than 0`` deletes finished trees and keeps unfinished ones."""
    finished = _invoke(url, "explode")
    waiting = _invoke(url, "linger")
    assert main(["prune", "--older-than", "0", "--db", url, "--app", fixture_app]) == 0
    assert "pruned 1 action(s)" in capsys.readouterr().out
    app = open_app(_fixture_registry(), url)
    try:
        with pytest.raises(ActionNotFoundError):
            app.get(finished)
        assert app.get(waiting).status is ActionStatus.PERFORMING
    finally:
        app.store.close()


@pytest.mark.parametrize(
    "option", [["--group", "0"], ["--group-window", "-1"], ["--group-window", "inf"]]
)
def test_main_worker_refuses_a_bad_group_setting(
    option: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``worker --group`` below 1 or a ``--group-window`` that is negative or infinite is
    a usage error: exit 2 with a message naming the option, and no worker starts."""
    assert main(["worker", "--db", "memory://", *option]) == 2
    assert option[0] in capsys.readouterr().err


def test_main_worker_passes_its_group_settings_on(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``worker --group 4 --group-window 0.5`` builds a worker with those settings."""
    from stepkernel.runtime.worker import Worker

    seen: list[tuple[int, float]] = []

    def run_forever(self: Worker, **_: object) -> None:
        seen.append((self.group, self.group_window))

    monkeypatch.setattr(Worker, "run_forever", run_forever)
    assert main(["worker", "--db", url, "--group", "4", "--group-window", "0.5"]) == 0
    assert seen == [(4, 0.5)]
