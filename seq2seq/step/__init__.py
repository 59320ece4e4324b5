"""The compiled train and eval steps and the optimizers they apply."""
