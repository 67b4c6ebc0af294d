"""The supervised side: data as tensors, Frankle & Carbin's networks, the supervised trainer."""
