"""The Celery side of the comparison: a no-op task, at-least-once (acks_late), with the
Redis result backend. The broker and backend URL come from BENCH_REDIS_URL."""

import os

from celery import Celery


def make_app() -> Celery:
    """A Celery app on the harness's Redis. One per client thread: Celery's Redis result
    consumer is not meant to be shared between threads."""
    url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    app = Celery("bench", broker=url, backend=url)
    app.conf.update(
        task_acks_late=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = make_app()


@app.task(name="bench.noop")
def noop():
    """Does nothing: the comparison measures the queue, not the work."""
    return None
