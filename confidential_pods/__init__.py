"""confidential-pods: SGX confidential computing for Kubernetes pods.

This package holds what the webhook and the scheduler extender share: the resource
profiles, EPC quantities, the configuration file and the command line.
"""

__version__ = "0.1.0"
