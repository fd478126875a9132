"""The extender's WSGI app over a snapshot, to serve it otherwise than ``extender serve`` does.

Only ``extender_bench reference --granian`` uses it (issue 13: "measure alternatives side by
side"); what ships is ``confidential-pods extender serve``. The snapshot and the configuration come from the
environment, since a WSGI server imports the app by name:

    CONFIDENTIAL_PODS_SNAPSHOT=cluster.json CONFIDENTIAL_PODS_CONFIG=config.yaml \\
        granian --interface wsgi benchmarks.extender_wsgi:app
"""

from __future__ import annotations

import os

from confidential_pods.settings import load_settings
from extender.app import create_app
from extender.serving import snapshot_backend

settings = load_settings(os.environ["CONFIDENTIAL_PODS_CONFIG"])
backend = snapshot_backend(os.environ["CONFIDENTIAL_PODS_SNAPSHOT"], settings)
app = create_app(backend.ledger, settings, backend.binder, backend.ready, metrics=backend.metrics)
