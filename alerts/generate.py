"""Write alerts/streamtap.rules.yml and alerts/tests/streamtap_test.yml from streamtap.monitoring.

The generator itself ships in the package (`streamtap.monitoring.rules`, `streamtap rules`); this
script writes and checks the repo's committed copies.

python -m alerts.generate                      # the committed files
python -m alerts.generate --check              # exit 1 if the committed files are stale
python -m alerts.generate --compress 60 -o x.yml  # a 60x time-compressed copy for live tests
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamtap.monitoring._testcases import render_tests
from streamtap.monitoring.rules import Params, dump, render

HERE = Path(__file__).resolve().parent
RULES = HERE / "streamtap.rules.yml"
TESTS = HERE / "tests" / "streamtap_test.yml"


def outputs(params: Params) -> dict[Path, str]:
    """The committed files and their content for `params` (time_scale 1)."""
    rules = render(params)
    return {RULES: dump(rules), TESTS: dump(render_tests(params, rules, "../streamtap.rules.yml"))}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point.

    Args:
        argv: arguments, default sys.argv[1:].
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--compress", type=float, default=1.0, help="divide every duration by this")
    parser.add_argument("--runbook-base", default=Params().runbook_base, help="URL of docs/runbooks.md")
    parser.add_argument("--slo", type=float, default=Params().slo_target, help="SLO target, e.g. 0.99")
    parser.add_argument("-o", "--output", type=Path, help="write only the rules, here")
    parser.add_argument("--check", action="store_true", help="fail if committed files differ")
    args = parser.parse_args(argv)
    params = Params(slo_target=args.slo, runbook_base=args.runbook_base).compressed(args.compress)
    if args.output or args.compress != 1:
        target = args.output or Path("/dev/stdout")
        target.write_text(dump(render(params)))
        return 0
    stale = []
    for path, text in outputs(params).items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)}; run python -m alerts.generate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
