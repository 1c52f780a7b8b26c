"""The store contract suite: every :class:`~stepkernel.ports.store.WorkflowStore` passes it.

Subclass :class:`WorkflowStoreContract` as ``TestSomething`` in your test suite and
implement :meth:`~WorkflowStoreContract.make_store` (a fresh, empty store on the clock it
is given); pytest then runs every behaviour below against your adapter::

    class TestMyStore(WorkflowStoreContract):
        def make_store(self, clock: Clock) -> WorkflowStore:
            return MyWorkflowStore(client, clock=clock)

        def corrupt(self, store: WorkflowStore, key: RecordKey) -> None:
            client.set(f"records:{key[0]}:{key[1]}", "garbage")  # backdoor

Hooks: :meth:`~WorkflowStoreContract.corrupt` writes undecodable bytes for a record
and :meth:`~WorkflowStoreContract.corrupt_message` for a queued message, through the
backend directly (their tests are skipped when an adapter stores objects, not bytes);
:meth:`~WorkflowStoreContract.dispose` releases a store after each test.

The records are real domain records sealed with their digest chain
(:func:`stepkernel.domain.encoding.seal`), so adapters that verify digests on load accept
them.
"""

from __future__ import annotations

from stepkernel.testing.contract_dead import DeadLetterContract
from stepkernel.testing.contract_queue import QueueContract
from stepkernel.testing.contract_records import RecordContract
from stepkernel.testing.contract_support import LEASE, achievement, action, bump, lane

__all__ = ["LEASE", "WorkflowStoreContract", "achievement", "action", "bump", "lane"]


class WorkflowStoreContract(RecordContract, QueueContract, DeadLetterContract):
    """The behaviours every store must show; subclass as ``TestXxx`` (see module)."""
