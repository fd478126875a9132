"""Mutating admission webhook: injects EPC, AESM, RuntimeClass and scheduling into opted-in pods."""
