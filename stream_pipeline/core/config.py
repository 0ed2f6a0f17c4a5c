"""Validated run configuration (YAML → pydantic).

Unknown keys are rejected and every error names the offending key, so a typo in
`configs/default.yaml` stops the run with one clear line instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream_pipeline.core.errors import ConfigError
from stream_pipeline.core.paths import CONFIGS_DIR
from stream_pipeline.zones.config import Zones

DEFAULT_CONFIG = CONFIGS_DIR / "default.yaml"
VEHICLE_CLASSES = ("car", "motorcycle", "bus", "truck")


def _no_duplicates(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("duplicate class names")
    return value


# A list of COCO vehicle class names, each at most once (detector.classes, brands.vehicle_classes).
VehicleClasses = Annotated[list[Literal["car", "motorcycle", "bus", "truck"]], AfterValidator(_no_duplicates)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Section):
    # Live sources (RTSP/webcam): seconds without a frame before the watchdog reconnects.
    read_timeout_s: float = Field(10.0, gt=0, le=600)
    # Live sources: reconnect attempts before giving up (0 = never reconnect).
    max_reconnects: int = Field(5, ge=0, le=1000)
    reconnect_delay_s: float = Field(2.0, ge=0, le=300)
    # Seconds allowed for opening a live source.
    open_timeout_s: float = Field(15.0, gt=0, le=600)
    # RTSP transport; TCP survives packet loss and NAT better than UDP.
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    # Live sources: a stream that arrives in bursts is handed out at its own pace (from the frames'
    # timestamps), holding a frame at most this long; 0 = every frame on arrival, newest wins.
    jitter_buffer_ms: int = Field(400, ge=0, le=5000)
    # Files: frames decoded ahead on a thread of their own (0 = decode in the pipeline thread).
    decode_ahead_frames: int = Field(8, ge=0, le=256)


class DetectorConfig(_Section):
    model: str = "shared:models/yolo11n_int8_openvino_model"
    confidence: float = Field(0.1, ge=0.0, le=1.0)
    iou: float = Field(0.5, gt=0.0, le=1.0)
    imgsz: int = Field(640, ge=64, le=4096)
    classes: VehicleClasses = Field(default_factory=lambda: list(VEHICLE_CLASSES), min_length=1)
    # Boxes smaller than this (pixels, shorter side) are ignored.
    min_box_px: int = Field(12, ge=0, le=1000)
    # One NMS over all vehicle classes: a van boxed as both car and truck is one vehicle.
    agnostic_nms: bool = True
    # OpenVINO exports of the same network at other input shapes; each stream uses the one with
    # the smallest input that holds its frames at the main model's scale (16:9: 384x640).
    shaped_models: list[str] = Field(default_factory=lambda: ["models/vehicle_detector_384x640"])
    # auto: OpenVINO exports run through OpenVINO directly, .pt through ultralytics;
    # ultralytics: every model through ultralytics' predict (shaped_models unused).
    runtime: Literal["auto", "ultralytics"] = "auto"


class TrackerConfig(_Section):
    # ultralytics tracker YAML (ByteTrack by default), project-relative or absolute.
    config: str = "configs/bytetrack.yaml"
    # A track counts as a vehicle only after this many frames with a matched detection.
    min_hits: int = Field(3, ge=1, le=1000)
    # Two confirmed tracks whose boxes overlap at least `duplicate_iou` for `duplicate_frames`
    # frames in a row are one vehicle: the younger is merged into the older (one record).
    duplicate_iou: float = Field(0.7, gt=0.0, le=1.0)
    duplicate_frames: int = Field(5, ge=1, le=10000)


class BrandsConfig(_Section):
    enabled: bool = True
    logo_detector: str = "models/logo_detector/best_openvino_model"
    classifier: str = "models/brand_classifier"
    # Logo detector confidence (null = the model's own calibrated default).
    logo_confidence: float | None = Field(None, ge=0.0, le=1.0)
    # Classifier rejection threshold (null = the model's own calibrated default); used only
    # without a gallery.
    classifier_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # Brand gallery: reference badge embeddings per brand; a badge is named by its nearest brand,
    # or unknown below the gallery's calibrated similarity threshold. `stream-pipeline enroll`
    # adds brands to it without retraining. null = the classifier's own softmax decides.
    gallery: str | None = "models/brand_classifier/gallery.npz"
    # Similarity threshold (null = the gallery's calibrated one).
    gallery_threshold: float | None = Field(None, ge=0.0, le=1.0)
    # Attempt a track at most once every N frames (badge recognition is the costly stage).
    every_n_frames: int = Field(3, ge=1, le=1000)
    # Vehicle crops per frame sent to the logo detector, at most.
    max_vehicles_per_frame: int = Field(4, ge=1, le=256)
    # Vehicles whose box is smaller than this (pixels, shorter side) are too far for a badge.
    min_vehicle_px: int = Field(64, ge=8, le=4096)
    # Vehicle classes whose badges are read. Not buses by default: the classifier knows car
    # badges, and a bus front is destination signs and lettering (urban_arterial: a city bus was
    # named land-rover from its sign, 9 votes).
    vehicle_classes: VehicleClasses = Field(default_factory=lambda: ["car", "motorcycle", "truck"])
    # Where and how big a badge can be on a vehicle: logo boxes centred below this fraction of
    # the vehicle box height, or larger than these fractions of its width / height, are
    # dropped (round wheels on side views are the logo detector's typical mistake).
    badge_max_center_y: float = Field(0.78, gt=0.0, le=1.0)
    badge_max_width: float = Field(0.16, gt=0.0, le=1.0)
    badge_max_height: float = Field(0.25, gt=0.0, le=1.0)
    # Close-ups: a vehicle whose box spans at least closeup_min_frame_fraction of the frame's
    # width or height is near the camera, its box is only the part in view, and its badge can
    # be a large part of it: boxes centred above badge_closeup_max_center_y may then be up to
    # these fractions of the vehicle box (wheels, the reason for the limits, sit lower).
    closeup_min_frame_fraction: float = Field(0.4, gt=0.0, le=1.0)
    badge_closeup_max_center_y: float = Field(0.65, gt=0.0, le=1.0)
    badge_closeup_max_width: float = Field(0.45, gt=0.0, le=1.0)
    badge_closeup_max_height: float = Field(0.5, gt=0.0, le=1.0)
    # Per-track voting: a brand is decided after `min_votes` votes of which at least
    # `min_agreement` share (by weight; unknown readings of sharp badges weigh against) name the
    # same brand.
    min_votes: int = Field(3, ge=1, le=1000)
    min_agreement: float = Field(0.6, gt=0.0, le=1.0)
    # ...and the decision's confidence (agreement x mean reading confidence) reaches this.
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)
    # Votes kept per track (oldest dropped), bounding per-track memory.
    max_votes: int = Field(30, ge=1, le=10000)
    # Stop attempting a track once it is decided with this many votes.
    stop_after_votes: int = Field(10, ge=1, le=10000)

    @model_validator(mode="after")
    def _votes_fit_the_window(self) -> "BrandsConfig":
        # Decisions count the last max_votes readings only: a larger threshold could never be met
        # (no brand ever decided, or a decided track read for as long as it is in view).
        for name in ("min_votes", "stop_after_votes"):
            if getattr(self, name) > self.max_votes:
                raise ValueError(f"{name} ({getattr(self, name)}) must not exceed max_votes ({self.max_votes})")
        return self


class OutputConfig(_Section):
    video: bool = True
    # H.264 via PyAV when available; OpenCV's mp4v otherwise (the log names the codec used).
    codec: Literal["auto", "h264", "mp4v"] = "auto"
    # libx264 speed/size trade-off; superfast costs ~40 % less CPU than veryfast at 720p.
    h264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "superfast"
    # libx264 constant quality (lower = better and bigger; 18-28 is sensible).
    h264_crf: int = Field(23, ge=0, le=51)
    # Annotated frames queued for encoding on a thread of its own (0 = encode in the pipeline thread).
    encode_behind_frames: int = Field(8, ge=0, le=256)
    snapshots: bool = True
    csv: bool = True
    # Draw the frame time and counters on the annotated video.
    draw_clock: bool = True


class DisplayConfig(_Section):
    window_name: str = "stream-pipeline"
    # Longest side of the live window in pixels (the video itself is not resized).
    max_window_px: int = Field(1280, ge=160, le=8192)


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class MqttConfig(_Section):
    """Every event line also published to an MQTT broker (off unless the section is given)."""

    host: str = Field(min_length=1)
    # null = 8883 with tls, 1883 without.
    port: int | None = Field(None, ge=1, le=65535)
    # Topics: <topic_prefix>/<source name>/<event type> and <topic_prefix>/<source name>/availability (serve: the camera name).
    topic_prefix: str = Field("stream-pipeline", min_length=1)
    # Names of environment variables holding the credentials (never the credentials themselves).
    username_env: str | None = Field(None, pattern=_ENV_NAME)
    password_env: str | None = Field(None, pattern=_ENV_NAME)
    tls: bool = False
    # CA bundle for a broker with a private certificate (null = the system's CAs).
    ca_file: str | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    # Events kept on disk (output folder) while the broker is unreachable; the oldest go first.
    max_queued: int = Field(10000, ge=1, le=10_000_000)
    # At the end of a run, seconds to wait for the broker to take what is still queued.
    drain_s: float = Field(10.0, ge=0, le=600)

    @field_validator("topic_prefix")
    @classmethod
    def _plain_topic(cls, value: str) -> str:
        if any(c in value for c in "+#\0"):
            raise ValueError("must not contain MQTT wildcards (+, #)")
        value = value.strip("/")
        if not value:
            raise ValueError("must name at least one topic level")
        return value

    @model_validator(mode="after")
    def _ca_needs_tls(self) -> "MqttConfig":
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file needs tls: true")
        if self.password_env is not None and self.username_env is None:
            # MQTT 3.1.1 sends no password without a user name
            raise ValueError("password_env needs username_env")
        return self

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls else 1883)


class WebhookConfig(_Section):
    """Each vehicle record POSTed as JSON to a URL (off unless the section is given)."""

    url: str = Field(pattern=r"^https?://[^/\s]+")
    timeout_s: float = Field(5.0, gt=0, le=300)
    # Retries per record after the first try; the pause doubles from backoff_s (capped at 30 s).
    retries: int = Field(5, ge=0, le=100)
    backoff_s: float = Field(0.5, gt=0, le=60)
    # Records waiting for delivery, at most; beyond that new records are dropped (and counted).
    max_queued: int = Field(1000, ge=1, le=1_000_000)
    # At the end of a run, seconds to wait for the endpoint to take what is still queued.
    drain_s: float = Field(10.0, ge=0, le=600)

    @field_validator("url")
    @classmethod
    def _parsable_url(cls, value: str) -> str:
        # urlsplit only checks the port when asked for it: a bad one would surface mid-run.
        try:
            port = urlsplit(value).port
        except ValueError as exc:
            raise ValueError(f"not a valid URL ({exc})") from None
        if port == 0:
            raise ValueError("not a valid URL (port 0)")
        return value


class PipelineConfig(_Section):
    source: SourceConfig = Field(default_factory=SourceConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    brands: BrandsConfig = Field(default_factory=BrandsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    display: DisplayConfig = Field(default_factory=DisplayConfig)
    # Counting lines and polygons (stream_pipeline/zones/); none by default.
    zones: Zones = Field(default_factory=list)
    mqtt: MqttConfig | None = None
    webhook: WebhookConfig | None = None


def _describe(error: ValidationError) -> str:
    errors = error.errors()
    # A misspelt required key (mqtt.hots) is also a missing one: the typo is the useful line.
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    return f"'{key}': {first['msg']}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML would keep the last one
    silently, so `output: {video: false}` followed by another `output:` would undo it."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` may be overridden by the keys beside it
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, what: str = "config file"):
    """The parsed YAML of a user's file; one-line ConfigErrors naming `what` and the line of a syntax error."""
    if path.is_dir():
        raise ConfigError(f"{what} is a folder, not a YAML file: {path}")
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"invalid YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Load and validate a YAML config; None loads configs/default.yaml."""
    config_path = Path(path) if path else DEFAULT_CONFIG
    data = read_yaml(config_path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {config_path} must be a mapping of sections, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid config {config_path}: {_describe(exc)}") from None
