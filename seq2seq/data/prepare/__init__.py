"""--mode=prepare: raw dumps and files -> a prepared data folder."""
