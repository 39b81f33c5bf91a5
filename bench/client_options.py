"""Outbound HTTP client options for sinks, measured against the W1 stub.

Why: every sink sends through the ``httpx.AsyncClient`` that
``sailseg.ComponentContext.http_client()`` builds, and the W1 references show the transport
alone moving the thin forwarder by 8x. This measures the options that keep the httpx API (so
plugins, respx-based tests and ``ctx.transport`` injection stay as they are) next to a raw
aiohttp session as the reference, on the request W1 sends (a signed ~500-byte form POST to
``/user``), and picks with numbers.

    bench/.venv-bench/bin/python bench/client_options.py            # table + JSON
    ROUNDS=3 SECONDS=4 CONCURRENCY="1 64" bench/.venv-bench/bin/python bench/client_options.py

Each (option, concurrency) cell runs in a fresh subprocess on uvloop for SECONDS with C
workers in a closed loop; rounds alternate the option order. Figures: requests/s, client CPU
microseconds per request (process CPU time of the client process / requests), p99 latency
(ms). The stub (``stub_sailthru.py``, raw server) runs in its own process on 127.0.0.1:9110
and checks every signature. Output: a Markdown table on stdout and
``results/client-options-<time>.json``.
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

PORT = int(os.environ.get("CLIENT_STUB_PORT", "9110"))
STUB = f"http://127.0.0.1:{PORT}"

OPTIONS: dict[str, str] = {
    "httpx-default": "httpx.AsyncClient() defaults (100 connections, 20 kept alive)",
    "httpx-limits256": "httpx, Limits(256, keepalive 256): what http_client() built before",
    "httpx-http2": "httpx http2=True (cleartext http:// negotiates HTTP/1.1: same pool as above)",
    "httpx-aiohttp": "httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(limits 256))",
    "httpx-aiohttp-own": "httpx.AsyncClient(transport=sailseg.transport.AiohttpTransport) (core's own)",
    "aiohttp-raw": "aiohttp.ClientSession, TCPConnector(limit=256): the reference (no httpx)",
}


def _body() -> bytes:
    js = json.dumps(common.map_identify(json.loads(common.identify_body("c-1", 1))),
                    separators=(",", ":"))
    params = {"api_key": common.API_KEY, "format": "json", "json": js}
    params["sig"] = common.sailthru_sig(common.SECRET, params)
    from urllib.parse import urlencode

    return urlencode(params).encode()


def _make(option: str):
    """Return (post(url, body) coroutine fn, aclose coroutine fn) for ``option``."""
    import httpx

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if option.startswith("httpx"):
        if option == "httpx-default":
            client = httpx.AsyncClient()
        elif option == "httpx-limits256":
            client = httpx.AsyncClient(limits=limits)
        elif option == "httpx-http2":
            client = httpx.AsyncClient(limits=limits, http2=True)
        elif option == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport

            client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits))
        elif option == "httpx-aiohttp-own":
            import importlib.util

            path = os.path.join(HERE, "..", "core", "src", "sailseg", "transport.py")
            spec = importlib.util.spec_from_file_location("sailseg_transport", path)
            mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
            client = httpx.AsyncClient(transport=mod.AiohttpTransport(limits=limits))
        else:
            raise SystemExit(f"unknown option {option}")

        async def post(url: str, body: bytes) -> int:
            r = await client.post(url, content=body, headers=headers)
            return r.status_code

        return post, client.aclose
    if option == "aiohttp-raw":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

        async def post(url: str, body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status

        return post, session.close
    raise SystemExit(f"unknown option {option}")


async def _cell(option: str, conc: int, seconds: float) -> dict:
    post, aclose = _make(option)
    url = f"{STUB}/user"
    body = _body()
    for _ in range(50):  # warm the pool
        await post(url, body)
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                status = await post(url, body)
                if status != 200:
                    errors += 1
            except Exception:  # noqa: BLE001 - counted
                errors += 1
            lat.append(time.perf_counter() - t0)

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await aclose()
    lat.sort()
    n = len(lat)
    return {
        "option": option, "concurrency": conc, "requests": n, "errors": errors,
        "req_per_s": round(n / wall, 1), "cpu_us_per_req": round(cpu / max(1, n) * 1e6, 1),
        "client_cpu_cores": round(cpu / wall, 3),
        "p50_ms": round(lat[n // 2] * 1000, 2) if n else None,
        "p99_ms": round(lat[min(n - 1, int(n * 0.99))] * 1000, 2) if n else None,
    }


def _child(option: str, conc: int, seconds: float) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_cell(option, conc, seconds))))


def _stub_stats() -> dict:
    with urllib.request.urlopen(f"{STUB}/stats", timeout=10) as r:
        return json.loads(r.read())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    rounds = int(os.environ.get("ROUNDS", "3"))
    seconds = float(os.environ.get("SECONDS", "4"))
    concs = [int(c) for c in os.environ.get("CONCURRENCY", "1 64").split()]
    options = os.environ.get("OPTIONS", " ".join(OPTIONS)).split()
    stub = subprocess.Popen([sys.executable, os.path.join(HERE, "stub_sailthru.py"), "--port", str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[dict] = []
    try:
        for _ in range(100):
            try:
                _stub_stats()
                break
            except OSError:
                time.sleep(0.1)
        for r in range(rounds):
            order = options[r % len(options):] + options[: r % len(options)]
            for option in order:
                for conc in concs:
                    out = subprocess.run([sys.executable, __file__, "--child", option, str(conc), str(seconds)],
                                         capture_output=True, text=True, timeout=seconds * 10 + 60)
                    if out.returncode != 0:
                        print(f"!! {option} c={conc}: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                        continue
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    row["round"] = r + 1
                    rows.append(row)
                    print(f"  round {r + 1} {option:<18} c={conc:<3} {row['req_per_s']:>8.0f} req/s "
                          f"{row['cpu_us_per_req']:>6.0f} us/req p99 {row['p99_ms']} ms errors {row['errors']}",
                          file=sys.stderr)
        stats = _stub_stats()
    finally:
        stub.terminate()
        stub.wait(10)
    ref = {c: statistics.median(x["req_per_s"] for x in rows if x["option"] == "aiohttp-raw" and x["concurrency"] == c)
           for c in concs if any(x["option"] == "aiohttp-raw" and x["concurrency"] == c for x in rows)}
    print(f"| option | concurrency | req/s (median of {rounds}) | x aiohttp-raw | client CPU us/req | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for option in options:
        for conc in concs:
            xs = [x for x in rows if x["option"] == option and x["concurrency"] == conc]
            if not xs:
                continue
            med = statistics.median(x["req_per_s"] for x in xs)
            cpu = statistics.median(x["cpu_us_per_req"] for x in xs)
            p99 = statistics.median(x["p99_ms"] for x in xs)
            err = sum(x["errors"] for x in xs)
            ratio = med / ref[conc] if conc in ref else None
            summary.append({"option": option, "concurrency": conc, "req_per_s": med, "ratio_to_aiohttp_raw": ratio,
                            "cpu_us_per_req": cpu, "p99_ms": p99, "errors": err, "what": OPTIONS.get(option)})
            print(f"| {option} | {conc} | {med:.0f} [{min(x['req_per_s'] for x in xs):.0f}-"
                  f"{max(x['req_per_s'] for x in xs):.0f}] | {ratio:.2f} | {cpu:.0f} | {p99} | {err} |"
                  if ratio is not None else f"| {option} | {conc} | {med:.0f} | - | {cpu:.0f} | {p99} | {err} |")
    print(f"\nstub: {stats['count']} requests, bad_sigs={stats['bad_sigs']} (0 expected)")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"client-options-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json")
    with open(path, "w") as fh:
        json.dump({"rounds": rounds, "seconds": seconds, "summary": summary, "cells": rows, "stub": stats}, fh, indent=1)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
