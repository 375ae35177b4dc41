"""Small constructors over grafana-foundation-sdk builders, so the dashboard reads as a list of panels."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.dashboard import ThresholdsConfig
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"


def query(expr: str, legend: str = "", ref: str = "A", *, exemplar: bool = False) -> prometheus.Dataquery:
    """A range query against the dashboard's Prometheus datasource."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS).range()
    if legend:
        q = q.legend_format(legend)
    if exemplar:
        q = q.exemplar(True)
    return q


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (the base color)."""
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([Threshold(v, c) for v, c in steps])


def _targets(builder: Any, targets: list[tuple[str, str]], exemplar: bool) -> Any:
    for i, (expr, legend) in enumerate(targets):
        builder = builder.with_target(query(expr, legend, chr(ord("A") + i), exemplar=exemplar))
    return builder


def stat_panel(
    title: str, description: str, expr: str, unit: str, steps: ThresholdsConfig, *, width: int = 4
) -> stat.Panel:
    """A one-number panel: the last value of `expr`, colored by `steps`."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(query(expr))
        .unit(unit)
        .decimals(2)
        .thresholds(steps)
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]))
        .height(4)
        .span(width)
    )


def series_panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    unit: str,
    *,
    width: int = 12,
    stacked: bool = False,
    exemplar: bool = False,
    steps: ThresholdsConfig | None = None,
) -> timeseries.Panel:
    """A time series panel; `steps` are drawn as dashed threshold lines."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            cb.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
        .height(8)
        .span(width)
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL))
    if steps is not None:
        panel = panel.thresholds(steps).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    result: timeseries.Panel = _targets(panel, targets, exemplar)
    return result


def heatmap_panel(title: str, description: str, expr: str, unit: str, *, width: int = 12) -> heatmap.Panel:
    """A heatmap of a Prometheus histogram's buckets, with exemplars (trace links) overlaid."""
    q = query(expr, "{{le}}", exemplar=True).format(PromQueryFormat.HEATMAP)
    return (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(q.interval_factor(1))
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .cell_values(heatmap.CellValues().unit("short"))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_model.HeatmapColorMode.SCHEME)
            .scheme("Spectral")
            .steps(64)
        )
        .exemplars_color("rgba(255,0,255,0.7)")
        .show_value(common.VisibilityMode.NEVER)
        .height(8)
        .span(width)
    )


def state_panel(
    title: str, description: str, expr: str, legend: str, *, width: int = 12
) -> statetimeline.Panel:
    """The circuit breaker gauge as closed / half-open / open bands."""
    mapping = ValueMap(
        {
            "0": ValueMappingResult(text="closed", color="green", index=0),
            "1": ValueMappingResult(text="half-open", color="yellow", index=1),
            "2": ValueMappingResult(text="open", color="red", index=2),
        }
    )
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(query(expr, legend))
        .mappings([mapping])
        .thresholds(thresholds((None, "green"), (1, "yellow"), (2, "red")))
        .show_value(common.VisibilityMode.NEVER)
        .height(8)
        .span(width)
    )


def alerts_table(title: str, description: str, expr: str, *, width: int = 24) -> table.Panel:
    """Currently firing alerts, one row per alert and job (an instant query)."""
    q = query(expr).instant().format(PromQueryFormat.TABLE)
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(q)
        .with_transformation(_organize())
        .no_value("No streamtap alert is firing")
        .height(6)
        .span(width)
    )


def _organize() -> DataTransformerConfig:
    return DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True}},
    )
