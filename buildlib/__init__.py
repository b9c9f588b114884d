"""imagebake: build trees of container images with buildah, scheduled by pydoit."""
