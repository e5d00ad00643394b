"""Dagster definitions of the workbench: assets, asset checks, jobs, schedules and sensors."""
