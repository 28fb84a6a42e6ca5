"""Training (PyTorch). Unsupervised: reads DATA/<domain>/** file lists only, never labels."""
