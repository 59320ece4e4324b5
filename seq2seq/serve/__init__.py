"""`--mode=serve`: a chat page and a JSON API over the workdir's exported SavedModel.

The server runs the artefact a deployment would (`infer.export`), exporting it first when it
is missing or older than the checkpoints; it imports inference code only, never training.
"""
