"""One row of a targets table: figure, pacsnode, anchor, ratio, target, met."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    figure: str
    ours: str
    anchor: str
    ratio: float | None
    target: str
    met: bool | None

    def cells(self) -> list[object]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        met = "-" if self.met is None else ("met" if self.met else "NOT met")
        return [self.figure, self.ours, self.anchor, ratio, self.target, met]
