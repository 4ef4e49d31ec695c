"""``python -m benchmarks``: the main job (for now, the keep-alive reuse demo)."""

from __future__ import annotations

from benchmarks.reuse import main

main()
