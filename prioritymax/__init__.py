"""Shared foundation of the PriorityMax Workbench: settings, the database engine and tables, files,
logging, alerts. It imports no other package of this project (docs/architecture.md)."""
