"""The admin API (the seed's ``app/api/admin.py``): model management and training orchestration."""

from api.admin.routes import router

__all__ = ["router"]
