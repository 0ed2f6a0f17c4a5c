"""The `zones:` config section: counting lines and polygons, validated like the rest of the config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# A point: [x, y] in pixels, or fractions of the frame width/height when every coordinate
# of the zone is <= 1.
Point = Annotated[list[Annotated[float, Field(ge=0.0, le=100_000.0)]], Field(min_length=2, max_length=2)]


class ZoneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+( [\w.-]+)*$")
    line: list[Point] | None = Field(None, min_length=2, max_length=2)
    polygon: list[Point] | None = Field(None, min_length=3, max_length=256)
    # The point of the vehicle box that must cross: bottom_center is where the wheels touch
    # the road, so a tall truck and a car cross at the same place.
    anchor: Literal["bottom_center", "center"] = "bottom_center"
    # Hysteresis: the anchor must be this many pixels past the line (or inside / outside the
    # polygon's edge) before the vehicle counts as on that side, so a box jittering on the line
    # is counted once.
    hysteresis_px: float = Field(8.0, ge=0.0, le=500.0)

    @model_validator(mode="after")
    def _one_shape(self) -> "ZoneConfig":
        if (self.line is None) == (self.polygon is None):
            raise ValueError(f"zone '{self.name}' needs exactly one of 'line' or 'polygon'")
        points = self.points
        if self.line is not None and points[0] == points[1]:
            raise ValueError(f"zone '{self.name}': the line's two points are the same")
        if self.polygon is not None and abs(_area(points)) < 1e-9:
            raise ValueError(f"zone '{self.name}': the polygon has no area")
        return self

    @property
    def kind(self) -> Literal["line", "polygon"]:
        return "line" if self.line is not None else "polygon"

    @property
    def points(self) -> list[tuple[float, float]]:
        return [(float(x), float(y)) for x, y in (self.line if self.line is not None else self.polygon)]

    @property
    def in_fractions(self) -> bool:
        return all(v <= 1.0 for point in self.points for v in point)

    def pixel_points(self, width: int, height: int) -> list[tuple[float, float]]:
        if self.in_fractions:
            return [(x * width, y * height) for x, y in self.points]
        return self.points


def _area(points: list[tuple[float, float]]) -> float:
    return 0.5 * sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]))


def _unique_names(zones: list[ZoneConfig]) -> list[ZoneConfig]:
    names = [zone.name for zone in zones]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"duplicate zone name '{name}'")
    return zones


Zones = Annotated[list[ZoneConfig], AfterValidator(_unique_names), Field(max_length=64)]
