"""``pool.session()`` on a warm thread against a bare threading.local read and the usual recipe.

``python -m benchmarks.micro`` prints one JSON line of nanoseconds per call (best of repeats).
"""

from __future__ import annotations

import json
import threading
import timeit

import requests

from threadsession import ThreadLocalSessionPool


def main() -> None:
    number, repeat = 300_000, 5
    pool = ThreadLocalSessionPool()
    local = threading.local()
    local.session = pool.session()

    def recipe() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session  # type: ignore[no-any-return]

    names = {"local": local, "pool": pool, "recipe": recipe}

    def best(statement: str) -> float:
        runs = timeit.repeat(statement, globals=names, number=number, repeat=repeat)
        return min(runs) / number * 1e9

    result = {
        "bare_local_read_ns": best("local.session"),
        "pool_session_ns": best("pool.session()"),
        "recipe_function_ns": best("recipe()"),
    }
    pool.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
