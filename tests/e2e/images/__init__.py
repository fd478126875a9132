"""The images the e2e node runs, built here without a registry: tests/e2e/images/build.sh (docs/images.md)."""
