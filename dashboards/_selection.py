"""What the overview's panels look at: the dashboard's variables (data source, jobs, models, the
SLO target) and the PromQL over the jobs and models they select: sums of rates, their ratios,
histogram quantiles.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders.dashboard import DatasourceVariable, QueryVariable, TextBoxVariable
from grafana_foundation_sdk.models.dashboard import VariableOption, VariableRefresh, VariableSort

from dashboards._panels import DS, RATE

SEL = 'job=~"$job", model=~"$model"'


def rate(metric: str, by: str = "", extra: str = "") -> str:
    """The selection's per-second rate of counter `metric`, summed (`by` those labels); `extra`: more matchers."""
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({metric}{{{SEL}{extra}}}[{RATE}]))"


def ratio(num: str, den: str, by: str = "") -> str:
    """`rate(num) / rate(den)`, each summed by the same labels: 0 where `num` has no series yet
    (no error counted since the process started) but `den` has traffic, not "No data"."""
    return f"({rate(num, by)}\nor 0 * {rate(den, by)})\n/\n{rate(den, by)}"


def quantile(q: float, metric: str, by: str = "") -> str:
    """The `q` quantile of histogram `metric` over the selection (per `by` labels)."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


def variables(slo: float) -> list[Any]:
    """$datasource, $job and $model (every job and model at first), and $slo starting at `slo`."""
    every = VariableOption(selected=True, text="All", value="$__all")
    return [
        DatasourceVariable("datasource").label("Data source").type("prometheus"),
        QueryVariable("job")
        .label("Job")
        .datasource(DS)
        .query("label_values(streamtap_requests_total, job)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(every),
        QueryVariable("model")
        .label("Model")
        .datasource(DS)
        .query('label_values(streamtap_requests_total{job=~"$job"}, model)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(every),
        # Editable: a team whose rules say `streamtap rules --slo 0.995` sets the same here (or
        # generates the dashboard with `--slo`), or the budget panel reads another budget.
        TextBoxVariable("slo")
        .label("SLO target")
        .description("The SLO the alert rules were made with (streamtap rules --slo); set yours.")
        .default_value(f"{slo:g}")
        .current(VariableOption(selected=True, text=f"{slo:g}", value=f"{slo:g}")),
    ]
