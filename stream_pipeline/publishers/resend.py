"""`stream-pipeline send-spool`: deliver the MQTT events a run left in its folder's spool while
the broker was away, without running (or overwriting) anything."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from stream_pipeline.core.config import PipelineConfig, load_config
from stream_pipeline.core.errors import ConfigError, SourceError, UserError
from stream_pipeline.publishers.mqtt import SPOOL_NAME, MqttPublisher
from stream_pipeline.publishers.spool import DiskSpool

log = logging.getLogger(__name__)


def _configs(config_path: str | None) -> tuple[PipelineConfig | None, dict[str, PipelineConfig]]:
    """The run's config, or (for a serve cameras file) each camera's, by camera name."""
    if config_path is not None and Path(config_path).is_file():
        try:
            text = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            text = None  # load_config names the problem
        if isinstance(text, dict) and "cameras" in text:
            from stream_pipeline.serve.config import load_cameras

            return None, load_cameras(config_path)[1]
    return load_config(config_path), {}


def send_spools(out_dir: str | Path, config_path: str | None) -> tuple[int, int]:
    """Send every spool under `out_dir` (a run folder, a folder of runs or a serve folder) with
    the MQTT settings it was made with. Returns (delivered, left undelivered)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a folder" if out.exists() else f"output folder not found: {out}")
    spools = sorted(out.rglob(SPOOL_NAME))
    if not spools:
        log.info("no undelivered MQTT events under %s", out)
        return 0, 0
    config, cameras = _configs(config_path)
    delivered = left = 0
    for spool in spools:
        folder = spool.parent
        run_config = cameras.get(folder.name) if cameras else config
        if run_config is None:
            raise ConfigError(f"{folder}: no camera named '{folder.name}' in {config_path}")
        if run_config.mqtt is None:
            where = config_path or "the default config"
            raise ConfigError(f"{where} has no mqtt section: give --config the file the run used")
        publisher = MqttPublisher(run_config.mqtt, folder, source=folder.name, announce=False)
        with publisher:
            pass  # the worker sends the spool first, for at most mqtt.drain_s
        remaining = 0
        if spool.exists():  # kept because something is still in it
            kept = DiskSpool(spool, run_config.mqtt.max_queued).open()
            remaining = kept.close()
        delivered += publisher.delivered
        left += remaining
        log.info("%s: %d events delivered, %d still queued", folder, publisher.delivered, remaining)
    return delivered, left


def command(out_dir: str, config_path: str | None) -> int:
    delivered, left = send_spools(out_dir, config_path)
    if left:
        raise SourceError(f"{left} events still not delivered (kept in their spools); try again when the broker is back")
    return 0
