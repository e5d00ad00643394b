"""Dependencies of the routers, as ``Annotated`` aliases (FastAPI full-stack template style):
the control plane, and the caller's identity checked against a minimum role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPBearer

from api.config.plane import ControlPlane, control_plane
from prioritymax.roles import Role

#: The bearer scheme's description in OpenAPI.
BEARER_DESCRIPTION = "a token from `pmx tokens create`"


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role
    #: The control plane the caller was checked against: a route that takes a caller needs no
    #: separate ``PlaneDep`` (each dependency FastAPI solves costs tens of microseconds).
    plane: ControlPlane | None = field(default=None, compare=False, repr=False)


async def get_plane(request: Request) -> ControlPlane:
    return control_plane(request.app)


PlaneDep = Annotated[ControlPlane, Depends(get_plane)]


def authenticate(plane: ControlPlane, token: str | None, minimum: Role) -> Caller:
    """The caller of a token, checked against ``minimum``. A request without a token is
    ``anonymous`` with PRIORITYMAX_ANONYMOUS_ROLE when that is set (never admin), else a 401."""
    if not token:
        anonymous = plane.settings.anonymous_role
        if anonymous is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        if Role[anonymous] < minimum:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED,
                                f"this route needs the {minimum.name} role; requests without a token "
                                f"get {anonymous} (PRIORITYMAX_ANONYMOUS_ROLE)",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller("anonymous", Role[anonymous], plane)
    found = plane.lookup_token(token)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})
    role, name = found
    if role < minimum:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"this route needs the {minimum.name} role; the token is {role.name}")
    return Caller(name, role, plane)


class RoleBearer(HTTPBearer):
    """The bearer scheme and the role check as one dependency (a subclass of :class:`HTTPBearer`,
    so OpenAPI documents the same ``HTTPBearer`` scheme): FastAPI solves each dependency of a
    request with a fixed cost, and a nested one (role check on top of the scheme) twice over."""

    def __init__(self, minimum: Role) -> None:
        super().__init__(auto_error=False, scheme_name="HTTPBearer", description=BEARER_DESCRIPTION)
        self.minimum = minimum

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        credentials = await super().__call__(request)
        return authenticate(control_plane(request.app), credentials.credentials if credentials else None,
                            self.minimum)


def require(minimum: Role) -> RoleBearer:
    return RoleBearer(minimum)


Viewer = Annotated[Caller, Depends(require(Role.viewer))]
Operator = Annotated[Caller, Depends(require(Role.operator))]
Admin = Annotated[Caller, Depends(require(Role.admin))]
