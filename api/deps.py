"""Dependencies of the routers, as ``Annotated`` aliases (FastAPI full-stack template style):
the control plane, and the caller's identity checked against a minimum role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.config.plane import ControlPlane, control_plane
from api.security import Role

bearer = HTTPBearer(auto_error=False, description="a token from `pmx tokens create`")


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role


async def get_plane(request: Request) -> ControlPlane:
    return control_plane(request.app)


PlaneDep = Annotated[ControlPlane, Depends(get_plane)]


def authenticate(plane: ControlPlane, token: str | None, minimum: Role) -> Caller:
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    found = plane.lookup_token(token)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})
    role, name = found
    if role < minimum:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"this route needs the {minimum.name} role; the token is {role.name}")
    return Caller(name, role)


def require(minimum: Role):
    async def dependency(plane: PlaneDep,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        return authenticate(plane, credentials.credentials if credentials else None, minimum)

    return dependency


Viewer = Annotated[Caller, Depends(require(Role.viewer))]
Operator = Annotated[Caller, Depends(require(Role.operator))]
Admin = Annotated[Caller, Depends(require(Role.admin))]
