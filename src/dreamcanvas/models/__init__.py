"""Neural networks that dreamcanvas builds itself, so that original checkpoints load without their code bases."""
