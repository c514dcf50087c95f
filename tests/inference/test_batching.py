"""MicroBatcher: concurrent requests share batches, a full queue refuses at once, failures stay local."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from cats_dogs_other.inference.batching import MicroBatcher, QueueFullError
from cats_dogs_other.settings import Settings

QUEUE_MAX = Settings().queue_max  # room for every test's inputs, as the service has

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedModel:
    """A model stand-in that doubles its input, records batch sizes and can be held closed."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[int] = []
        self.fail_next = False

    async def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        await self.gate.wait()
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model exploded")
        return batch * 2


async def test_concurrent_requests_share_a_model_call() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue=QUEUE_MAX)
    batcher.start()
    model.gate.clear()
    first = asyncio.create_task(batcher.submit(np.array([1.0])))
    await asyncio.sleep(0.01)  # the first call is now running, held at the gate
    others = [asyncio.create_task(batcher.submit(np.array([float(i)]))) for i in range(2, 7)]
    await asyncio.sleep(0.01)
    model.gate.set()
    results = await asyncio.gather(first, *others)
    assert [float(r[0]) for r in results] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # each gets its own row
    assert model.calls == [1, 5]
    assert batcher.stats.largest == 5
    await batcher.stop()


async def test_batch_size_is_capped() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=3, max_wait_ms=0, max_queue=QUEUE_MAX)
    batcher.start()
    model.gate.clear()
    tasks = [asyncio.create_task(batcher.submit(np.array([float(i)]))) for i in range(7)]
    await asyncio.sleep(0.01)
    model.gate.set()
    await asyncio.gather(*tasks)
    assert max(model.calls) == 3
    assert sum(model.calls) == 7
    await batcher.stop()


async def test_a_lone_request_waits_at_most_max_wait_for_company() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=30, max_queue=QUEUE_MAX)
    batcher.start()
    first = asyncio.create_task(batcher.submit(np.array([1.0])))
    await asyncio.sleep(0.005)
    second = asyncio.create_task(batcher.submit(np.array([2.0])))  # arrives within the wait: same batch
    await asyncio.gather(first, second)
    assert model.calls == [2]
    await batcher.submit(np.array([3.0]))  # nobody else comes: runs alone once the wait is over
    assert model.calls == [2, 1]
    await batcher.stop()


async def test_full_queue_refuses_at_once() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0, max_queue=2)
    batcher.start()
    model.gate.clear()
    running = asyncio.create_task(batcher.submit(np.array([0.0])))
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(batcher.submit(np.array([float(i)]))) for i in (1, 2)]
    await asyncio.sleep(0.01)
    assert batcher.depth == 2
    with pytest.raises(QueueFullError):
        await batcher.submit(np.array([3.0]))
    model.gate.set()
    await asyncio.gather(running, *queued)
    await batcher.stop()


async def test_a_failed_batch_fails_only_its_requests() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue=QUEUE_MAX)
    batcher.start()
    model.fail_next = True
    with pytest.raises(RuntimeError, match="exploded"):
        await batcher.submit(np.array([1.0]))
    assert float((await batcher.submit(np.array([2.0])))[0]) == 4.0
    await batcher.stop()


async def test_stop_fails_what_is_still_queued() -> None:
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=1, max_wait_ms=0, max_queue=QUEUE_MAX)
    batcher.start()
    model.gate.clear()
    running = asyncio.create_task(batcher.submit(np.array([0.0])))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(batcher.submit(np.array([1.0])))
    await asyncio.sleep(0.01)
    await batcher.stop()
    for request in (running, waiting):
        with pytest.raises(RuntimeError, match="stopping"):
            await request


async def test_no_wait_when_nobody_else_is_coming() -> None:
    model = GatedModel()
    batcher = MicroBatcher(
        model, max_batch_size=8, max_wait_ms=5_000, max_queue=QUEUE_MAX, more_coming=lambda: False
    )
    batcher.start()
    await asyncio.wait_for(batcher.submit(np.array([1.0])), timeout=2)  # far less than the 5 s wait
    assert model.calls == [1]
    await batcher.stop()
