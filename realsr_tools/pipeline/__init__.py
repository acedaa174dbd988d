"""The seam every stage uses: manifests (provenance, journal, resume), how items run, progress, pair sources."""
