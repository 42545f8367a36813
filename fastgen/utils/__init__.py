"""Small helpers shared by the training, sampling and evaluation code."""
