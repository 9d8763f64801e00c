"""fltrust edge node: local anomaly detection and signed federated-learning updates over MQTT."""

__version__ = "0.1.0"
