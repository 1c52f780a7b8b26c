"""The demo's deployment workflow, written with the public API only.

``deploy(app, version)`` on an :class:`Application`:

1. ``provision_dns`` fans out ``create_record`` on every :class:`DnsRecord`; each is an
   *outbound* action whose step asks the simulated :class:`DnsProvider`, which completes
   it later from its own thread, like a webhook would;
2. ``boot_instances`` fans out ``boot`` on every :class:`Server`: a durable wait, then a
   ``health_check`` child that fails twice and passes on its third attempt (retried under
   a short :class:`RetryPolicy`);
3. ``announce``.

``deploy`` is checksummed by version: deploying a version already achieved is skipped.
Actors live in an in-process inventory (:class:`DemoWorld`) that ``load`` looks up.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Any

from attrs import frozen

from stepkernel import App as StepkernelApp
from stepkernel import Registry, RetryPolicy, StepkernelError

log = logging.getLogger("stepkernel.demo")


@frozen
class Application:
    """The application being deployed: its hostnames and the servers it runs on."""

    name: str
    hostnames: tuple[str, ...]
    servers: tuple[int, ...]


@frozen
class Server:
    id: int


@frozen
class DnsRecord:
    hostname: str


class TransientHealthError(Exception):
    """A health check that fails because the instance is still warming up."""


@frozen
class Timings:
    """Real-time durations of the simulated world, in seconds."""

    dns_delay: float = 1.0
    boot_wait: float = 1.5
    retry_delay: float = 0.3
    health_failures: int = 2

    @classmethod
    def fast(cls) -> Timings:
        return cls(dns_delay=0.15, boot_wait=0.25, retry_delay=0.05)


class DnsProvider:
    """A simulated DNS provider: requests are answered after a delay, from a thread, by
    completing the outbound action through :meth:`App.complete` (a webhook stand-in).

    Until :meth:`bind` gives it an app, requests are only recorded.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.requests: list[tuple[str, str, str]] = []
        self._due: list[tuple[float, int, str, str, str]] = []
        self._cond = threading.Condition()
        self._app: StepkernelApp | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def request(self, action_id: str, hostname: str, version: str) -> None:
        """Ask for *hostname* to point at *version*; answered later by completion."""
        with self._cond:
            self.requests.append((action_id, hostname, version))
            spread = 1.0 + 0.25 * (len(self.requests) % 3)
            due = time.monotonic() + self.delay * spread
            heapq.heappush(self._due, (due, len(self.requests), action_id, hostname, version))
            self._cond.notify()

    def bind(self, app: StepkernelApp) -> DnsProvider:
        """Start answering requests by completing actions on *app*."""
        self._app = app
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="demo-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._due or self._due[0][0] > time.monotonic()):
                    timeout = None if not self._due else self._due[0][0] - time.monotonic()
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                _, _, action_id, hostname, version = heapq.heappop(self._due)
            self._answer(action_id, hostname, version)

    def _answer(self, action_id: str, hostname: str, version: str) -> None:
        assert self._app is not None
        record = f"{hostname} CNAME {version}.lb.example.net"
        try:
            self._app.complete(action_id, "succeeded", {"record": record})
        except StepkernelError as exc:
            log.warning("dns: cannot complete %s: %s", action_id, exc)


class DemoWorld:
    """The demo's inventory, simulated DNS provider and registry."""

    def __init__(self, timings: Timings | None = None) -> None:
        self.timings = timings or Timings()
        hostnames = ("shop.example.com", "www.shop.example.com", "api.shop.example.com")
        self.shop = Application(name="shop", hostnames=hostnames, servers=(1, 2, 3))
        self.apps = {self.shop.name: self.shop}
        self.servers = {n: Server(n) for n in self.shop.servers}
        self.records = {h: DnsRecord(h) for h in hostnames}
        self.announcements: list[str] = []
        self.dns = DnsProvider(self.timings.dns_delay)
        self.registry = self._build_registry()

    def _build_registry(self) -> Registry:
        reg = Registry()
        reg.register_actor(
            Application, name="App", key=lambda a: a.name, load=self.apps.__getitem__
        )
        reg.register_actor(Server, name="Server", key=lambda s: s.id, load=self._load_server)
        reg.register_actor(
            DnsRecord, name="DnsRecord", key=lambda r: r.hostname, load=self.records.__getitem__
        )
        reg.action(
            Application,
            "deploy",
            checksum=lambda _app, version: version,
            steps=[self.provision_dns, self.boot_instances, self.announce],
        )
        reg.action(DnsRecord, "create_record", outbound=True, steps=[self.request_record])
        reg.action(Server, "boot", steps=[self.power_on, self.check_health])
        policy = RetryPolicy(
            attempts=self.timings.health_failures + 3,
            initial_delay=self.timings.retry_delay,
            multiplier=2.0,
            jitter=0.0,
        )
        reg.action(Server, "health_check", retry=policy, steps=[self.probe])
        return reg

    def _load_server(self, key: str) -> Server:
        return self.servers[int(key)]

    # -- deploy ----------------------------------------------------------------------------

    def provision_dns(self, step: Any, app: Application, version: str) -> None:
        step.on([self.records[h] for h in app.hostnames], "create_record", version)

    def boot_instances(self, step: Any, app: Application, version: str) -> None:
        step.on([self.servers[n] for n in app.servers], "boot", version)

    def announce(self, step: Any, app: Application, version: str) -> None:
        self.announcements.append(f"{app.name} {version} is live")

    # -- children --------------------------------------------------------------------------

    def request_record(self, step: Any, record: DnsRecord, version: str) -> None:
        self.dns.request(step.action_id, record.hostname, version)

    def power_on(self, step: Any, server: Server, version: str) -> None:
        step.wait(self.timings.boot_wait)

    def check_health(self, step: Any, server: Server, version: str) -> None:
        step.do("health_check", version)

    def probe(self, step: Any, server: Server, version: str) -> None:
        if step.attempt < self.timings.health_failures:
            raise TransientHealthError(
                f"server {server.id} not ready for {version} (attempt {step.attempt + 1})"
            )


def build_registry() -> Registry:
    """The demo registry (a fresh world whose DNS provider is not answering)."""
    return DemoWorld().registry
