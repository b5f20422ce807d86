"""A worker process's logs and metrics endpoint, wired to Celery's start-up signals.

- `celeryd_init` (before Celery prints or warns anything): our log handler, JSON or
  text (`LLMFLEET_LOG_FORMAT`); in JSON mode the ASCII banner is skipped, so every
  line a worker writes is one JSON object.
- `setup_logging`: connecting it tells Celery not to configure logging itself; we
  apply the `--loglevel` it was given. Beat and other Celery programs get it too.
- `worker_init`: the Prometheus endpoint on `LLMFLEET_METRICS_PORT` (0 = none). A
  port that cannot be bound stops the worker: metrics asked for and silently absent
  would be worse.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery.signals import celeryd_init, setup_logging, worker_init

from models.logging_setup import configure_logging
from workers import metrics

if TYPE_CHECKING:
    from workers.celery_app import FleetCelery

__all__ = ["install"]

log = logging.getLogger(__name__)


def install(app: FleetCelery) -> None:
    def on_celeryd_init(instance: Any = None, options: Any = None, **_: Any) -> None:
        level = (options or {}).get("loglevel") or "INFO"
        log_format = configure_logging(app.fleet_settings.log_format, level)
        if log_format == "json" and instance is not None:
            instance.quiet = True

    def on_setup_logging(loglevel: Any = None, **_: Any) -> None:
        configure_logging(app.fleet_settings.log_format, loglevel or "INFO")

    def on_worker_init(**_: Any) -> None:
        settings = app.fleet_settings
        if not settings.metrics_port:
            return
        try:
            metrics.serve(settings.metrics_port, settings.metrics_addr)
        except OSError as exc:
            log.critical(
                "cannot serve metrics on %s:%d: %s",
                settings.metrics_addr,
                settings.metrics_port,
                exc.strerror,
            )
            message = f"llmfleet worker: metrics port {settings.metrics_port}: {exc}"
            raise SystemExit(message) from None
        log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, settings.metrics_port)

    celeryd_init.connect(on_celeryd_init, weak=False)
    setup_logging.connect(on_setup_logging, weak=False)
    worker_init.connect(on_worker_init, weak=False)
