"""Shared foundation of the PriorityMax Workbench: settings, logging and the `pmx` CLI."""
