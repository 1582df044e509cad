"""The multiprocessing.Pool methods, and asyncio."""

import asyncio
import multiprocessing

import pytest

import wasmpool


def test_starmap_imap_imap_unordered(pool, math):
    assert pool.starmap(math.add, [(1, 2), (3, 4)]) == [3, 7]
    assert list(pool.imap(math.square, range(5))) == [0, 1, 4, 9, 16]
    assert sorted(pool.imap_unordered(math.square, range(5))) == [0, 1, 4, 9, 16]
    assert pool.apply(math.square, (11,)) == 121


def test_async_result_get_timeout(pool, math):
    r = pool.apply_async(math.spin.with_limits(timeout=30.0))
    with pytest.raises(multiprocessing.TimeoutError):
        r.get(timeout=0.1)
    assert not r.ready()
    r.future.cancel()


def test_asyncio_pool_and_wrap_future(math):
    async def main():
        async with wasmpool.AsyncPool(2) as apool:
            from conftest import guest
            mod = await apool.load(guest("math"))
            results = await asyncio.gather(*(apool.run(mod.square, n) for n in range(10)))
            assert results == [n * n for n in range(10)]
            assert await apool.map(mod.square, range(5)) == [0, 1, 4, 9, 16]
            with pytest.raises(wasmpool.Trap):
                await apool.run(mod.div, 1, 0)
        # The plain pool's futures, awaited.
        pool = math.pool
        assert await asyncio.wrap_future(pool.submit(math.square, 8)) == 64

    asyncio.run(main())
