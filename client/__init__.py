"""The control plane's client, below everything that talks to it (ml, orchestration, the dashboard,
the autoscaler worker): the HTTP + WebSocket client (``control_plane.ConfigClient``), flag evaluation
(``flags``) and publishing a champion's version (``publish``). It needs httpx and websockets only,
never the server's modules (docs/architecture.md)."""
