"""`stream-pipeline send-spool`: deliver the MQTT events a run left in its folder's spool while
the broker was away, without running (or overwriting) anything."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from stream_pipeline.core.config import PipelineConfig, load_config
from stream_pipeline.core.errors import ConfigError, SourceError, UserError
from stream_pipeline.publishers.mqtt import SPOOL_NAME, MqttPublisher
from stream_pipeline.publishers.spool import DiskSpool, SpoolInUse

log = logging.getLogger(__name__)


def _configs(config_path: str | None, base_config: str | None) -> tuple[PipelineConfig | None, dict[str, PipelineConfig]]:
    """The run's config, or (for a serve cameras file, on top of serve's --config) each camera's, by name."""
    if config_path is not None and Path(config_path).is_file():
        try:
            text = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            text = None  # load_config names the problem
        if isinstance(text, dict) and "cameras" in text:
            from stream_pipeline.serve.config import load_cameras

            return None, load_cameras(config_path, base_config)[1]
    if base_config is not None:
        raise ConfigError("--base-config goes with a serve cameras file as --config")
    return load_config(config_path), {}


def send_spools(out_dir: str | Path, config_path: str | None, base_config: str | None = None,
                timeout_s: float = 60.0) -> tuple[int, int, list[str]]:
    """Send every spool under `out_dir` (a run folder, a folder of runs or a serve folder) with
    the MQTT settings it was made with, waiting at most `timeout_s` per spool.
    Returns (delivered, left undelivered, why something was left)."""
    out = Path(out_dir)
    if not out.is_dir():
        raise UserError(f"{out} is not a folder" if out.exists() else f"output folder not found: {out}")
    spools = sorted(out.rglob(SPOOL_NAME))
    if not spools:
        log.info("no undelivered MQTT events under %s", out)
        return 0, 0, []
    config, cameras = _configs(config_path, base_config)
    delivered = left = 0
    problems: list[str] = []
    for spool in spools:
        folder = spool.parent
        run_config = cameras.get(folder.name) if cameras else config
        if run_config is None:
            raise ConfigError(f"{folder}: no camera named '{folder.name}' in {config_path}")
        if run_config.mqtt is None:
            where = config_path or "the default config"
            raise ConfigError(f"{where} has no mqtt section: give --config the file the run used")
        # The run's drain_s was for the end of a run; here the user's --timeout is the budget.
        mqtt = run_config.mqtt.model_copy(update={"drain_s": timeout_s})
        publisher = MqttPublisher(mqtt, folder, source=folder.name, announce=False)
        try:
            with publisher:
                pass  # the worker sends the spool, for at most timeout_s
        except SpoolInUse:
            problems.append(f"{folder}: in use by a running process (it sends them itself)")
            left += _rows(spool, mqtt.max_queued, locked=True)
            continue
        remaining = _rows(spool, mqtt.max_queued) if spool.exists() else 0
        delivered += publisher.delivered
        left += remaining
        log.info("%s: %d events delivered, %d still queued", folder, publisher.delivered, remaining)
        if remaining:
            problems.append(f"{folder}: " + (f"{remaining} left after {timeout_s:g} s (raise --timeout)"
                                             if publisher.reached_broker else f"broker {publisher.address} unreachable"))
    return delivered, left, problems


def _rows(spool: Path, max_rows: int, locked: bool = False) -> int:
    if locked:  # read-only look; the owner keeps the lock
        import sqlite3

        with sqlite3.connect(f"file:{spool}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
    kept = DiskSpool(spool, max_rows).open()
    return kept.close()


def command(out_dir: str, config_path: str | None, base_config: str | None, timeout_s: float) -> int:
    if not timeout_s > 0:
        raise UserError("--timeout must be above 0 seconds")
    delivered, left, problems = send_spools(out_dir, config_path, base_config, timeout_s)
    if left:
        raise SourceError(f"{left} events not delivered, kept in their spools; " + "; ".join(problems))
    return 0
