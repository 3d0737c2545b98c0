"""A request's synchronous code runs on a pooled thread of its own, reused afterwards."""

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import HttpCommunicator
from django.core.signals import request_started
from django.db import connections

from dex.asgi import application
from dex.request_threads import RequestThreads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def request_threads():
    """The threads (name, ident) Django's requests started on, in order."""
    seen: list[tuple[str, int]] = []

    def note(**kwargs) -> None:
        seen.append((threading.current_thread().name, threading.get_ident()))

    request_started.connect(note, dispatch_uid="test-request-threads")
    yield seen
    request_started.disconnect(dispatch_uid="test-request-threads")


def test_django_requests_one_after_another_run_on_one_reused_thread(request_threads):
    async def requests(n: int) -> list[int]:
        statuses = []
        for _ in range(n):
            communicator = HttpCommunicator(
                application, "GET", "/api/v1/markets/", headers=[(b"host", b"localhost")]
            )
            statuses.append((await communicator.get_response())["status"])
        return statuses

    async_to_sync(requests)(2)  # the pool holds an executor from here on
    before = threading.active_count()
    request_threads.clear()
    assert async_to_sync(requests)(10) == [200] * 10
    # Every request on one thread of the pool: Django's own per-request context deferred
    # to the pooled one, and no thread was started.
    assert len(request_threads) == 10
    assert len(set(request_threads)) == 1
    assert request_threads[0][0].startswith("request")
    assert threading.active_count() == before


def _blocking_app(barrier: threading.Barrier):
    """An ASGI app whose synchronous part waits for ``barrier`` (thread-sensitive, as
    Django's handler runs a request's code)."""

    def wait() -> str:
        barrier.wait(timeout=5)  # BrokenBarrierError if the others never arrive
        return str(threading.get_ident())

    async def app(scope, receive, send) -> None:
        name = await sync_to_async(wait)()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": name.encode()})

    return app


def _one(app) -> HttpCommunicator:
    return HttpCommunicator(app, "GET", "/")


def test_requests_at_the_same_time_have_threads_of_their_own_and_then_share_them():
    pool = RequestThreads(_blocking_app(threading.Barrier(3)), keep=8)

    async def together() -> list[str]:
        answers = await asyncio.gather(*(_one(pool).get_response() for _ in range(3)))
        return [a["body"].decode() for a in answers]

    first = async_to_sync(together)()
    # Three requests waited for each other: one thread each, or they would deadlock.
    assert len(set(first)) == 3
    assert (pool.made, len(pool.idle)) == (3, 3)
    again = async_to_sync(together)()
    assert set(again) == set(first)  # the same threads, none made
    assert pool.made == 3


class Recording(RequestThreads):
    """Remembers every executor it handed out."""

    def __init__(self, app, *, keep: int) -> None:
        super().__init__(app, keep=keep)
        self.handed: list = []

    def _take(self):
        executor = super()._take()
        self.handed.append(executor)
        return executor


def test_only_keep_idle_executors_are_kept_and_the_rest_shut_down():
    pool = Recording(_blocking_app(threading.Barrier(4)), keep=1)

    async def together() -> None:
        await asyncio.gather(*(_one(pool).get_response() for _ in range(4)))

    async_to_sync(together)()
    assert (pool.made, len(pool.idle)) == (4, 1)
    shut = [executor._shutdown for executor in pool.handed]
    assert sorted(shut) == [False, True, True, True]
    assert not pool.idle[0]._shutdown


def test_close_ends_the_idle_threads_and_their_database_connections():
    def query() -> int:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    async def app(scope, receive, send) -> None:
        pid = await sync_to_async(query)()  # the thread keeps its connection (CONN_MAX_AGE)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(pid).encode()})

    def alive(pid: int) -> bool:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            return cursor.fetchone()[0] == 1

    pool = RequestThreads(app, keep=4)
    pid = int(async_to_sync(_one(pool).get_response)()["body"])
    (executor,) = pool.idle
    assert alive(pid)
    pool.close()
    assert pool.idle == []
    assert executor._shutdown
    for _ in range(50):
        if not alive(pid):
            break
        threading.Event().wait(0.1)
    assert not alive(pid)
