"""StoreExecutor on Parsl: a local HighThroughputExecutor, or Parsl's thread pool.

Run: python examples/parsl_store_executor.py [--threads] [--mb 20]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.executors.threads import ThreadPoolExecutor
from parsl.providers import LocalProvider

from pxexec import Store, StoreExecutor
from pxexec.connectors import connector_from_url
from pxexec.engines.parsl import executor_from_config


def energy(signal: np.ndarray) -> float:
    import numpy as np  # Parsl ships functions of __main__ by value: import inside

    return float(np.dot(signal, signal))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", action="store_true", help="Parsl threads instead of HTEX")
    parser.add_argument("--mb", type=float, default=20)
    args = parser.parse_args()
    executor = (
        ThreadPoolExecutor(label="threads", max_threads=2) if args.threads else
        HighThroughputExecutor(label="htex", max_workers_per_node=2, address="127.0.0.1",
                               provider=LocalProvider(init_blocks=1, max_blocks=1))
    )
    signals = [np.random.default_rng(i).random(int(args.mb * 1e6 / 8)) for i in range(4)]
    # Parsl's run directory (its logs) goes once Parsl has shut down
    with tempfile.TemporaryDirectory(prefix="parsl-example-",
                                     ignore_cleanup_errors=True) as run_dir:
        config = Config(executors=[executor], run_dir=run_dir, strategy="none",
                        initialize_logging=False)
        with Store("parsl-example", connector_from_url("shm")) as store, \
                StoreExecutor(executor_from_config(config), store) as ex:
            for i, value in enumerate(ex.map(energy, signals)):
                print(f"signal {i}: energy {value:.1f}")


if __name__ == "__main__":
    main()
