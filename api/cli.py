"""``pmx api`` (serve the API with uvicorn) and ``pmx tokens`` (bearer tokens and their roles)."""

from __future__ import annotations

import json

import click

from prioritymax.settings import get_settings


def check_port(host: str, port: int) -> None:
    """Exit with a clear message when ``host:port`` cannot be listened on."""
    from prioritymax.ports import IN_USE, bind_problem

    reason = bind_problem(host, port)
    if reason == IN_USE:
        raise click.ClickException(f"{host}:{port} is already taken; pass --port")
    if reason is not None:
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}")


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--log-level", default="info", show_default=True)
def serve_api(host: str, port: int, log_level: str) -> None:
    """Serve the PriorityMax API (the config control plane) with uvicorn."""
    import uvicorn

    check_port(host, port)
    settings = get_settings().layout_home()
    token = "PRIORITYMAX_ADMIN_TOKEN" if settings.admin_token else settings.admin_token_path
    click.echo(f"PriorityMax API on http://{host}:{port} (docs: /docs, status: /config/status); "
               f"admin token: {token}; Ctrl-C stops", err=True)
    uvicorn.run("api.main:app", host=host, port=port, log_level=log_level)


@click.group("tokens")
def tokens() -> None:
    """Bearer tokens for the API: viewer < operator < admin."""


@tokens.command("create")
@click.option("--role", type=click.Choice(["viewer", "operator", "admin"]), required=True)
@click.option("--name", required=True, help="who or what uses it (shown in audit lines)")
def create(role: str, name: str) -> None:
    """Create a token; it is printed once and stored only as a hash."""
    from api.security import create_token
    from prioritymax.db import engine_for
    from prioritymax.roles import Role

    token = create_token(engine_for(get_settings().layout_home().db_url), Role[role], name)
    click.echo(json.dumps({"name": name, "role": role, "token": token}))


@tokens.command("revoke")
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke every token of NAME."""
    from api.security import revoke_token
    from prioritymax.db import engine_for

    count = revoke_token(engine_for(get_settings().layout_home().db_url), name)
    if not count:
        raise click.ClickException(f"no token named {name!r}")
    click.echo(json.dumps({"name": name, "revoked": count}))


@tokens.command("list")
def list_tokens() -> None:
    """Token names, roles and whether revoked (never the tokens)."""
    from sqlalchemy import select

    from prioritymax.db import api_tokens, engine_for

    with engine_for(get_settings().layout_home().db_url).connect() as conn:
        rows = conn.execute(select(api_tokens.c.name, api_tokens.c.role, api_tokens.c.created_at,
                                   api_tokens.c.revoked).order_by(api_tokens.c.created_at)).all()
    click.echo(json.dumps([dict(r._mapping) for r in rows], indent=2))


@click.command("autoscaler")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-url", default=None, help="the control plane to follow [PRIORITYMAX_API_URL]")
@click.option("--token", default=None, envvar="PRIORITYMAX_API_TOKEN",
              help="a viewer token or above for the control plane [PRIORITYMAX_API_TOKEN, else the "
                   "admin token]")
@click.option("--no-follow", is_flag=True, help="serve the registry's champions; follow no control plane")
@click.option("--name", default=None, help="this worker's name in decisions and health [host-pid]")
@click.option("--grpc-port", default=None, type=click.IntRange(1, 65535),
              envvar="PRIORITYMAX_AUTOSCALER_GRPC_PORT",
              help="also serve KEDA's external scaler (gRPC) on this port, same host "
                   "[PRIORITYMAX_AUTOSCALER_GRPC_PORT; off]")
@click.option("--log-level", default="info", show_default=True)
def serve_autoscaler(host, port, api_url, token, no_follow, name, grpc_port, log_level) -> None:
    """Serve scaling decisions from the champion models, hot-swapped on promotion."""
    import uvicorn

    from api.autoscaler.app import create_app
    from api.autoscaler.worker import AutoscalerWorker

    check_port(host, port)
    if grpc_port is not None:
        if grpc_port == port:
            raise click.BadParameter("the gRPC port must differ from the HTTP port", param_hint="--grpc-port")
        check_port(host, grpc_port)
    settings = get_settings().layout_home()
    url = None if no_follow else (api_url or settings.api_url)
    token = None if no_follow else (token or settings.api_client_token())
    if url is not None and token is None:
        raise click.ClickException("no token for the control plane: pass --token, set "
                                   "PRIORITYMAX_API_TOKEN, or --no-follow")
    worker = AutoscalerWorker(settings, name=name, api_url=url, token=token)
    keda = f"; KEDA external scaler on {host}:{grpc_port} (gRPC)" if grpc_port is not None else ""
    click.echo(f"PriorityMax autoscaler {worker.name} on http://{host}:{port}/autoscaler "
               f"(health: /autoscaler/health){keda}; following {url or 'no control plane'}; Ctrl-C stops",
               err=True)
    uvicorn.run(create_app(worker, grpc_port, host), host=host, port=port, log_level=log_level)
