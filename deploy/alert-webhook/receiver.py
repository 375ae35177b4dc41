"""Print every Alertmanager webhook notification: the compose stack's stand-in for a pager."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        for alert in body.get("alerts", []):
            labels, annotations = alert.get("labels", {}), alert.get("annotations", {})
            print(
                f"[{self.path.strip('/')}] {alert.get('status')} {labels.get('alertname')} "
                f"severity={labels.get('severity')} job={labels.get('job', '-')}: "
                f"{annotations.get('summary', '')} ({annotations.get('runbook_url', '')})",
                flush=True,
            )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 5001), Handler).serve_forever()
