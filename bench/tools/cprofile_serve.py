"""Run ``sailseg serve`` under cProfile with a per-thread CPU clock.

Why thread CPU time: on a loaded 2-core machine a wall-clock profiler charges the time the
process spends preempted (typically right after a socket write wakes the load generator) to
whatever function was running, which made socket writes look like 40% of the work. With
``time.thread_time`` only CPU actually used by the event-loop thread is counted (cProfile
profiles the thread that enabled it: the SQLite worker threads are not in this profile).

    .venv/bin/python bench/tools/cprofile_serve.py OUT.prof serve --config bench/w1/sailseg.toml --port 9200
    bench/.venv-bench/bin/python -c "import pstats; pstats.Stats('OUT.prof').sort_stats('tottime').print_stats(30)"

Stop the server with SIGTERM/SIGINT; the profile is written on exit.
"""
from __future__ import annotations

import cProfile
import sys
import time


def main() -> None:
    out = sys.argv[1]
    sys.argv = ["sailseg", *sys.argv[2:]]
    from sailseg.cli import main as sailseg_main

    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    try:
        sailseg_main()
    except SystemExit:
        pass
    finally:
        prof.disable()
        prof.dump_stats(out)


if __name__ == "__main__":
    main()
