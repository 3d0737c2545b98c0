"""Request threads that outlive their request.

A request's synchronous code (middleware, view, ORM) runs on a thread of the request's
own, chosen by the asgiref ``ThreadSensitiveContext`` the request runs in. Django's ASGI
handler opens one per request, asgiref gives it a new one-thread executor, and when the
request ends it starts one more thread to shut that executor down: every request
started two threads and set up Django's per-thread state (database connection
wrappers) from nothing.

``RequestThreads`` opens the request's context itself, with an executor from a pool:
asgiref's supported form (``ThreadSensitiveContext(executor=...)``, which asgiref does
not shut down; a context opened inside it, as Django's handler opens one, defers to
it). The web process runs ``dex.wsgi_bridge`` inside it. A request still has a thread
to itself for as long as it runs (concurrent requests take different executors; the
pool grows as needed), and the thread then serves a later request, as a WSGI server's
threads do: Django closes or returns the request's database connection when the
request finishes (``request_finished``), so no state carries over but what Django
keeps per thread by design. Up to ``keep`` idle executors are kept (``ASGI_THREADS``,
the size the Procfile gives asgiref's own pool); one returned beyond that is shut down.
``close`` closes the idle threads' database connections and ends them (a test session
before it drops its database).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.db import connections


class RequestThreads:
    """ASGI middleware for Django's HTTP app: each request's synchronous code runs on a
    pooled one-thread executor."""

    def __init__(self, app, *, keep: int | None = None) -> None:
        self.app = app
        self.keep = keep if keep is not None else int(os.environ.get("ASGI_THREADS", "32"))
        self.idle: list[ThreadPoolExecutor] = []  # touched on the event loop only
        self.made = 0

    async def __call__(self, scope, receive, send) -> None:
        executor = self._take()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            self._give(executor)

    def _take(self) -> ThreadPoolExecutor:
        if self.idle:
            return self.idle.pop()
        self.made += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def _give(self, executor: ThreadPoolExecutor) -> None:
        if len(self.idle) < self.keep:
            self.idle.append(executor)
        else:
            executor.shutdown(wait=False)  # its thread ends once its work is done

    def close(self) -> None:
        """Close the idle threads' database connections and end the threads."""
        idle, self.idle = self.idle, []
        for executor in idle:
            executor.submit(connections.close_all).result()
            executor.shutdown()
