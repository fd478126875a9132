"""Kube-scheduler extender: EPC ledger from list+watch; filter, prioritize and bind by free EPC."""
