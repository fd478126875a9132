"""Operating confidential-pods: ``confidential-pods doctor`` and the ``kubectl confidential-pods`` plugin."""
