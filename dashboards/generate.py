"""Generate streamtap's Grafana dashboards with grafana-foundation-sdk.

    python -m dashboards.generate             # write dashboards/*.json
    python -m dashboards.generate --check     # exit 1 if the committed JSON is stale
    python -m dashboards.generate --slo 0.995 # for rules made with `streamtap rules --slo 0.995`

Thresholds (SLO target, burn factors, alert floors) come from streamtap.monitoring.rules, so a panel's
threshold line is exactly where its alert fires.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `alerts` and `dashboards` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards._overview import OVERVIEW_UID, overview
from streamtap.monitoring.rules import Params

__all__ = ["OVERVIEW_UID", "main", "render"]

HERE = Path(__file__).resolve().parent


def _number_panels(model: dict[str, Any]) -> dict[str, Any]:
    # Fixed ids in layout order, so regenerating never reshuffles them.
    for i, panel in enumerate(model["panels"], start=1):
        panel["id"] = i
    return model


def render(p: Params | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard.

    Args:
        p: alert parameters for thresholds; defaults to `Params()`.
    """
    p = p or Params()
    out = {}
    for name, board in {"streamtap-overview.json": overview(p)}.items():
        model = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
        model = _number_panels(model)
        out[name] = json.dumps(model, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry point.

    Args:
        argv: arguments, default sys.argv[1:].
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    parser.add_argument(
        "--runbook-base",
        default=Params().runbook_base,
        help="URL of docs/runbooks.md; an http(s) URL adds a Runbooks link to the dashboard",
    )
    parser.add_argument(
        "--slo",
        type=float,
        default=Params().slo_target,
        help="SLO target the thresholds and the SLO variable start from, as given to `streamtap rules --slo`",
    )
    args = parser.parse_args(argv)
    try:
        params = Params(runbook_base=args.runbook_base, slo_target=args.slo)
    except ValueError as error:
        parser.error(str(error))
    stale = []
    for name, text in render(params).items():
        path = HERE / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m dashboards.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
