"""imagebake: build trees of container images with buildah, scheduled by pydoit.

The contract the modules keep (the rooms and what each owns, the data flow, the key, the
verdict, trust, what is guaranteed) is docs/design.md.
"""
