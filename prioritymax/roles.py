"""The roles of the project, in one place: the API's bearer tokens and the registry's promotions
(``pmx models promote --role``) rank callers the same way, viewer < operator < admin."""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    viewer = 1
    operator = 2
    admin = 3


#: The role names, lowest first (CLI choices).
ROLES = tuple(role.name for role in Role)
