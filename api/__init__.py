"""FastAPI sidecar: the config control plane and the workflows API (see DESIGN.md)."""
