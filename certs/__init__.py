"""Certificate tooling: CA and serving certificates, install into Kubernetes, rotation."""
