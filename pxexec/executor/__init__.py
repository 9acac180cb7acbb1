"""The executor side: StoreExecutor and what it is made of.

``facade`` (StoreExecutor: submit, map on submit, shutdown), ``arguments`` (what goes
by proxy, moved, borrowed), ``ledger`` (one submission's bookkeeping, and which thread
may touch it), ``future`` (StoreFuture and its completion race), ``results`` (what is
freed, what is owned when a task completes), ``dependencies``, ``freer`` (background
eviction), ``mapping`` (map), ``worker`` (what runs on the worker: ProxyTask, Boxed,
current_store).
"""
