"""``python -m netanomaly.monitor``: the monitor without the main CLI."""

from netanomaly.monitor.cli import monitor

if __name__ == "__main__":
    monitor(prog_name="netanomaly monitor")
