"""``sailseg sailthru emulator``: serve the Sailthru emulator with uvicorn."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(cli: click.Group) -> None:
    """Add the ``sailthru`` command group to the sailseg CLI."""
    from sailseg.cli import handle_errors

    @cli.group("sailthru")
    def sailthru() -> None:
        """Sailthru plugin tools."""

    @sailthru.command("emulator")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
    @click.option("--port", default=8765, type=int, show_default=True,
                  help="Port to listen on (the Segment emulator defaults to 8766).")
    @click.option("--postback-url", default=None, help="Where signed postbacks are sent.")
    @click.option("--api-key", default="emulator-key", show_default=True, envvar="SAILTHRU_API_KEY",
                  show_envvar=True, help="The API key the emulator accepts.")
    @click.option("--api-secret", default="emulator-secret", show_default=True,
                  envvar="SAILTHRU_API_SECRET", show_envvar=True,
                  help="The secret requests must be signed with.")
    @click.option("--limit", "limits", multiple=True, metavar="'METHOD /endpoint=N'",
                  help="Per-minute limit, e.g. --limit 'POST /user=600' (repeatable).")
    @click.option("--job-polls", default=2, type=int, show_default=True,
                  help="GET /job calls before a job completes.")
    @click.option("--date-skew", default=0.0, type=float, show_default=True, metavar="SECONDS",
                  help="Answer with a Date header this far off (tests of `sailseg doctor`).")
    @handle_errors
    def emulator(host: str, port: int, postback_url: str | None, api_key: str, api_secret: str,
                 limits: tuple[str, ...], job_polls: int, date_skew: float) -> None:
        """Run the Sailthru API emulator (state and control API under /_emulator/)."""
        from sailseg.sockets import bind_socket, run_app

        from .emulator import SailthruEmulator
        from .emulator.settings import DEFAULT_LIMITS, EmulatorSettings

        lim = dict(DEFAULT_LIMITS)
        for spec in limits:
            key, sep, n = spec.rpartition("=")
            if not sep or not n.strip().isdigit():
                raise click.BadParameter(f"expected 'METHOD /endpoint=N', got {spec!r}", param_hint="--limit")
            lim[key.strip()] = int(n)
        settings = EmulatorSettings(accounts={api_key: api_secret}, limits=lim,
                                    postback_url=postback_url, job_polls_to_complete=job_polls,
                                    date_skew=date_skew)
        sock = bind_socket(host, port, what="the Sailthru emulator", port_fix="--port N",
                           host_fix="--host")
        port = sock.getsockname()[1]
        click.echo(f"Sailthru emulator on http://{host}:{port} (state: /_emulator/state)")
        # a skewed Date header replaces uvicorn's own (not a second one)
        run_app(SailthruEmulator(settings), sock, date_header=not date_skew)
