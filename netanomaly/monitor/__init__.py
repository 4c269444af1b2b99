"""The monitor: a service beside the streaming job that consumes its output topics and closes
the operations loop (alerts, drift, retrain requests, W&B production run, webhook).

Modules: ``config`` (validated settings, conf/monitor.yaml), ``rules`` (event-time alert
rules), ``drift`` (PSI vs the training baseline), ``wandb_reporter`` and ``webhook`` (bounded,
non-blocking sinks), ``service`` (the consume loop, :func:`run_monitor`), ``cli``. Importing
this package imports neither kafka, wandb nor torch.
"""

from netanomaly.monitor.config import MonitorConfig, load_monitor_config
from netanomaly.monitor.service import MonitorService, run_monitor

__all__ = ["MonitorConfig", "MonitorService", "load_monitor_config", "run_monitor"]
