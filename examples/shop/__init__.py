"""The example shop: a FastAPI app whose order pipeline runs on Conveyor (see README, `make demo`)."""
