"""network-anomaly: real-time anomaly detection for network KPIs (Kafka + PyFlink + TorchScript)."""

__version__ = "0.1.0"
