"""KEDA's external scaler contract (``externalscaler.proto``, its generated modules) and the
scaler an autoscaler worker serves with it (``scaler.py``)."""
