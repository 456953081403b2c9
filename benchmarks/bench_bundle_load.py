"""What the exact allow-list costs when loading a bundle: the skops files of MODEL_DIR loaded the old way (skops'
``get_untrusted_types`` + the removed prefix test) and the new way (:func:`prodcat.safe_io.audit` + load), in
alternation within one run, plus the whole :func:`prodcat.bundle.load_model` (checksums, audit, fingerprints).

    python benchmarks/bench_bundle_load.py MODEL_DIR [--repeats 5]

Prints one JSON object: per file the median seconds of each way and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

# The prefix test that main used before the exact allow-list (kept here only to measure against).
OLD_PREFIXES = ("prodcat.", "sklearn.", "numpy.", "scipy.sparse.", "builtins.", "collections.")


def old_load(data: bytes) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=data)
    refused = [t for t in untrusted if not t.startswith(OLD_PREFIXES)]
    if refused:
        raise ValueError(refused)
    return sio.loads(data, trusted=untrusted)


def timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    from prodcat.bundle import load_model, read_manifest
    from prodcat.safe_io import audit, loads_estimator

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    manifest = read_manifest(args.model_dir)
    result: dict[str, Any] = {"files": {}}
    for entry in manifest["models"]:
        data = (args.model_dir / entry["file"]).read_bytes()
        old, new, check = [], [], []
        for _ in range(args.repeats):  # alternated so that load on the machine hits both alike
            old.append(timed(old_load, data))
            new.append(timed(loads_estimator, data))
            check.append(timed(audit, data))
        o, n = statistics.median(old), statistics.median(new)
        result["files"][entry["file"]] = {
            "model": entry["name"],
            "mb": round(len(data) / 1e6, 2),
            "old_s": round(o, 4),
            "new_s": round(n, 4),
            "new_over_old": round(n / o, 3),
            "audit_s": round(statistics.median(check), 4),
        }
    result["load_model_s"] = round(
        statistics.median(timed(load_model, args.model_dir) for _ in range(args.repeats)), 3
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
