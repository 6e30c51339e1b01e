"""Training dreamcanvas's own small models (the offline CLIP guide and judge), on a CPU."""
