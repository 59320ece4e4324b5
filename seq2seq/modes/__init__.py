"""What each mode of train.py does once its flags are a valid `RunConfig`: the top layer."""
