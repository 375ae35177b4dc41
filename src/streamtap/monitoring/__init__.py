"""streamtap's Prometheus alerting: the rule generator and runners for a local Prometheus stack.

`streamtap.monitoring.rules` renders the recording and alerting rules (time-compressible for
demos and live tests); `streamtap.monitoring._servers` starts real Prometheus, Alertmanager and a
webhook receiver on loopback. Importing this package needs PyYAML, not prometheus_client.
"""

from __future__ import annotations

from .rules import Params, alert_names, dump, recording_names, render

__all__ = ["Params", "alert_names", "dump", "recording_names", "render"]
