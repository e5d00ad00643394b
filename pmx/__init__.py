"""The top layer: the ``pmx`` command (``pmx.cli``) and ``pmx up`` (``pmx.up``), which start and
supervise everything below; nothing imports them (docs/architecture.md)."""
