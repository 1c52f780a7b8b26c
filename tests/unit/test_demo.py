"""The deployment demo: its workflow (on the in-memory harness), its renderer, and the
driver run in-process with ``--fast`` on SQLite."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from stepkernel import ActionStatus, App, open_app
from stepkernel.cli import main
from stepkernel.demo.render import Style, render_tree
from stepkernel.demo.run import DemoResult
from stepkernel.demo.workflow import DemoWorld, Timings
from stepkernel.ports.store import ActionQuery
from stepkernel.runtime.snapshot import Action
from stepkernel.testing import drain, memory_app


def _dns_answer(action: Action) -> tuple[str, dict[str, str]]:
    return ("succeeded", {"record": f"{action.actor_key} CNAME lb"})


def _deploy(version: str = "v1", *, finish: bool = True) -> tuple[DemoWorld, App, str]:
    """Invoke ``deploy`` on the in-memory harness and drain it; with *finish* every DNS
    request is answered (so it ends), otherwise the DNS records stay waiting."""
    world = DemoWorld(Timings.fast())
    app = memory_app(world.registry)
    action = app.invoke_now(world.shop, "deploy", version)
    assert action.id is not None
    drain(app, outbound=_dns_answer if finish else None)
    return world, app, action.id


def test_deploy_succeeds_after_health_check_retries() -> None:
    """``deploy`` succeeds once every DNS record is completed and every health check
    passes on its third attempt; it announces the version."""
    world, app, root = _deploy()
    tree = app.tree(root)
    assert tree.action.status is ActionStatus.SUCCEEDED
    checks = [a for a in tree.walk() if a.name == "health_check"]
    assert [c.steps[0].attempt for c in checks] == [2, 2, 2]
    assert world.announcements == ["shop v1 is live"]


def test_deploy_asks_dns_provider_per_record() -> None:
    """``provision_dns`` sends one request per hostname to the DNS provider."""
    world, _, _ = _deploy(finish=False)
    assert sorted(h for _, h, _ in world.dns.requests) == sorted(world.shop.hostnames)


def test_deploy_checksum_skips_achieved_version() -> None:
    """Deploying a version already achieved is skipped without creating records."""
    world, app, root = _deploy()
    assert app.get(root).status is ActionStatus.SUCCEEDED
    again = app.invoke_later(world.shop, "deploy", "v1")
    assert again.outcome == "achieved"
    assert again.id is None
    assert again.status is ActionStatus.SUCCEEDED


def test_render_tree_groups_children_under_steps() -> None:
    """``render_tree`` draws each child under the step that fanned it out, with the
    step's attempt and last error for a retried step."""
    _, app, root = _deploy()
    lines = render_tree(app.tree(root)).splitlines()
    assert lines[0].startswith('deploy("v1") on App/shop  succeeded')
    assert lines[1].startswith("├─ step 1 provision_dns  succeeded")
    assert lines[2].startswith('│  ├─ create_record("v1") on DnsRecord/shop.example.com')
    text = "\n".join(lines)
    assert "step 1 probe  succeeded" in text
    assert "attempt 3" in text
    assert "last error: TransientHealthError: server 1 not ready for v1 (attempt 2)" in text


def test_render_tree_collapse_hides_succeeded_descendants() -> None:
    """``render_tree(collapse=True)`` draws succeeded descendants as a single line."""
    _, app, root = _deploy()
    text = render_tree(app.tree(root), collapse=True)
    assert "boot(" in text
    assert "health_check(" not in text


def test_render_tree_ascii_without_colour() -> None:
    """``Style(unicode=False)`` draws ASCII branches; without colour there is no ANSI."""
    _, app, root = _deploy(finish=False)
    text = render_tree(app.tree(root), Style(unicode=False))
    assert "`- step 1 provision_dns  performing  waiting on 3 of 3" in text
    assert '   |- create_record("v1")' in text
    assert "\x1b[" not in text
    assert text.isascii()


def test_render_tree_colour_uses_ansi() -> None:
    """``Style(colour=True)`` colours statuses with ANSI escapes."""
    _, app, root = _deploy(finish=False)
    text = render_tree(app.tree(root), Style(colour=True))
    assert "\x1b[33mperforming\x1b[0m" in text


def test_demo_result_ok_needs_superseded_v2() -> None:
    """``DemoResult.ok`` is false unless v2 ended superseded."""
    redeploy = Action(id=None, name="deploy", status=ActionStatus.SUCCEEDED, outcome="achieved")
    statuses = {
        "v1": ActionStatus.SUCCEEDED,
        "v2": ActionStatus.SUCCEEDED,
        "v3": ActionStatus.SUCCEEDED,
    }
    assert not DemoResult(statuses=statuses, redeploy=redeploy).ok
    statuses["v2"] = ActionStatus.SUPERSEDED
    assert DemoResult(statuses=statuses, redeploy=redeploy).ok


def test_main_demo_fast_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """``stepkernel demo --fast`` finishes, prints the final trees and summary, exits 0."""
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "redeploy v3  succeeded" in out
    assert "skipped: already achieved" in out
    assert "everything ended as expected" in out
    assert "\x1b[2J" not in out


def test_main_demo_records_expected_statuses(tmp_path: Path) -> None:
    """With ``--db``, the demo leaves v1 succeeded, v2 superseded by v3, v3 succeeded,
    and no record for the skipped redeploy."""
    url = "sqlite:///" + str(tmp_path / "demo.db")
    assert main(["demo", "--fast", "--db", url]) == 0
    app = open_app(DemoWorld().registry, url)
    try:
        deploys = app.find(ActionQuery(name="deploy"))
        by_version = {a.arguments[0]: a for a in deploys}
    finally:
        app.store.close()
    assert len(deploys) == 3
    assert by_version["v1"].status is ActionStatus.SUCCEEDED
    assert by_version["v2"].status is ActionStatus.SUPERSEDED
    assert by_version["v2"].superseded_by == by_version["v3"].id
    assert by_version["v3"].status is ActionStatus.SUCCEEDED
    v1_done, v3_start = by_version["v1"].finished_at, by_version["v3"].started_at
    assert v1_done is not None
    assert v3_start is not None
    assert v3_start >= v1_done


def test_main_demo_deletes_its_temporary_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--db``, the demo's temporary SQLite file is deleted afterwards."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["demo", "--fast"]) == 0
    assert list(tmp_path.iterdir()) == []
